"""Detection analysis from nnU-Net's probabilities: lesion candidates, FROC, average precision, sensitivity at fixed FP rates.

Definitions are those of ``picai_eval`` (the PI-CAI challenge's evaluation, Saha et al. 2024,
DIAGNijmegen/picai_eval 1.4), and given the same detection maps and references the numbers equal its
``Metrics.AP``, ``lesion_TPR``, ``lesion_FPR`` and ``lesion_TPR_at_FPR`` (tests/test_detection.py),
except where docs/metrics.md ("Detection analysis") lists a difference:

1. **Candidates** (one map per case and label or region): ``static``, the connected components of
   p >= ``threshold`` with the confidence max p inside (report_guided_annotation's static extraction,
   Bosma et al. 2023); ``dynamic``, report_guided_annotation's dynamic extraction (version 2): take the
   peak p_max of what is left, the component of p >= p_max / ``dynamic_threshold_factor`` around the
   highest-confidence component, drop it if it touches an earlier candidate, remove it, repeat until
   p_max < 0.01. Both are computed here as segment reductions (one labelling and one segment maximum
   per step) and are tested equal to ``report_guided_annotation.extract_lesion_candidates``.
2. **Matching** (per case): reference lesions are the connected components of the reference. A
   candidate and a lesion may match when their IoU (or DSC) is >= ``min_overlap`` (``any``: when they
   share a voxel); one-to-one matching maximises the number of matches, then the summed overlap
   (``linear_sum_assignment`` on overlap + 1, picai_eval's rule, on the same candidate × lesion matrix
   in the same order, so that ties resolve as there). The overlaps come from one overlap table
   (:class:`~nnunet_lesionloss.evaluation.metrics.OverlapTable`) instead of picai_eval's candidate ×
   lesion loop over full-volume masks. A matched lesion carries its candidate's confidence, a missed one
   0; unmatched candidates without sufficient overlap are false positives; unmatched candidates *with*
   sufficient overlap (a second candidate on a lesion) are ignored by default, picai_eval's
   ``allow_unmatched_candidates_with_minimal_overlap=True``, or false positives.
3. **Curves** (pooled over cases): at every distinct candidate confidence t, sensitivity = matched
   lesions with confidence >= t / reference lesions, FP per case = false positives with confidence >= t /
   cases; AP = Σ_t (recall(t) − recall(previous t)) · precision(t) (picai_eval's step integral of
   sklearn's precision-recall curve); sensitivity at F FP per case = that of the lowest threshold whose FP
   per case is <= F (0 when none is); CPM = the mean at 1/8 ... 8 FP per case (LUNA16, Setio et al. 2017).
4. **Uncertainty**: case bootstrap (cases resampled with replacement, seeded) of every statistic and of
   the FROC curve on a grid of FP rates; percentile 95 % intervals.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from nnunet_lesionloss.components import check_connectivity, check_connectivity_value, label_components
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import format_number, format_with_interval
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.matching import OverlapTable
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML, foreground_crop, remove_small_components, size_bin_labels
from nnunet_lesionloss.evaluation.parallel import run_parallel, unexpected_error_reason
from nnunet_lesionloss.evaluation.plotting import pyplot, save_figure
from nnunet_lesionloss.evaluation.probabilities import ProbabilityChannels, read_case_probabilities
from nnunet_lesionloss.evaluation.statistics import case_resample_counts, percentile_interval

#: LUNA16's FP rates (Setio et al. 2017): the CPM is the mean sensitivity at these false positives per case
DEFAULT_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: picai_eval's guard in calculate_iou / calculate_dsc: (overlap + ε) / (union + ε). Used here only for
#: the weights that order competing matches (so ties break as in picai_eval), never to decide a match
PICAI_EPSILON = 1e-8
#: report_guided_annotation's dynamic extraction stops when the highest probability left is below this
DYNAMIC_STOP_PROBABILITY = 0.01
MATCHINGS = ("iou", "dsc", "any")
CANDIDATE_METHODS = ("static", "dynamic")
#: written last: its presence means the other detection files are complete
FROC_MARKER = "froc.json"
FROC_FILES = ("froc_cases.json", "froc_cases.csv", "froc.md", FROC_MARKER)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class FrocSettings:
    """How candidates are extracted and matched, and what is reported (docs/metrics.md, "Detection")."""

    candidates: str = "static"  # static | dynamic
    threshold: float = 0.1  # static: t_min (report_guided_annotation's static default)
    matching: str = "iou"  # iou | dsc | any (picai_eval: IoU)
    min_overlap: float = 0.1  # picai_eval's default
    connectivity: int | str = "full"  # 26 in 3D: picai_eval labels with a 3×3×3 structure; 8 in 2D
    #: picai_eval's allow_unmatched_candidates_with_minimal_overlap (its default True): a second candidate
    #: on an already matched lesion is ignored (True) or counted as a false positive (False)
    allow_unmatched_candidates_with_minimal_overlap: bool = True
    min_candidate_voxels: int = 0  # candidates of at most this many voxels are dropped (report_guided_annotation: 10)
    max_candidates: int | None = None  # dynamic: stop after this many candidates (report_guided_annotation: 5)
    dynamic_threshold_factor: float = 2.5  # report_guided_annotation's default
    min_lesion_voxels: int = 0  # reference lesions below this size are removed first (as in evaluate)
    min_lesion_volume_mm3: float = 0.0
    fp_rates: tuple[float, ...] = DEFAULT_FP_RATES
    size_fp_rate: float = 1.0  # the FP rate of the per-size-bin sensitivities and of the per-case values
    size_bins_ml: tuple[float, ...] = (1.0, 5.0)
    bootstrap_resamples: int = 1000  # picai_eval's bootstrap_score_ci default
    seed: int = 0

    def __post_init__(self):
        if self.candidates not in CANDIDATE_METHODS:
            raise ValueError(f"candidates must be one of {', '.join(CANDIDATE_METHODS)}, got {self.candidates!r}")
        check_connectivity_value(self.connectivity)
        if self.matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {', '.join(MATCHINGS)}, got {self.matching!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"the candidate threshold must be in (0, 1], got {self.threshold}")
        if self.matching != "any" and not 0 < self.min_overlap <= 1:
            raise ValueError(f"min_overlap must be in (0, 1] for {self.matching} matching, got {self.min_overlap}")
        if self.dynamic_threshold_factor < 1:
            raise ValueError(f"dynamic_threshold_factor must be >= 1, got {self.dynamic_threshold_factor}")
        if self.min_candidate_voxels < 0 or self.min_lesion_voxels < 0 or self.min_lesion_volume_mm3 < 0:
            raise ValueError("min_candidate_voxels, min_lesion_voxels and min_lesion_volume_mm3 must be >= 0")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1 (or None), got {self.max_candidates}")
        if not self.fp_rates or any(r <= 0 for r in self.fp_rates) or self.size_fp_rate <= 0:
            raise ValueError("FP rates must be positive")
        if self.bootstrap_resamples < 0:
            raise ValueError(f"bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}")
        if list(self.size_bins_ml) != sorted(self.size_bins_ml) or any(e <= 0 for e in self.size_bins_ml):
            raise ValueError(f"size bins must be increasing positive volumes in mL, got {self.size_bins_ml}")

    def replace(self, **changes) -> FrocSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fp_rates"] = list(self.fp_rates)
        out["size_bins_ml"] = list(self.size_bins_ml)
        if self.matching == "any":
            out["min_overlap"] = None  # a shared voxel decides
        if self.candidates == "static":
            for name in ("max_candidates", "dynamic_threshold_factor"):
                out[name] = None
        else:
            out["threshold"] = None
        return out


def rate_key(rate: float) -> str:
    """'0.125', '1', '8': the key of an FP rate in detection.json."""
    return f"{rate:g}"


# --------------------------------------------------------------------------- candidates
@dataclass
class Candidates:
    """Lesion candidates of one map: ids 1..n (0 = none) and the confidence of candidate k at [k - 1]."""

    labels: np.ndarray
    confidences: np.ndarray

    @property
    def n(self) -> int:
        return len(self.confidences)

    def detection_map(self) -> np.ndarray:
        """picai_eval's input: every voxel of a candidate holds the candidate's confidence."""
        return np.concatenate([[0.0], self.confidences])[self.labels]


def segment_max(ids: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Maximum of ``values`` over each id 1..count (one pass over the voxels with an id)."""
    flat = ids.ravel()
    inside = np.flatnonzero(flat)
    out = np.full(count + 1, -np.inf)
    np.maximum.at(out, flat[inside], values.ravel()[inside])
    return out[1:]


