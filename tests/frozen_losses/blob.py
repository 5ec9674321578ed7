"""Frozen copy (test oracle, see __init__): Blob loss (Kofler et al. 2023, IPMI 2023, arXiv:2205.08209) and IWL-Blob (Kundu et al. 2026,
arXiv:2604.24276 §2.5) as one segment reduction over the ground-truth components.

Inputs and the shared pieces: ``losses/component_dice.py``; formulas and aggregation: ``docs/formulas.md §1``.
"""

from __future__ import annotations

import torch

from nnunet_lesionloss.losses.checks import check_probs_and_ids, check_same_device

from .component_dice import (
    IWL_MAX_DEFAULT,
    check_component_loss_options,
    component_and_background_sums,
    compute_dtype,
    domain_losses,
    flat_probs,
    mean_over_components_then_pairs,
    whole_pair_losses,
)
from .segments import build_foreground_index, zero_with_graph

__all__ = ["blob_loss"]


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
        check_component_loss_options(base, smooth, iwl, iwl_max, iwl_reading, empty_pairs)
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    dtype = compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        index = build_foreground_index(component_ids, ignore_mask)
        if index.num_components == 0 and empty_pairs == "skip":
            return zero_with_graph(probs).to(dtype)
        p = flat_probs(probs, dtype)
        sums = component_and_background_sums(p, index, base == "dice_ce", dtype)
        pair_of_component = index.pair_of_component
        # Ω_n = C_n ∪ background of its pair: the "rest" of each domain is its pair's background
        losses = domain_losses(
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
            lesion_free = whole_pair_losses(sums.background_count, sums.background_p, sums.background_ce, smooth=smooth)
        return mean_over_components_then_pairs(losses, sums.count > 0, pair_of_component, index.num_pairs, lesion_free)
