"""Lesion candidates of the FROC analysis, one map per case and label or region, each candidate a connected
set of voxels with one confidence:

- ``static``: the connected components of p >= ``threshold`` with the confidence max p inside
  (report_guided_annotation's static extraction, Bosma et al. 2023);
- ``dynamic``: report_guided_annotation's dynamic extraction (version 2): take the peak p_max of what is
  left, the component of p >= p_max / ``dynamic_threshold_factor`` around the highest-confidence component,
  drop it if it touches an earlier candidate, remove it, repeat until p_max < 0.01;
- the candidates of a picai_eval detection map (one confidence per connected component).

Static candidates are one labelling and one segment maximum; dynamic ones one compiled pass over the voxels
sorted by probability (``dynamic_extraction``). Both are tested equal to
``report_guided_annotation.extract_lesion_candidates`` voxel for voxel (tests/test_detection.py,
tests/test_dynamic_extraction.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.froc.dynamic_extraction import STOP_PROBABILITY, dynamic_candidate_labels
from nnunet_lesionloss.evaluation.froc.settings import FrocSettings


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


def dynamic_candidates(
    probability: np.ndarray,
    threshold_factor: float = 2.5,
    min_voxels: int = 0,
    max_candidates: int | None = None,
    connectivity: int | str = "full",
) -> Candidates:
    """report_guided_annotation's dynamic extraction (``extract_lesion_candidates(threshold="dynamic-v2")``
    with ``remove_adjacent_lesion_candidates=True``), in one compiled pass (``dynamic_extraction``).

    Step: p_max = the highest probability left (stop below 0.01); the components of p >= p_max / factor
    with more than ``min_voxels`` voxels, each with its max p; the one with the highest max (ties: the
    first in raster order) is the candidate, unless it touches an earlier candidate (then it is only
    removed); its voxels are set to 0. When every component is too small, the voxels > p_max / factor
    are set to 0 instead, and with them the voxels at p_max: at factor 1 none is above p_max / 1, and
    report_guided_annotation loops for ever there (for a factor above 1 the peak voxels are among those
    above the threshold, so nothing changes). Every step thus sets at least one voxel to 0, and the loop
    ends. Candidates are numbered in the order they are found. NaN or infinite values: ValueError.
    """
    labels, confidences = dynamic_candidate_labels(
        probability, threshold_factor, min_voxels, max_candidates, connectivity
    )
    return Candidates(labels, confidences)


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
    """The candidates of one probability map, extracted as ``settings.candidates`` says."""
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
    return 0.5 * STOP_PROBABILITY / settings.dynamic_threshold_factor
