"""Lesion-wise metrics on nnU-Net's validation patches, every epoch, and the fold-level evaluation.

nnU-Net watches one number while it trains: the EMA of a "pseudo Dice" over its validation patches.
Dice hides missed small lesions (Luu et al. 2026 (CATMIL) §1, §3.4), so the trainers of this package
also count lesions on the same patches, with the definitions of the final evaluation's default
(docs/metrics.md): a reference lesion is detected, and a predicted lesion is true, when the one-to-one
matching at DSC >= 0.1 pairs them (``metrics.lesion_hits``), so that a network predicting one blob
over the patch scores one lesion at most, never a detection of every lesion it covers (with the papers'
any overlap, such a blob had recall, precision and F1 1.0).

What the numbers are: **patch-level estimates**. Counts are pooled over all validation patches of an
epoch (and over the channels: classes or regions), then turned into rates:

* lesion recall = detected reference lesions / reference lesions (CATMIL eq. 3.4),
* lesion precision = true predicted lesions / predicted lesions (CATMIL eq. 3.4),
* lesion F1 = 2·P·R / (P + R) of these pooled rates (CATMIL eq. 3.5, without its ε),
* small-lesion recall = recall over reference lesions of at most ``small_lesion_voxels`` voxels
  inside the patch (CATMIL eq. 3.6-3.7),
* false-positive components per patch = (predicted - true predicted lesions) / patches.

What they are not: the case-level evaluation. A patch cuts lesions at its border (the part inside
counts as a lesion of that size, so a large lesion cut at a corner counts as a small one), nnU-Net's
sampler over-samples foreground (a third of the patches are centred on a lesion), the prediction is a
single forward pass at the patch (no sliding window, no Gaussian weighting, no mirroring) and in the
preprocessed (resampled) space. The numbers track the trend within one run and compare runs trained
on the same data; the final numbers of a fold are those of ``fold_X/validation/lesion_evaluation``
(:func:`evaluate_fold`), computed by the evaluation on whole cases.

Counting is a segment reduction per patch and channel: one cc3d labelling of the prediction (the
reference components arrive with the batch) and bincounts over component ids; there is no loop over
lesions. Under DDP, :func:`sum_over_ranks` sums the counts of all ranks before any rate is formed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.logging import nnunet_logger
from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.matching import OverlapTable, lesion_f1, lesion_hits
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

__all__ = [
    "COUNT_FIELDS",
    "RATE_NAMES",
    "CHECKPOINT_METRICS",
    "DETECTION_RULE",
    "predicted_masks",
    "patch_lesion_counts",
    "sum_over_ranks",
    "lesion_rates",
    "small_lesion_voxels",
    "METRIC_NAMES",
    "undefined_reason",
    "ema_update",
    "is_new_best",
    "format_rates",
    "evaluate_fold",
    "LesionProgressLogger",
]

#: the counts accumulated over an epoch, in this order (an int64 vector)
COUNT_FIELDS = (
    "patches",
    "ref_lesions",
    "ref_detected",
    "small_ref_lesions",
    "small_ref_detected",
    "pred_lesions",
    "pred_true",
)
_INDEX = {name: k for k, name in enumerate(COUNT_FIELDS)}

#: the rates logged per epoch (the logger keys of the trainers)
RATE_NAMES = ("lesion_recall", "lesion_precision", "lesion_f1", "small_lesion_recall", "fp_lesions_per_patch")

#: rates a best checkpoint may be chosen by (higher is better)
CHECKPOINT_METRICS = ("lesion_f1", "small_lesion_recall", "lesion_recall", "lesion_precision")

#: the checkpoint metrics as the training log names them
METRIC_NAMES = {
    "lesion_f1": "lesion F1",
    "small_lesion_recall": "small-lesion recall",
    "lesion_recall": "lesion recall",
    "lesion_precision": "lesion precision",
}

#: the evaluation's default detection rule and its parameters (one-to-one at DSC >= 0.1), so that the
#: patch-level counts follow the final evaluation's definition
_EVALUATION_DEFAULTS = EvaluationSettings()
DETECTION_RULE = _EVALUATION_DEFAULTS.lesion_rule

#: nnU-Net's EMA of the pseudo Dice: ema = 0.9 · ema + 0.1 · value (nnunetv2 MetaLogger)
EMA_MOMENTUM = 0.9


def predicted_masks(logits: torch.Tensor, label_groups: Sequence[Sequence[int]] | None) -> torch.Tensor:
    """Boolean prediction per channel [B, G, *spatial], as nnU-Net segments at inference.

    Label-based (``label_groups``, one tuple of labels per channel): argmax over the classes, then
    membership of each group. Region-based (None): sigmoid > 0.5 of every region, i.e. logit > 0.
    """
    if label_groups is None:
        return logits > 0
    argmax = logits.argmax(1)
    return torch.stack([torch.isin(argmax, torch.as_tensor(g, device=argmax.device)) for g in label_groups], 1)


def small_lesion_voxels(small_lesion_ml: float, spacing: Sequence[float]) -> int:
    """Largest voxel count n with n · voxel volume <= ``small_lesion_ml`` (the evaluation's inclusive
    |g| <= τ of CATMIL eq. 3.6, at the voxel size the network sees). 50 voxels for 0.05 mL at 1 mm³."""
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    # the small tolerance keeps 0.05 mL / 1 mm³ at exactly 50 despite floating point
    return int(math.floor(small_lesion_ml * MM3_PER_ML / voxel_mm3 + 1e-9))


def patch_lesion_counts(
    pred_masks: np.ndarray,
    ref_masks: np.ndarray | None = None,
    ref_ids: np.ndarray | None = None,
    *,
    connectivity: int,
    small_lesion_voxels: int,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Lesion counts (:data:`COUNT_FIELDS`) of a batch of patches, summed over patches and channels.

    Args:
        pred_masks: bool [B, C, *spatial], the prediction of every channel.
        ref_masks: bool [B, C, *spatial], the reference; labelled here with ``connectivity``.
        ref_ids: int [B, C, *spatial], reference components already labelled (the maps that travel
            with nnU-Net's batches); used instead of ``ref_masks`` when given. Ids need not be
            consecutive; ids without voxels are no lesion.
        connectivity: of the predicted (and, from ``ref_masks``, the reference) components.
        small_lesion_voxels: a reference lesion is small when it has at most this many voxels in the patch.
        valid: bool [B, *spatial] or None; voxels outside it (nnU-Net's ignore label) are removed from
            both masks first, as the evaluation does.

    A lesion cut by the patch border counts with the part inside the patch (see module docstring).
    """
    pred_masks = np.asarray(pred_masks, dtype=bool)
    if (ref_masks is None) == (ref_ids is None):
        raise ValueError("give exactly one of ref_masks or ref_ids")
    reference = np.asarray(ref_ids if ref_ids is not None else ref_masks)
    if reference.shape != pred_masks.shape or pred_masks.ndim not in (4, 5):
        raise ValueError(
            f"prediction {pred_masks.shape} and reference {reference.shape} must both be [B, C, *spatial] (2D or 3D)"
        )
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (pred_masks.shape[0], *pred_masks.shape[2:]):
            raise ValueError(
                f"valid must be [B, *spatial] = {(pred_masks.shape[0], *pred_masks.shape[2:])}, got {valid.shape}"
            )
    counts = np.zeros(len(COUNT_FIELDS), dtype=np.int64)
    counts[_INDEX["patches"]] = pred_masks.shape[0]
    for b in range(pred_masks.shape[0]):
        for c in range(pred_masks.shape[1]):
            pred = pred_masks[b, c] if valid is None else pred_masks[b, c] & valid[b]
            if ref_ids is not None:
                ids = reference[b, c].astype(np.int64, copy=False)
                if valid is not None:
                    ids = np.where(valid[b], ids, 0)
            else:
                ref = reference[b, c].astype(bool) if valid is None else reference[b, c].astype(bool) & valid[b]
                ids = label_components(ref, connectivity).astype(np.int64, copy=False)
            counts += _channel_counts(ids, label_components(pred, connectivity), small_lesion_voxels)
    return counts


