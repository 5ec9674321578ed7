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
    "INVERSE_WEIGHT_BALANCES",
    "IWL_READINGS",
    "iwl_weight",
]

# Upper bound of the IWL weight (``iwl_weight``: w in [1, iwl_max]). The bound of Kundu et al. 2026 is not in the
# text we worked from; 100 caps the fore/background weight ratio at two orders of magnitude, below the "thousands of
# times larger" weights that Kundu et al. 2026 (§2.5, §4.1) blame for the instability of global inverse weighting.
# Justification and the measured weight distributions in docs/formulas.md §1.
IWL_MAX_DEFAULT = 100.0

#: ``iwl_reading``: how the domain-to-component ratio r = |Ω_n| / |C_n| becomes the IWL weight
IWL_READINGS = ("power", "clamp")

# Probabilities are clamped to [eps, 1 - eps] inside the logarithms of the CE term (chosen here: keeps
# log p and log(1 - p) finite for saturated probabilities).
CE_PROB_CLAMP = 1e-7

_BASES = ("dice", "dice_ce")


def iwl_weight(ratio: torch.Tensor, domain_size: torch.Tensor, *, reading: str, iwl_max: float) -> torch.Tensor:
    """The IWL weight of a component from r = |Ω_n| / |C_n| (≥ 1) and |Ω_n| (docs/formulas.md §1).

        "power" (default): w = r^κ,  κ = min(1, ln(iwl_max) / ln|Ω_n|)
        "clamp":           w = clamp(r, 1, iwl_max)

    Both lie in [1, iwl_max] and both equal r when no component of the domain could exceed the
    bound (|Ω_n| ≤ iwl_max). "power" maps the whole range of r, 1..|Ω_n| (a 1-voxel component),
    onto 1..iwl_max on a log scale, so every component size keeps its own weight (w ∝ |C_n|^-κ);
    "clamp" gives every component smaller than |Ω_n|/iwl_max the same weight iwl_max, which at a
    128³ blob domain is every lesion below 21,000 voxels.
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
    base: str, smooth: float, iwl: bool | None = None, iwl_max: float | None = None, iwl_reading: str = "power"
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
    iwl_reading: str = "power",
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
    losses: torch.Tensor, counted: torch.Tensor, pair_of_component: torch.Tensor, num_pairs: int
) -> torch.Tensor:
    """Mean over the counted components of each (b, c) pair, then mean over pairs with ≥ 1 of them.

    Kundu et al. 2026 §2.4.
    """
    counted = counted.to(losses.dtype)
    pair_total = losses.new_zeros(num_pairs).index_add_(0, pair_of_component, losses * counted)
    pair_components = losses.new_zeros(num_pairs).index_add_(0, pair_of_component, counted)
    pair_mean = pair_total / pair_components.clamp_min(1.0)
    pairs_used = (pair_components > 0).to(losses.dtype).sum()
    return pair_mean.sum() / pairs_used.clamp_min(1.0)


def _component_and_background_sums(
    p: torch.Tensor, index: ForegroundIndex, need_ce: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Voxel count, Σp and Σ CE per component and per pair background, g = [voxel in a component].

    Component sums scatter the F foreground voxels only. The background of a pair is its
    (non-ignored) dense total minus its components; the totals are row sums accumulated in
    float64, so the background needs no index and is more accurate than one float32 bucket.
    Returns (count, p_sum, ce_sum) per component and (count, p_sum, ce_sum) per pair background.
    """
    num_components = index.num_components
    component = index.component_of_voxel

    def pair_total_of(component_sums: torch.Tensor) -> torch.Tensor:
        return index.sum_per_pair(component_sums.to(torch.float64))

    def dense_total(values: torch.Tensor) -> torch.Tensor:
        if index.valid_voxels is not None:
            values = torch.where(index.valid_voxels, values, values.new_zeros(()))
        return values.sum(dim=1, dtype=torch.float64)

    p_foreground = p.reshape(-1)[index.positions]
    count = index_count(component, num_components, dtype)
    p_sum = index_sum(p_foreground, component, num_components, dtype)
    background_count = (index.voxels_per_pair - pair_total_of(count)).to(dtype)
    background_p = (dense_total(p) - pair_total_of(p_sum)).to(dtype)
    if not need_ce:
        return count, p_sum, None, background_count, background_p, None
    # CE of a component voxel is -log p, of a background voxel -log(1 - p) (p clamped)
    foreground_clamped = p_foreground.clamp(CE_PROB_CLAMP, 1.0 - CE_PROB_CLAMP)
    ce_sum = -index_sum(torch.log(foreground_clamped), component, num_components, dtype)
    log_not_p = torch.log1p(-p.clamp(CE_PROB_CLAMP, 1.0 - CE_PROB_CLAMP))
    log_not_p_components = index_sum(torch.log1p(-foreground_clamped), component, num_components, dtype)
    background_ce = -(dense_total(log_not_p) - pair_total_of(log_not_p_components)).to(dtype)
    return count, p_sum, ce_sum, background_count, background_p, background_ce


