"""``remove-small --sweep``: what minimum-size post-processing costs, before anything is deleted.

For each minimum size m (default 0, 1, 2, 3, 5, 10, 20 voxels) the predictions are cleaned exactly as
``remove-small --min-voxels m`` cleans them (:func:`~nnunet_lesionloss.evaluation.postprocess.remove_small_labels`,
same connectivity) and evaluated exactly as ``evaluate`` evaluates them
(:func:`~nnunet_lesionloss.evaluation.evaluate.evaluate_arrays` and
:func:`~nnunet_lesionloss.evaluation.evaluate.aggregate`, same preset), in memory: each case is read
once. The table gives, per m, the means over cases of lesion recall, precision, F1, FP count and
Dice (the numbers ``summary.json`` of ``remove-small`` followed by ``evaluate`` would hold), the
pooled lesion recall/precision/F1 and how many predicted components the removal deleted.

This module computes the sweep and returns it as a dict (the record ``min_size_sweep.json`` holds); its
table, figure and files are written by :mod:`nnunet_lesionloss.evaluation.min_size_sweep_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.evaluate import CaseResult, LabelSpec, aggregate, evaluate_arrays
from nnunet_lesionloss.evaluation.parallel import run_parallel, unexpected_error_reason
from nnunet_lesionloss.evaluation.postprocess import REMOVAL_CONNECTIVITY, remove_small_labels
from nnunet_lesionloss.evaluation.runner import plan_pairs, resolve_labels
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, Preset, get_preset

__all__ = [
    "DEFAULT_MIN_SIZES",
    "REMOVAL_DEFAULT_TEXT",
    "SWEEP_METRICS",
    "min_size_sweep",
    "sweep_case",
]

#: minimum sizes (voxels) of the sweep: 0 and 1 keep everything (the reference point)
DEFAULT_MIN_SIZES = (0, 1, 2, 3, 5, 10, 20)
#: metric key -> column title (means over cases, as evaluate's summary.json)
SWEEP_METRICS = {
    "lesion_recall": "lesion recall",
    "lesion_precision": "lesion precision",
    "lesion_f1": "lesion F1",
    "lesion_fp": "FP count per case",
    "Dice": "Dice",
}
#: how the outputs name remove-small's default connectivity
REMOVAL_DEFAULT_TEXT = f"{REMOVAL_CONNECTIVITY[3]} (2D: {REMOVAL_CONNECTIVITY[2]})"


def sweep_case(
    case: str,
    reference_file: Path,
    prediction_file: Path,
    labels: LabelSpec,
    settings: EvaluationSettings,
    min_sizes: Sequence[int],
    connectivity: int | str | None,
) -> tuple[list[CaseResult], list[int]]:
    """One case at every minimum size: its results (as ``evaluate_case`` makes them) and, per size, the
    number of predicted foreground components the removal deleted."""
    results, removed = [], []
    try:
        reference = io.read_label_image(reference_file)
        prediction = io.read_label_image(prediction_file)
        io.check_same_geometry(reference, prediction)
        reference_labels = io.as_integer_labels(reference)
        predicted_labels = io.as_integer_labels(prediction)
        if connectivity is None:  # remove-small's default for the image's dimension
            connectivity = REMOVAL_CONNECTIVITY.get(predicted_labels.ndim, "full")
        components = _component_count(predicted_labels, connectivity)
        for size in min_sizes:
            cleaned = remove_small_labels(predicted_labels, size, connectivity)
            result = CaseResult(case, str(reference_file), str(prediction_file))
            for key, evaluation in evaluate_arrays(
                reference_labels, cleaned, reference.spacing, labels, settings
            ).items():
                result.metrics[key] = evaluation.values
                result.undefined[key] = evaluation.undefined
            results.append(result)
            removed.append(components - _component_count(cleaned, connectivity))
    except io.CaseError as error:
        results = [CaseResult(case, str(reference_file), str(prediction_file), error=str(error)) for _ in min_sizes]
        removed = [0] * len(min_sizes)
    except Exception as error:  # keep the other cases going, but say where it broke
        message = unexpected_error_reason(error)
        results = [CaseResult(case, str(reference_file), str(prediction_file), error=message) for _ in min_sizes]
        removed = [0] * len(min_sizes)
    return results, removed


def _component_count(labels: np.ndarray, connectivity: int | str) -> int:
    """The connected components of every foreground label, counted label by label."""
    return sum(
        label_components(labels == value, connectivity, return_count=True)[1]
        for value in np.unique(labels)
        if value != 0
    )


def min_size_sweep(
    pred_dir,
    gt_dir,
    min_sizes: Sequence[int] = DEFAULT_MIN_SIZES,
    connectivity: int | str | None = None,
    settings: EvaluationSettings | None = None,
    preset: Preset | str = "default",
    dataset_json: str | None = None,
    labels: Sequence[int] | None = None,
    file_ending: str | None = None,
    num_processes: int = 1,
) -> dict:
    """The sweep over a prediction folder: per minimum size, per label, the aggregate of ``evaluate``."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = settings or preset.settings
    min_sizes = sorted({int(m) for m in min_sizes})
    if not min_sizes or min_sizes[0] < 0:
        raise ValueError(f"minimum sizes must be >= 0 voxels, got {min_sizes}")
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "reference"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    label_spec, dataset, _ = resolve_labels(preset, dataset_json, gt_dir, labels)
    if file_ending is None and dataset is not None:
        file_ending = dataset.get("file_ending")
    plan = plan_pairs(gt_dir, pred_dir, file_ending, "brats" if preset.brats_outputs else "name")
    jobs = [(case, ref, pred, label_spec, settings, min_sizes, connectivity) for case, ref, pred in plan.pairs]
    outputs = run_parallel(sweep_case, jobs, num_processes, progress=False)
    failed = {case: reason for case, reason in plan.failed.items()}
    for (case, _, _), (results, _) in zip(plan.pairs, outputs):
        if results and results[0].error:
            failed[case] = results[0].error
    rows = []
    for k, size in enumerate(min_sizes):
        results = [r[k] for r, _ in outputs]
        aggregated = aggregate(results, settings)
        rows.append(
            {
                "min_voxels": size,
                "removed_components": int(sum(removed[k] for _, removed in outputs)),
                "mean": {key: {m: means.get(m) for m in SWEEP_METRICS} for key, means in aggregated["mean"].items()},
                "n": {
                    key: {m: aggregated["aggregates"][key].get(m, {}).get("n", 0) for m in SWEEP_METRICS}
                    for key in aggregated["mean"]
                },
                "pooled": {
                    key: {
                        m: across.get(f"pooled_{m}")
                        for m in ("lesion_recall", "lesion_precision", "lesion_f1", "dice", "n_pred_lesions")
                    }
                    for key, across in aggregated["across_cases"].items()
                },
            }
        )
    return {
        "gt_dir": str(gt_dir),
        "pred_dir": str(pred_dir),
        "min_sizes": min_sizes,
        "removal_connectivity": connectivity if connectivity is not None else REMOVAL_DEFAULT_TEXT,
        "settings": settings.to_dict(),
        "preset": preset.name,
        "label_names": label_spec.names,
        "n_cases": len(plan.pairs) + len(plan.failed),
        "n_failed": len(failed),
        "errors": failed,
        "ignored_predictions": plan.ignored_predictions,  # no reference claims them (as in evaluate's summary.json)
        "rows": rows,
    }
