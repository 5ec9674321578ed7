"""The operating point of a model chosen by cross-validation: ``choose-threshold`` and ``apply-threshold``.

An operating point is a probability threshold t and a minimum component size m (voxels): the prediction
of a label or region is {p >= t}, without its connected components of fewer than m voxels. It is chosen on
the validation probabilities nnU-Net keeps (``nnUNetv2_train ... --npz``: ``fold_*/validation/*.npz``),
over a grid of t and m, by one criterion:

- ``dice``: the aggregate Dice 2·Σ|P∩G| / Σ(|P|+|G|) over all cases (Joshi 2026 §4.5, thresholds 0.3-0.7);
- ``lesion_f1``: the mean over cases of the lesion F1 that ``evaluate`` reports;
- ``sensitivity``: the lesion sensitivity (detected reference lesions / reference lesions, pooled over the
  cases as a FROC curve counts them) subject to at most N false-positive lesions per case.

Lesions are counted as the evaluation counts them (:func:`metrics.lesion_hits` with the preset's
settings: connectivity, detection rule, minimum lesion size), so a chosen point's numbers are those
``evaluate`` reports on the post-processed masks. Because the choice is made on the same cases it is
measured on, that number is optimistic; the nested estimate chooses on all folds but one and measures on the
one left out, for each fold, and pools the left-out cases.

Speed: per case and threshold the components are labelled once (cc3d) and one overlap table is built;
every minimum size is a selection of that table's components (no re-labelling). The counts of every case,
threshold and size are kept in memory, so the optimistic choice, the nested one and every criterion are
arithmetic over those counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_lesionloss.components import NAMED_CONNECTIVITY, label_components
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.matching import OverlapTable, lesion_f1, lesion_hits
from nnunet_lesionloss.evaluation.metrics import foreground_crop, remove_small_components
from nnunet_lesionloss.evaluation.parallel import run_parallel
from nnunet_lesionloss.evaluation.postprocess import REMOVAL_CONNECTIVITY, run_cases, write_labels_like
from nnunet_lesionloss.evaluation.probabilities import (
    ProbabilityTarget,
    check_geometry,
    foreground_probability,
    list_probability_files,
    load_probabilities,
    probability_targets,
    read_properties,
)
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

CRITERIA = ("dice", "lesion_f1", "sensitivity")
#: Joshi 2026 §4.5: the threshold is chosen in {0.3, ..., 0.7} by aggregate validation Dice
DICE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: Joshi 2026 §4.5 removes components below 5 voxels with 18-connectivity
DICE_CONNECTIVITY = 18
#: lesion criteria (our choice): a wider threshold range, since a low threshold is how sensitivity is bought
LESION_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LESION_MIN_SIZES = (0, 3, 5, 10, 20, 50)
DEFAULT_NESTED_FOLDS = 5
FORMAT = "nnunet-lesionloss operating point 1"

DEFINITIONS = {
    "dice": "aggregate Dice 2·Σ|P∩G| / Σ(|P|+|G|) over the cases",
    "lesion_f1": "mean over cases of the per-case lesion F1 (the evaluation's lesion_f1; cases where it is "
    "undefined are left out, n_lesion_f1_cases says how many count)",
    "sensitivity": "detected reference lesions / reference lesions, pooled over the cases",
    "precision": "true predicted lesions / predicted lesions, pooled over the cases",
    "fp_per_case": "false-positive lesions (predicted lesions the detection rule does not count as true) / cases",
}

# the counts kept per case, threshold and minimum size (last axis of a count array)
REFERENCE_LESIONS, DETECTED, PREDICTED_LESIONS, TRUE_PREDICTED, INTERSECTION, PREDICTED_VOXELS, REFERENCE_VOXELS = (
    range(7)
)
N_COUNTS = 7


# --------------------------------------------------------------------------- counts of one case
def _keep_predicted(table: OverlapTable, keep: np.ndarray) -> OverlapTable:
    """The overlap table of the prediction without the components where ``keep`` is False (ids renumbered):
    what :meth:`OverlapTable.build` gives after removing them from the mask, without labelling it again."""
    new_ids = np.cumsum(keep)  # old id -> new id (for kept components)
    pairs = keep[table.pair_pred]
    sizes = table.pred_sizes
    return OverlapTable(
        ref_sizes=table.ref_sizes,
        pred_sizes=np.concatenate([[sizes[0] + sizes[1:][~keep[1:]].sum()], sizes[keep]]),
        pair_ref=table.pair_ref[pairs],
        pair_pred=new_ids[table.pair_pred[pairs]].astype(np.int64),
        pair_intersection=table.pair_intersection[pairs],
    )


def grid_counts(
    probability: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float],
    settings: EvaluationSettings,
    thresholds: Sequence[float],
    min_sizes: Sequence[int],
) -> np.ndarray:
    """Lesion and voxel counts of one case at every (threshold, minimum size): int64 (T, M, 7).

    The prediction at (t, m) is {probability >= t} without components of fewer than m voxels; it is then
    evaluated as ``evaluate_binary`` does under ``settings``: both masks lose the components the settings
    remove (``min_lesion_voxels``, ``min_lesion_volume_mm3``), lesions are ``settings.connectivity``
    components and are hit by :func:`lesion_hits`.
    """
    connectivity = settings.connectivity
    voxel_volume = float(np.prod(spacing))
    reference = np.asarray(reference, dtype=bool)
    if probability.shape != reference.shape:
        raise CaseError(f"probabilities of shape {probability.shape} vs reference {reference.shape}")
    # outside the box of every voxel any threshold keeps (and of the reference) nothing changes
    crop = foreground_crop(probability >= min(thresholds), reference)
    probability, reference = probability[crop], reference[crop]
    reference = remove_small_components(
        reference, connectivity, spacing, settings.min_lesion_voxels, settings.min_lesion_volume_mm3
    )
    reference_ids, n_reference = label_components(reference, connectivity, return_count=True)
    # the overlap table of each threshold from the reference's voxels only (OverlapTable.build reads every
    # voxel of both maps; this is the same table at a fraction of the cost when lesions are sparse)
    reference_index = np.flatnonzero(reference_ids)
    reference_values = reference_ids.ravel()[reference_index].astype(np.int64)
    reference_sizes = np.bincount(reference_values, minlength=n_reference + 1)
    reference_sizes[0] = reference_ids.size - len(reference_index)
    reference_voxels = len(reference_index)
    counts = np.zeros((len(thresholds), len(min_sizes), N_COUNTS), dtype=np.int64)
    for ti, threshold in enumerate(thresholds):
        predicted = probability >= threshold
        predicted_ids, n_predicted = label_components(predicted, connectivity, return_count=True)
        sizes = np.bincount(predicted_ids[predicted], minlength=n_predicted + 1)
        sizes[0] = predicted.size - int(sizes.sum())
        overlapping = predicted_ids.ravel()[reference_index].astype(np.int64)
        both = overlapping > 0
        pairs, intersections = np.unique(
            reference_values[both] * (n_predicted + 1) + overlapping[both], return_counts=True
        )
        table = OverlapTable(
            ref_sizes=reference_sizes,
            pred_sizes=sizes,
            pair_ref=pairs // (n_predicted + 1),
            pair_pred=pairs % (n_predicted + 1),
            pair_intersection=intersections.astype(np.int64),
        )
        # the components the evaluation itself would remove from the prediction
        evaluated = (sizes >= max(settings.min_lesion_voxels, 1)) & (
            sizes * voxel_volume > settings.min_lesion_volume_mm3
        )
        evaluated[0] = False
        for mi, min_size in enumerate(min_sizes):
            kept = _keep_predicted(table, evaluated & (sizes >= min_size))
            reference_hit, predicted_hit = lesion_hits(kept, settings)
            counts[ti, mi] = (
                n_reference,
                int(reference_hit.sum()),
                kept.n_pred,
                int(predicted_hit.sum()),
                int(kept.pair_intersection.sum()),
                int(kept.pred_sizes[1:].sum()),
                reference_voxels,
            )
    return counts


# --------------------------------------------------------------------------- metrics over cases
def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def per_case_lesion_f1(counts: np.ndarray, f1_both_empty: float | None = None) -> np.ndarray:
    """The evaluation's lesion F1 of every case (counts (..., 7) -> (...)); NaN where it is undefined.

    2·precision·recall / (precision + recall); 0 when one side has lesions and the other none, or when
    precision + recall = 0; ``f1_both_empty`` (None: undefined) when neither has a lesion.
    """
    return lesion_f1(
        counts[..., DETECTED],
        counts[..., TRUE_PREDICTED],
        counts[..., REFERENCE_LESIONS],
        counts[..., PREDICTED_LESIONS],
        f1_both_empty,
    )


def measure(counts: np.ndarray, f1_both_empty: float | None = None) -> dict[str, np.ndarray]:
    """Every criterion over the cases of ``counts`` (n cases, *grid, 7), one value per grid point (NaN: undefined)."""
    total = counts.sum(axis=0)
    n_cases = counts.shape[0]
    f1 = per_case_lesion_f1(counts, f1_both_empty)
    n_f1 = np.isfinite(f1).sum(axis=0)
    return {
        "dice": _ratio(2 * total[..., INTERSECTION], total[..., PREDICTED_VOXELS] + total[..., REFERENCE_VOXELS]),
        "lesion_f1": _ratio(np.nansum(f1, axis=0), n_f1),
        "sensitivity": _ratio(total[..., DETECTED], total[..., REFERENCE_LESIONS]),
        "precision": _ratio(total[..., TRUE_PREDICTED], total[..., PREDICTED_LESIONS]),
        "fp_per_case": _ratio(total[..., PREDICTED_LESIONS] - total[..., TRUE_PREDICTED], np.full(n_f1.shape, n_cases)),
        "n_cases": np.full(n_f1.shape, n_cases),
        "n_lesion_f1_cases": n_f1,
        "n_reference_lesions": total[..., REFERENCE_LESIONS],
        "n_detected_reference_lesions": total[..., DETECTED],
        "n_predicted_lesions": total[..., PREDICTED_LESIONS],
        "n_false_positive_lesions": total[..., PREDICTED_LESIONS] - total[..., TRUE_PREDICTED],
    }


def _point(metrics: dict[str, np.ndarray], index: tuple = ()) -> dict:
    """The metrics at one grid point as JSON-ready scalars (None: undefined)."""
    out = {}
    for name, values in metrics.items():
        value = np.asarray(values)[index].item()
        out[name] = None if isinstance(value, float) and not np.isfinite(value) else value
    return out


@dataclass
class Choice:
    threshold_index: int
    size_index: int
    constraint_met: bool | None  # sensitivity criterion: whether a grid point has <= max_fp_per_case


def select(metrics: dict[str, np.ndarray], criterion: str, max_fp_per_case: float | None = None) -> Choice | None:
    """The best grid point for ``criterion`` (None when the criterion is undefined everywhere).

    Ties (values equal to 12 digits) go to fewer false positives per case (lesion criteria), then to the
    lowest threshold, then to the smallest minimum size. With ``sensitivity``, only points with at most
    ``max_fp_per_case`` count; when none has, the point with the fewest false positives (then the most
    sensitive) is taken and ``constraint_met`` is False.
    """
    value = np.round(metrics[criterion], 12).ravel()
    fp = metrics["fp_per_case"].ravel()
    defined = np.isfinite(value)
    if not defined.any():
        return None
    position = np.arange(value.size)  # row-major: lower threshold first, then smaller size
    constraint_met = None
    candidates = defined
    keys = (position, -value) if criterion == "dice" else (position, fp, -value)  # np.lexsort: last key first
    if criterion == "sensitivity":
        feasible = defined & (fp <= max_fp_per_case + 1e-12)
        constraint_met = bool(feasible.any())
        if constraint_met:
            candidates = feasible
        else:
            keys = (position, -value, fp)
    order = np.lexsort(keys)
    best = int(order[candidates[order]][0])
    threshold_index, size_index = np.unravel_index(best, metrics[criterion].shape)
    return Choice(int(threshold_index), int(size_index), constraint_met)


def nested_estimate(
    counts: np.ndarray,
    folds: Sequence[np.ndarray],
    fold_names: Sequence,
    criterion: str,
    thresholds: Sequence[float],
    min_sizes: Sequence[int],
    max_fp_per_case: float | None = None,
    f1_both_empty: float | None = None,
) -> dict:
    """Choose on all folds but one, measure on that one, for every fold; the left-out cases pooled.

    ``counts``: (n cases, T, M, 7); ``folds``: the case indices of each fold.
    """
    n_cases = counts.shape[0]
    chosen = np.full((n_cases, 2), -1)
    per_fold = []
    for name, held_out in zip(fold_names, folds):
        training = np.setdiff1d(np.arange(n_cases), held_out)
        entry = {"fold": name, "n_cases": len(held_out), "n_cases_chosen_on": len(training)}
        choice = select(measure(counts[training], f1_both_empty), criterion, max_fp_per_case) if len(training) else None
        if choice is None:
            entry["reason"] = f"the criterion is undefined on the other folds' {len(training)} cases"
            per_fold.append(entry)
            continue
        ti, mi = choice.threshold_index, choice.size_index
        chosen[held_out] = (ti, mi)
        entry.update(
            threshold=float(thresholds[ti]),
            min_size_voxels=int(min_sizes[mi]),
            chosen_value=_point(measure(counts[training][:, ti, mi], f1_both_empty))[criterion],
            measured=_point(measure(counts[held_out][:, ti, mi], f1_both_empty)),
        )
        if choice.constraint_met is not None:
            entry["constraint_met_on_other_folds"] = choice.constraint_met
        per_fold.append(entry)
    used = np.flatnonzero(chosen[:, 0] >= 0)
    pooled = None
    if len(used):
        pooled = _point(measure(counts[used, chosen[used, 0], chosen[used, 1]], f1_both_empty))
    fold_values = [f["measured"][criterion] for f in per_fold if "measured" in f]
    fold_values = [v for v in fold_values if v is not None]
    return {
        "pooled": pooled,
        "mean_over_folds": float(np.mean(fold_values)) if fold_values else None,
        "n_folds_with_a_value": len(fold_values),
        "folds": per_fold,
    }


# --------------------------------------------------------------------------- inputs
@dataclass
class ChoiceInputs:
    """The cases a choice is made on: probabilities, references and folds, and what could not be used."""

    source: Path
    layout: str  # "cross-validation" (fold_*/validation) or "folder"
    gt_dir: Path
    probabilities: dict[str, Path]  # case -> .npz
    references: dict[str, Path]  # case -> reference image
    fold_of: dict[str, int] = field(default_factory=dict)  # cross-validation layout: the fold of each case
    failures: list[dict] = field(default_factory=list)  # {"fold", "case", "reason"}
    unused_references: list[str] = field(default_factory=list)
    dataset: dict | None = None
    dataset_json: str | None = None
    file_ending: str = ".nii.gz"


def find_dataset_json(candidates: Sequence[Path]) -> str | None:
    return next((str(c) for c in candidates if c.is_file()), None)


def plan_inputs(
    probabilities: str | os.PathLike,
    gt_dir: str | os.PathLike | None = None,
    dataset_json: str | None = None,
    file_ending: str | None = None,
) -> ChoiceInputs:
    """List the cases of a cross-validation folder (``fold_*/validation/*.npz``) or of a plain folder of
    ``.npz``, pair them with the references, and find dataset.json; every case that cannot be used is a
    failure with its reason."""
    from nnunet_lesionloss.evaluation import cv

    source = Path(probabilities)
    if not source.is_dir():
        raise FileNotFoundError(f"folder not found: {source}")
    is_cv = any(p.is_dir() for p in source.glob("fold_*/validation"))
    if gt_dir is None:
        if not is_cv:
            raise ValueError("--gt is required for a folder of probabilities (it is found for a results folder)")
        gt_dir = cv.default_gt_dir(source)
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"reference folder not found: {gt_dir}")
    if dataset_json is None:
        candidates = [source / "dataset.json", gt_dir.parent / "dataset.json"]
        if source.name == "validation" and source.parent.name.startswith("fold_"):  # one fold of a results folder
            candidates.insert(1, source.parent.parent / "dataset.json")
        dataset_json = find_dataset_json(candidates)
    dataset = io.read_dataset_json(dataset_json) if dataset_json else None
    file_ending = file_ending or (dataset or {}).get("file_ending") or ".nii.gz"
    references = io.list_images(gt_dir, file_ending)
    if not references:
        raise FileNotFoundError(f"no reference images ending in {file_ending} in {gt_dir}")
    inputs = ChoiceInputs(
        source,
        "cross-validation" if is_cv else "folder",
        gt_dir,
        {},
        {},
        dataset=dataset,
        dataset_json=dataset_json,
        file_ending=file_ending,
    )
    if is_cv:
        splits_file = cv.find_splits_file(gt_dir, source)
        for fold in cv.find_folds(source, None):
            validation = source / f"fold_{fold}" / "validation"
            npz = {p.name[:-4]: p for p in sorted(validation.glob("*.npz")) if not p.name.startswith(".")}
            present = sorted(set(npz) | set(io.list_images(validation, file_ending)))
            expected = cv.validation_cases(gt_dir, fold, present, splits_file) if splits_file else present
            for case in expected:
                if case not in npz:
                    reason = f"no {case}.npz in {validation} (train with --npz, or run nnUNetv2_train ... --val --npz)"
                elif case in inputs.fold_of:
                    reason = f"probabilities in fold {inputs.fold_of[case]} too (a case belongs to one fold)"
                else:
                    inputs.probabilities[case] = npz[case]
                    inputs.fold_of[case] = fold
                    continue
                inputs.failures.append({"fold": fold, "case": case, "reason": reason})
            for case in sorted(set(npz) - set(expected)):
                inputs.failures.append(
                    {"fold": fold, "case": case, "reason": f"not a validation case of fold {fold} in {splits_file}"}
                )
    else:
        inputs.probabilities = list_probability_files(source)
    for case in sorted(inputs.probabilities):
        if case in references:
            inputs.references[case] = references[case]
        else:
            inputs.failures.append(
                {
                    "fold": inputs.fold_of.get(case),
                    "case": case,
                    "reason": f"no reference {case}{file_ending} in {gt_dir}",
                }
            )
    inputs.unused_references = sorted(set(references) - set(inputs.probabilities))
    return inputs


