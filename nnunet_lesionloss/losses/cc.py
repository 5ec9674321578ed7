"""CC loss (Bouteille et al. 2025, arXiv:2511.17146) and IWL-CC (Kundu et al. 2026, arXiv:2604.24276 §2.5):
Dice (+ CE) of each ground-truth component inside its Voronoi cell, as one scatter over cell slots.

Inputs and the shared pieces: ``losses/component_dice.py``; formulas and aggregation: ``docs/formulas.md §1``.
"""

from __future__ import annotations

import torch

from .checks import check_integer_map, check_probs, check_same_device, checked_once
from .component_dice import (
    CE_PROB_CLAMP,
    IWL_MAX_DEFAULT,
    check_component_loss_options,
    compute_dtype,
    domain_losses,
    mean_over_components_then_pairs,
    whole_pair_losses,
)
from .segments import CellSlots, build_cell_slots, index_count, valid_voxel_mask, zero_with_graph

__all__ = ["cc_loss"]


class _CellSums(torch.autograd.Function):
    """Σ p and Σ log x per slot of a segment index, x = p if g else 1 - p (p clamped for the log).

    With q = clamp(p) and ``shift`` = g - 1 (0 or -1, in p's dtype), x = |q + shift| and
    d log x / dp = 1 / (q + shift) where the clamp leaves p unchanged, 0 where it clamps (as
    autograd differentiates clamp). One ``index_add_`` per sum in the forward, one
    ``index_select`` per sum and a few in-place passes in the backward: none of the chain of
    V-sized temporaries that autograd keeps for clamp, where and log.
    """

    @staticmethod
    def forward(ctx, p, slot, shift, num_slots: int, with_log: bool):
        p_sums = p.new_zeros(num_slots).index_add_(0, slot, p)
        log_sums = None
        if with_log:
            x = p.clamp(CE_PROB_CLAMP, 1.0 - CE_PROB_CLAMP).add_(shift).abs_().log_()
            log_sums = p.new_zeros(num_slots).index_add_(0, slot, x)
        ctx.save_for_backward(p, slot, shift)
        ctx.with_log = with_log
        return p_sums, log_sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_p_sums, grad_log_sums):
        p, slot, shift = ctx.saved_tensors
        grad = grad_p_sums.index_select(0, slot) if grad_p_sums is not None else torch.zeros_like(p)
        if ctx.with_log and grad_log_sums is not None:
            q = p.clamp(CE_PROB_CLAMP, 1.0 - CE_PROB_CLAMP)
            clamped = q != p  # p outside [eps, 1 - eps] (or NaN): clamp passes no gradient
            derivative = q.add_(shift).reciprocal_().masked_fill_(clamped, 0.0)
            grad.addcmul_(grad_log_sums.index_select(0, slot), derivative)
        return grad, None, None, None, None


def _check_cells(component_ids: torch.Tensor, slots: CellSlots, counts: torch.Tensor) -> None:
    """``voronoi_cells`` must be cells of these component ids: every component voxel lies in the cell
    of its own id, every voxel of a pair with components has a cell (> 0), and every cell holds
    its component. Cells of other ids (another numbering, another sample, a resampled map) would
    otherwise leave cells without their lesion, which the loss cannot score.

    Read from the loss's own slots: ``counts`` (the voxels of every slot, ignore mask left out) and
    ``slots.in_component`` ([id = cell id], cleared in pairs without cells), so that a component
    voxel outside the cell of its id is a voxel with an id > 0 outside its own slot 2n + 1; the
    voxels without a cell are in the pair's first two slots (cell 0; all of the pair's voxels are in
    its first slot when it has no cell at all). Two passes over the ids (a max, and a max of the ids
    outside their cell); the exact counts of the message only when a check fails.
    """
    pairs = slots.num_pairs
    ids = component_ids.flatten(2)
    in_component = slots.in_component.view(ids.shape)
    has_foreground = ids.amax(dim=2).reshape(pairs) > 0
    outside_own_cell = ids.masked_fill(in_component, 0).amax(dim=2).reshape(pairs) > 0
    rest, own = counts[slots.cell_slot], counts[slots.cell_slot + 1]
    without_component = (rest > 0) & (own == 0)
    without_cell = torch.where(has_foreground, counts[slots.pair_offset] + counts[slots.pair_offset + 1], 0.0)
    if not bool(torch.stack([outside_own_cell.any(), without_component.any(), (without_cell > 0).any()]).any()):
        return
    misplaced = int(((ids > 0) & ~in_component).sum())
    raise ValueError(
        "voronoi_cells do not match component_ids: "
        f"{misplaced} component voxel(s) lie outside the cell of their id, {int(without_cell.sum())} voxel(s) of a "
        f"channel with components have no cell (0), {int(without_component.sum())} cell(s) hold no voxel of the "
        "component of their id; compute the cells from these ids "
        "(nnunet_lesionloss.components.voronoi_cells, per sample and channel)"
    )


