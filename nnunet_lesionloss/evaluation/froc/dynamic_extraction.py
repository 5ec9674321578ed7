"""The dynamic lesion candidates of a probability map in one compiled pass, voxel for voxel those of
report_guided_annotation's ``extract_lesion_candidates(threshold="dynamic-v2")`` (Bosma et al. 2023,
DIAGNijmegen/Report-Guided-Annotation) with ``remove_adjacent_lesion_candidates=True``; the implementation
of ``--candidates dynamic`` (``candidates.dynamic_candidates`` wraps it).

Their extraction repeats, until the highest probability left is below 0.01 (or enough candidates are
kept): p_max = the highest probability left, t = p_max / factor; label the components of p >= t
(26-connectivity); among those with more than ``min_voxels`` voxels take the one with the highest
maximum (ties: the one whose first voxel comes first in raster order, as ``ndimage.label`` numbers
them); keep it as the next candidate unless it touches (3×3×3 dilation) an earlier candidate; set its
voxels to 0. When every component is too small, the voxels > t are set to 0 instead. That is one
labelling of the whole volume per step: about a minute for a 182×218×182 case with 200 candidates
(``scripts/bench_dynamic_candidates.py --per-step --reference``).

Here the same steps visit only what they change. The voxels that can ever join a candidate
(p >= 0.01 / factor) are sorted once by decreasing probability. A step's p_max is the first of them
not yet set to 0 (a pointer that only moves forward). Every component of p >= t has its maximum at
its first voxel in that order, so walking the order from p_max and flood-filling each component not
yet reached finds the components in decreasing order of their maxima: the first one with more than
``min_voxels`` voxels is the candidate (and the components with the same maximum settle the tie), and
the walk stops there. A step therefore costs the voxels of the components it fills (the candidate,
and the too-small components whose maxima lie above it), not the volume. Whether the candidate
touches an earlier one is a flag per voxel, set around every kept candidate.

One difference, where report_guided_annotation does not return: when every component is too small,
the voxels at p_max are set to 0 with those > t. For a factor above 1 they are among them (nothing
changes); at factor 1 none is > t = p_max, and report_guided_annotation repeats the same step for ever.
Every step thus sets at least one voxel to 0, and the extraction ends. Thresholds and comparisons are
computed in the map's dtype, as NumPy 2 computes report_guided_annotation's (float32 maps: float32
scalars); float16 maps are computed in float32, as report_guided_annotation converts them.

numba compiles the pass on its first call (about 2 s, once: the compiled code is cached on disk, next to
the module, as ``components``' Voronoi cells are, and a new process loads it in about 0.3 s;
``scripts/bench_dynamic_candidates.py`` measures both, docs/benchmarks.md, "Dynamic candidates").
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

from nnunet_lesionloss.components import check_connectivity

__all__ = ["STOP_PROBABILITY", "dynamic_candidate_labels"]

#: report_guided_annotation's ``max_prob_failsafe_stopping_threshold``: no candidate below this peak
STOP_PROBABILITY = 0.01

#: the largest L1 offset of a neighbour, per connectivity (6/4: faces, 18: and edges, 26/8: the full cube)
_REACH = {6: 1, 18: 2, 26: 3, 4: 1, 8: 3}


def _offsets(connectivity: int, with_centre: bool) -> np.ndarray:
    """[k, 3] neighbour offsets of a 3D connectivity (2D ones on a single slice), optionally with (0, 0, 0)."""
    reach = _REACH[connectivity]
    offsets = [
        o
        for o in itertools.product((-1, 0, 1), repeat=3)
        if (with_centre or any(o)) and sum(map(abs, o)) <= reach and (connectivity not in (4, 8) or o[0] == 0)
    ]
    return np.asarray(offsets, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _extract(
    values, order, shape, neighbours, dilation, factor, stop, min_voxels, limit, labels, confidences
):  # pragma: no cover (compiled)
    depth, height, width = shape
    plane = height * width
    n = values.size
    removed = np.zeros(n, np.bool_)  # voxels set to 0 in the working map
    near = np.zeros(n, np.bool_)  # the kept candidates, dilated
    reached = np.zeros(n, np.int32)  # step number of the last flood fill that reached the voxel
    buffer = np.empty(n, np.int64)  # the voxels of the components filled in one step, one after the other
    kept = 0
    step = 0
    pointer = 0
    while kept < limit:
        while pointer < order.size and removed[order[pointer]]:
            pointer += 1
        if pointer == order.size:
            break  # every voxel that is left lies below stop / factor <= stop
        peak = values[order[pointer]]
        if peak < stop:
            break
        threshold = peak / factor
        step += 1
        used = 0
        found = False
        best_start = best_end = 0
        best_first = n
        best_max = peak
        walk = pointer
        while walk < order.size:
            seed = order[walk]
            value = values[seed]
            if value < threshold or (found and value < best_max):
                break
            walk += 1
            if removed[seed] or reached[seed] == step:
                continue
            start = used
            buffer[used] = seed
            used += 1
            reached[seed] = step
            first = seed
            head = start
            while head < used:
                voxel = buffer[head]
                head += 1
                if voxel < first:
                    first = voxel
                z = voxel // plane
                y = (voxel // width) % height
                x = voxel % width
                for k in range(neighbours.shape[0]):
                    zz = z + neighbours[k, 0]
                    yy = y + neighbours[k, 1]
                    xx = x + neighbours[k, 2]
                    if zz < 0 or zz >= depth or yy < 0 or yy >= height or xx < 0 or xx >= width:
                        continue
                    other = zz * plane + yy * width + xx
                    if reached[other] != step and not removed[other] and values[other] >= threshold:
                        reached[other] = step
                        buffer[used] = other
                        used += 1
            if used - start > min_voxels and (not found or first < best_first):
                found = True
                best_start, best_end, best_first, best_max = start, used, first, value
        if not found:  # every component is too small: the voxels > t, and those at p_max, leave the map
            walk = pointer
            while walk < order.size and (values[order[walk]] > threshold or values[order[walk]] >= peak):
                removed[order[walk]] = True
                walk += 1
            continue
        touches = False
        for i in range(best_start, best_end):
            if near[buffer[i]]:
                touches = True
                break
        if not touches:
            confidences[kept] = best_max
            kept += 1
            for i in range(best_start, best_end):
                voxel = buffer[i]
                labels[voxel] = kept
                z = voxel // plane
                y = (voxel // width) % height
                x = voxel % width
                for k in range(dilation.shape[0]):
                    zz = z + dilation[k, 0]
                    yy = y + dilation[k, 1]
                    xx = x + dilation[k, 2]
                    if 0 <= zz < depth and 0 <= yy < height and 0 <= xx < width:
                        near[zz * plane + yy * width + xx] = True
        for i in range(best_start, best_end):
            removed[buffer[i]] = True
    return kept


def dynamic_candidate_labels(
    probability: np.ndarray,
    threshold_factor: float = 2.5,
    min_voxels: int = 0,
    max_candidates: int | None = None,
    connectivity: int | str = "full",
) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic lesion candidates of a 2D or 3D probability map (module docstring).

    Args:
        probability: float map (float32 or float64; float16 is computed in float32), values in [0, 1].
        threshold_factor: a candidate is the component of p >= p_max / factor (>= 1; report_guided_annotation: 2.5).
        min_voxels: components of at most this many voxels are never candidates.
        max_candidates: stop after this many kept candidates (None: until p_max < 0.01).
        connectivity: of the components and of "touches": 6/18/26 in 3D, 4/8 in 2D, "full" (26/8) or
            "face" (6/4). report_guided_annotation: 26 (full).

    Returns:
        (labels int32 of the map's shape: 0 = none, candidate k = k in the order found;
        confidences float64 [n]: the maximum probability of candidate k at k - 1).
    """
    probability = np.asarray(probability)
    if probability.ndim not in (2, 3):
        raise ValueError(f"probability must be a 2D or 3D map, got shape {probability.shape}")
    if not np.issubdtype(probability.dtype, np.floating):
        raise TypeError(f"probability must be a floating-point map, got {probability.dtype}")
    connectivity = check_connectivity(connectivity, probability.ndim)
    if isinstance(threshold_factor, bool) or not np.isfinite(threshold_factor) or threshold_factor < 1:
        raise ValueError(f"threshold_factor must be a finite number >= 1, got {threshold_factor!r}")
    if isinstance(min_voxels, bool) or int(min_voxels) != min_voxels or min_voxels < 0:
        raise ValueError(f"min_voxels must be an integer >= 0, got {min_voxels!r}")
    if max_candidates is not None and (
        isinstance(max_candidates, bool) or int(max_candidates) != max_candidates or max_candidates < 0
    ):
        raise ValueError(f"max_candidates must be None or an integer >= 0, got {max_candidates!r}")
    if probability.dtype not in (np.float32, np.float64):
        probability = probability.astype(np.float32)
    if not np.isfinite(probability).all():  # NaN is no peak and below no threshold
        raise ValueError("the probability map holds NaN or infinite values")
    shape = probability.shape if probability.ndim == 3 else (1, *probability.shape)
    values = np.ascontiguousarray(probability).reshape(-1)
    dtype = values.dtype.type
    factor, stop = dtype(threshold_factor), dtype(STOP_PROBABILITY)
    # every threshold is p_max / factor with p_max >= stop: no voxel below stop / factor joins a candidate
    lowest = stop / factor
    reachable = np.flatnonzero(values >= lowest)
    order = reachable[np.argsort(-values[reachable], kind="stable")]
    labels = np.zeros(values.size, dtype=np.int32)
    limit = values.size if max_candidates is None else int(max_candidates)
    confidences = np.zeros(min(limit, values.size), dtype=values.dtype)
    kept = _extract(
        values,
        order,
        np.asarray(shape, dtype=np.int64),
        _offsets(connectivity, with_centre=False),
        _offsets(connectivity, with_centre=True),
        factor,
        stop,
        int(min_voxels),
        limit,
        labels,
        confidences,
    )
    return labels.reshape(probability.shape), confidences[:kept].astype(np.float64)
