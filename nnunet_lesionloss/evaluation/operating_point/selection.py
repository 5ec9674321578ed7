"""The choice over the grid, as arithmetic over the counts of :mod:`.grid`: every criterion over the cases
(:func:`measure`), the best grid point for one criterion (:func:`select`), and the nested cross-validation
estimate of that choice (:func:`nested_estimate`: chosen on all folds but one, measured on the one left out).

The lesion F1 of a case is the evaluation's one rule, :func:`nnunet_lesionloss.evaluation.matching.lesion_f1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnunet_lesionloss.evaluation.matching import lesion_f1
from nnunet_lesionloss.evaluation.operating_point.grid import (
    DETECTED,
    INTERSECTION,
    PREDICTED_LESIONS,
    PREDICTED_VOXELS,
    REFERENCE_LESIONS,
    REFERENCE_VOXELS,
    TRUE_PREDICTED,
)

__all__ = [
    "CRITERIA",
    "DEFINITIONS",
    "Choice",
    "measure",
    "metrics_at",
    "nested_estimate",
    "per_case_lesion_f1",
    "select",
]

CRITERIA = ("dice", "lesion_f1", "sensitivity")

DEFINITIONS = {
    "dice": "aggregate Dice 2·Σ|P∩G| / Σ(|P|+|G|) over the cases",
    "lesion_f1": "mean over cases of the per-case lesion F1 (the evaluation's lesion_f1; cases where it is "
    "undefined are left out, n_lesion_f1_cases says how many count)",
    "sensitivity": "detected reference lesions / reference lesions, pooled over the cases",
    "precision": "true predicted lesions / predicted lesions, pooled over the cases",
    "fp_per_case": "false-positive lesions (predicted lesions the detection rule does not count as true) / cases",
}


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


def metrics_at(metrics: dict[str, np.ndarray], index: tuple = ()) -> dict:
    """The metrics at one grid point as JSON-ready scalars (None: undefined)."""
    out = {}
    for name, values in metrics.items():
        value = np.asarray(values)[index].item()
        out[name] = None if isinstance(value, float) and not np.isfinite(value) else value
    return out


@dataclass
class Choice:
    """The chosen grid point: the indices of its threshold and minimum size."""

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
            chosen_value=metrics_at(measure(counts[training][:, ti, mi], f1_both_empty))[criterion],
            measured=metrics_at(measure(counts[held_out][:, ti, mi], f1_both_empty)),
        )
        if choice.constraint_met is not None:
            entry["constraint_met_on_other_folds"] = choice.constraint_met
        per_fold.append(entry)
    used = np.flatnonzero(chosen[:, 0] >= 0)
    pooled = None
    if len(used):
        pooled = metrics_at(measure(counts[used, chosen[used, 0], chosen[used, 1]], f1_both_empty))
    fold_values = [f["measured"][criterion] for f in per_fold if "measured" in f]
    fold_values = [v for v in fold_values if v is not None]
    return {
        "pooled": pooled,
        "mean_over_folds": float(np.mean(fold_values)) if fold_values else None,
        "n_folds_with_a_value": len(fold_values),
        "folds": per_fold,
    }
