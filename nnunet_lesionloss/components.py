"""Connected components and their Voronoi cells, on the CPU (numpy + cc3d + numba).

These run in nnU-Net's augmentation workers (see ``training.transforms``), so the GPU never waits
for them. Every function takes and returns plain numpy arrays; ids are int32.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numba
import numpy as np

__all__ = [
    "VALID_CONNECTIVITY",
    "ANY_CONNECTIVITY",
    "NAMED_CONNECTIVITY",
    "default_connectivity",
    "check_connectivity_value",
    "check_connectivity",
    "label_components",
    "voronoi_cells",
    "cell_voxel_counts",
    "cell_count_tables",
    "component_statistics",
    "channel_component_maps",
    "packed_component_maps",
    "group_masks",
]

#: connectivities cc3d supports, by number of spatial dimensions: the one table of the package
VALID_CONNECTIVITY = {2: (4, 8), 3: (6, 18, 26)}
#: every connectivity valid in some dimension (for option lists that do not know the image yet)
ANY_CONNECTIVITY = tuple(sorted({c for valid in VALID_CONNECTIVITY.values() for c in valid}))
#: connectivities named for every dimension: full = 26 in 3D / 8 in 2D, face = 6 / 4
NAMED_CONNECTIVITY = ("full", "face")


def check_connectivity_value(connectivity, name: str = "connectivity") -> int | str:
    """A connectivity as a setting holds it before the image's dimension is known: 'full', 'face' or a
    number valid in some dimension (:data:`ANY_CONNECTIVITY`). Raises ValueError naming ``name``. The
    one check of the package's settings, configs and options; :func:`check_connectivity` resolves it
    for an image."""
    if connectivity in NAMED_CONNECTIVITY:
        return connectivity
    if isinstance(connectivity, (int, np.integer)) and not isinstance(connectivity, bool):
        if int(connectivity) in ANY_CONNECTIVITY:
            return int(connectivity)
    raise ValueError(
        f"{name} must be 'full' (26 in 3D, 8 in 2D), 'face' (6 / 4), one of {VALID_CONNECTIVITY[3]} (3D) or "
        f"{VALID_CONNECTIVITY[2]} (2D), got {connectivity!r}"
    )


def default_connectivity(ndim: int) -> int:
    """Full connectivity: 26 in 3D, 8 in 2D (the papers' cc3d default)."""
    return VALID_CONNECTIVITY[ndim][-1]


def check_connectivity(connectivity: int | str | None, ndim: int) -> int:
    """``connectivity`` as an int if cc3d supports it for ``ndim`` spatial dimensions, else raise.

    ``'full'`` (or None) and ``'face'`` name a connectivity of every dimension: full = 26 in 3D, 8 in 2D;
    face = 6 in 3D, 4 in 2D. A number is used as given, never mapped to another dimension.
    """
    if ndim not in VALID_CONNECTIVITY:
        raise ValueError(f"connected components need 2 or 3 spatial dimensions, got {ndim}")
    if connectivity is None or connectivity == "full":
        return default_connectivity(ndim)
    if connectivity == "face":
        return VALID_CONNECTIVITY[ndim][0]
    valid = VALID_CONNECTIVITY[ndim]
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, (int, np.integer))
        or int(connectivity) not in valid
    ):
        raise ValueError(
            f"connectivity {connectivity!r} is not valid in {ndim}D: connectivity must be one of {valid} "
            "(or 'full' / 'face', which follow the image's dimension)"
        )
    return int(connectivity)


