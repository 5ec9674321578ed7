"""Frozen copy (test oracle, see __init__): What blob, CC, IWL and inverse weighting share: their options, the IWL weight, and the Dice (+ CE) of
a domain from per-component and per-pair background sums.

Papers (full citations in docs/references.md): blob loss, Kofler et al. 2023 (IPMI 2023,
arXiv:2205.08209); CC loss, Bouteille et al. 2025 (arXiv:2511.17146); multi-class one-vs-rest
forms and IWL, Kundu et al. 2026 (arXiv:2604.24276); inverse weighting, Shirokikh et al. 2020 (MICCAI 2020).
The losses themselves: ``losses/blob.py``, ``losses/cc.py``, ``losses/inverse_weighting.py``.

All of them take the same inputs:
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

from nnunet_lesionloss.losses.checks import check_nonnegative

from .segments import ForegroundIndex, index_count, index_sum

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

COMPONENT_LOSS_BASES = ("dice", "dice_ce")


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


def check_component_loss_options(
    base: str,
    smooth: float,
    iwl: bool | None = None,
    iwl_max: float | None = None,
    iwl_reading: str = "clamp",
    empty_pairs: str = "skip",
) -> None:
    if base not in COMPONENT_LOSS_BASES:
        raise ValueError(f"base must be one of {COMPONENT_LOSS_BASES}, got {base!r}")
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


def compute_dtype(probs: torch.Tensor) -> torch.dtype:
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def flat_probs(probs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """probs [B, C, *spatial] → [B·C, V] in the compute dtype (float32 at least)."""
    return probs.to(dtype).reshape(probs.shape[0] * probs.shape[1], -1)


def domain_losses(
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


def mean_over_components_then_pairs(
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


def whole_pair_losses(
    voxels: torch.Tensor, p_sum: torch.Tensor, ce_sum: torch.Tensor | None, *, smooth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-domain loss of each pair taken whole with g = 0 (its lesions all ignored, or none):
    Dice 1 - s/(Σp + s) (the constant 1 for s = 0) + CE Σ -log(1 - p) / N. Returns (losses, N > 0)."""
    zeros = torch.zeros_like(p_sum)
    losses = domain_losses(
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


class DomainSums(NamedTuple):
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


def component_and_background_sums(
    p: torch.Tensor, index: ForegroundIndex, need_ce: bool, dtype: torch.dtype, need_squares: bool = False
) -> DomainSums:
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
    return DomainSums(
        count, p_sum, ce_sum, p_squared, background_count, background_p, background_ce, background_p_squared
    )