def _keep(labels: np.ndarray, confidences: np.ndarray, keep: np.ndarray) -> Candidates:
    """Drop the candidates with ``keep`` False and renumber the others in their order."""
    if keep.all():
        return Candidates(labels, confidences)
    new_ids = np.concatenate([[0], np.cumsum(keep) * keep]).astype(np.int32)
    return Candidates(new_ids[labels], confidences[keep])


def static_candidates(
    probability: np.ndarray, threshold: float, connectivity: int | str = "full", min_voxels: int = 0
) -> Candidates:
    """Components of p >= ``threshold``, confidence = max p inside; components of at most ``min_voxels``
    voxels are dropped (report_guided_annotation's ``extract_lesion_candidates_static``)."""
    labels, count = label_components(probability >= threshold, connectivity, return_count=True)
    confidences = segment_max(labels, probability, count)
    if min_voxels > 0 and count:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        return _keep(labels, confidences, sizes > min_voxels)
    return Candidates(labels, confidences)


def _grow(occupied: np.ndarray, mask: np.ndarray, structure: np.ndarray) -> None:
    """occupied |= dilation of ``mask`` by ``structure``, computed in the mask's bounding box only."""
    coords = np.nonzero(mask)
    box = tuple(slice(max(int(c.min()) - 1, 0), min(int(c.max()) + 2, size)) for c, size in zip(coords, mask.shape))
    occupied[box] |= ndimage.binary_dilation(mask[box], structure=structure)


def dynamic_candidates(
    probability: np.ndarray,
    threshold_factor: float = 2.5,
    min_voxels: int = 0,
    max_candidates: int | None = None,
    connectivity: int | str = "full",
) -> Candidates:
    """report_guided_annotation's dynamic extraction (``extract_lesion_candidates(threshold="dynamic-v2")``
    with ``remove_adjacent_lesion_candidates=True``), each step a segment reduction.

    Step: p_max = the highest probability left (stop below 0.01); the components of p >= p_max / factor
    with more than ``min_voxels`` voxels, each with its max p; the one with the highest max (ties: the
    first in raster order) is the candidate, unless it touches an earlier candidate (then it is only
    removed); its voxels are set to 0. When every component is too small, the voxels > p_max / factor
    are set to 0 instead. Candidates are numbered in the order they are found.
    """
    working = np.array(probability, copy=True)
    labels = np.zeros(working.shape, dtype=np.int32)
    grown = np.zeros(working.shape, dtype=bool)  # the candidates and their neighbours
    structure = ndimage.generate_binary_structure(
        working.ndim, {6: 1, 18: 2, 26: 3, 4: 1, 8: 2}[check_connectivity(connectivity, working.ndim)]
    )
    confidences: list[float] = []
    limit = math.inf if max_candidates is None else max_candidates
    while len(confidences) < limit:
        peak = working.max()
        if peak < DYNAMIC_STOP_PROBABILITY:
            break
        threshold = peak / threshold_factor  # numpy scalar arithmetic, as report_guided_annotation's
        blobs, count = label_components(working >= threshold, connectivity, return_count=True)
        blob_max = segment_max(blobs, working, count)
        sizes = np.bincount(blobs.ravel(), minlength=count + 1)[1:]
        large = sizes > min_voxels
        if not large.any():
            working[working > threshold] = 0
            continue
        best = blob_max[large].max()
        chosen = int(np.flatnonzero(large & (blob_max == best))[0]) + 1
        mask = blobs == chosen
        if not grown[mask].any():
            confidences.append(float(best))
            labels[mask] = len(confidences)
            _grow(grown, mask, structure)
        working[mask] = 0
    return Candidates(labels, np.asarray(confidences, dtype=np.float64))