def assign_folds(cases: Sequence[str], n_folds: int, seed: int) -> dict[str, int]:
    """Cases of a plain folder in ``n_folds`` folds: a permutation seeded with ``seed``, dealt round-robin."""
    order = np.random.default_rng(seed).permutation(len(cases))
    return {cases[index]: position % n_folds for position, index in enumerate(order)}


# --------------------------------------------------------------------------- probabilities
# The one place this module reads nnU-Net's probabilities (a .npz and the channel of each label or region)
def read_target_probabilities(
    path: Path, targets: Sequence[ProbabilityTarget], reference: io.LabelImage | None = None
) -> tuple[np.ndarray, dict]:
    """(all channels, {target key: probability map}) of one ``.npz``; with the ``reference``, its geometry is
    checked first (shape, and the spacing, origin and direction of nnU-Net's ``.pkl``: ``check_geometry``)."""
    probabilities = load_probabilities(path)
    if reference is not None:
        probabilities = check_geometry(probabilities, reference, Path(path), read_properties(Path(path)))
    return probabilities, {target.key: foreground_probability(probabilities, target) for target in targets}


def _case_counts(job: tuple) -> tuple[str, dict[str, np.ndarray] | str]:
    """Counts of one case for every target, or the reason it failed."""
    case, npz, reference_file, targets, ignore_label, settings, thresholds, min_sizes = job
    try:
        reference = io.read_label_image(reference_file)
        labels = io.as_integer_labels(reference)
        _, maps = read_target_probabilities(npz, targets, reference)
        valid = None if ignore_label is None else labels != ignore_label
        out = {}
        for target in targets:
            probability = maps[target.key]
            if probability.shape != labels.shape:
                raise CaseError(
                    f"probabilities of shape {probability.shape} vs reference {labels.shape} ({reference_file})"
                )
            truth = labels > 0 if target.reference_values is None else np.isin(labels, target.reference_values)
            if valid is not None:  # nnU-Net's ignore label: those voxels count for nothing
                truth &= valid
                probability = np.where(valid, probability, 0)
            out[target.key] = grid_counts(probability, truth, reference.spacing, settings, thresholds, min_sizes)
        return case, out
    except (CaseError, OSError, ValueError) as error:
        return case, str(error)


