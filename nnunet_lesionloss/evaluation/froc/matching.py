"""Matching of the FROC analysis, per case, as picai_eval does (Saha et al. 2024, DIAGNijmegen/picai_eval 1.4):
what a case's candidates and reference lesions contribute to the curves (:class:`FrocCase`).

Reference lesions are the connected components of the reference. A candidate and a lesion may match when
their IoU (or DSC) is >= ``min_overlap`` (``any``: when they share a voxel); one-to-one matching maximises
the number of matches, then the summed overlap (``linear_sum_assignment`` on overlap + 1, picai_eval's rule,
on the same candidate × lesion matrix in the same order, so that ties resolve as there). The overlaps come
from one overlap table (:class:`~nnunet_lesionloss.evaluation.matching.OverlapTable`) instead of
picai_eval's candidate × lesion loop over full-volume masks. A matched lesion carries its candidate's
confidence, a missed one 0; unmatched candidates without sufficient overlap are false positives; unmatched
candidates *with* sufficient overlap (a second candidate on a lesion) are ignored by default, picai_eval's
``allow_unmatched_candidates_with_minimal_overlap=True``, or false positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.froc.candidates import Candidates, extract_candidates, lowest_candidate_probability
from nnunet_lesionloss.evaluation.froc.settings import FrocSettings
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.matching import OverlapTable
from nnunet_lesionloss.evaluation.metrics import foreground_crop, remove_small_components

#: picai_eval's guard in calculate_iou / calculate_dsc: (overlap + ε) / (union + ε). Used here only for
#: the weights that order competing matches (so ties break as in picai_eval), never to decide a match
PICAI_EPSILON = 1e-8


@dataclass
class FrocCase:
    """One case and label: what its reference lesions and candidates contribute to the curves."""

    case: str
    lesion_confidence: np.ndarray  # per reference lesion: the matched candidate's confidence, 0 if missed
    lesion_voxels: np.ndarray  # per reference lesion
    false_positive_confidence: np.ndarray  # per candidate counted as a false positive
    n_candidates: int
    voxel_volume_mm3: float = 1.0
    fold: int | None = None

    @property
    def n_lesions(self) -> int:
        return len(self.lesion_confidence)

    @property
    def n_ignored(self) -> int:
        """Candidates neither matched nor false positive (a second candidate on a lesion)."""
        return (
            self.n_candidates - int(np.count_nonzero(self.lesion_confidence > 0)) - len(self.false_positive_confidence)
        )

    def to_json(self) -> dict:
        return {
            "fold": self.fold,
            "lesion_confidence": [float(v) for v in self.lesion_confidence],
            "lesion_voxels": [int(v) for v in self.lesion_voxels],
            "false_positive_confidence": [float(v) for v in self.false_positive_confidence],
            "n_candidates": self.n_candidates,
            "voxel_volume_mm3": self.voxel_volume_mm3,
        }

    @classmethod
    def from_json(cls, case: str, data: dict) -> FrocCase:
        return cls(
            case=case,
            lesion_confidence=np.asarray(data["lesion_confidence"], dtype=np.float64),
            lesion_voxels=np.asarray(data["lesion_voxels"], dtype=np.int64),
            false_positive_confidence=np.asarray(data["false_positive_confidence"], dtype=np.float64),
            n_candidates=int(data["n_candidates"]),
            voxel_volume_mm3=float(data.get("voxel_volume_mm3", 1.0)),
            fold=data.get("fold"),
        )


def match_candidates(
    table: OverlapTable,
    confidences: np.ndarray,
    matching: str = "iou",
    min_overlap: float = 0.1,
    allow_unmatched_candidates_with_minimal_overlap: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(confidence per reference lesion (0 = missed), confidences of the false-positive candidates).

    ``table`` holds the reference lesions (ref) and candidates (pred) of one case. Eligible pairs:
    IoU or DSC >= ``min_overlap`` computed exactly, or (``any``) a non-empty intersection. Among them a
    one-to-one matching with the most pairs, then the largest summed overlap (picai_eval: overlap + 1,
    Hungarian, maximised); the weights are picai_eval's (overlap + 1e-8) / (union + 1e-8), on the full
    lesion × candidate matrix in id order, so that equal overlaps resolve as in picai_eval.
    """
    n_ref, n_candidates = table.n_ref, table.n_pred
    confidences = np.asarray(confidences, dtype=np.float64)
    lesion_confidence = np.zeros(n_ref)
    if n_ref == 0 or n_candidates == 0:
        return lesion_confidence, confidences.copy()
    inter = table.pair_intersection
    ref_size, candidate_size = table.ref_sizes[table.pair_ref], table.pred_sizes[table.pair_pred]
    if matching == "dsc":
        exact = 2.0 * inter / (ref_size + candidate_size)
        weight = (inter * 2.0 + PICAI_EPSILON) / ((candidate_size + ref_size) + PICAI_EPSILON)
    else:
        union = candidate_size + ref_size - inter
        exact = inter / union
        weight = (inter + PICAI_EPSILON) / (union + PICAI_EPSILON)
    eligible = inter > 0 if matching == "any" else exact >= min_overlap
    scores = np.zeros((n_ref, n_candidates))
    scores[table.pair_ref[eligible] - 1, table.pair_pred[eligible] - 1] = weight[eligible] + 1.0
    rows, columns = linear_sum_assignment(scores, maximize=True)
    kept = scores[rows, columns] > 0
    rows, columns = rows[kept], columns[kept]
    lesion_confidence[rows] = confidences[columns]
    if allow_unmatched_candidates_with_minimal_overlap:
        false_positive = ~(scores > 0).any(axis=0)
    else:
        false_positive = np.ones(n_candidates, dtype=bool)
        false_positive[columns] = False
    return lesion_confidence, confidences[false_positive]


