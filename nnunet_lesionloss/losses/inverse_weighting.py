"""Global inverse-size weighting (Shirokikh et al. 2020, MICCAI 2020), as its authors' code computes it
(neuro-ml/inverse_weighting), with the first commit's map and nnU-Net's Dice as options.

Inputs and the shared pieces: ``losses/component_dice.py``; formulas and aggregation: ``docs/formulas.md §1``.
"""

from __future__ import annotations

import math

import torch

from .checks import check_probs_and_ids, check_same_device
from .component_dice import check_component_loss_options, component_and_background_sums, compute_dtype
from .segments import build_foreground_index

__all__ = ["inverse_weighted_loss", "INVERSE_WEIGHT_BALANCES", "INVERSE_WEIGHT_CLIP", "DICE_DENOMINATORS"]


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
        check_component_loss_options(base, smooth)
        if balance not in INVERSE_WEIGHT_BALANCES:
            raise ValueError(f"balance must be one of {INVERSE_WEIGHT_BALANCES}, got {balance!r}")
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    clip = _check_weight_clip(weight_clip)
    squared = dice_denominator == "squared"
    dtype = compute_dtype(probs)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        index = build_foreground_index(component_ids, ignore_mask)
        sums = component_and_background_sums(probs, index, base == "dice_ce", dtype, need_squares=squared)
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