def _check_cell_counts(slots: CellSlots, counts: torch.Tensor) -> None:
    """The precomputed table (``slots.slot_counts``) must hold the counts of the slots (``counts``,
    counted here from the same ids, cells and ignore mask)."""
    read = torch.cat([slots.cell_slot, slots.cell_slot + 1])  # the slots of cells 1..K (id 0 has no domain)
    if not torch.equal(slots.slot_counts.to(torch.float64)[read], counts[read]):
        raise ValueError(
            "cell_counts do not match component_ids, voronoi_cells and ignore_mask: compute them from the same maps "
            "(nnunet_lesionloss.components.cell_count_tables)"
        )


def _check_table_sizes(voronoi_cells: torch.Tensor, cell_counts: torch.Tensor) -> None:
    """Entry 0 of each pair's table is its largest cell id (or -1 in every pair: no table); checked
    before the table lays out the slots, so that a wrong one cannot put a voxel outside them."""
    largest = cell_counts.flatten(2)[:, :, 0]
    if bool((largest < 0).any()):
        return  # the loss counts the cells itself
    if not torch.equal(largest.long(), voronoi_cells.flatten(2).amax(dim=2).long()):
        raise ValueError(
            "cell_counts do not match component_ids, voronoi_cells and ignore_mask: entry 0 of a table is not the "
            "largest cell id of its pair (nnunet_lesionloss.components.cell_count_tables)"
        )


