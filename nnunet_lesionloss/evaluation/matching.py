"""How reference and predicted lesions are paired: the overlap table of one case (sizes of every lesion and
the intersection of every overlapping pair), the lesion rule (when a lesion counts as detected), one-to-one
instance matching (Hungarian or greedy, at a DSC or IoU threshold) and the lesion F1 of the counts. The
evaluation, the operating point and the training-time patch counts all count lesions through here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from nnunet_lesionloss.evaluation.settings import EvaluationSettings, MatchingSpec

__all__ = ["OverlapTable", "apply_lesion_rule", "lesion_f1", "lesion_hits", "match_instances"]


@dataclass
class OverlapTable:
    """Sizes of every lesion and the intersection of every overlapping (reference, prediction) pair."""

    ref_sizes: np.ndarray  # voxels, index 0 unused
    pred_sizes: np.ndarray
    pair_ref: np.ndarray  # 1-based ids
    pair_pred: np.ndarray
    pair_intersection: np.ndarray

    @classmethod
    def build(cls, ref_labels: np.ndarray, n_ref: int, pred_labels: np.ndarray, n_pred: int) -> OverlapTable:
        ref_flat = ref_labels.ravel()
        pred_flat = pred_labels.ravel()
        ref_sizes = np.bincount(ref_flat, minlength=n_ref + 1)
        pred_sizes = np.bincount(pred_flat, minlength=n_pred + 1)
        both = (ref_flat > 0) & (pred_flat > 0)
        encoded = ref_flat[both].astype(np.int64) * (n_pred + 1) + pred_flat[both]
        values, counts = np.unique(encoded, return_counts=True)
        return cls(
            ref_sizes=ref_sizes,
            pred_sizes=pred_sizes,
            pair_ref=(values // (n_pred + 1)).astype(np.int64),
            pair_pred=(values % (n_pred + 1)).astype(np.int64),
            pair_intersection=counts.astype(np.int64),
        )

    @property
    def n_ref(self) -> int:
        return len(self.ref_sizes) - 1

    @property
    def n_pred(self) -> int:
        return len(self.pred_sizes) - 1

    def pair_dsc(self) -> np.ndarray:
        return 2.0 * self.pair_intersection / (self.ref_sizes[self.pair_ref] + self.pred_sizes[self.pair_pred])

    def pair_iou(self) -> np.ndarray:
        union = self.ref_sizes[self.pair_ref] + self.pred_sizes[self.pair_pred] - self.pair_intersection
        return self.pair_intersection / union


def apply_lesion_rule(
    table: OverlapTable, rule: str, threshold: float = 0.0, beta: float = 0.65, algorithm: str = "hungarian"
) -> tuple[np.ndarray, np.ndarray]:
    """Which reference lesions are detected and which predicted lesions are true (boolean arrays, 1-based).

    The one place that decides detection: the evaluation, the training-time patch counts and every
    per-lesion table follow it. Rules (see docs/metrics.md):
    - ``one_to_one_dsc`` / ``one_to_one_iou`` (the default, DSC >= 0.1): a lesion is hit when the
      one-to-one matching of :func:`match_instances` (pairs eligible at DSC or IoU >= ``threshold``,
      ``algorithm`` hungarian or greedy) pairs it, as BraTS 2025 (DSC > 0) and PI-CAI (Saha et al. 2024; IoU >= 0.1)
      match: a predicted component that covers several reference lesions detects one of them;
    - ``any_overlap`` (CATMIL §3.4; Kofler et al. 2023 (blob loss) §2.5): a lesion counts as hit when
      it shares at least one voxel with any lesion of the other mask;
    - ``iou`` (Shifts): hit when the IoU between the lesion and the union of the other mask's lesions
      that touch it is >= ``threshold``;
    - ``overlap_fraction`` (Anima/MSSEG, approximation): hit when the touching lesions of the other mask
      cover >= ``threshold`` of it and have at most ``beta`` of their own volume outside the first mask.
    """
    ref_hit = np.zeros(table.n_ref + 1, dtype=bool)
    pred_hit = np.zeros(table.n_pred + 1, dtype=bool)
    if rule in ("one_to_one_dsc", "one_to_one_iou"):
        spec = MatchingSpec(rule[len("one_to_one_") :], threshold)
        matched_ref, matched_pred, _ = match_instances(table, spec, algorithm)
        ref_hit[matched_ref] = True
        pred_hit[matched_pred] = True
        return ref_hit, pred_hit
    if len(table.pair_ref) == 0:
        return ref_hit, pred_hit
    if rule == "any_overlap":
        ref_hit[table.pair_ref] = True
        pred_hit[table.pair_pred] = True
        return ref_hit, pred_hit

    ref_sizes = table.ref_sizes.astype(np.float64)
    pred_sizes = table.pred_sizes.astype(np.float64)
    inter = table.pair_intersection.astype(np.float64)
    # per lesion: voxels covered by the other mask, and total size of the touching lesions
    ref_covered = np.bincount(table.pair_ref, weights=inter, minlength=table.n_ref + 1)
    pred_covered = np.bincount(table.pair_pred, weights=inter, minlength=table.n_pred + 1)
    ref_touching_size = np.bincount(table.pair_ref, weights=pred_sizes[table.pair_pred], minlength=table.n_ref + 1)
    pred_touching_size = np.bincount(table.pair_pred, weights=ref_sizes[table.pair_ref], minlength=table.n_pred + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "iou":
            ref_score = ref_covered / (ref_sizes + ref_touching_size - ref_covered)
            pred_score = pred_covered / (pred_sizes + pred_touching_size - pred_covered)
            ref_hit = np.nan_to_num(ref_score) >= threshold
            pred_hit = np.nan_to_num(pred_score) >= threshold
        elif rule == "overlap_fraction":
            # voxels of the touching lesions that lie outside the whole other mask
            pred_outside = pred_sizes - pred_covered
            ref_outside = ref_sizes - ref_covered
            ref_touching_outside = np.bincount(
                table.pair_ref, weights=pred_outside[table.pair_pred], minlength=table.n_ref + 1
            )
            pred_touching_outside = np.bincount(
                table.pair_pred, weights=ref_outside[table.pair_ref], minlength=table.n_pred + 1
            )
            ref_hit = (np.nan_to_num(ref_covered / ref_sizes) >= threshold) & (
                np.nan_to_num(ref_touching_outside / ref_touching_size, nan=1.0) <= beta
            )
            pred_hit = (np.nan_to_num(pred_covered / pred_sizes) >= threshold) & (
                np.nan_to_num(pred_touching_outside / pred_touching_size, nan=1.0) <= beta
            )
        else:
            raise ValueError(
                f"unknown lesion rule {rule!r}; use one_to_one_dsc, one_to_one_iou, any_overlap, iou or overlap_fraction"
            )
    # a lesion that no lesion of the other mask touches is never detected, whatever the threshold
    ref_hit &= ref_covered > 0
    pred_hit &= pred_covered > 0
    ref_hit[0] = False
    pred_hit[0] = False
    return ref_hit, pred_hit


def lesion_hits(table: OverlapTable, settings: EvaluationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Hit reference and predicted lesions as the evaluation counts them under ``settings``: every lesion
    count of the package (``evaluate``, ``choose-threshold``, the training-time patch counts) goes through
    here, so they follow the preset."""
    return apply_lesion_rule(
        table,
        settings.lesion_rule,
        settings.lesion_rule_threshold,
        settings.lesion_rule_beta,
        settings.matching_algorithm,
    )


