"""Statistics of a preprocessed nnU-Net dataset that a trainer derives settings from at start-up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from nnunet_lesionloss.components import group_masks, label_components

__all__ = ["component_volumes"]


def component_volumes(
    segmentations: Iterable[np.ndarray],
    label_groups: Sequence[Sequence[int]],
    connectivity: int | None = None,
) -> np.ndarray:
    """Voxel count of every connected component of every loss channel of every segmentation.

    ``segmentations`` yields label maps [1, *spatial] (or [*spatial]) as nnU-Net's preprocessed
    datasets store them, i.e. at the resolution the loss sees; each channel is the union of the
    labels of one group of ``label_groups`` (one-vs-rest), labelled with ``connectivity`` (None:
    full). Returns int64 [number of components], in the order the cases come.
    """
    volumes = [np.zeros(0, dtype=np.int64)]
    for segmentation in segmentations:
        segmentation = np.asarray(segmentation)
        label_map = segmentation[0] if segmentation.ndim in (3, 4) and segmentation.shape[0] == 1 else segmentation
        for mask in group_masks(label_map, label_groups):
            ids = label_components(mask, connectivity)
            volumes.append(np.bincount(ids.ravel())[1:].astype(np.int64))
    return np.concatenate(volumes)