def match_case(
    reference_mask: np.ndarray,
    candidates: Candidates,
    settings: FrocSettings,
    case: str = "",
    voxel_volume_mm3: float = 1.0,
) -> FrocCase:
    """Label the reference lesions, build the overlap table with the candidates and match them."""
    reference_labels, n_ref = label_components(reference_mask, settings.connectivity, return_count=True)
    table = OverlapTable.build(reference_labels, n_ref, candidates.labels, candidates.n)
    lesion_confidence, false_positive = match_candidates(
        table,
        candidates.confidences,
        settings.matching,
        settings.min_overlap,
        settings.allow_unmatched_candidates_with_minimal_overlap,
    )
    return FrocCase(
        case=case,
        lesion_confidence=lesion_confidence,
        lesion_voxels=table.ref_sizes[1:].astype(np.int64),
        false_positive_confidence=false_positive,
        n_candidates=candidates.n,
        voxel_volume_mm3=voxel_volume_mm3,
    )


def match_probability(
    probability: np.ndarray,
    reference_mask: np.ndarray,
    settings: FrocSettings,
    case: str = "",
    spacing: Sequence[float] | None = None,
) -> FrocCase:
    """Candidates from one probability map and their matching with the reference's lesions.

    Both arrays are cropped first to the reference and the voxels that can belong to a candidate
    (a margin of one voxel keeps every component and adjacency as in the whole image).
    """
    if probability.shape != reference_mask.shape:
        raise CaseError(f"probability map {probability.shape} and reference {reference_mask.shape} differ in shape")
    spacing = tuple(spacing) if spacing is not None else (1.0,) * probability.ndim
    peak = probability.max() if probability.size else 0.0
    if not np.isfinite(peak):
        raise CaseError(f"the probabilities contain {peak} values")
    reference_mask = np.asarray(reference_mask, dtype=bool)
    crop = foreground_crop(reference_mask, probability >= lowest_candidate_probability(settings))
    reference_mask = remove_small_components(
        reference_mask[crop],
        settings.connectivity,
        spacing,
        settings.min_lesion_voxels,
        settings.min_lesion_volume_mm3,
    )
    candidates = extract_candidates(probability[crop], settings)
    return match_case(reference_mask, candidates, settings, case, float(np.prod(spacing)))