def detection_map_candidates(detection_map: np.ndarray, connectivity: int | str = "full") -> Candidates:
    """Candidates of a picai_eval detection map: the components of the non-zero voxels, each of one confidence.

    Raises ValueError when a component holds several values (a probability map, not a detection map).
    """
    detection_map = np.asarray(detection_map)
    if detection_map.size and detection_map.min() < 0:
        raise ValueError("detection map confidences must be >= 0")
    labels, count = label_components(detection_map > 0, connectivity, return_count=True)
    highest = segment_max(labels, detection_map, count)
    lowest = -segment_max(labels, -detection_map, count)
    mixed = np.flatnonzero(highest != lowest)
    if len(mixed):
        k = int(mixed[0])
        raise ValueError(
            f"candidate {k + 1} of the detection map holds values from {lowest[k]:g} to {highest[k]:g}: a detection "
            "map holds one confidence per connected component (extract candidates from probabilities first)"
        )
    return Candidates(labels, highest.astype(np.float64))


def extract_candidates(probability: np.ndarray, settings: FrocSettings) -> Candidates:
    if settings.candidates == "static":
        return static_candidates(probability, settings.threshold, settings.connectivity, settings.min_candidate_voxels)
    return dynamic_candidates(
        probability,
        settings.dynamic_threshold_factor,
        settings.min_candidate_voxels,
        settings.max_candidates,
        settings.connectivity,
    )


def lowest_candidate_probability(settings: FrocSettings) -> float:
    """No voxel below this probability can belong to a candidate (the crop of a case relies on it)."""
    if settings.candidates == "static":
        return settings.threshold
    # every dynamic threshold is p_max / factor with p_max >= 0.01; half of it keeps float rounding away
    return 0.5 * DYNAMIC_STOP_PROBABILITY / settings.dynamic_threshold_factor


# --------------------------------------------------------------------------- one case
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


