"""The grid of operating points and the counts of one case on it.

An operating point is a probability threshold t and a minimum component size m (voxels). This module holds
the grid's defaults (Joshi 2026 §4.5 for the Dice criterion, ours for the lesion criteria), its check, the
layout of the counts kept per case, threshold and size (:data:`N_COUNTS` of them, last axis of a count array)
and :func:`grid_counts`, which makes them with one labelling per threshold: every minimum size is a
selection of that labelling's components, not a new labelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnunet_lesionloss.components import check_connectivity, label_components
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.matching import OverlapTable, lesion_hits
from nnunet_lesionloss.evaluation.metrics import foreground_crop, remove_small_components
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

__all__ = [
    "DETECTED",
    "DICE_CONNECTIVITY",
    "DICE_THRESHOLDS",
    "INTERSECTION",
    "LESION_MIN_SIZES",
    "LESION_THRESHOLDS",
    "N_COUNTS",
    "PREDICTED_LESIONS",
    "PREDICTED_VOXELS",
    "REFERENCE_LESIONS",
    "REFERENCE_VOXELS",
    "TRUE_PREDICTED",
    "check_grid",
    "grid_counts",
]

#: Joshi 2026 §4.5: the threshold is chosen in {0.3, ..., 0.7} by aggregate validation Dice
DICE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
#: Joshi 2026 §4.5 removes components below 5 voxels with 18-connectivity
DICE_CONNECTIVITY = 18
#: lesion criteria (our choice): a wider threshold range, since a low threshold is how sensitivity is bought
LESION_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LESION_MIN_SIZES = (0, 3, 5, 10, 20, 50)

# the counts kept per case, threshold and minimum size (last axis of a count array)
REFERENCE_LESIONS, DETECTED, PREDICTED_LESIONS, TRUE_PREDICTED, INTERSECTION, PREDICTED_VOXELS, REFERENCE_VOXELS = (
    range(7)
)
N_COUNTS = 7


def check_grid(thresholds: Sequence[float], min_sizes: Sequence[int]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The grid sorted and without duplicates; thresholds must lie in (0, 1], minimum sizes be >= 0 voxels."""
    thresholds = tuple(sorted({float(t) for t in thresholds}))
    min_sizes = tuple(sorted({int(m) for m in min_sizes}))
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must be in (0, 1], got {list(thresholds)}")
    if not min_sizes or min(min_sizes) < 0:
        raise ValueError(f"minimum sizes must be >= 0 voxels, got {list(min_sizes)}")
    return thresholds, min_sizes


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
    removal_connectivity: int | str | None = None,
) -> np.ndarray:
    """Lesion and voxel counts of one case at every (threshold, minimum size): int64 (T, M, 7).

    The prediction at (t, m) is {probability >= t} without its components of fewer than m voxels at
    ``removal_connectivity`` (None: the settings' connectivity); it is then evaluated as ``evaluate_binary``
    does under ``settings``: both masks lose the components the settings remove (``min_lesion_voxels``,
    ``min_lesion_volume_mm3``), lesions are ``settings.connectivity`` components and are hit by
    :func:`lesion_hits`. With one connectivity for both, every minimum size is a selection of one labelling's
    components; with another removal connectivity (the Dice criterion removes at Joshi's 18, the evaluation
    counts at its own) each minimum size above 1 labels what the removal keeps again.
    """
    connectivity = settings.connectivity
    removal = connectivity if removal_connectivity is None else removal_connectivity
    one_labelling = check_connectivity(removal, probability.ndim) == check_connectivity(connectivity, probability.ndim)
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

    def evaluated_table(predicted: np.ndarray) -> tuple[OverlapTable, np.ndarray]:
        """The overlap table of a predicted mask (lesions at the evaluation's connectivity) and which of its
        components the evaluation itself keeps (``min_lesion_voxels``, ``min_lesion_volume_mm3``)."""
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
        evaluated = (sizes >= max(settings.min_lesion_voxels, 1)) & (
            sizes * float(np.prod(spacing)) > settings.min_lesion_volume_mm3
        )
        evaluated[0] = False
        return table, evaluated

    counts = np.zeros((len(thresholds), len(min_sizes), N_COUNTS), dtype=np.int64)
    for ti, threshold in enumerate(thresholds):
        predicted = probability >= threshold
        table, evaluated = evaluated_table(predicted)
        for mi, min_size in enumerate(min_sizes):
            if one_labelling or min_size <= 1:  # a selection of this labelling's components
                kept = _keep_predicted(table, evaluated & (table.pred_sizes >= min_size))
            else:
                cleaned = remove_small_components(predicted, removal, spacing, min_voxels=min_size)
                kept = _keep_predicted(*evaluated_table(cleaned))
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