def match_instances(
    table: OverlapTable, spec: MatchingSpec, algorithm: str = "hungarian"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of reference and predicted lesions; returns (ref ids, pred ids, score).

    A pair is eligible when its score (DSC or IoU) is >= the threshold (panoptica's non-strict test).
    ``hungarian`` maximises the summed score (panoptica ``MaxBipartiteMatching``, Kundu et al. 2026);
    ``greedy`` takes pairs by decreasing score (panoptica ``NaiveThresholdMatching``).
    """
    scores = table.pair_dsc() if spec.metric == "dsc" else table.pair_iou()
    eligible = scores >= spec.threshold
    refs, preds, scores = table.pair_ref[eligible], table.pair_pred[eligible], scores[eligible]
    if len(refs) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    if algorithm == "greedy":
        order = np.lexsort((preds, refs, -scores))
        used_ref, used_pred, keep = set(), set(), []
        for k in order:  # loop over eligible pairs only (few), not over voxels
            if refs[k] in used_ref or preds[k] in used_pred:
                continue
            used_ref.add(refs[k])
            used_pred.add(preds[k])
            keep.append(k)
        keep = np.asarray(keep, dtype=np.int64)
        return refs[keep], preds[keep], scores[keep]
    if algorithm != "hungarian":
        raise ValueError(f"unknown matching algorithm {algorithm!r}; use hungarian or greedy")
    # only lesions with an eligible pair enter the (small, dense) cost matrix
    ref_ids, ref_idx = np.unique(refs, return_inverse=True)
    pred_ids, pred_idx = np.unique(preds, return_inverse=True)
    not_eligible_cost = 1.0 + 1e-6  # as panoptica: worse than any eligible pair
    cost = np.full((len(ref_ids), len(pred_ids)), not_eligible_cost)
    cost[ref_idx, pred_idx] = 1.0 - scores
    rows, cols = linear_sum_assignment(cost)
    valid = cost[rows, cols] < 1.0
    rows, cols = rows[valid], cols[valid]
    return ref_ids[rows], pred_ids[cols], 1.0 - cost[rows, cols]


def lesion_f1(detected_reference, true_predicted, n_reference, n_predicted, both_empty: float | None = None):
    """Lesion F1 = 2·P·R / (P + R) with P = true predicted / predicted and R = detected / reference lesions
    (Luu et al. 2026 (CATMIL) eq. 3.5 without its ε): the one F1 rule of the package (``evaluate``,
    ``choose-threshold`` and the training-time patch counts use it).

    Edges: 0 when one side has lesions and the other none, and when P + R = 0; ``both_empty`` when
    neither side has a lesion (None: undefined; ISLES 2022 counts 1). Works elementwise on arrays
    (undefined -> NaN, float64 array out) and on plain numbers (undefined -> None, float out).
    """
    scalar = all(np.ndim(v) == 0 for v in (detected_reference, true_predicted, n_reference, n_predicted))
    n_reference = np.asarray(n_reference, dtype=np.float64)
    n_predicted = np.asarray(n_predicted, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.asarray(true_predicted, dtype=np.float64) / n_predicted
        recall = np.asarray(detected_reference, dtype=np.float64) / n_reference
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where((n_reference == 0) | (n_predicted == 0), 0.0, f1)
    f1 = np.where((n_reference == 0) & (n_predicted == 0), np.nan if both_empty is None else float(both_empty), f1)
    if scalar:
        value = float(f1)
        return None if math.isnan(value) else value
    return f1