def detect_in_case(
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


def detect_from_probability(
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
    return detect_in_case(reference_mask, candidates, settings, case, float(np.prod(spacing)))


# --------------------------------------------------------------------------- curves over cases
@dataclass
class Froc:
    """Points of a FROC curve, one per distinct confidence (descending), then picai_eval's last point:
    the last sensitivity at infinitely many false positives."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    n_lesions: int
    n_cases: int

    @property
    def sensitivity(self) -> np.ndarray:
        if self.n_lesions == 0:
            return np.full(len(self.true_positives), np.nan)
        return self.true_positives / self.n_lesions

    @property
    def fp_per_case(self) -> np.ndarray:
        return self.false_positives / max(self.n_cases, 1)

    def finite_points(self) -> list[tuple[float, float, float, int, int]]:
        """(threshold, FP per case, sensitivity, TP, FP) of every point with finitely many false positives."""
        sensitivity = self.sensitivity
        return [
            (float(t), float(f), float(s), int(tp), int(fp))
            for t, f, s, tp, fp in zip(
                self.thresholds, self.fp_per_case, sensitivity, self.true_positives, self.false_positives
            )
            if math.isfinite(fp)
        ]


@dataclass
class FrocPool:
    """The lesions and false positives of a set of cases, grouped by distinct confidence, so that every
    statistic (and every bootstrap resample, as case weights) is a few cumulative sums."""

    cases: list[FrocCase]
    thresholds: np.ndarray = field(init=False)  # distinct positive confidences, descending
    lesion_case: np.ndarray = field(init=False)
    lesion_group: np.ndarray = field(init=False)  # index into thresholds; len(thresholds) for a missed lesion
    fp_case: np.ndarray = field(init=False)
    fp_group: np.ndarray = field(init=False)

    def __post_init__(self):
        lesion = [c.lesion_confidence for c in self.cases]
        fp = [c.false_positive_confidence for c in self.cases]
        lesion_conf = np.concatenate(lesion) if lesion else np.zeros(0)
        fp_conf = np.concatenate(fp) if fp else np.zeros(0)
        self.lesion_case = np.repeat(np.arange(len(self.cases)), [len(v) for v in lesion]).astype(np.int64)
        self.fp_case = np.repeat(np.arange(len(self.cases)), [len(v) for v in fp]).astype(np.int64)
        self.thresholds = np.unique(np.concatenate([lesion_conf[lesion_conf > 0], fp_conf[fp_conf > 0]]))[::-1]
        descending = -self.thresholds
        # position of each confidence among the descending thresholds (exact: they come from the same values)
        self.lesion_group = np.where(
            lesion_conf > 0, np.searchsorted(descending, -lesion_conf), len(self.thresholds)
        ).astype(np.int64)
        self.fp_group = np.where(fp_conf > 0, np.searchsorted(descending, -fp_conf), len(self.thresholds)).astype(
            np.int64
        )

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def counts(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(TP, FP) at every threshold, and the number of reference lesions, with each case counted
        ``weights[case]`` times (default once)."""
        groups = len(self.thresholds) + 1
        lesion_weights = None if weights is None else weights[self.lesion_case]
        fp_weights = None if weights is None else weights[self.fp_case]
        tp = np.cumsum(np.bincount(self.lesion_group, weights=lesion_weights, minlength=groups)[:-1])
        fp = np.cumsum(np.bincount(self.fp_group, weights=fp_weights, minlength=groups)[:-1])
        n_lesions = float(len(self.lesion_case) if weights is None else lesion_weights.sum())
        return tp, fp, n_lesions

    def froc(self) -> Froc:
        """The curve as picai_eval's ``calculate_counts`` builds it, always with the threshold-0 entry of a
        missed lesion: one point per distinct confidence, then (last TP, ∞)."""
        tp, fp, n_lesions = self.counts()
        if len(tp) == 0:  # no candidate: picai_eval's two points (0, 0), (0, ∞)
            tp, fp, thresholds = np.zeros(1), np.zeros(1), np.array([np.inf])
        else:
            thresholds = self.thresholds
        return Froc(
            thresholds=np.append(thresholds, 0.0),
            true_positives=np.append(tp, tp[-1]),
            false_positives=np.append(fp, np.inf),
            n_lesions=int(n_lesions),
            n_cases=self.n_cases,
        )


def sensitivity_at_rates(
    tp: np.ndarray, fp: np.ndarray, n_lesions: float, n_cases: int, rates: Sequence[float]
) -> np.ndarray:
    """picai_eval's ``lesion_TPR_at_FPR``: the sensitivity of the lowest threshold with FP per case <=
    rate, 0 when no threshold has so few; NaN without reference lesions."""
    if n_lesions == 0:
        return np.full(len(rates), np.nan)
    index = np.searchsorted(fp / n_cases, np.asarray(rates, dtype=np.float64), side="right") - 1
    return np.where(index >= 0, tp[np.maximum(index, 0)] / n_lesions if len(tp) else 0.0, 0.0)


def average_precision(tp: np.ndarray, fp: np.ndarray, n_lesions: float) -> float:
    """Σ_t Δrecall(t) · precision(t) over the distinct confidences (picai_eval's AP); NaN without lesions."""
    if n_lesions == 0:
        return math.nan
    if len(tp) == 0:
        return 0.0
    gained = np.diff(tp, prepend=0.0)
    step = gained > 0
    return float(np.sum(gained[step] / n_lesions * tp[step] / (tp[step] + fp[step])))


def operating_threshold(tp: np.ndarray, fp: np.ndarray, thresholds: np.ndarray, n_cases: int, rate: float):
    """The lowest threshold with FP per case <= ``rate`` (None when even the highest has more)."""
    index = int(np.searchsorted(fp / n_cases, rate, side="right")) - 1
    return None if index < 0 else float(thresholds[index])


def froc_grid(max_fp_per_case: float, rates: Sequence[float]) -> np.ndarray:
    """FP rates at which the bootstrap band of the FROC curve is evaluated (log-spaced, the rates included)."""
    top = max(max(rates), max_fp_per_case if math.isfinite(max_fp_per_case) else 0.0)
    grid = np.geomspace(min(rates) / 4, top, 120)
    return np.unique(np.concatenate([grid, np.asarray(rates, dtype=np.float64)]))


def bootstrap_statistics(pool: FrocPool, settings: FrocSettings, grid: np.ndarray) -> dict:
    """Case-bootstrap resamples of AP, CPM, the sensitivity at each FP rate and on ``grid``."""
    resamples = settings.bootstrap_resamples
    n = pool.n_cases
    ap = np.full(resamples, np.nan)
    at_rates = np.full((resamples, len(settings.fp_rates)), np.nan)
    on_grid = np.full((resamples, len(grid)), np.nan)
    if resamples and n:
        for b, weights in enumerate(case_resample_counts(n, resamples, settings.seed)):
            tp, fp, n_lesions = pool.counts(weights)
            ap[b] = average_precision(tp, fp, n_lesions)
            at_rates[b] = sensitivity_at_rates(tp, fp, n_lesions, n, settings.fp_rates)
            on_grid[b] = sensitivity_at_rates(tp, fp, n_lesions, n, grid)
    return {"ap": ap, "sensitivity_at_fp": at_rates, "cpm": at_rates.mean(axis=1), "grid": on_grid}


def case_sensitivity_at(case: FrocCase, threshold: float | None) -> tuple[float | None, int]:
    """(sensitivity of the case's lesions, its false positives) at a global threshold (None: nothing detected)."""
    if threshold is None:
        hits, false_positives = 0, 0
    else:
        hits = int(np.count_nonzero(case.lesion_confidence >= threshold))
        false_positives = int(np.count_nonzero(case.false_positive_confidence >= threshold))
    return (hits / case.n_lesions if case.n_lesions else None), false_positives


def summarise(cases: list[FrocCase], settings: FrocSettings) -> tuple[dict, Froc]:
    """What detection.json holds for one label (without its name, failures and settings), and the curve."""
    pool = FrocPool(cases)
    tp, fp, n_lesions = pool.counts()
    n = pool.n_cases
    curve = pool.froc()
    at_rates = (
        sensitivity_at_rates(tp, fp, n_lesions, n, settings.fp_rates) if n else np.full(len(settings.fp_rates), np.nan)
    )
    ap = average_precision(tp, fp, n_lesions)
    threshold = operating_threshold(tp, fp, pool.thresholds, n, settings.size_fp_rate) if n else None
    points = curve.finite_points()
    grid = froc_grid(points[-1][1] if points else 0.0, settings.fp_rates)
    boot = bootstrap_statistics(pool, settings, grid)
    by_size = {}
    edges = np.asarray(settings.size_bins_ml, dtype=np.float64)
    volumes = [c.lesion_voxels * c.voxel_volume_mm3 / MM3_PER_ML for c in cases]
    all_volumes = np.concatenate(volumes) if volumes else np.zeros(0)
    lesion_conf = np.concatenate([c.lesion_confidence for c in cases]) if cases else np.zeros(0)
    bins = np.digitize(all_volumes, edges, right=False)
    for b, name in enumerate(size_bin_labels(edges)):
        in_bin = bins == b
        found = 0 if threshold is None else int(np.count_nonzero(lesion_conf[in_bin] >= threshold))
        by_size[name] = {
            "n_lesions": int(in_bin.sum()),
            "sensitivity": found / int(in_bin.sum()) if in_bin.any() else None,
        }
    mean_fp_at_threshold = None
    if threshold is not None and n:
        mean_fp_at_threshold = float(fp[np.searchsorted(-pool.thresholds, -threshold)] / n)
    band = [percentile_interval(boot["grid"][:, k]) for k in range(len(grid))]
    return {
        "ap": ap,
        "cpm": float(np.mean(at_rates)) if n_lesions else None,
        "sensitivity_at_fp": {rate_key(r): float(v) for r, v in zip(settings.fp_rates, at_rates)},
        "froc": [[f, s] for _, f, s, _, _ in points],
        "n_cases": n,
        "n_lesions": int(n_lesions),
        "n_candidates": int(sum(c.n_candidates for c in cases)),
        "n_false_positive_candidates": int(len(pool.fp_case)),
        "n_ignored_candidates": int(sum(c.n_ignored for c in cases)),
        "operating_point": {
            "fp_per_case": settings.size_fp_rate,
            "threshold": threshold,
            "sensitivity": None
            if not n_lesions
            else float(sensitivity_at_rates(tp, fp, n_lesions, n, [settings.size_fp_rate])[0]),
            "mean_fp_per_case": mean_fp_at_threshold,
        },
        "sensitivity_by_size": by_size,
        "ci": {
            "level": 0.95,
            "resamples": settings.bootstrap_resamples,
            "seed": settings.seed,
            "ap": percentile_interval(boot["ap"]),
            "cpm": percentile_interval(boot["cpm"]),
            "sensitivity_at_fp": {
                rate_key(r): percentile_interval(boot["sensitivity_at_fp"][:, k])
                for k, r in enumerate(settings.fp_rates)
            },
        },
        "froc_band": {
            "fp_per_case": [float(g) for g in grid],
            "low": [None if i is None else i[0] for i in band],
            "high": [None if i is None else i[1] for i in band],
        },
    }, curve


# --------------------------------------------------------------------------- files and folders
@dataclass
class FrocJob:
    """One case: its reference, its ``.npz`` (None when missing) and the fold it was validated in."""

    case: str
    reference: Path | None
    probabilities: Path | None
    fold: int | None = None
    missing_reason: str | None = None


@dataclass
class FrocInputs:
    """What every case needs besides its files: the labels or regions, the channels and the settings."""

    groups: dict[str, tuple[int, ...]]
    names: dict[str, str]
    channels: ProbabilityChannels
    settings: FrocSettings
    ignore_label: int | None = None


def detect_case_files(job: FrocJob, inputs: FrocInputs) -> tuple[dict[str, FrocCase] | None, str | None]:
    """Per label or region, the case's detection; or (None, the reason it could not be analysed)."""
    try:
        if job.reference is None or job.probabilities is None:
            raise CaseError(job.missing_reason or f"missing input for case {job.case}")
        reference = io.read_label_image(job.reference)
        labels = io.as_integer_labels(reference)
        probabilities = read_case_probabilities(job.probabilities, reference, inputs.channels)
        valid = None if inputs.ignore_label is None else labels != inputs.ignore_label
        out = {}
        for key, values in inputs.groups.items():
            probability = inputs.channels.probability(probabilities, values)
            reference_mask = np.isin(labels, values) if len(values) > 1 else labels == values[0]
            if valid is not None:  # nnU-Net's ignore label: those voxels count for nothing
                reference_mask &= valid
                probability = np.where(valid, probability, 0)
            detection = detect_from_probability(
                probability, reference_mask, inputs.settings, job.case, reference.spacing
            )
            detection.fold = job.fold
            out[key] = detection
        return out, None
    except CaseError as error:
        return None, str(error)
    except Exception as error:  # keep the other cases going, but say where it broke
        return None, unexpected_error_reason(error)


def run_jobs(jobs: list[FrocJob], inputs: FrocInputs, num_processes: int = 1, progress: bool = True):
    """[(job, detections or None, error or None)] in the order of ``jobs``; in parallel with ``num_processes``."""
    arguments = [(job, inputs) for job in jobs]
    results = run_parallel(detect_case_files, arguments, num_processes, progress, desc="FROC analysis")
    return [(job, detections, error) for job, (detections, error) in zip(jobs, results)]


def label_slug(key: str) -> str:
    """A file-name form of a label or region key: '1' -> '1', '(1, 2)' -> '1-2'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-") or "label"


def output_names(keys: Sequence[str]) -> list[str]:
    """Every file the detection analysis writes for these labels, detection.json last."""
    per_label = [f"froc_{label_slug(k)}.{ending}" for k in keys for ending in ("csv", "png")]
    return [*per_label, *FROC_FILES]


def analyse(results, inputs: FrocInputs, per_fold: bool = False) -> dict:
    """detection.json's content: per label key, the summary, its failed cases and the settings."""
    failures = [
        {"case": job.case, "fold": job.fold, "reason": error} for job, detections, error in results if error is not None
    ]
    settings = inputs.settings
    out = {}
    for key in inputs.groups:
        cases = [detections[key] for _, detections, error in results if error is None]
        summary, _ = summarise(cases, settings)
        entry = {"name": inputs.names.get(key, key), **summary}
        if per_fold:
            folds = sorted({c.fold for c in cases if c.fold is not None})
            quick = settings.replace(bootstrap_resamples=0)
            entry["per_fold"] = {}
            for fold in folds:
                fold_summary, _ = summarise([c for c in cases if c.fold == fold], quick)
                entry["per_fold"][str(fold)] = {
                    name: fold_summary[name] for name in ("ap", "cpm", "sensitivity_at_fp", "n_cases", "n_lesions")
                }
        entry["n_failed"] = len(failures)
        entry["failed_cases"] = failures
        entry["settings"] = settings.to_dict()
        entry["files"] = {"froc_csv": f"froc_{label_slug(key)}.csv", "froc_png": f"froc_{label_slug(key)}.png"}
        out[key] = entry
    return out


def write_froc_outputs(output_dir: Path, results, inputs: FrocInputs, per_fold: bool = False) -> dict:
    """FROC CSV + PNG per label, detection_cases.json / .csv, detection.md, then detection.json."""
    output_dir = Path(output_dir)
    (output_dir / FROC_MARKER).unlink(missing_ok=True)
    analysis = analyse(results, inputs, per_fold)
    evaluated = [(job, detections) for job, detections, error in results if error is None]
    for key, entry in analysis.items():
        curve = FrocPool([d[key] for _, d in evaluated]).froc()
        rows = [list(point) for point in curve.finite_points()]
        io.write_csv(
            output_dir / entry["files"]["froc_csv"],
            ["threshold", "fp_per_case", "sensitivity", "true_positives", "false_positives"],
            rows,
        )
        plot_froc([(entry["name"], entry)], output_dir / entry["files"]["froc_png"], f"FROC, {entry['name']} ({key})")
    raw = {
        "failures": [
            {"case": job.case, "fold": job.fold, "reason": error} for job, _, error in results if error is not None
        ],
        "labels": {key: {job.case: d[key].to_json() for job, d in evaluated} for key in inputs.groups},
    }
    io.write_json(output_dir / "froc_cases.json", raw, overwrite=True)
    header, rows = case_rows(results, inputs)
    io.write_csv(output_dir / "froc_cases.csv", header, rows)
    io.write_text(output_dir / "froc.md", froc_markdown(analysis))
    io.write_json(output_dir / FROC_MARKER, analysis, overwrite=True)
    return analysis


def case_rows(results, inputs: FrocInputs) -> tuple[list[str], list[list]]:
    """One row per case and label: counts, and the case's sensitivity and false positives at the label's
    operating threshold (the lowest with <= ``size_fp_rate`` FP per case over all cases)."""
    rate = rate_key(inputs.settings.size_fp_rate)
    header = [
        "fold",
        "case",
        "label",
        "n_ref_lesions",
        "n_candidates",
        "n_false_positive_candidates",
        f"sensitivity_at_{rate}fp",
        f"false_positives_at_{rate}fp",
        "error",
    ]
    rows = []
    evaluated = [d for _, d, error in results if error is None]
    for key in inputs.groups:
        pool = FrocPool([d[key] for d in evaluated])
        tp, fp, _ = pool.counts()
        threshold = (
            operating_threshold(tp, fp, pool.thresholds, pool.n_cases, inputs.settings.size_fp_rate)
            if pool.n_cases
            else None
        )
        for job, detections, error in results:
            fold = "" if job.fold is None else job.fold
            if error is not None:
                rows.append([fold, job.case, key, "", "", "", "", "", error])
                continue
            case = detections[key]
            sensitivity, false_positives = case_sensitivity_at(case, threshold)
            rows.append(
                [
                    fold,
                    job.case,
                    key,
                    case.n_lesions,
                    case.n_candidates,
                    len(case.false_positive_confidence),
                    "" if sensitivity is None else sensitivity,
                    false_positives,
                    "",
                ]
            )
    return header, rows


def froc_markdown(analysis: dict, heading: str = "#") -> str:
    """A table per label: AP, CPM and the sensitivity at each FP rate with their bootstrap CIs, counts,
    the per-size-bin sensitivities and every failed case."""
    lines = [f"{heading} Detection (FROC)", ""]
    for key, entry in analysis.items():
        s = entry["settings"]
        ci = entry["ci"]
        method = (
            f"static candidates (p >= {s['threshold']:g})"
            if s["candidates"] == "static"
            else f"dynamic candidates (peak / {s['dynamic_threshold_factor']:g})"
        )
        rule = "any overlap" if s["matching"] == "any" else f"{s['matching'].upper()} >= {s['min_overlap']:g}"
        lines += [
            f"{heading}# {entry['name']} ({key})",
            "",
            f"{entry['n_cases']} cases, {entry['n_lesions']} reference lesions, {entry['n_candidates']} candidates "
            f"({method}, {s['connectivity']} connectivity; matched one-to-one at {rule}; a second candidate on a lesion "
            f"is {'ignored' if s['allow_unmatched_candidates_with_minimal_overlap'] else 'a false positive'}). "
            f"95 % CIs: case bootstrap, {ci['resamples']} resamples.",
            "",
            "| statistic | value [95 % CI] |",
            "|---|---|",
            f"| AP | {format_with_interval(entry['ap'], ci['ap'])} |",
            f"| CPM (mean sensitivity at {', '.join(entry['sensitivity_at_fp'])} FP/case) | "
            f"{format_with_interval(entry['cpm'], ci['cpm'])} |",
        ]
        for rate, value in entry["sensitivity_at_fp"].items():
            lines.append(
                f"| sensitivity at {rate} FP/case | {format_with_interval(value, ci['sensitivity_at_fp'][rate])} |"
            )
        point = entry["operating_point"]
        lines += [
            "",
            f"At {point['fp_per_case']:g} FP/case (threshold {format_number(point['threshold'], 4)}, "
            f"{format_number(point['mean_fp_per_case'], 2)} FP/case), sensitivity by reference lesion volume:",
            "",
            "| lesion volume | lesions | sensitivity |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {b['n_lesions']} | {format_number(b['sensitivity'])} |"
            for name, b in entry["sensitivity_by_size"].items()
        ]
        lines.append("")
        if entry["failed_cases"]:
            lines += [
                f"**{entry['n_failed']} case(s) could not be analysed; every number above is over the others:**",
                "",
                "| fold | case | reason |",
                "|---|---|---|",
            ]
            lines += [
                f"| {'–' if f['fold'] is None else f['fold']} | {f['case']} | {f['reason']} |"
                for f in entry["failed_cases"]
            ]
            lines.append("")
    return "\n".join(lines)


def plot_froc(curves: list[tuple[str, dict]], path: Path, title: str) -> Path:
    """FROC curves (log FP axis, 1/8 to 8 FP per case as LUNA16 and PI-CAI plot them) with their
    bootstrap bands, from detection.json entries."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    largest = 8.0
    for k, (name, entry) in enumerate(curves):
        color = f"C{k}"
        points = entry.get("froc") or []
        if points:
            fp_rates = [p[0] for p in points]
            sensitivity = [p[1] for p in points]
            largest = max(largest, fp_rates[-1])
            # a step curve that stays at the last sensitivity beyond the last point (picai_eval's ∞ point)
            ax.step(
                fp_rates + [largest * 2],
                sensitivity + [sensitivity[-1]],
                where="post",
                color=color,
                label=f"{name} (AP {format_number(entry.get('ap'))}, CPM {format_number(entry.get('cpm'))})",
            )
        band = entry.get("froc_band") or {}
        low, high = band.get("low") or [], band.get("high") or []
        if low and all(v is not None for v in low + high):
            ax.fill_between(band["fp_per_case"], low, high, step="post", color=color, alpha=0.2, linewidth=0)
        rates = [float(r) for r in entry.get("sensitivity_at_fp", {})]
        values = list(entry.get("sensitivity_at_fp", {}).values())
        if rates and all(v is not None for v in values):
            ax.plot(rates, values, "o", color=color, markersize=3)
    ax.set_xscale("log")
    ax.set_xlim(1 / 16, largest * 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per case")
    ax.set_ylabel("lesion sensitivity")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, ax, title, Path(path))


def froc_folders(
    prob_dir,
    gt_dir,
    output_dir,
    settings: FrocSettings | None = None,
    dataset_json: str | None = None,
    labels: Sequence[int] | None = None,
    file_ending: str | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """``nnunet-lesionloss detection``: every reference of ``gt_dir`` against ``<case>.npz`` of ``prob_dir``.

    dataset.json (labels or regions, file ending) is ``dataset_json``, else the one nnU-Net writes into
    prediction folders (``prob_dir/dataset.json``), else ``gt_dir/../dataset.json``. A reference without
    probabilities, or one that cannot be read or does not match, is a failed case, listed by name.
    """
    from nnunet_lesionloss.evaluation.runner import resolve_labels
    from nnunet_lesionloss.evaluation.settings import get_preset

    settings = settings or FrocSettings()
    prob_dir, gt_dir = Path(prob_dir), Path(gt_dir)
    for folder, what in ((prob_dir, "probability"), (gt_dir, "reference")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    if dataset_json is None:
        for candidate in (prob_dir / "dataset.json", gt_dir.parent / "dataset.json"):
            if candidate.is_file():
                dataset_json = str(candidate)
                break
        else:
            raise FileNotFoundError(
                f"no dataset.json in {prob_dir} or {gt_dir.parent}: pass --dataset-json (its labels or regions say "
                "which probability channel is which)"
            )
    spec, dataset, _ = resolve_labels(get_preset("default"), dataset_json, gt_dir, labels)
    file_ending = file_ending or dataset.get("file_ending")
    references = io.list_references(gt_dir, file_ending, f"dataset.json ({dataset_json})")
    available = {p.name[:-4]: p for p in sorted(prob_dir.glob("*.npz")) if not p.name.startswith(".")}
    if not available:
        raise FileNotFoundError(
            f"no .npz probability files in {prob_dir} (nnUNetv2_predict --save_probabilities, nnUNetv2_train --npz)"
        )
    jobs = [
        FrocJob(case, path, available.get(case), missing_reason=f"no probabilities {case}.npz in {prob_dir}")
        for case, path in references.items()
    ]
    inputs = FrocInputs(
        groups=dict(spec.groups),
        names=dict(spec.names),
        channels=ProbabilityChannels.from_dataset_json(dataset, dataset_json),
        settings=settings,
        ignore_label=spec.ignore_label,
    )
    inputs.channels.check_groups(inputs.groups)
    io.prepare_output_dir(output_dir, output_names(list(inputs.groups)), overwrite, marker=FROC_MARKER)
    results = run_jobs(jobs, inputs, num_processes, progress)
    analysis = write_froc_outputs(Path(output_dir), results, inputs)
    ignored = sorted(set(available) - set(references))
    if ignored and progress:
        print(
            f"note: {len(ignored)} probability files without a reference are ignored: {', '.join(ignored[:5])}",
            file=sys.stderr,
        )
    return analysis


def cv_froc(plan, label_spec, settings: FrocSettings, num_processes: int = 1, progress: bool = True) -> dict:
    """The detection analysis of a cross-validation (``cv-summary``): every validation case of every fold,
    pooled, from the ``.npz`` files nnU-Net's final validation writes with ``--npz``.

    Returns ``{"skipped": reason}`` when no fold has probabilities or no dataset.json says what their
    channels are; else the analysis written to the output folder (detection.json and the other files).
    """
    folders = {fold: plan.results_dir / f"fold_{fold}" / "validation" for fold in plan.folds}
    available = {fold: {p.name[:-4]: p for p in sorted(folder.glob("*.npz"))} for fold, folder in folders.items()}
    if not any(available.values()):
        return {
            "skipped": "no .npz probabilities in the fold_*/validation folders (train with nnUNetv2_train ... --npz, "
            "as scripts/run_cv.sh does, or run nnUNetv2_train ... --val --npz)"
        }
    if plan.dataset_json is None:
        return {"skipped": f"no dataset.json in {plan.results_dir} (it says which probability channel is which)"}
    dataset = io.read_dataset_json(plan.dataset_json)
    jobs = []
    for fold in plan.folds:
        for case in plan.cases[fold]:
            reason = None
            if case not in plan.references:
                reason = f"no reference for case {case} in {plan.gt_dir}"
            elif case not in available[fold]:
                reason = f"no probabilities {case}.npz in {folders[fold]}" + (
                    "" if available[fold] else " (this fold was validated without --npz)"
                )
            jobs.append(FrocJob(case, plan.references.get(case), available[fold].get(case), fold, reason))
    if not plan.folds_given:  # as the evaluation: with --folds, the other folds' cases are not expected
        for case in plan.unassigned:
            jobs.append(FrocJob(case, plan.references[case], None, None, "no evaluated fold validated this case"))
    groups = label_spec.groups
    if groups is None:
        groups = {io.label_key(v): v for v in io.labels_from_dataset_json(dataset).values()}
    inputs = FrocInputs(
        groups=dict(groups),
        names=dict(label_spec.names),
        channels=ProbabilityChannels.from_dataset_json(dataset, plan.dataset_json),
        settings=settings,
        ignore_label=label_spec.ignore_label,
    )
    inputs.channels.check_groups(inputs.groups)
    io.prepare_output_dir(plan.output_dir, output_names(list(inputs.groups)), True)
    results = run_jobs(jobs, inputs, num_processes, progress)
    return write_froc_outputs(plan.output_dir, results, inputs, per_fold=True)


def headline(analysis: dict) -> dict:
    """The part of an analysis cv_summary.json repeats: per label the statistics and counts, no curves."""
    if "skipped" in analysis:
        return analysis
    keep = (
        "name",
        "ap",
        "cpm",
        "sensitivity_at_fp",
        "n_cases",
        "n_lesions",
        "n_candidates",
        "n_failed",
        "failed_cases",
        "ci",
    )
    return {key: {name: entry[name] for name in keep} for key, entry in analysis.items()}


def load_froc(folder: Path) -> tuple[dict, dict] | None:
    """(detection.json, detection_cases.json) of a run folder, or None when it has no detection analysis."""
    folder = Path(folder)
    if not (folder / FROC_MARKER).is_file() or not (folder / "froc_cases.json").is_file():
        return None
    with open(folder / FROC_MARKER) as handle:
        analysis = json.load(handle)
    with open(folder / "froc_cases.json") as handle:
        raw = json.load(handle)
    return analysis, raw


def cv_froc_section(
    plan,
    label_spec,
    evaluation_settings,
    detection_settings: FrocSettings | None = None,
    num_processes: int = 1,
    progress: bool = True,
) -> dict:
    """What ``cv-summary`` records under ``detection``: the headline of :func:`cv_froc` (the lesion
    definition of the evaluation: its connectivity, size bins and minimum lesion size), ``{"skipped": reason}``
    or ``{"error": reason}``; the full analysis is in the output folder's detection.json."""
    base = detection_settings or FrocSettings()
    settings = base.replace(
        connectivity=evaluation_settings.connectivity,
        size_bins_ml=tuple(evaluation_settings.size_bins_ml),
        min_lesion_voxels=evaluation_settings.min_lesion_voxels,
        min_lesion_volume_mm3=evaluation_settings.min_lesion_volume_mm3,
    )
    try:
        return headline(cv_froc(plan, label_spec, settings, num_processes, progress))
    except (OSError, ValueError, CaseError) as error:
        return {"error": f"the detection analysis failed: {error}"}


def froc_failures(section: dict | None) -> list[dict]:
    """The failed cases of a cv-summary detection section (the same for every label)."""
    if not section or "skipped" in section or "error" in section:
        return []
    return next(iter(section.values()), {}).get("failed_cases", [])


def froc_cv_markdown_lines(section: dict | None) -> list[str]:
    """The detection part of cv_summary.md."""
    if not section:
        return []
    lines = ["## Detection (FROC, pooled over the validation cases of all folds)", ""]
    if "skipped" in section or "error" in section:
        return lines + [f"Not analysed: {section.get('skipped') or section.get('error')}.", ""]
    lines += ["Details, curves and per-case values: froc.json, froc_<label>.png, froc_cases.csv.", ""]
    for key, entry in section.items():
        ci = entry["ci"]
        rates = list(entry["sensitivity_at_fp"])
        lines += [
            f"### {entry['name']} ({key}): {entry['n_cases']} cases, {entry['n_lesions']} lesions, "
            f"{entry['n_candidates']} candidates",
            "",
            "| AP | CPM | " + " | ".join(f"sens. at {r} FP/case" for r in rates) + " |",
            "|---|---|" + "---|" * len(rates),
            f"| {format_with_interval(entry['ap'], ci['ap'])} | {format_with_interval(entry['cpm'], ci['cpm'])} | "
            + " | ".join(format_with_interval(entry["sensitivity_at_fp"][r], ci["sensitivity_at_fp"][r]) for r in rates)
            + " |",
            "",
        ]
        if entry["n_failed"]:
            lines += [f"{entry['n_failed']} case(s) could not be analysed (detection.json lists them).", ""]
    return lines


def cases_of(raw: dict, key: str) -> dict[str, FrocCase]:
    """Case -> FrocCase of one label from a detection_cases.json."""
    return {case: FrocCase.from_json(case, data) for case, data in raw.get("labels", {}).get(key, {}).items()}


def per_case_sensitivity(cases: dict[str, FrocCase], rate: float) -> tuple[dict[str, float], float | None]:
    """Each case's sensitivity at the run's threshold for ``rate`` FP per case over all its cases (cases
    without reference lesions have none), and that threshold (None: no threshold gives so few)."""
    pool = FrocPool(list(cases.values()))
    tp, fp, _ = pool.counts()
    threshold = operating_threshold(tp, fp, pool.thresholds, pool.n_cases, rate) if pool.n_cases else None
    values = {}
    for case, detection in cases.items():
        sensitivity, _ = case_sensitivity_at(detection, threshold)
        if sensitivity is not None:
            values[case] = sensitivity
    return values, threshold


def paired_sensitivity_difference(
    reference: dict[str, FrocCase], other: dict[str, FrocCase], rate: float, resamples: int, seed: int
) -> dict:
    """Pooled sensitivity at ``rate`` FP per case of ``other`` − ``reference`` over the cases both analysed,
    with a paired case-bootstrap 95 % CI (the same resampled cases for both runs)."""
    common = sorted(set(reference) & set(other))
    pools = [FrocPool([runs[c] for c in common]) for runs in (reference, other)]
    n = len(common)

    def difference(weights=None) -> float:
        values = []
        for pool in pools:
            tp, fp, n_lesions = pool.counts(weights)
            values.append(sensitivity_at_rates(tp, fp, n_lesions, n, [rate])[0])
        return float(values[1] - values[0])

    if n == 0:
        return {"n": 0, "difference": None, "ci_low": None, "ci_high": None}
    point = difference()
    samples = np.array([difference(w) for w in case_resample_counts(n, resamples, seed)]) if resamples else np.zeros(0)
    interval = percentile_interval(samples)
    return {
        "n": n,
        "difference": None if not math.isfinite(point) else point,
        "ci_low": None if interval is None else interval[0],
        "ci_high": None if interval is None else interval[1],
    }