def blob_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    base: str = "dice_ce",
    iwl: bool = False,
    iwl_max: float = IWL_MAX_DEFAULT,
    iwl_reading: str = "power",
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
    |Ω_n| / |C_n| (in [1, iwl_max]; ``iwl_reading`` "power" or "clamp") on C_n and 1 on the rest of Ω_n. Loss = mean over pairs with K_bc ≥ 1 of (mean over n of ℓ_n).
    No component in the batch: a zero that carries a graph. Because Σ_Ω x = Σ_{C_n} x + Σ_bg x,
    every term is a per-component sum plus a per-pair background sum: one reduction, O(V + K).

    Args:
        probs: float [B, C, *spatial], foreground probability per channel.
        component_ids: int [B, C, *spatial], 0 = not foreground, 1..K_bc components.
        base: "dice" or "dice_ce".
        iwl: inverse-size weighting inside each domain (IWL-Blob).
        iwl_max: upper bound of the IWL weight (see ``IWL_MAX_DEFAULT``).
        iwl_reading: "power" (default) or "clamp", how |Ω_n| / |C_n| becomes the weight (:func:`iwl_weight`).
        smooth: s of the Dice term (nnU-Net's 1e-5).
        ignore_mask: bool [B, 1, *spatial], True = excluded from every sum.
        validate: check the arguments (``losses.checks``); False for callers that checked them once.

    Returns:
        A float32 (float64 for float64 probs) scalar.
    """
    if validate:
        check_probs_and_ids(probs, component_ids)
        _check_options(base, smooth, iwl, iwl_max, iwl_reading)
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    dtype = _compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        index = build_foreground_index(component_ids, ignore_mask)
        if index.num_components == 0:
            return zero_with_graph(probs).to(dtype)
        p = _flat_probs(probs, dtype)
        count, p_sum, ce_sum, bg_count, bg_p, bg_ce = _component_and_background_sums(p, index, base == "dice_ce", dtype)
        pair_of_component = index.pair_of_component
        # Ω_n = C_n ∪ background of its pair: the "rest" of each domain is its pair's background
        losses = _domain_losses(
            count,
            p_sum,
            ce_sum,
            bg_count[pair_of_component],
            bg_p[pair_of_component],
            None if bg_ce is None else bg_ce[pair_of_component],
            iwl=iwl,
            iwl_max=iwl_max,
            smooth=smooth,
            iwl_reading=iwl_reading,
        )
        return _mean_over_components_then_pairs(losses, count > 0, pair_of_component, index.num_pairs)


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


def cc_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    voronoi_cells: torch.Tensor,
    *,
    base: str = "dice_ce",
    iwl: bool = False,
    iwl_max: float = IWL_MAX_DEFAULT,
    iwl_reading: str = "power",
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    cell_counts: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """CC loss (Bouteille et al. 2025, arXiv:2511.17146), multi-class one-vs-rest (Kundu et al. 2026 §2.1-2.2).

    ``voronoi_cells`` int [B, C, *spatial] gives, per channel, the id of the component whose
    ground-truth voxel is nearest (Euclidean), 0 only where the channel has no component. For each
    pair (b, c) and each component n the domain is its cell Ω_n = {voronoi_cells == n} and
    g = [component_ids == n]; Dice_n, CE_n, the IWL weight w and the aggregation are those of
    ``blob_loss``:

        Dice_n = 1 - (2·Σ_Ω w·p·g + s) / (Σ_Ω w·p + Σ_Ω w·g + s)
        CE_n   = Σ_Ω w·(-[g·log p + (1-g)·log(1-p)]) / Σ_Ω w
        w      = iwl_weight(|Ω_n| / |C_n ∩ Ω_n|) on C_n with ``iwl=True`` (IWL-CC), else 1.

    A cell counts when it holds at least one non-ignored voxel of its component. Loss = mean over
    pairs of (mean over their counted cells of ℓ_n); no counted cell: a zero with a graph.

    Every voxel gets one slot, 2·(its cell) + g, offset per pair (ignored voxels: a discarded
    slot), so that one scatter of p and one of log p or log(1 - p) over V give Σp and Σ CE of
    both halves of every cell (C_n ∩ Ω_n and Ω_n \\ C_n). The voxel counts of the slots depend on
    the target alone: the loader precomputes them (``cell_counts``); without them the loss counts
    them with one more scatter.

    Args: as ``blob_loss``, plus ``voronoi_cells`` (int, same shape as ``probs``) and
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
        _check_options(base, smooth, iwl, iwl_max, iwl_reading)
        check_same_device(
            probs,
            component_ids=component_ids,
            voronoi_cells=voronoi_cells,
            ignore_mask=ignore_mask,
            cell_counts=cell_counts,
        )
        if voronoi_cells.numel() and int(voronoi_cells.min()) < 0:
            raise ValueError("voronoi_cells must be >= 0 (0 = no cell)")
        if cell_counts is not None:
            _check_cell_counts(component_ids, voronoi_cells, cell_counts, ignore_mask, probs.shape)
    dtype = _compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        valid = valid_voxel_mask(ignore_mask, probs.shape)
        slots = build_cell_slots(component_ids, voronoi_cells, valid, cell_counts)
        if slots.cell_slot.numel() == 0:
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
        return _mean_over_components_then_pairs(losses, counts[fg] > 0, slots.pair_of_cell, slots.num_pairs)


#: ``balance`` of :func:`inverse_weighted_loss`: how the voxel weights are normalised
INVERSE_WEIGHT_BALANCES = ("lesions", "lesions_and_background")


def inverse_weighted_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    base: str = "dice_ce",
    balance: str = "lesions",
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Global inverse-size weighting (Shirokikh et al. 2020; comparator of Kofler et al. 2023 and Kundu et al. 2026).

    Over the whole (non-ignored) volume of each pair (b, c), with K its components, F = Σ_k |C_k|
    its foreground voxels and N all its voxels, each voxel weighs

        balance "lesions" (default; the authors' ``cc2weights``, neuro-ml/inverse_weighting):
            w = F / (K·|C_k|)  in component k,        w = 1  in the background
        balance "lesions_and_background" (class balancing on top; this package's former reading):
            w = N / ((K+1)·|C_k|)  in component k,    w = N / ((K+1)·|background|)  in the background

    With "lesions" every component carries the same total weight F/K, the foreground keeps its
    total weight F and the background its |background|, so a pair with a single component gets
    exactly the unweighted loss. Then

        Dice = 1 - (2·Σ w·p·g + s) / (Σ w·p + Σ w·g + s)
        CE   = Σ w·(-[g·log p + (1-g)·log(1-p)]) / Σ w,   p clamped to [1e-7, 1 - 1e-7]

    and the loss is the mean over every pair with at least one non-ignored voxel of Dice (base
    "dice") or Dice + CE ("dice_ce"). Pairs without components count too (w = 1 there): this is a
    whole-volume loss and must penalise false positives in lesion-free patches, as DC+CE does.
    Weights are per-segment constants, so every sum is Σ_k w_k·(Σ over C_k) + w_bg·(Σ over bg):
    the same single reduction as ``blob_loss``. Differences from the authors' code (their Dice has
    squared terms in the denominator and no smoothing): docs/formulas.md §1.
    """
    if validate:
        check_probs_and_ids(probs, component_ids)
        _check_options(base, smooth)
        if balance not in INVERSE_WEIGHT_BALANCES:
            raise ValueError(f"balance must be one of {INVERSE_WEIGHT_BALANCES}, got {balance!r}")
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    dtype = _compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        index = build_foreground_index(component_ids, ignore_mask)
        p = _flat_probs(probs, dtype)
        component_count, p_sum, ce_sum, background_count, background_p, background_ce = _component_and_background_sums(
            p, index, base == "dice_ce", dtype
        )
        pair_of_component = index.pair_of_component
        per_pair = index.sum_per_pair
        present = (component_count > 0).to(dtype)
        components = per_pair(present)  # K per pair
        voxels = index.voxels_per_pair.to(dtype)  # N per pair (non-ignored voxels)
        if balance == "lesions":
            share = per_pair(component_count) / components.clamp_min(1.0)  # F / K
            background_weight = torch.ones_like(voxels)
        else:
            share = voxels / (components + 1.0)  # N / (K + 1)
            background_weight = share / background_count.clamp_min(1.0)
        component_weight = present * share[pair_of_component] / component_count.clamp_min(1.0)

        intersection = per_pair(component_weight * p_sum)
        weighted_p = intersection + background_weight * background_p
        weighted_g = per_pair(component_weight * component_count)
        pair_losses = 1.0 - (2.0 * intersection + smooth) / (weighted_p + weighted_g + smooth).clamp_min(1e-8)
        if ce_sum is not None and background_ce is not None:
            weighted_ce = per_pair(component_weight * ce_sum) + background_weight * background_ce
            total_weight = weighted_g + background_weight * background_count
            pair_losses = pair_losses + weighted_ce / total_weight.clamp_min(1e-8)
        pairs_used = (voxels > 0).to(dtype)
        return (pair_losses * pairs_used).sum() / pairs_used.sum().clamp_min(1.0)
