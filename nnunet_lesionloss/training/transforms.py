"""The batchgeneratorsv2 transform that puts connected components into nnU-Net's batches.

nnU-Net's data loader keeps only ``image`` and ``segmentation`` of what the transforms return, so
the component maps travel as extra channels of the segmentation (Skeleton-Recall style): at each
deep-supervision scale the target becomes ``[seg channels | component ids (C) | Voronoi cells (C) |
cell counts (C)]`` in int32 (cells and their voxel counts only for the CC losses). That is a plain tensor, so it survives the loader's collation, pinned memory, both
multiprocessing start methods and DDP without any custom loader.
:class:`nnunet_lesionloss.targets.TargetLayout` says how to split it again on the GPU, before
nnU-Net's own loss and online Dice see the segmentation.
"""

from __future__ import annotations

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform

from nnunet_lesionloss.components import check_connectivity, group_masks, packed_component_maps

__all__ = ["ComponentMapsTransform"]


class ComponentMapsTransform(SegOnlyTransform):
    """Appends connected-component ids (and optionally Voronoi cells and their voxel counts) to the segmentation.

    Runs after region conversion and ``DownsampleSegForDSTransform``, so every scale is labelled on
    its own downsampled target (a lesion that vanishes at a coarse scale has no id there).

    Args:
        label_groups: label-based datasets: one tuple of labels per channel (``[(1,), (2,)]`` is one
            channel per class, one-vs-rest; ``[(1, 2)]`` is the union of all foreground classes).
            Mutually exclusive with ``num_regions``.
        num_regions: region-based datasets: the first ``num_regions`` channels of the segmentation
            are the regions; a further channel, if present, is the ignore region.
        region_channels: region-based: which regions get maps (default: all ``num_regions``), e.g.
            only the region that contains all others for a loss on the union.
        ignore_label: label-based: the ignore label (its voxels are never foreground).
        connectivity: 6/18/26 in 3D, 4/8 in 2D; None = full (26 / 8).
        with_cells: also compute the Voronoi cell of every component and the cells' voxel counts (CC loss).
        scales_with_maps: label only the first this many scales (None = all).
    """

    def __init__(
        self,
        *,
        label_groups: list[tuple[int, ...]] | None = None,
        num_regions: int | None = None,
        region_channels: list[int] | None = None,
        ignore_label: int | None = None,
        connectivity: int | None = None,
        with_cells: bool = False,
        scales_with_maps: int | None = None,
    ):
        super().__init__()
        if (label_groups is None) == (num_regions is None):
            raise ValueError("give exactly one of label_groups (label-based) or num_regions (region-based)")
        if label_groups is not None and (not label_groups or any(len(g) == 0 for g in label_groups)):
            raise ValueError(f"label_groups must be non-empty tuples of labels, got {label_groups}")
        if num_regions is not None and num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {num_regions}")
        if region_channels is not None and (
            num_regions is None or not region_channels or any(not 0 <= r < num_regions for r in region_channels)
        ):
            raise ValueError(f"region_channels must be indices of the {num_regions} regions, got {region_channels}")
        if scales_with_maps is not None and scales_with_maps < 1:
            raise ValueError(f"scales_with_maps must be >= 1 or None, got {scales_with_maps}")
        self.label_groups = [tuple(int(l) for l in g) for g in label_groups] if label_groups is not None else None
        self.num_regions = num_regions
        self.region_channels = None if region_channels is None else [int(r) for r in region_channels]
        self.ignore_label = ignore_label
        self.connectivity = connectivity
        self.with_cells = with_cells
        self.scales_with_maps = scales_with_maps

    def _maps_of(self, segmentation: torch.Tensor) -> torch.Tensor:
        seg = segmentation.numpy()
        if self.connectivity is not None:
            check_connectivity(self.connectivity, seg.ndim - 1)
        if self.label_groups is not None:
            masks = group_masks(seg[0], self.label_groups)
            ignore = seg[0] == self.ignore_label if self.ignore_label is not None else None
        else:
            regions = self.region_channels if self.region_channels is not None else slice(self.num_regions)
            masks = seg[regions].astype(bool)
            ignore = seg[self.num_regions].astype(bool) if seg.shape[0] > self.num_regions else None
        channels = len(masks)
        out = np.empty((seg.shape[0] + channels * (3 if self.with_cells else 1), *seg.shape[1:]), dtype=np.int32)
        out[: seg.shape[0]] = seg
        packed_component_maps(
            masks, ignore=ignore, connectivity=self.connectivity, with_cells=self.with_cells, out=out[seg.shape[0] :]
        )
        return torch.from_numpy(out)

    def _apply_to_segmentation(self, segmentation, **params):
        if isinstance(segmentation, torch.Tensor):
            return self._maps_of(segmentation)
        limit = len(segmentation) if self.scales_with_maps is None else self.scales_with_maps
        return [self._maps_of(s) if i < limit else s for i, s in enumerate(segmentation)]
