"""Connected components and their Voronoi cells, on the CPU (numpy + cc3d + scipy).

These run in nnU-Net's augmentation workers (see ``training.transforms``), so the GPU never waits
for them. Every function takes and returns plain numpy arrays; ids are int32.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

__all__ = [
    "VALID_CONNECTIVITY",
    "ANY_CONNECTIVITY",
    "default_connectivity",
    "check_connectivity",
    "label_components",
    "voronoi_cells",
    "channel_component_maps",
    "group_masks",
]

#: connectivities cc3d supports, by number of spatial dimensions: the one table of the package
VALID_CONNECTIVITY = {2: (4, 8), 3: (6, 18, 26)}
#: every connectivity valid in some dimension (for option lists that do not know the image yet)
ANY_CONNECTIVITY = tuple(sorted({c for valid in VALID_CONNECTIVITY.values() for c in valid}))


def default_connectivity(ndim: int) -> int:
    """Full connectivity: 26 in 3D, 8 in 2D (the papers' cc3d default)."""
    return VALID_CONNECTIVITY[ndim][-1]


def check_connectivity(connectivity: int | None, ndim: int) -> int:
    """``connectivity`` as an int if cc3d supports it for ``ndim`` spatial dimensions (None = full), else raise."""
    if ndim not in VALID_CONNECTIVITY:
        raise ValueError(f"connected components need 2 or 3 spatial dimensions, got {ndim}")
    if connectivity is None:
        return default_connectivity(ndim)
    valid = VALID_CONNECTIVITY[ndim]
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, (int, np.integer))
        or int(connectivity) not in valid
    ):
        raise ValueError(f"connectivity {connectivity!r} is not valid in {ndim}D: connectivity must be one of {valid}")
    return int(connectivity)


def label_components(
    mask: np.ndarray, connectivity: int | None = None, *, return_count: bool = False
) -> np.ndarray | tuple[np.ndarray, int]:
    """Connected components of a boolean 2D/3D mask: int32 ids 1..K, 0 = outside the mask.

    The one labelling function of the package (losses, loader and evaluation): ``connectivity``
    must be valid for the mask's dimension (:data:`VALID_CONNECTIVITY`; None = full), never
    silently mapped. With ``return_count`` the result is ``(ids, K)``.
    """
    mask = np.asarray(mask, dtype=bool)
    connectivity = check_connectivity(connectivity, mask.ndim)
    if not mask.any():
        ids = np.zeros(mask.shape, dtype=np.int32)
        return (ids, 0) if return_count else ids
    # cc3d labels 2D masks with 4/8 connectivity and returns the smallest sufficient dtype
    ids, count = cc3d.connected_components(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, return_N=True
    )
    ids = ids.astype(np.int32, copy=False)
    return (ids, int(count)) if return_count else ids


def voronoi_cells(component_ids: np.ndarray) -> np.ndarray:
    """Voronoi cell of each component: the id of the component whose voxel is nearest (Euclidean,
    voxel units) to every voxel of the volume. All zeros when there is no component.

    This is the domain of the CC loss (Bouteille et al. 2025, arXiv:2511.17146; multi-class form:
    Kundu et al. 2026; docs/references.md): each voxel of the background is
    assigned to the lesion it is closest to, so every lesion gets its own neighbourhood.
    """
    component_ids = np.asarray(component_ids)
    foreground = component_ids > 0
    if not foreground.any():
        return np.zeros(component_ids.shape, dtype=np.int32)
    # EDT of the background gives, for every voxel, the index of its nearest foreground voxel
    nearest = ndimage.distance_transform_edt(~foreground, return_distances=False, return_indices=True)
    return component_ids[tuple(nearest)].astype(np.int32, copy=False)


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
    channel_masks = np.asarray(channel_masks, dtype=bool)
    if ignore is not None:
        channel_masks = channel_masks & ~np.asarray(ignore, dtype=bool)[None]
    ids = (
        np.stack([label_components(m, connectivity) for m in channel_masks])
        if len(channel_masks)
        else np.zeros(channel_masks.shape, np.int32)
    )
    cells = (
        np.stack([voronoi_cells(i) for i in ids]) if with_cells and len(ids) else (ids.copy() if with_cells else None)
    )
    return ids, cells


def group_masks(segmentation: np.ndarray, label_groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Boolean masks [G, *spatial] of a label map, one per group of labels (their union)."""
    segmentation = np.asarray(segmentation)
    return np.stack([np.isin(segmentation, list(group)) for group in label_groups])
