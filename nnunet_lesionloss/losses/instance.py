"""Instance-aware losses as segment reductions: blob loss, CC loss, their inverse-size-weighted
variants (IWL) and the global inverse weighting of Shirokikh et al. 2020 (MICCAI 2020).

Papers (full citations in docs/references.md): blob loss, Kofler et al. 2023 (IPMI 2023,
arXiv:2205.08209); CC loss, Bouteille et al. 2025 (arXiv:2511.17146); multi-class one-vs-rest
forms and IWL, Kundu et al. 2026 (arXiv:2604.24276).

All three functions take the same inputs:

- ``probs`` float [B, C, *spatial]: foreground probability of each foreground class (softmax,
  one-vs-rest) or region (sigmoid), 2 or 3 spatial dims;
- ``component_ids`` int [B, C, *spatial]: 0 = not foreground of channel c, 1..K_bc = connected
  components of channel c in sample b; the ground truth is g = [component_ids > 0];
- ``ignore_mask`` bool [B, 1, *spatial] (optional): True = voxel excluded from every sum.

Every per-component quantity (Σp, Σ CE, voxel counts) is a segment reduction (``scatter_add_``
through ``segments.py``): over the F foreground voxels for the component sums, over V for the
Voronoi-cell totals, and dense per-pair row sums for the background of a pair (total minus its
components). O(V + K) time and memory, no Python loop over components or classes, no K×V tensor.
Computation runs in float32 (float64 if ``probs`` is float64) with autocast disabled, whatever the
caller's precision.

Formulas, the paper each comes from and the aggregation rule: ``docs/formulas.md §1``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .checks import check_nonnegative, check_probs_and_ids, check_same_device
from .segments import (
    ForegroundIndex,
    build_cell_slots,
    build_foreground_index,
    index_count,
    index_sum,
    valid_voxel_mask,
    zero_with_graph,
)

__all__ = [
    "blob_loss",
    "cc_loss",
    "inverse_weighted_loss",
    "IWL_MAX_DEFAULT",
    "CE_PROB_CLAMP",
    "EMPTY_PAIRS",
    "INVERSE_WEIGHT_BALANCES",
    "INVERSE_WEIGHT_CLIP",
    "DICE_DENOMINATORS",
    "IWL_READINGS",
    "iwl_weight",
]

# Upper bound of the IWL weight (``iwl_weight``: w in [1, iwl_max]). The bound of Kundu et al. 2026 is not in the
# text we worked from; 100 caps the fore/background weight ratio at two orders of magnitude, below the "thousands of
# times larger" weights that Kundu et al. 2026 (§2.5, §4.1) blame for the instability of global inverse weighting.
# Justification and the measured weight distributions in docs/formulas.md §1.
IWL_MAX_DEFAULT = 100.0

#: ``iwl_reading``: how the domain-to-component ratio r = |Ω_n| / |C_n| becomes the IWL weight: "clamp",
#: the ratio "bounded to" an interval as Kundu et al. 2026 §2.5 writes it (the default), or "power", this
#: package's own reading that keeps the size dependence at the bound (docs/formulas.md §1)
IWL_READINGS = ("clamp", "power")

#: ``empty_pairs`` of :func:`blob_loss` / :func:`cc_loss`: what a (b, c) pair without components adds.
#: "skip": nothing, the mean runs over the pairs with components (Kofler et al.'s blob code,
#: neuronflow/blob_loss); "whole_patch": the term over the whole pair (Dice + CE with Ω = every voxel of
#: the pair, g = 0), the mean runs over every pair (the CC authors' code, Bouteille et al. 2025)
EMPTY_PAIRS = ("skip", "whole_patch")

# Probabilities are clamped to [eps, 1 - eps] inside the logarithms of the CE term (chosen here: keeps
# log p and log(1 - p) finite for saturated probabilities).
CE_PROB_CLAMP = 1e-7

_BASES = ("dice", "dice_ce")


def iwl_weight(ratio: torch.Tensor, domain_size: torch.Tensor, *, reading: str, iwl_max: float) -> torch.Tensor:
    """The IWL weight of a component from r = |Ω_n| / |C_n| (≥ 1) and |Ω_n| (docs/formulas.md §1).

        "clamp" (default; Kundu et al. 2026 §2.5: the ratio "bounded to" an interval):
                   w = clamp(r, 1, iwl_max)
        "power" (this package's own reading):
                   w = r^κ,  κ = min(1, ln(iwl_max) / ln|Ω_n|)

    Both lie in [1, iwl_max] and both equal r when no component of the domain could exceed the
    bound (|Ω_n| ≤ iwl_max). "clamp" gives every component smaller than |Ω_n|/iwl_max the same
    weight iwl_max, which at a 128³ blob domain is every lesion below 21,000 voxels (98-100 % of the
    lesions measured by ``scripts/iwl_weights.py``); "power" maps the whole range of r, 1..|Ω_n|
    (a 1-voxel component), onto 1..iwl_max on a log scale, so every component size keeps its own
    weight (w ∝ |C_n|^-κ).
    """
    ratio = ratio.clamp_min(1.0)
    if reading == "clamp":
        return ratio.clamp(1.0, iwl_max)
    log_domain = torch.log(domain_size.clamp_min(1.0))
    exponent = torch.where(
        log_domain > math.log(iwl_max), math.log(iwl_max) / log_domain.clamp_min(1e-12), torch.ones_like(log_domain)
    )
    return torch.exp(exponent * torch.log(ratio))


def _check_options(
    base: str,
    smooth: float,
    iwl: bool | None = None,
    iwl_max: float | None = None,
    iwl_reading: str = "clamp",
    empty_pairs: str = "skip",
) -> None:
    if base not in _BASES:
        raise ValueError(f"base must be one of {_BASES}, got {base!r}")
    check_nonnegative("smooth", smooth)
    if iwl is not None and not isinstance(iwl, bool):
        raise TypeError(f"iwl must be True or False, got {iwl!r}")
    if iwl_max is not None:
        if isinstance(iwl_max, bool) or not isinstance(iwl_max, (int, float)) or math.isnan(iwl_max) or iwl_max < 1:
            raise ValueError(f"iwl_max must be a number >= 1 (the weights lie in [1, iwl_max]), got {iwl_max!r}")
    if iwl_reading not in IWL_READINGS:
        raise ValueError(f"iwl_reading must be one of {IWL_READINGS}, got {iwl_reading!r}")
    if empty_pairs not in EMPTY_PAIRS:
        raise ValueError(f"empty_pairs must be one of {EMPTY_PAIRS}, got {empty_pairs!r}")


def _compute_dtype(probs: torch.Tensor) -> torch.dtype:
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def _flat_probs(probs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """probs [B, C, *spatial] → [B·C, V] in the compute dtype (float32 at least)."""
    return probs.to(dtype).reshape(probs.shape[0] * probs.shape[1], -1)


def _domain_losses(
    fg_count: torch.Tensor,
    fg_p: torch.Tensor,
    fg_ce: torch.Tensor | None,
    rest_count: torch.Tensor,
    rest_p: torch.Tensor,
    rest_ce: torch.Tensor | None,
    *,
    iwl: bool,
    iwl_max: float,
    smooth: float,
    iwl_reading: str = "clamp",
) -> torch.Tensor:
    """Dice (+ CE) of each domain Ω_n from its sums over C_n ("fg", g = 1) and Ω_n \\ C_n ("rest").

    Inside Ω_n: Σ w·p·g = w·fg_p, Σ w·p = w·fg_p + rest_p, Σ w·g = w·fg_count, Σ w = w·fg_count +
    rest_count, with w = iwl_weight(|Ω_n| / |C_n|) under IWL and 1 otherwise.
    """
    if iwl:
        domain_size = fg_count + rest_count
        weight = iwl_weight(domain_size / fg_count.clamp_min(1.0), domain_size, reading=iwl_reading, iwl_max=iwl_max)
    else:
        weight = torch.ones_like(fg_count)
    intersection = weight * fg_p
    dice = 1.0 - (2.0 * intersection + smooth) / (intersection + rest_p + weight * fg_count + smooth).clamp_min(1e-8)
    if fg_ce is None:
        return dice
    # Components without a valid voxel have an empty domain; clamp keeps them finite (they are masked out).
    cross_entropy = (weight * fg_ce + rest_ce) / (weight * fg_count + rest_count).clamp_min(1.0)
    return dice + cross_entropy


def _mean_over_components_then_pairs(
    losses: torch.Tensor,
    counted: torch.Tensor,
    pair_of_component: torch.Tensor,
    num_pairs: int,
    lesion_free: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over the counted components of each (b, c) pair, then mean over pairs (Kundu et al. 2026 §2.4).

    Without ``lesion_free`` the mean runs over the pairs with ≥ 1 counted component. With
    ``lesion_free`` = (loss of each pair as a whole [num_pairs], pair has a voxel [num_pairs]) a
    pair without counted component adds its whole-pair loss and the mean runs over every pair with
    a (non-ignored) voxel (``empty_pairs="whole_patch"``).
    """
    counted = counted.to(losses.dtype)
    pair_total = losses.new_zeros(num_pairs).index_add_(0, pair_of_component, losses * counted)
    pair_components = losses.new_zeros(num_pairs).index_add_(0, pair_of_component, counted)
    pair_mean = pair_total / pair_components.clamp_min(1.0)
    with_components = pair_components > 0
    if lesion_free is None:
        return pair_mean.sum() / with_components.to(losses.dtype).sum().clamp_min(1.0)
    whole_pair_loss, has_voxels = lesion_free
    pair_loss = torch.where(with_components, pair_mean, whole_pair_loss)
    used = (with_components | has_voxels).to(losses.dtype)
    return (pair_loss * used).sum() / used.sum().clamp_min(1.0)


def _whole_pair_losses(
    voxels: torch.Tensor, p_sum: torch.Tensor, ce_sum: torch.Tensor | None, *, smooth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-domain loss of each pair taken whole with g = 0 (its lesions all ignored, or none):
    Dice 1 - s/(Σp + s) (the constant 1 for s = 0) + CE Σ -log(1 - p) / N. Returns (losses, N > 0)."""
    zeros = torch.zeros_like(p_sum)
    losses = _domain_losses(
        zeros,
        zeros,
        None if ce_sum is None else zeros,
        voxels,
        p_sum,
        ce_sum,
        iwl=False,
        iwl_max=IWL_MAX_DEFAULT,
        smooth=smooth,
    )
    return losses, voxels > 0


class _DomainSums(NamedTuple):
    """Voxel count, Σp, Σ CE and Σp² per component (g = 1) and per pair background (g = 0).

    ``ce`` is Σ -log p on a component, Σ -log(1 - p) on a background (p clamped); the CE and squared
    sums are None when not asked for."""

    count: torch.Tensor
    p: torch.Tensor
    ce: torch.Tensor | None
    p_squared: torch.Tensor | None
    background_count: torch.Tensor
    background_p: torch.Tensor
    background_ce: torch.Tensor | None
    background_p_squared: torch.Tensor | None


def _component_and_background_sums(
    p: torch.Tensor, index: ForegroundIndex, need_ce: bool, dtype: torch.dtype, need_squares: bool = False
) -> _DomainSums:
    """Voxel count, Σp, Σ CE (and Σp²) per component and per pair background, g = [voxel in a component].

    Component sums scatter the F foreground voxels only. The background of a pair is its
    (non-ignored) dense total minus its components; the totals are row sums accumulated in
    float64, so the background needs no index and is more accurate than one float32 bucket.
    """
    num_components = index.num_components
    component = index.component_of_voxel

    def pair_total_of(component_sums: torch.Tensor) -> torch.Tensor:
        return index.sum_per_pair(component_sums.to(torch.float64))

    def dense_total(values: torch.Tensor) -> torch.Tensor:
        if index.valid_voxels is not None:
            values = torch.where(index.valid_voxels, values, values.new_zeros(()))
        return values.sum(dim=1, dtype=torch.float64)

    def background_of(dense: torch.Tensor, component_sums: torch.Tensor) -> torch.Tensor:
        return (dense_total(dense) - pair_total_of(component_sums)).to(dtype)

    p_foreground = p.reshape(-1)[index.positions]
    count = index_count(component, num_components, dtype)
    p_sum = index_sum(p_foreground, component, num_components, dtype)
    background_count = (index.voxels_per_pair - pair_total_of(count)).to(dtype)
    background_p = background_of(p, p_sum)
    p_squared = background_p_squared = None
    if need_squares:
        p_squared = index_sum(p_foreground * p_foreground, component, num_components, dtype)
        background_p_squared = background_of(p * p, p_squared)
    ce_sum = background_ce = None
    if need_ce:
        # CE of a component voxel is -log p, of a background voxel -log(1 - p) (p clamped)
        foreground_clamped = p_foreground.clamp(CE_PROB_CLAMP, 1.0 - CE_PROB_CLAMP)
        ce_sum = -index_sum(torch.log(foreground_clamped), component, num_components, dtype)
        log_not_p = torch.log1p(-p.clamp(CE_PROB_CLAMP, 1.0 - CE_PROB_CLAMP))
        log_not_p_components = index_sum(torch.log1p(-foreground_clamped), component, num_components, dtype)
        background_ce = -background_of(log_not_p, log_not_p_components)
    return _DomainSums(
        count, p_sum, ce_sum, p_squared, background_count, background_p, background_ce, background_p_squared
    )


def blob_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    base: str = "dice_ce",
    iwl: bool = False,
    iwl_max: float = IWL_MAX_DEFAULT,
    iwl_reading: str = "clamp",
    empty_pairs: str = "skip",
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Blob loss (Kofler et al. 2023, IPMI 2023), multi-class one-vs-rest (Kundu et al. 2026 §2.1, §2.3).

    For each pair (b, c) with K_bc ≥ 1 components and each component n, the domain is
    Ω_n = (background of channel c) ∪ C_n (every other component of c is masked out), g = [voxel ∈ C_n]:

        Dice_n = 1 - (2·Σ_Ω w·p·g + s) / (Σ_Ω w·p + Σ_Ω w·g + s)
        CE_n   = Σ_Ω w·(-[g·log p + (1-g)·log(1-p)]) / Σ_Ω w,   p clamped to [1e-7, 1 - 1e-7]
        ℓ_n    = Dice_n (base "dice")  or  Dice_n + CE_n (base "dice_ce")

    w = 1, or with ``iwl=True`` (IWL-Blob, Kundu et al. 2026 §2.5): w = :func:`iwl_weight` of the ratio
    |Ω_n| / |C_n| (in [1, iwl_max]; ``iwl_reading`` "clamp" or "power") on C_n and 1 on the rest of Ω_n.
    Loss = mean over pairs of (mean over n of ℓ_n). ``empty_pairs`` (:data:`EMPTY_PAIRS`): "skip"
    (default, Kofler et al.'s code, neuronflow/blob_loss: the mean runs over the pairs with
    K_bc ≥ 1; no component in the batch gives a zero that carries a graph) or "whole_patch" (the
    CC authors' blob code, Bouteille et al. 2025: a pair without components adds ℓ over all its
    voxels with g = 0, and the mean runs over every pair). Because Σ_Ω x = Σ_{C_n} x + Σ_bg x,
    every term is a per-component sum plus a per-pair background sum: one reduction, O(V + K).

    Args:
        probs: float [B, C, *spatial], foreground probability per channel.
        component_ids: int [B, C, *spatial], 0 = not foreground, 1..K_bc components (any other
            numbering is renumbered per pair, ``segments.build_foreground_index``).
        base: "dice" or "dice_ce".
        iwl: inverse-size weighting inside each domain (IWL-Blob).
        iwl_max: upper bound of the IWL weight (see ``IWL_MAX_DEFAULT``).
        iwl_reading: "clamp" (default) or "power", how |Ω_n| / |C_n| becomes the weight (:func:`iwl_weight`).
        empty_pairs: "skip" (default) or "whole_patch", what a pair without components adds.
        smooth: s of the Dice term (nnU-Net's 1e-5).
        ignore_mask: bool [B, 1, *spatial], True = excluded from every sum.
        validate: check the arguments (``losses.checks``); False for callers that checked them once.

    Returns:
        A float32 (float64 for float64 probs) scalar.
    """
    if validate:
        check_probs_and_ids(probs, component_ids)
        _check_options(base, smooth, iwl, iwl_max, iwl_reading, empty_pairs)
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    dtype = _compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        index = build_foreground_index(component_ids, ignore_mask)
        if index.num_components == 0 and empty_pairs == "skip":
            return zero_with_graph(probs).to(dtype)
        p = _flat_probs(probs, dtype)
        sums = _component_and_background_sums(p, index, base == "dice_ce", dtype)
        pair_of_component = index.pair_of_component
        # Ω_n = C_n ∪ background of its pair: the "rest" of each domain is its pair's background
        losses = _domain_losses(
            sums.count,
            sums.p,
            sums.ce,
            sums.background_count[pair_of_component],
            sums.background_p[pair_of_component],
            None if sums.background_ce is None else sums.background_ce[pair_of_component],
            iwl=iwl,
            iwl_max=iwl_max,
            smooth=smooth,
            iwl_reading=iwl_reading,
        )
        lesion_free = None
        if empty_pairs == "whole_patch":  # a pair without counted component is its background, whole
            lesion_free = _whole_pair_losses(
                sums.background_count, sums.background_p, sums.background_ce, smooth=smooth
            )
        return _mean_over_components_then_pairs(losses, sums.count > 0, pair_of_component, index.num_pairs, lesion_free)


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
        _check_options(base, smooth, iwl, iwl_max, iwl_reading, empty_pairs)
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
    dtype = _compute_dtype(probs)
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
        losses = _domain_losses(
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
            lesion_free = _whole_pair_losses(
                voxels, per_pair(p_sums), None if log_sums is None else -per_pair(log_sums), smooth=smooth
            )
        return _mean_over_components_then_pairs(
            losses, counts[fg] > 0, slots.pair_of_cell, slots.num_pairs, lesion_free
        )


#: ``balance`` of :func:`inverse_weighted_loss`: how the voxel weights are normalised. "lesions_and_background":
#: every part of the pair (its background and each component) weighs N/(number of parts) in total, as the
#: authors' current ``cc2weight`` (neuro-ml/inverse_weighting, ``iw/batch_iter.py``); "lesions": the map of
#: that repository's first commit (background 1, component k |foreground| / (K·|C_k|)), which they replaced
INVERSE_WEIGHT_BALANCES = ("lesions_and_background", "lesions")

#: ``weight_clip`` default of :func:`inverse_weighted_loss`: the authors' ``cc2weight`` clips every weight
#: to [1, 2·10^5] "for learning stability"
INVERSE_WEIGHT_CLIP = (1.0, 2e5)

#: ``dice_denominator`` of :func:`inverse_weighted_loss`: "squared", Σw(p² + g²) as the authors' weighted
#: Dice (``iw/torch.py::dice_loss``, V-Net's form); "plain", Σwp + Σwg as nnU-Net's soft Dice
DICE_DENOMINATORS = ("squared", "plain")

#: the Dice smoothing of each denominator form when ``smooth`` is not given: the authors' squared Dice has
#: none, nnU-Net's soft Dice 1e-5
_DEFAULT_SMOOTH = {"squared": 0.0, "plain": 1e-5}


def _check_weight_clip(weight_clip) -> tuple[float, float] | None:
    if weight_clip is None:
        return None
    try:
        low, high = (float(v) for v in weight_clip)
    except (TypeError, ValueError) as error:
        raise ValueError(f"weight_clip must be None or [min, max] with 0 <= min <= max, got {weight_clip!r}") from error
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high):
        raise ValueError(f"weight_clip must be None or [min, max] with 0 <= min <= max, got {weight_clip!r}")
    return low, high


def inverse_weighted_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    base: str = "dice_ce",
    balance: str = "lesions_and_background",
    weight_clip: tuple[float, float] | None = INVERSE_WEIGHT_CLIP,
    dice_denominator: str = "squared",
    smooth: float | None = None,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Global inverse-size weighting (Shirokikh et al. 2020; comparator of Kofler et al. 2023 and Kundu et al. 2026).

    Over the whole (non-ignored) volume of each pair (b, c), with N its voxels, K its components
    and F = Σ_k |C_k| its foreground voxels, each voxel weighs

        balance "lesions_and_background" (default; the authors' current ``cc2weight``,
        neuro-ml/inverse_weighting ``iw/batch_iter.py``, computed on every training patch):
            w = N / (P·|part|) on every part, P = the parts present (K components and the background)
        balance "lesions" (the map of that repository's first commit, which the authors replaced):
            w = F / (K·|C_k|) in component k,      w = 1 in the background

    then clipped to ``weight_clip`` (default [1, 2·10^5], the authors' clip; None: no clip). With the
    default the background of a patch whose lesions fill less than half of it weighs N/((K+1)|bg|)
    < 1 before the clip, so 1 after it; one 100-voxel lesion of a 32³ patch weighs 32768/(2·100) =
    164; the total weight Σw is no longer N (the clip adds to it). Then

        Dice = 1 - (2·Σ w·p·g + s) / (Σ w·(p² + g²) + s)     dice_denominator "squared" (default; the
                                                             authors' ``iw/torch.py::dice_loss``)
        Dice = 1 - (2·Σ w·p·g + s) / (Σ w·p + Σ w·g + s)     "plain" (nnU-Net's soft Dice)
        CE   = Σ w·(-[g·log p + (1-g)·log(1-p)]) / N          (the authors' weighted BCE, dpipe's
                                                             ``weighted_cross_entropy_with_logits``:
                                                             the mean over the voxels of w·ce)

    p clamped to [1e-7, 1 - 1e-7] in the CE; s = ``smooth``, by default 0 for the squared form (the
    authors' Dice has none) and 1e-5 for the plain one (nnU-Net's). The loss is the mean over every
    pair with at least one non-ignored voxel of Dice (base "dice") or Dice + CE ("dice_ce"); the
    authors trained their weighted Dice and weighted CE each on its own. Pairs without components
    count too (every weight 1 there): a whole-volume loss that must penalise false positives in
    lesion-free patches. Weights are per-segment constants, so every sum is Σ_k w_k·(Σ over C_k) +
    w_bg·(Σ over bg): the same single reduction as ``blob_loss``. Differences from the authors'
    code (one-vs-rest per class, components of the augmented patch, ignored voxels):
    docs/formulas.md §1.
    """
    dice_denominator_ok = dice_denominator in DICE_DENOMINATORS
    if smooth is None and dice_denominator_ok:
        smooth = _DEFAULT_SMOOTH[dice_denominator]
    if validate:
        check_probs_and_ids(probs, component_ids)
        if not dice_denominator_ok:
            raise ValueError(f"dice_denominator must be one of {DICE_DENOMINATORS}, got {dice_denominator!r}")
        _check_options(base, smooth)
        if balance not in INVERSE_WEIGHT_BALANCES:
            raise ValueError(f"balance must be one of {INVERSE_WEIGHT_BALANCES}, got {balance!r}")
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    clip = _check_weight_clip(weight_clip)
    squared = dice_denominator == "squared"
    dtype = _compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        index = build_foreground_index(component_ids, ignore_mask)
        p = _flat_probs(probs, dtype)
        sums = _component_and_background_sums(p, index, base == "dice_ce", dtype, need_squares=squared)
        pair_of_component = index.pair_of_component
        per_pair = index.sum_per_pair
        present = (sums.count > 0).to(dtype)
        components = per_pair(present)  # K per pair
        voxels = index.voxels_per_pair.to(dtype)  # N per pair (non-ignored voxels)
        background_count = sums.background_count
        if balance == "lesions_and_background":
            parts = components + (background_count > 0).to(dtype)
            share = voxels / parts.clamp_min(1.0)  # N / (K + 1): the total weight of every part
            background_weight = share / background_count.clamp_min(1.0)
        else:
            share = per_pair(sums.count) / components.clamp_min(1.0)  # F / K
            background_weight = torch.ones_like(voxels)
        component_weight = share[pair_of_component] / sums.count.clamp_min(1.0)
        if clip is not None:
            component_weight = component_weight.clamp(*clip)
            background_weight = background_weight.clamp(*clip)
        component_weight = present * component_weight  # id gaps and fully ignored components weigh nothing

        intersection = per_pair(component_weight * sums.p)
        weighted_g = per_pair(component_weight * sums.count)
        if squared:  # g² = g
            denominator = per_pair(component_weight * sums.p_squared) + background_weight * sums.background_p_squared
        else:
            denominator = intersection + background_weight * sums.background_p
        denominator = denominator + weighted_g
        pair_losses = 1.0 - (2.0 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)
        if sums.ce is not None:
            weighted_ce = per_pair(component_weight * sums.ce) + background_weight * sums.background_ce
            pair_losses = pair_losses + weighted_ce / voxels.clamp_min(1.0)
        pairs_used = (voxels > 0).to(dtype)
        return (pair_losses * pairs_used).sum() / pairs_used.sum().clamp_min(1.0)
