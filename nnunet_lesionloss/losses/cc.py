"""CC loss (Bouteille et al. 2025, arXiv:2511.17146) and IWL-CC (Kundu et al. 2026, arXiv:2604.24276 §2.5):
Dice (+ CE) of each ground-truth component inside its Voronoi cell, as one scatter over cell slots.

Inputs and the shared pieces: ``losses/component_dice.py``; formulas and aggregation: ``docs/formulas.md §1``.
"""

from __future__ import annotations

import torch

from .checks import check_probs_and_ids, check_same_device
from .component_dice import (
    CE_PROB_CLAMP,
    IWL_MAX_DEFAULT,
    check_component_loss_options,
    compute_dtype,
    domain_losses,
    mean_over_components_then_pairs,
    whole_pair_losses,
)
from .segments import build_cell_slots, index_count, valid_voxel_mask, zero_with_graph

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


def _check_cell_counts(component_ids, voronoi_cells, cell_counts, ignore_mask, shape) -> None:
    """The precomputed table must be the one these ids, cells and ignore mask give (recounted here)."""
    valid = valid_voxel_mask(ignore_mask, shape)
    given = build_cell_slots(component_ids, voronoi_cells, valid, cell_counts)
    if given.slot_counts is None:
        return  # a pair without table (K = -1): the loss counts the cells itself
    counted = build_cell_slots(component_ids, voronoi_cells, valid)
    expected = index_count(counted.voxel_slot, counted.num_slots, torch.float64)
    read = torch.cat([counted.cell_slot, counted.cell_slot + 1])  # the slots of cells 1..K (id 0 has no domain)
    if given.num_slots != counted.num_slots or not torch.equal(
        given.slot_counts.to(torch.float64)[read], expected[read]
    ):
        raise ValueError(
            "cell_counts do not match component_ids, voronoi_cells and ignore_mask: compute them from the same maps "
            "(nnunet_lesionloss.components.cell_count_tables)"
        )


def _check_cells_match_components(component_ids: torch.Tensor, voronoi_cells: torch.Tensor) -> None:
    """``voronoi_cells`` must be cells of these component ids: every component voxel lies in the cell
    of its own id, every voxel of a pair with components has a cell (> 0), and every cell holds
    its component. Cells of other ids (another numbering, another sample, a resampled map) would
    otherwise leave cells without their lesion, which the loss cannot score."""
    ids, cells = component_ids.flatten(2), voronoi_cells.flatten(2)
    foreground = ids > 0
    misplaced = int((foreground & (cells != ids)).sum())
    without_cell = int(((cells == 0) & foreground.any(dim=2, keepdim=True)).sum())
    slots = build_cell_slots(component_ids, voronoi_cells)
    counts = index_count(slots.voxel_slot, slots.num_slots, torch.float64)
    rest, own = counts[slots.cell_slot], counts[slots.cell_slot + 1]
    cells_without_component = int(((rest > 0) & (own == 0)).sum())
    if misplaced or without_cell or cells_without_component:
        raise ValueError(
            "voronoi_cells do not match component_ids: "
            f"{misplaced} component voxel(s) lie outside the cell of their id, {without_cell} voxel(s) of a "
            f"channel with components have no cell (0), {cells_without_component} cell(s) hold no voxel of the "
            "component of their id; compute the cells from these ids "
            "(nnunet_lesionloss.components.voronoi_cells, per sample and channel)"
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
        check_probs_and_ids(probs, component_ids)
        check_probs_and_ids(probs, voronoi_cells, name="voronoi_cells")
        if cell_counts is not None:
            check_probs_and_ids(probs, cell_counts, name="cell_counts")
        check_component_loss_options(base, smooth, iwl, iwl_max, iwl_reading, empty_pairs)
        check_same_device(
            probs,
            component_ids=component_ids,
            voronoi_cells=voronoi_cells,
            ignore_mask=ignore_mask,
            cell_counts=cell_counts,
        )
        if voronoi_cells.numel() and int(voronoi_cells.min()) < 0:
            raise ValueError("voronoi_cells must be >= 0 (0 = no cell)")
        _check_cells_match_components(component_ids, voronoi_cells)
        if cell_counts is not None:
            _check_cell_counts(component_ids, voronoi_cells, cell_counts, ignore_mask, probs.shape)
    dtype = compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        valid = valid_voxel_mask(ignore_mask, probs.shape)
        slots = build_cell_slots(component_ids, voronoi_cells, valid, cell_counts)
        if slots.cell_slot.numel() == 0 and empty_pairs == "skip":
            return zero_with_graph(probs).to(dtype)
        p = probs.to(dtype).reshape(-1)
        shift = slots.in_component.to(dtype).sub_(1.0) if base == "dice_ce" else None  # g - 1
        p_sums, log_sums = _CellSums.apply(p, slots.voxel_slot, shift, slots.num_slots, base == "dice_ce")
        counts = slots.slot_counts
        counts = index_count(slots.voxel_slot, slots.num_slots, dtype) if counts is None else counts.to(dtype)
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