def label_components(
    mask: np.ndarray,
    connectivity: int | str | None = None,
    *,
    return_count: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, int]:
    """Connected components of a boolean 2D/3D mask: int32 ids 1..K, 0 = outside the mask.

    The one labelling function of the package (losses, loader and evaluation): ``connectivity``
    must be valid for the mask's dimension (:data:`VALID_CONNECTIVITY`; None or 'full' = full,
    'face' = face, see :func:`check_connectivity`), never silently mapped. With ``return_count`` the result is ``(ids, K)``.
    ``out`` (int32, the mask's shape): written and returned instead of a new array (one copy less
    when the labels of several masks go into one array).
    """
    mask = np.asarray(mask, dtype=bool)
    connectivity = check_connectivity(connectivity, mask.ndim)
    if out is not None and (out.shape != mask.shape or out.dtype != np.int32):
        raise ValueError(f"out must be int32 of shape {mask.shape}, got {out.dtype} {out.shape}")
    if not mask.any():
        ids = np.zeros(mask.shape, dtype=np.int32) if out is None else out
        ids[...] = 0
        return (ids, 0) if return_count else ids
    # cc3d labels 2D masks with 4/8 connectivity and returns the smallest sufficient dtype
    ids, count = cc3d.connected_components(
        np.ascontiguousarray(mask).view(np.uint8), connectivity=connectivity, return_N=True
    )
    if out is None:
        ids = ids.astype(np.int32, copy=False)
    else:
        out[...] = ids
        ids = out
    return (ids, int(count)) if return_count else ids


# ---------------------------------------------------------------------------------------------
# Voronoi cells: an exact Euclidean feature transform, separable (one pass per axis).
#
# Pass 1 (last axis): nearest foreground voxel along each line, two sweeps. Each further pass
# computes, along its axis, the lower envelope of the parabolas f_s + (x - s)² of the previous
# pass (Felzenszwalb & Huttenlocher 2012, Theory of Computing 8:415-428), carrying the label of
# each parabola's site. Squared distances are integers, so every comparison is exact. Ties are
# broken by the smaller label at every pass: the minimum over the union of the tied sets of a
# pass is the minimum of their minima, so the result is, for every voxel, the smallest id among
# the components at the smallest Euclidean distance (see ``voronoi_cells``).

_NO_SITE = -(1 << 40)  # start of the first parabola's interval: before any voxel


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nearest_along_last_axis(ids, cost, label, lines, n):  # pragma: no cover (compiled)
    for line in range(lines):
        start = line * n
        last = -1
        for x in range(n):
            i = start + x
            if ids[i] > 0:
                last = x
                cost[i] = 0
                label[i] = ids[i]
            elif last >= 0:
                cost[i] = (x - last) * (x - last)
                label[i] = label[start + last]
            else:
                cost[i] = -1  # no foreground on this side (yet)
                label[i] = 0
        if last < 0:
            continue
        following = -1
        for x in range(n - 1, -1, -1):
            i = start + x
            if ids[i] > 0:
                following = x
            elif following >= 0:
                distance = (following - x) * (following - x)
                candidate = label[start + following]
                if cost[i] < 0 or distance < cost[i] or (distance == cost[i] and candidate < label[i]):
                    cost[i] = distance
                    label[i] = candidate


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lower_envelope(f, l, n, out_f, out_l, sites, starts, heights, labels):  # pragma: no cover (compiled)
    """min over the sites s with f[s] >= 0 of (f[s] + (x - s)², l[s]), lexicographically, for x in 0..n-1.

    The stack holds the envelope's sites with their height f[s] + s², label and first voxel.
    """
    k = -1
    for q in range(n):
        if f[q] < 0:
            continue
        height, own_label = f[q] + q * q, l[q]
        start = _NO_SITE
        while k >= 0:
            # q beats site k from x = numerator / denominator on (just after it if site k keeps the tie)
            numerator = height - heights[k]
            denominator = 2 * (q - sites[k])
            quotient = np.floor(numerator / denominator)  # exact: small integers in float64
            start = np.int64(quotient)
            if not (own_label < labels[k] and quotient * denominator == numerator):
                start += 1
            if k > 0 and start <= starts[k]:
                k -= 1  # site k wins nowhere
            else:
                break
        if start >= n:
            continue  # q wins nowhere inside the line
        k += 1
        sites[k], heights[k], labels[k] = q, height, own_label
        starts[k] = start if k > 0 else _NO_SITE
    if k < 0:
        return False
    j = 0
    for x in range(n):
        while j < k and starts[j + 1] <= x:
            j += 1
        out_f[x] = heights[j] - 2 * x * sites[j] + x * x
        out_l[x] = labels[j]
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _envelope_pass(cost, label, outer, n, inner, tile):  # pragma: no cover (compiled)
    """One pass along the middle axis of [outer, n, inner], ``tile`` neighbouring lines at a time
    (copied to contiguous rows, so that a strided axis reads whole cache lines)."""
    f = np.empty((tile, n), cost.dtype)
    l = np.empty((tile, n), label.dtype)
    out_f = np.empty(n, cost.dtype)
    out_l = np.empty(n, label.dtype)
    sites, starts, heights = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    labels = np.empty(n, label.dtype)
    for a in range(outer):
        base = a * n * inner
        for b0 in range(0, inner, tile):
            width = min(tile, inner - b0)
            for x in range(n):
                row = base + x * inner + b0
                for t in range(width):
                    f[t, x] = cost[row + t]
                    l[t, x] = label[row + t]
            for t in range(width):
                if _lower_envelope(f[t], l[t], n, out_f, out_l, sites, starts, heights, labels):
                    f[t, :] = out_f
                    l[t, :] = out_l
            for x in range(n):
                row = base + x * inner + b0
                for t in range(width):
                    cost[row + t] = f[t, x]
                    label[row + t] = l[t, x]