def _channel_counts(ref_ids: np.ndarray, pred_ids: np.ndarray, small_voxels: int) -> np.ndarray:
    """Counts of one patch and channel: bincounts over the component ids, no loop over lesions."""
    table = OverlapTable.build(ref_ids, int(ref_ids.max(initial=0)), pred_ids, int(pred_ids.max(initial=0)))
    ref_hit, pred_hit = lesion_hits(table, _EVALUATION_DEFAULTS)
    present = table.ref_sizes[1:] > 0
    small = present & (table.ref_sizes[1:] <= small_voxels)
    detected = ref_hit[1:] & present
    pred_present = table.pred_sizes[1:] > 0
    out = np.zeros(len(COUNT_FIELDS), dtype=np.int64)
    out[_INDEX["ref_lesions"]] = present.sum()
    out[_INDEX["ref_detected"]] = detected.sum()
    out[_INDEX["small_ref_lesions"]] = small.sum()
    out[_INDEX["small_ref_detected"]] = (detected & small).sum()
    out[_INDEX["pred_lesions"]] = pred_present.sum()
    out[_INDEX["pred_true"]] = (pred_hit[1:] & pred_present).sum()
    return out


def sum_over_ranks(counts: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The counts summed over all DDP ranks (unchanged without an initialised process group).

    Counts, never rates, are reduced: a rate of summed counts is the rate of the whole validation
    set, a mean of per-rank rates is not. ``device`` must be one the backend reduces on (CUDA for NCCL).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return counts
    tensor = torch.as_tensor(counts, dtype=torch.int64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor.cpu().numpy()


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def lesion_rates(counts: np.ndarray) -> dict[str, float]:
    """The :data:`RATE_NAMES` of pooled counts; NaN where undefined (no lesion to count).

    F1 follows the evaluation (docs/metrics.md): 0 when one side has lesions and the other none,
    undefined when neither has any.
    """
    n = {name: int(counts[k]) for k, name in enumerate(COUNT_FIELDS)}
    recall = _ratio(n["ref_detected"], n["ref_lesions"])
    precision = _ratio(n["pred_true"], n["pred_lesions"])
    f1 = lesion_f1(n["ref_detected"], n["pred_true"], n["ref_lesions"], n["pred_lesions"])
    f1 = float("nan") if f1 is None else f1
    return {
        "lesion_recall": recall,
        "lesion_precision": precision,
        "lesion_f1": f1,
        "small_lesion_recall": _ratio(n["small_ref_detected"], n["small_ref_lesions"]),
        "fp_lesions_per_patch": _ratio(n["pred_lesions"] - n["pred_true"], n["patches"]),
    }


def undefined_reason(metric: str, small_voxels: int) -> str:
    """Why a checkpoint metric is undefined (NaN, :func:`lesion_rates`) on an epoch's patches."""
    return {
        "lesion_recall": "no reference lesion on the validation patches",
        "small_lesion_recall": f"no reference lesion of <= {small_voxels} voxels on the validation patches",
        "lesion_precision": "no predicted lesion on the validation patches",
        "lesion_f1": "neither a reference nor a predicted lesion on the validation patches",
    }[metric]


def ema_update(previous: float | None, value: float) -> float:
    """nnU-Net's EMA (0.9 · previous + 0.1 · value); an undefined value keeps the previous EMA, the
    first defined value starts it."""
    if previous is None or not math.isfinite(previous):
        return value
    if not math.isfinite(value):
        return previous
    return EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * value


def is_new_best(ema_history: Sequence[float]) -> bool:
    """Whether the last EMA beats every earlier one (strictly, NaN never does). Stateless: the history
    is nnU-Net's logger, saved in every checkpoint, so a run resumed with ``--c`` decides the same."""
    if not ema_history or not math.isfinite(ema_history[-1]):
        return False
    earlier = [v for v in ema_history[:-1] if v is not None and math.isfinite(v)]
    return not earlier or ema_history[-1] > max(earlier)


def format_rates(rates: dict[str, float], counts: np.ndarray, small_voxels: int) -> str:
    """One line of the training log."""
    n = {name: int(counts[k]) for k, name in enumerate(COUNT_FIELDS)}

    def show(value: float) -> str:
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"

    return (
        f"lesion recall {show(rates['lesion_recall'])} ({n['ref_detected']}/{n['ref_lesions']}), "
        f"precision {show(rates['lesion_precision'])} ({n['pred_true']}/{n['pred_lesions']}), "
        f"F1 {show(rates['lesion_f1'])}, "
        f"small-lesion recall (<= {small_voxels} voxels) {show(rates['small_lesion_recall'])} "
        f"({n['small_ref_detected']}/{n['small_ref_lesions']}), "
        f"FP lesions per patch {show(rates['fp_lesions_per_patch'])} ({n['patches']} patches)"
    )


def evaluate_fold(
    validation_dir,
    gt_dir,
    cases: Sequence[str],
    preset: str = "default",
    dataset_json: str | None = None,
) -> dict:
    """The lesion-wise evaluation of a fold's validation predictions, written to
    ``validation_dir/lesion_evaluation`` (summary.json, cases.csv, summary.md) with the settings of
    preset ``preset``: what ``cv-summary`` computes for the fold, so it can reuse the result."""
    from nnunet_lesionloss.evaluation.runner import evaluate_folders

    validation_dir = Path(validation_dir)
    return evaluate_folders(
        gt_dir,
        validation_dir,
        validation_dir / "lesion_evaluation",
        preset=preset,
        dataset_json=dataset_json,
        cases=list(cases),
        num_processes=1,  # inside the training process (CUDA, OpenMP threads): no fork
        overwrite=True,  # the fold's own outputs, rewritten by every (re)validation
        progress=False,
    )


# --------------------------------------------------------------------------- nnU-Net's logger and progress.png
class _PyplotWithExtraPanel:
    """matplotlib.pyplot, except that ``subplots(n, 1, figsize=(w, h))`` makes one more row (the figure
    grows by h/n), draws ``draw(axis)`` into it and returns the first n axes: nnU-Net's own plot then
    fills its panels unchanged and saves the whole figure."""

    def __init__(self, pyplot, draw):
        self._pyplot, self._draw = pyplot, draw

    def __getattr__(self, name):
        return getattr(self._pyplot, name)

    def subplots(self, nrows=1, ncols=1, *args, figsize=None, **kwargs):
        if ncols != 1 or args:
            return self._pyplot.subplots(nrows, ncols, *args, figsize=figsize, **kwargs)
        if figsize is not None:
            figsize = (figsize[0], figsize[1] * (nrows + 1) / nrows)
        figure, axes = self._pyplot.subplots(nrows + 1, 1, figsize=figsize, **kwargs)
        self._draw(axes[-1])
        return figure, axes[:-1] if nrows > 1 else axes[0]


class LesionProgressLogger(LocalLogger):
    """nnU-Net's LocalLogger that also holds the lesion rates, one value per epoch like its own keys
    (so they are saved in every checkpoint and restored by ``--c``), and draws them as a further
    panel of ``progress.png`` below nnU-Net's three, which it leaves as they are."""

    def __init__(self, local_logger: LocalLogger, rate_keys: Sequence[str], ema_key: str | None, small_voxels: int):
        super().__init__(getattr(local_logger, "verbose", False))
        self.my_fantastic_logging = local_logger.my_fantastic_logging
        self.lesion_keys = [*rate_keys] + ([ema_key] if ema_key else [])
        self.ema_key = ema_key
        self.small_voxels = small_voxels
        self._add_missing_keys()

    def _add_missing_keys(self) -> None:
        """Keys absent from the log (a fresh run, or a checkpoint written without them) are filled
        with NaN up to the logged epochs, so nnU-Net's one-value-per-epoch bookkeeping holds."""
        epochs = len(self.my_fantastic_logging.get("epoch_end_timestamps", []))
        for key in self.lesion_keys:
            values = self.my_fantastic_logging.setdefault(key, [])
            values.extend([float("nan")] * (epochs - len(values)))

    def load_checkpoint(self, checkpoint: dict) -> None:
        super().load_checkpoint(checkpoint)
        self._add_missing_keys()

    def plot_progress_png(self, output_folder) -> None:
        pyplot = nnunet_logger.plt
        nnunet_logger.plt = _PyplotWithExtraPanel(pyplot, self._draw_lesion_panel)
        try:
            super().plot_progress_png(output_folder)
        finally:
            nnunet_logger.plt = pyplot

    def _draw_lesion_panel(self, axis) -> None:
        log = self.my_fantastic_logging
        epochs = min(len(values) for values in log.values())
        x = list(range(epochs))
        curves = {
            "lesion_recall": ("b", "dotted", "lesion recall"),
            "lesion_precision": ("r", "dotted", "lesion precision"),
            "lesion_f1": ("g", "dotted", "lesion F1"),
            "small_lesion_recall": ("m", "-", f"small-lesion recall (<= {self.small_voxels} vox)"),
        }
        for key, (color, style, label) in curves.items():
            if key in log:
                axis.plot(x, log[key][:epochs], color=color, ls=style, label=label, linewidth=3)
        if self.ema_key:
            axis.plot(
                x, log[self.ema_key][:epochs], color="g", ls="-", label=f"{self.ema_key} (mov. avg.)", linewidth=4
            )
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("epoch")
        axis.set_ylabel("lesions on validation patches")
        axis.legend(loc=(0, 1), ncol=3)
        if "fp_lesions_per_patch" in log:
            twin = axis.twinx()
            twin.plot(
                x,
                log["fp_lesions_per_patch"][:epochs],
                color="orange",
                ls="--",
                label="FP lesions / patch",
                linewidth=3,
            )
            twin.set_ylabel("FP lesions per patch")
            twin.set_ylim(bottom=0)
            twin.legend(loc=(0.8, 1))