def cc_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    voronoi_cells: torch.Tensor,
    *,
    base: str = "dice_ce",
    iwl: bool = False,
    iwl_max: float = IWL_MAX_DEFAULT,
    iwl_reading: str = "clamp",
    empty_pairs: str = "whole_patch",
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    cell_counts: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """CC loss (Bouteille et al. 2025, arXiv:2511.17146), multi-class one-vs-rest (Kundu et al. 2026 §2.1-2.2).

    ``voronoi_cells`` int [B, C, *spatial] gives, per channel, the id of the component whose
    ground-truth voxel is nearest (Euclidean), 0 only where the channel has no component. For each
    pair (b, c) and each component n the domain is its cell Ω_n = {voronoi_cells == n} and
    g = [component_ids == n]; Dice_n, CE_n and the IWL weight w are those of ``blob_loss``:

        Dice_n = 1 - (2·Σ_Ω w·p·g + s) / (Σ_Ω w·p + Σ_Ω w·g + s)
        CE_n   = Σ_Ω w·(-[g·log p + (1-g)·log(1-p)]) / Σ_Ω w
        w      = iwl_weight(|Ω_n| / |C_n ∩ Ω_n|) on C_n with ``iwl=True`` (IWL-CC), else 1.

    A cell counts when it holds at least one non-ignored voxel of its component. A pair's loss is
    the mean over its counted cells. ``empty_pairs`` (:data:`EMPTY_PAIRS`): "whole_patch" (default,
    the CC authors' code, ``instance_losses.py`` of their nnU-Net: a sample without components is
    scored on the whole volume, Dice + CE with g = 0, and the mean runs over all samples) or "skip"
    (the mean over the pairs with counted cells only, as Kofler et al.'s blob code; no counted cell
    in the batch: a zero with a graph).

    Every voxel gets one slot, 2·(its cell) + g, offset per pair (ignored voxels: a discarded
    slot), so that one scatter of p and one of log p or log(1 - p) over V give Σp and Σ CE of
    both halves of every cell (C_n ∩ Ω_n and Ω_n \\ C_n) and of every lesion-free pair. The voxel
    counts of the slots depend on the target alone: the loader precomputes them (``cell_counts``);
    without them the loss counts them with one more scatter.

    Args: as ``blob_loss``, plus ``voronoi_cells`` (int, same shape as ``probs``; with
        ``validate=True`` it must be the cells of ``component_ids``, else a ValueError) and
        cell_counts: optional int [B, C, *spatial], per pair a table in its first voxels (flat
            order): entry 0 = K, the largest cell id of the pair (-1: no table, count here),
            entry 2n + 1 = |C_n ∩ Ω_n| and entry 2n = |Ω_n \\ C_n| for n = 1..K, non-ignored
            voxels only (``nnunet_lesionloss.components.cell_count_tables``; the loader writes it,
            ``nnunet_lesionloss.targets``). It must come from the same ids, cells and ignore mask.
    """
    if validate:
        check_probs(probs)
        for name, tensor in (("component_ids", component_ids), ("voronoi_cells", voronoi_cells)):
            check_integer_map(probs, tensor, name)
        if cell_counts is not None:
            check_integer_map(probs, cell_counts, "cell_counts")
        check_component_loss_options(base, smooth, iwl, iwl_max, iwl_reading, empty_pairs)
        check_same_device(
            probs,
            component_ids=component_ids,
            voronoi_cells=voronoi_cells,
            ignore_mask=ignore_mask,
            cell_counts=cell_counts,
        )

        def cells_are_nonnegative() -> None:
            if voronoi_cells.numel() and int(voronoi_cells.amin()) < 0:
                raise ValueError("voronoi_cells must be >= 0 (0 = no cell)")
            if cell_counts is not None:
                _check_table_sizes(voronoi_cells, cell_counts)

        checked_once("cell ids and table sizes", cells_are_nonnegative, voronoi_cells, cell_counts)
    dtype = compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        valid = valid_voxel_mask(ignore_mask, probs.shape)
        slots = build_cell_slots(component_ids, voronoi_cells, valid, cell_counts)
        counts = None if slots.slot_counts is None else slots.slot_counts.to(dtype)
        if validate:  # the maps' checks read the loss's own slots, and the loss then uses their counts
            counted: list[torch.Tensor] = []

            def maps_match() -> None:
                counted.append(index_count(slots.voxel_slot, slots.num_slots, torch.float64))
                if slots.slot_counts is not None:
                    _check_cell_counts(slots, counted[0])
                if valid is None:
                    _check_cells(component_ids, slots, counted[0])
                else:  # every voxel, ignored ones too: a component may be wholly ignored
                    unmasked = build_cell_slots(component_ids, voronoi_cells)
                    _check_cells(component_ids, unmasked, index_count(unmasked.voxel_slot, unmasked.num_slots))

            checked_once(
                "voronoi cells and cell counts", maps_match, component_ids, voronoi_cells, cell_counts, ignore_mask
            )
            if counts is None and counted:
                counts = counted[0].to(dtype)
        if slots.cell_slot.numel() == 0 and empty_pairs == "skip":
            return zero_with_graph(probs).to(dtype)
        p = probs.to(dtype).reshape(-1)
        shift = slots.in_component.to(dtype).sub_(1.0) if base == "dice_ce" else None  # g - 1
        p_sums, log_sums = _CellSums.apply(p, slots.voxel_slot, shift, slots.num_slots, base == "dice_ce")
        if counts is None:
            counts = index_count(slots.voxel_slot, slots.num_slots, dtype)
        rest, fg = slots.cell_slot, slots.cell_slot + 1  # slots of Ω_n \ C_n and C_n ∩ Ω_n
        fg_ce = rest_ce = None
        if log_sums is not None:
            fg_ce, rest_ce = -log_sums[fg], -log_sums[rest]
        losses = domain_losses(
            counts[fg],
            p_sums[fg],
            fg_ce,
            counts[rest],
            p_sums[rest],
            rest_ce,
            iwl=iwl,
            iwl_max=iwl_max,
            smooth=smooth,
            iwl_reading=iwl_reading,
        )
        lesion_free = None
        if empty_pairs == "whole_patch":
            # Σ over every slot of a pair: the whole pair; a pair without counted cell has g = 0 on all
            # its non-ignored voxels (a lesion-free pair sits in one slot, its lesions are ignored otherwise)
            def per_pair(slot_sums: torch.Tensor) -> torch.Tensor:
                return slot_sums.new_zeros(slots.num_pairs).index_add_(0, slots.pair_of_slot, slot_sums[:-1])

            voxels = probs.new_full((slots.num_pairs,), probs[0, 0].numel(), dtype=dtype)
            if valid is not None:
                voxels = valid.sum(dim=1).to(dtype)
            lesion_free = whole_pair_losses(
                voxels, per_pair(p_sums), None if log_sums is None else -per_pair(log_sums), smooth=smooth
            )
        return mean_over_components_then_pairs(losses, counts[fg] > 0, slots.pair_of_cell, slots.num_pairs, lesion_free)
