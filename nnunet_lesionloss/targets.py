"""The packed training target: nnU-Net's segmentation followed by component maps, one tensor per scale.

The loader (``training.transforms.ComponentMapsTransform``) writes, at each deep-supervision scale,
``[seg channels | component ids (C) | Voronoi cells (C) | cell counts (C)]`` in int32 (the last two
only for losses that need cells); the loss (``losses.compound``) and the trainer's online Dice split
it again with :func:`split_target` and :func:`split_cell_counts`. The cell counts are the CC loss's
per-cell voxel counts, a pure function of the target computed once in the loader
(``components.cell_count_tables``: per channel, entry 0 = K, entry 2n + g = voxels of cell n with
g = [voxel in component n], in the channel's first voxels).
This module depends on torch alone, so the loss package does not import the data-loading one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TargetLayout", "split_target", "split_cell_counts"]


@dataclass(frozen=True)
class TargetLayout:
    """How the packed target of one scale is laid out (see module docstring).

    Attributes:
        seg_channels: channels of nnU-Net's own target (1 label map, or regions [+ ignore region]).
        seg_dtype: dtype of nnU-Net's own target (int16 for label maps, bool for regions).
        num_channels: C, the channels that get component maps (classes, label groups or regions).
        with_cells: whether Voronoi cells (and their voxel counts) follow the component ids.
        scales_with_maps: maps are computed at the first this many deep-supervision scales
            (1 = full resolution only); the other scales carry nnU-Net's target alone.
    """

    seg_channels: int
    seg_dtype: torch.dtype
    num_channels: int
    with_cells: bool
    scales_with_maps: int | None

    @property
    def packed_channels(self) -> int:
        return self.seg_channels + self.num_channels * (3 if self.with_cells else 1)


def split_target(target: torch.Tensor, layout: TargetLayout):
    """Split one scale's packed target into (nnU-Net target, component ids, cells).

    A target that carries no maps (a scale beyond ``scales_with_maps``) gives (target, None, None).
    """
    if target.shape[1] == layout.seg_channels:
        return target, None, None
    if target.shape[1] != layout.packed_channels:
        raise ValueError(
            f"target has {target.shape[1]} channels; expected {layout.seg_channels} (no maps) or "
            f"{layout.packed_channels} (with maps) for {layout}"
        )
    seg_end = layout.seg_channels
    ids_end = seg_end + layout.num_channels
    seg = target[:, :seg_end].to(layout.seg_dtype)
    ids = target[:, seg_end:ids_end]
    cells = target[:, ids_end : ids_end + layout.num_channels] if layout.with_cells else None
    return seg, ids, cells


def split_cell_counts(target: torch.Tensor, layout: TargetLayout) -> torch.Tensor | None:
    """The cell-count tables [B, C, *spatial] of one scale's packed target (None without cells or maps)."""
    if not layout.with_cells or target.shape[1] != layout.packed_channels:
        return None
    return target[:, layout.packed_channels - layout.num_channels :]