def voronoi_cells(component_ids: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Voronoi cell of each component: the id of the component whose voxel is nearest (Euclidean,
    voxel units) to every voxel of the volume. All zeros when there is no component.

    This is the domain of the CC loss (Bouteille et al. 2025, arXiv:2511.17146; multi-class form:
    Kundu et al. 2026; docs/references.md): each voxel of the background is
    assigned to the lesion it is closest to, so every lesion gets its own neighbourhood.

    Exact: squared distances are integers, compared without rounding, by a separable exact
    Euclidean feature transform (a lower envelope of parabolas per axis, Felzenszwalb &
    Huttenlocher 2012) in compiled code, several times faster than scipy's
    ``distance_transform_edt(..., return_indices=True)`` (``scripts/bench_loader.py``).
    Tie rule: a voxel at the same smallest distance from several components gets the smallest of
    their ids. Any dimension (2D and 3D in practice); ids must be int32-representable. ``out``: an
    optional C-contiguous int32 array of the same shape to write the cells into (returned).
    """
    component_ids = np.asarray(component_ids)
    if component_ids.ndim == 0:
        raise ValueError("component_ids must have at least one dimension")
    shape = component_ids.shape
    if out is None:
        out = np.empty(shape, dtype=np.int32)
    elif out.shape != shape or out.dtype != np.int32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous int32 array of shape {shape}")
    if component_ids.size == 0 or not (component_ids > 0).any():
        out[...] = 0
        return out
    ids = np.ascontiguousarray(component_ids, dtype=np.int32).reshape(-1)
    cost = np.empty(ids.size, np.int64 if sum(s * s for s in shape) >= 2**31 else np.int32)
    label = out.reshape(-1)
    _nearest_along_last_axis(ids, cost, label, ids.size // shape[-1], shape[-1])
    for axis in range(len(shape) - 2, -1, -1):
        inner = int(np.prod(shape[axis + 1 :]))
        _envelope_pass(cost, label, int(np.prod(shape[:axis])), shape[axis], inner, min(inner, 32))
    return out


@numba.njit(cache=True, nogil=True)
def _count_slots(ids, cells, valid, counts):  # pragma: no cover (compiled)
    for i in range(ids.size):
        if valid.size == 0 or valid[i]:
            cell = cells[i]
            counts[2 * cell + (1 if ids[i] == cell else 0)] += 1


def cell_voxel_counts(component_ids: np.ndarray, cells: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Voxels of each Voronoi cell inside and outside its component, the per-cell counts of the CC
    loss (a pure function of the target, so the loader computes them once).

    Returns int64 ``counts`` of length 2·(K + 1), K = ``cells.max()``: ``counts[2n + 1]`` =
    |C_n ∩ Ω_n| (voxels of cell n that belong to component n) and ``counts[2n]`` = |Ω_n \\ C_n|,
    over the ``valid`` voxels only (all when None). Entries 0 and 1 count cell id 0 (no cell).
    """
    ids = np.ascontiguousarray(component_ids, dtype=np.int32).reshape(-1)
    cells = np.ascontiguousarray(cells, dtype=np.int32).reshape(-1)
    if ids.shape != cells.shape:
        raise ValueError(f"component_ids and cells differ in size: {ids.size} vs {cells.size}")
    valid = np.zeros(0, bool) if valid is None else np.ascontiguousarray(valid, dtype=bool).reshape(-1)
    counts = np.zeros(2 * (int(cells.max(initial=0)) + 1), dtype=np.int64)
    _count_slots(ids, cells, valid, counts)
    return counts


def _write_cell_table(table: np.ndarray, component_ids: np.ndarray, cells: np.ndarray, valid) -> None:
    """Fill one channel's flat int32 ``table`` (see :func:`cell_count_tables`)."""
    counts = cell_voxel_counts(component_ids, cells, valid)
    table[:] = 0
    if counts.size > table.size:
        table[0] = -1
        return
    table[2 : counts.size] = counts[2:]
    table[0] = counts.size // 2 - 1


def cell_count_tables(component_ids: np.ndarray, cells: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """The per-cell voxel counts of each channel as the CC loss takes them (``cell_counts``):
    int32 [C, *spatial], one table per channel in its first voxels (flat order).

    Entry 0 = K, the largest cell id of the channel; entry 2n + 1 = |C_n ∩ Ω_n| and entry 2n =
    |Ω_n \\ C_n| for n = 1..K (:func:`cell_voxel_counts`), non-ignored voxels only; the rest is 0.
    A table that does not fit (2K + 2 > voxels, only for thousands of one-voxel components in a
    tiny patch) has K = -1: the loss then counts the cells itself.
    """
    component_ids, cells = np.asarray(component_ids), np.asarray(cells)
    tables = np.empty(cells.shape, dtype=np.int32)
    valid = None if ignore is None else ~np.asarray(ignore, dtype=bool)
    for table, ids, cell in zip(tables.reshape(len(tables), -1), component_ids, cells):
        _write_cell_table(table, ids, cell, valid)
    return tables


@numba.njit(cache=True, nogil=True)
def _statistics(labels, slots, counts, sums, lower, upper):  # pragma: no cover (compiled)
    pairs, depth, height, width = labels.shape
    for pair in range(pairs):
        for z in range(depth):
            for y in range(height):
                for x in range(width):
                    label = labels[pair, z, y, x]
                    if label <= 0:
                        continue
                    i = pair * slots + label
                    counts[i] += 1
                    sums[i, 0] += z
                    sums[i, 1] += y
                    sums[i, 2] += x
                    lower[i, 0] = min(lower[i, 0], z)
                    lower[i, 1] = min(lower[i, 1], y)
                    lower[i, 2] = min(lower[i, 2], x)
                    upper[i, 0] = max(upper[i, 0], z)
                    upper[i, 1] = max(upper[i, 1], y)
                    upper[i, 2] = max(upper[i, 2], x)


def component_statistics(labels: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voxel count, coordinate sum and bounding box of every component of labels [P, *spatial] (2D/3D),
    in one pass over the voxels.

    Component k (1 <= k < ``slots``) of row p has the index p·slots + k; index p·slots is "no
    component". Returns int64 ``counts`` [P·slots], ``coordinate_sums`` [P·slots, D] and the
    inclusive box ``lower``, ``upper`` [P·slots, D] (lower = V, upper = -1 where a component is empty).
    """
    labels = np.asarray(labels)
    spatial_dims = labels.ndim - 1
    if spatial_dims not in VALID_CONNECTIVITY:
        raise ValueError(f"labels must be [P, *spatial] with 2 or 3 spatial dims, got shape {labels.shape}")
    volume = np.ascontiguousarray(labels, dtype=np.int32)
    if spatial_dims == 2:
        volume = volume[:, None]
    segments = labels.shape[0] * slots
    counts = np.zeros(segments, np.int64)
    sums = np.zeros((segments, 3), np.int64)
    lower = np.full((segments, 3), max(volume.shape[1:]), np.int64)
    upper = np.full((segments, 3), -1, np.int64)
    if volume.size and int(volume.max()) >= slots:
        raise ValueError(f"labels go up to {int(volume.max())}, beyond slots - 1 = {slots - 1}")
    _statistics(volume, slots, counts, sums, lower, upper)
    axes = slice(3 - spatial_dims, 3)
    return counts, sums[:, axes], lower[:, axes], upper[:, axes]


def packed_component_maps(
    channel_masks: np.ndarray,
    *,
    ignore: np.ndarray | None = None,
    connectivity: int | None = None,
    with_cells: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The loader's maps of ``channel_masks`` [C, *spatial] in one int32 array: component ids (C
    channels), then with ``with_cells`` the Voronoi cells (C) and the cell count tables (C, see
    :func:`cell_count_tables`); written into ``out`` when given (e.g. a slice of the packed target).

    Each channel is labelled on its own (one-vs-rest), after removing ``ignore`` voxels, so an
    ignored voxel is never foreground (and is left out of the cell counts).
    """
    channel_masks = np.asarray(channel_masks, dtype=bool)
    channels = len(channel_masks)
    shape = (channels * (3 if with_cells else 1), *channel_masks.shape[1:])
    if out is None:
        out = np.empty(shape, dtype=np.int32)
    elif out.shape != shape or out.dtype != np.int32:
        raise ValueError(f"out must be int32 of shape {shape}, got {out.dtype} {out.shape}")
    keep = None if ignore is None else ~np.asarray(ignore, dtype=bool)
    for channel, mask in enumerate(channel_masks):
        ids, count = label_components(mask if keep is None else mask & keep, connectivity, return_count=True)
        out[channel] = ids
        if with_cells:
            cells = voronoi_cells(ids, out=out[channels + channel])
            _write_cell_table(out[2 * channels + channel].reshape(-1), ids, cells, keep)
    return out


def channel_component_maps(
    channel_masks: np.ndarray,
    *,
    ignore: np.ndarray | None = None,
    connectivity: int | None = None,
    with_cells: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Components (and optionally Voronoi cells) of each channel of ``channel_masks`` [C, *spatial].

    Each channel is labelled on its own (one-vs-rest), after removing ``ignore`` voxels, so an
    ignored voxel is never foreground. Returns int32 ``ids`` [C, *spatial] and ``cells`` (or None).
    """
    maps = packed_component_maps(channel_masks, ignore=ignore, connectivity=connectivity, with_cells=with_cells)
    channels = len(maps) // (3 if with_cells else 1)
    return maps[:channels], (maps[channels : 2 * channels] if with_cells else None)


def group_masks(segmentation: np.ndarray, label_groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Boolean masks [G, *spatial] of a label map, one per group of labels (their union)."""
    segmentation = np.asarray(segmentation)
    masks = np.empty((len(label_groups), *segmentation.shape), dtype=bool)
    for mask, group in zip(masks, label_groups):
        if len(group) == 1:
            np.equal(segmentation, group[0], out=mask)  # several times faster than isin for one label
        else:
            mask[...] = np.isin(segmentation, list(group))
    return masks
