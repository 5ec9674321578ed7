"""The dynamic candidate extraction as the evaluation computed it before the one-pass rewrite
(``nnunet_lesionloss.evaluation.froc.dynamic_extraction``): one labelling of the volume per step, written
step by step as report_guided_annotation's loop reads, with main's termination rule (the voxels at p_max
leave with those > t when every component is too small). Its loop kept unchanged as a test oracle for what
report_guided_annotation cannot check (face and 18-connectivity, 2D maps, factor 1 with a minimum size);
nothing imports it but the tests and ``scripts/bench_dynamic_candidates.py --per-step``."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from nnunet_lesionloss.components import check_connectivity, label_components
from nnunet_lesionloss.evaluation.froc.candidates import segment_max
from nnunet_lesionloss.evaluation.froc.dynamic_extraction import STOP_PROBABILITY


def _grow(occupied: np.ndarray, mask: np.ndarray, structure: np.ndarray) -> None:
    """occupied |= dilation of ``mask`` by ``structure``, computed in the mask's bounding box only."""
    coords = np.nonzero(mask)
    box = tuple(slice(max(int(c.min()) - 1, 0), min(int(c.max()) + 2, size)) for c, size in zip(coords, mask.shape))
    occupied[box] |= ndimage.binary_dilation(mask[box], structure=structure)


def per_step_dynamic_candidates(
    probability: np.ndarray,
    threshold_factor: float = 2.5,
    min_voxels: int = 0,
    max_candidates: int | None = None,
    connectivity: int | str = "full",
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, confidences) of the dynamic extraction, one labelling per step."""
    working = np.array(probability, copy=True)
    if not np.isfinite(working).all():
        raise ValueError("the probability map holds NaN or infinite values")
    labels = np.zeros(working.shape, dtype=np.int32)
    grown = np.zeros(working.shape, dtype=bool)  # the candidates and their neighbours
    structure = ndimage.generate_binary_structure(
        working.ndim, {6: 1, 18: 2, 26: 3, 4: 1, 8: 2}[check_connectivity(connectivity, working.ndim)]
    )
    confidences: list[float] = []
    limit = math.inf if max_candidates is None else max_candidates
    while len(confidences) < limit:
        peak = working.max()
        if peak < STOP_PROBABILITY:
            break
        threshold = peak / threshold_factor  # numpy scalar arithmetic, as report_guided_annotation's
        blobs, count = label_components(working >= threshold, connectivity, return_count=True)
        blob_max = segment_max(blobs, working, count)
        sizes = np.bincount(blobs.ravel(), minlength=count + 1)[1:]
        large = sizes > min_voxels
        if not large.any():
            working[(working > threshold) | (working >= peak)] = 0
            continue
        best = blob_max[large].max()
        chosen = int(np.flatnonzero(large & (blob_max == best))[0]) + 1
        mask = blobs == chosen
        if not grown[mask].any():
            confidences.append(float(best))
            labels[mask] = len(confidences)
            _grow(grown, mask, structure)
        working[mask] = 0
    return labels, np.asarray(confidences, dtype=np.float64)