# --------------------------------------------------------------------------- choose
def _check_grid(thresholds: Sequence[float], min_sizes: Sequence[int]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    thresholds = tuple(sorted({float(t) for t in thresholds}))
    min_sizes = tuple(sorted({int(m) for m in min_sizes}))
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must be in (0, 1], got {list(thresholds)}")
    if not min_sizes or min(min_sizes) < 0:
        raise ValueError(f"minimum sizes must be >= 0 voxels, got {list(min_sizes)}")
    return thresholds, min_sizes


def choose_operating_point(
    probabilities: str | os.PathLike,
    gt_dir: str | os.PathLike | None = None,
    criterion: str = "dice",
    max_fp_per_case: float | None = None,
    thresholds: Sequence[float] | None = None,
    min_sizes: Sequence[int] | None = None,
    settings: EvaluationSettings | None = None,
    preset: str = "default",
    label: str | None = None,
    channel: int | None = None,
    dataset_json: str | None = None,
    file_ending: str | None = None,
    nested_folds: int = DEFAULT_NESTED_FOLDS,
    seed: int = 0,
    num_processes: int = 1,
    progress: bool = False,
) -> dict:
    """Choose (threshold, minimum size) per label or region; see the module docstring. Returns the JSON record."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if criterion == "sensitivity":
        if max_fp_per_case is None or max_fp_per_case < 0:
            raise ValueError("the sensitivity criterion needs --max-fp-per-case N (N >= 0)")
    elif max_fp_per_case is not None:
        raise ValueError("--max-fp-per-case belongs to --criterion sensitivity")
    if nested_folds < 2:
        raise ValueError(f"--nested-folds must be >= 2, got {nested_folds}")
    # Joshi's 18-connectivity is the dice criterion's default in 3D; a 2D dataset gets its plane restriction
    joshi_connectivity = criterion == "dice" and (settings is None or settings.connectivity == DICE_CONNECTIVITY)
    settings = settings or EvaluationSettings(connectivity=DICE_CONNECTIVITY if criterion == "dice" else "full")
    if thresholds is None:
        thresholds = DICE_THRESHOLDS if criterion == "dice" else LESION_THRESHOLDS
    if min_sizes is None:
        min_sizes = (0,) if criterion == "dice" else LESION_MIN_SIZES
    thresholds, min_sizes = _check_grid(thresholds, min_sizes)

    inputs = plan_inputs(probabilities, gt_dir, dataset_json, file_ending)
    targets = probability_targets(inputs.dataset, label, channel)
    ignore = (inputs.dataset or {}).get("labels", {}).get("ignore")
    if joshi_connectivity and inputs.references:
        first_reference = inputs.references[min(inputs.references)]
        ndim = io.read_label_image(first_reference).array.ndim
        settings = settings.replace(connectivity=REMOVAL_CONNECTIVITY.get(ndim, "full"))
    jobs = [
        (case, inputs.probabilities[case], inputs.references[case], targets, ignore, settings, thresholds, min_sizes)
        for case in sorted(inputs.references)
    ]
    if not jobs:
        raise FileNotFoundError(
            f"no case has both probabilities in {inputs.source} and a reference in {inputs.gt_dir}"
            + "".join(f"\n  {f['case']}: {f['reason']}" for f in inputs.failures[:10])
        )
    results = run_parallel(_case_counts, [(job,) for job in jobs], num_processes, progress)
    failures = list(inputs.failures)
    cases, per_target = [], {t.key: [] for t in targets}
    for case, result in results:
        if isinstance(result, str):
            failures.append({"fold": inputs.fold_of.get(case), "case": case, "reason": result})
            continue
        cases.append(case)
        for key, counts in result.items():
            per_target[key].append(counts)
    if not cases:
        raise CaseError(
            f"no case could be used ({len(failures)} failed): "
            + "; ".join(f"{f['case']}: {f['reason']}" for f in failures[:3])
        )

    if inputs.layout == "cross-validation":
        fold_of = {case: inputs.fold_of[case] for case in cases}
        fold_source = f"the fold_*/validation folders of {inputs.source}"
    else:
        k = min(nested_folds, len(cases))
        fold_of = assign_folds(cases, k, seed)
        fold_source = f"{k} folds of the cases drawn with seed {seed} (a folder has no folds of its own)"
    fold_names = sorted(set(fold_of.values()))
    folds = [np.array([i for i, case in enumerate(cases) if fold_of[case] == f]) for f in fold_names]

    record_targets = {}
    for target in targets:
        counts = np.stack(per_target[target.key])
        record_targets[target.key] = _target_record(
            target, counts, folds, fold_names, criterion, thresholds, min_sizes, max_fp_per_case, settings
        )
    record = {
        "format": FORMAT,
        "criterion": criterion,
        "max_fp_per_case": max_fp_per_case,
        "definitions": DEFINITIONS,
        "selection": "the best value of the criterion; ties (to 12 digits) go to fewer false positives per case "
        "(lesion criteria), then to the lowest threshold, then to the smallest minimum size",
        "thresholds": list(thresholds),
        "min_sizes_voxels": list(min_sizes),
        "connectivity": settings.connectivity,
        "preset": preset,
        "settings": settings.to_dict(),
        "probability_mapping": {
            "label": None if label is None else str(label),
            "channel": channel,
            "dataset_labels": None if inputs.dataset is None else inputs.dataset.get("labels"),
            "regions_class_order": None if inputs.dataset is None else inputs.dataset.get("regions_class_order"),
        },
        "targets": record_targets,
        "n_cases": len(cases),
        "cases": cases,
        "folds": {str(f): [case for case in cases if fold_of[case] == f] for f in fold_names},
        "fold_source": fold_source,
        "n_failed": len(failures),
        "failures": failures,
        "unused_references": inputs.unused_references,
        "inputs": {
            "probabilities": str(inputs.source.resolve()),
            "layout": inputs.layout,
            "gt": str(inputs.gt_dir.resolve()),
            "dataset_json": None if inputs.dataset_json is None else str(Path(inputs.dataset_json).resolve()),
            "file_ending": inputs.file_ending,
        },
    }
    if len(targets) == 1:  # the keys of the single-threshold version of this command, for scripts that read them
        only = next(iter(record_targets.values()))
        record["best_threshold"] = only["threshold"]
        record["min_voxels"] = only["min_size_voxels"]
    return record


def _target_record(
    target: ProbabilityTarget,
    counts: np.ndarray,
    folds: list[np.ndarray],
    fold_names: list,
    criterion: str,
    thresholds: tuple[float, ...],
    min_sizes: tuple[int, ...],
    max_fp_per_case: float | None,
    settings: EvaluationSettings,
) -> dict:
    grid = measure(counts, settings.f1_both_empty)
    choice = select(grid, criterion, max_fp_per_case)
    if choice is None:
        raise CaseError(
            f"{criterion} is undefined at every grid point for {target.name} on these {counts.shape[0]} cases "
            "(e.g. no reference lesion for a sensitivity)"
        )
    ti, mi = choice.threshold_index, choice.size_index
    record = {
        "name": target.name,
        "probability": target.describe(),
        "channel": target.channel,
        "reference_labels": None if target.reference_values is None else list(target.reference_values),
        "output_label": target.output_label,
        "threshold": float(thresholds[ti]),
        "min_size_voxels": int(min_sizes[mi]),
        "optimistic": _point(grid, (ti, mi)),
    }
    if choice.constraint_met is not None:
        record["constraint_met"] = choice.constraint_met
    record["nested"] = (
        nested_estimate(
            counts, folds, fold_names, criterion, thresholds, min_sizes, max_fp_per_case, settings.f1_both_empty
        )
        if len(folds) > 1
        else None
    )
    record["grid"] = {
        name: np.asarray(grid[name]).tolist()
        for name in ("dice", "lesion_f1", "sensitivity", "precision", "fp_per_case")
    }
    return record


# --------------------------------------------------------------------------- apply
def segmentation_from_masks(
    probabilities: np.ndarray, targets: Sequence[ProbabilityTarget], masks: dict[str, np.ndarray]
) -> np.ndarray:
    """A label map from the thresholded masks, as nnU-Net writes its segmentation: regions in
    ``regions_class_order`` (a later region overwrites an earlier one); a softmax's "any foreground" mask gets
    the most probable foreground label of each voxel; a single label its own value."""
    shape = probabilities.shape[1:]
    if len(targets) == 1 and targets[0].output_label is None:
        target = targets[0]
        channel_labels = np.asarray(target.channel_labels or range(probabilities.shape[0]))
        most_probable = channel_labels[1 + np.argmax(probabilities[1:], axis=0)]
        segmentation = np.where(masks[target.key], most_probable, 0)
    else:
        segmentation = np.zeros(shape, dtype=np.int64)
        for target in sorted(targets, key=lambda t: t.channel):
            segmentation[masks[target.key]] = target.output_label
    top = int(segmentation.max()) if segmentation.size else 0
    return segmentation.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)


@dataclass
class OperatingPoint:
    threshold: float
    min_size_voxels: int


def apply_operating_point(
    probability_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    targets: Sequence[ProbabilityTarget],
    points: dict[str, OperatingPoint],
    connectivity: int | str | None,
    template_dir: str | os.PathLike | None = None,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> tuple[list[Path], int]:
    """Label maps from nnU-Net's ``.npz`` probabilities at each target's operating point; the geometry is
    copied from the segmentation nnU-Net wrote beside them. Returns (files written, cases failed)."""
    probability_dir = Path(probability_dir)
    template_dir = Path(template_dir or probability_dir)
    missing = [t.name for t in targets if t.output_label is None and (len(targets) > 1 or t.kind == "sigmoid")]
    if missing:
        raise ValueError(
            f"dataset.json has no regions_class_order: the label to write for {', '.join(missing)} is unknown"
        )
    files = list_probability_files(probability_dir)
    outputs = {case: Path(output_dir) / f"{case}{file_ending}" for case in files}
    io.prepare_output_dir(output_dir, [p.name for p in outputs.values()], overwrite)
    written = []

    def job(case: str, path: Path):
        def run():
            template = template_dir / f"{case}{file_ending}"
            if not template.is_file():
                raise CaseError(f"no image to copy the geometry from: {template}")
            probabilities, maps = read_target_probabilities(path, targets)
            masks = {}
            for target in targets:
                point = points[target.key]
                mask = maps[target.key] >= point.threshold
                masks[target.key] = remove_small_components(
                    mask,
                    REMOVAL_CONNECTIVITY.get(mask.ndim, "full") if connectivity is None else connectivity,
                    (1.0,) * mask.ndim,
                    min_voxels=point.min_size_voxels,
                )
            segmentation = segmentation_from_masks(probabilities, targets, masks)
            template_shape = io.read_label_image(template).array.shape
            if template_shape != segmentation.shape:
                raise CaseError(f"probabilities of shape {segmentation.shape} vs {template} of shape {template_shape}")
            write_labels_like(segmentation, template, outputs[case], segmentation.dtype)
            written.append(outputs[case])

        return run

    _, failed = run_cases((case, job(case, path)) for case, path in files.items())
    return written, failed


def points_from_record(record: dict, targets: Sequence[ProbabilityTarget], source: str) -> tuple[dict, int]:
    """({target key: OperatingPoint}, connectivity) from a choose-threshold JSON (this version or the
    single-threshold one, which holds ``best_threshold``)."""
    if "targets" not in record:
        if "best_threshold" not in record:
            raise ValueError(f"{source} is not an output of choose-threshold (no 'targets', no 'best_threshold')")
        point = OperatingPoint(float(record["best_threshold"]), int(record.get("min_voxels") or 0))
        return {t.key: point for t in targets}, _recorded_connectivity(record.get("connectivity", DICE_CONNECTIVITY))
    chosen = record["targets"]
    absent = [t.key for t in targets if t.key not in chosen]
    if absent:
        raise ValueError(
            f"{source} holds operating points for {', '.join(chosen)}, not for {', '.join(absent)} "
            "(the labels or regions these probabilities have)"
        )
    for target in targets:
        if chosen[target.key].get("channel") != target.channel:
            raise ValueError(
                f"{source} was chosen on channel {chosen[target.key].get('channel')} for {target.name}; "
                f"these probabilities have it in channel {target.channel}"
            )
    points = {
        t.key: OperatingPoint(float(chosen[t.key]["threshold"]), int(chosen[t.key]["min_size_voxels"])) for t in targets
    }
    return points, _recorded_connectivity(record["connectivity"])


def _recorded_connectivity(value) -> int | str:
    """A connectivity as the JSON holds it: 'full' / 'face' (EvaluationSettings' names) or a number."""
    return value if value in NAMED_CONNECTIVITY else int(value)


# --------------------------------------------------------------------------- commands


def format_record(record: dict) -> str:
    """The choice in a few lines: per label or region, the grid of the criterion, the point, both estimates."""
    criterion = record["criterion"]
    name = {"dice": "aggregate Dice", "lesion_f1": "lesion F1", "sensitivity": "lesion sensitivity"}[criterion]
    lines = []
    for key, target in record["targets"].items():
        lines.append(f"{target['name']} ({key}; {target['probability']}):")
        values = np.asarray(target["grid"][criterion], dtype=object)
        for ti, threshold in enumerate(record["thresholds"]):
            cells = "  ".join(
                f"m={m}: {format_number(values[ti][mi])}" for mi, m in enumerate(record["min_sizes_voxels"])
            )
            lines.append(f"  threshold {threshold:g}: {name} {cells}")
        optimistic = target["optimistic"]
        extra = f", {format_number(optimistic['fp_per_case'], 2)} FP per case" if criterion != "dice" else ""
        limit = f" (at most {record['max_fp_per_case']:g} FP per case)" if criterion == "sensitivity" else ""
        lines.append(
            f"  chosen{limit}: threshold {target['threshold']:g}, min size {target['min_size_voxels']} voxels; "
            f"{name} {format_number(optimistic[criterion])}{extra} when chosen and measured on all {record['n_cases']} cases "
            "(optimistic)"
        )
        if target.get("constraint_met") is False:
            lines.append(
                f"  no grid point has at most {record['max_fp_per_case']:g} FP per case: the fewest were taken"
            )
        nested = target["nested"]
        if nested is None:
            lines.append("  nested estimate: none (one fold)")
        else:
            pooled = nested["pooled"] or {}
            extra = f", {format_number(pooled.get('fp_per_case'), 2)} FP per case" if criterion != "dice" else ""
            lines.append(
                f"  nested estimate (chosen on the other folds, measured on each fold): {name} "
                f"{format_number(pooled.get(criterion))}{extra} pooled, {format_number(nested['mean_over_folds'])} mean over folds"
            )
            for fold in nested["folds"]:
                if "measured" in fold:
                    lines.append(
                        f"    fold {fold['fold']}: threshold {fold['threshold']:g}, min size {fold['min_size_voxels']} "
                        f"-> {format_number(fold['measured'][criterion])} on {fold['n_cases']} cases"
                    )
                else:
                    lines.append(f"    fold {fold['fold']}: {fold['reason']}")
    lines.append(f"{record['n_cases']} cases ({record['fold_source']}); {record['n_failed']} failed")
    return "\n".join(lines)
