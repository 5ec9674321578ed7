"""Tversky, Focal Tversky and binary focal loss: the voxel-level baselines of CATMIL (Luu et al.
2026) and Size Penalty (Joshi 2026); full citations in docs/references.md.

* Tversky (Salehi et al. 2017, arXiv:1706.05721), the nnUNet-Tversky baseline of CATMIL
  and the "T" term of Size Penalty's DTS combination (Joshi 2026, appendix: α = 0.3, β = 0.7).
* Focal Tversky (Abraham & Khan 2019, ISBI 2019), the nnUNet-FocalTversky baseline of CATMIL; the
  CATMIL authors' code (luumsk/SmallLesionMRI) raises the mean Tversky loss (softmax, background
  included) to 1/γ with γ = 4/3.
* Binary focal loss (Lin et al. 2017, ICCV 2017), the "F" term of Joshi 2026 (appendix: γ = 2.0,
  α = 0.25).
* Generalized Dice loss (Sudre et al. 2017), with the focal loss the "GDF" L_seg of Rachmadi et al.
  2024 (MONAI's GeneralizedDiceFocalLoss).

All take ``probs`` [B, C, *spatial] foreground probabilities per channel (softmax one-vs-rest or
sigmoid) and a binary ``gt`` of the same shape; ``ignore_mask`` [B, 1 or C, *spatial] (True =
excluded) removes voxels from every sum. They compute in float32 whatever the input dtype.
"""

from __future__ import annotations

import torch

from .checks import check_nonnegative, check_positive, check_probs_and_target
from .segments import valid_voxel_mask, zero_with_graph

__all__ = [
    "tversky_loss",
    "focal_tversky_loss",
    "binary_focal_loss",
    "tversky_index",
    "generalized_dice_loss",
    "FOCAL_TVERSKY_REDUCTIONS",
]

# (1 - TI)^(1/γ) has an infinite derivative at TI = 1 when 1/γ < 1; below this point it is continued
# by the chord through 0 (x · floor^(1/γ - 1)), which keeps the value 0 at TI = 1 and the gradient finite.
_FOCAL_TVERSKY_FLOOR = 1e-6
# -log(p_t) is evaluated at max(p_t, floor) so that a hard 0 probability gives a finite loss.
_LOG_FLOOR = 1e-12


def _masked_pairs(
    probs: torch.Tensor, gt: torch.Tensor, ignore_mask: torch.Tensor | None, include_background: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """probs and gt as float32 [B·C', V] with ignored voxels zeroed (after the activation, never before).

    ``include_background`` puts the background class of a softmax first in every sample (C' = C + 1):
    p_0 = 1 - Σ_c p_c and g_0 = 1 - Σ_c g_c, on the voxels that no channel ignores.
    """
    valid = valid_voxel_mask(ignore_mask, probs.shape)
    batch, channels = probs.shape[:2]
    p = probs.float().reshape(batch, channels, -1)
    g = gt.to(torch.float32).reshape(batch, channels, -1)
    if include_background:
        p = torch.cat([1.0 - p.sum(dim=1, keepdim=True), p], dim=1)
        g = torch.cat([1.0 - g.sum(dim=1, keepdim=True), g], dim=1)
        if valid is not None:
            valid = valid.reshape(batch, channels, -1)
            valid = torch.cat([valid.all(dim=1, keepdim=True), valid], dim=1)
    p, g = p.reshape(-1, p.shape[-1]), g.reshape(-1, g.shape[-1])
    if valid is not None:
        valid = valid.reshape(p.shape)
        p = p * valid
        g = g * valid
    return p, g


def _check_exclusive(probs: torch.Tensor) -> None:
    """``include_background`` needs the channels to be exclusive classes of a softmax (Σ_c p_c ≤ 1)."""
    excess = float(probs.detach().float().sum(dim=1).max()) - 1.0 if probs.numel() else 0.0
    if excess > 1e-3:
        raise ValueError(
            "include_background=True needs probs whose channels are exclusive classes of a softmax "
            f"(Σ_c p_c ≤ 1), got a voxel with Σ_c p_c = {1.0 + excess:.4g}; sigmoid regions have no background class"
        )


def tversky_index(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    include_background: bool = False,
    ignore_mask: torch.Tensor | None = None,
    batch: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Tversky index TI = (TP + s) / (TP + α·FP + β·FN + s) per (b, c) pair ([B·C']) or per channel ([C']).

    TP = Σ p·g, FP = Σ p·(1 - g), FN = Σ (1 - p)·g over the non-ignored voxels; α weighs false
    positives, β false negatives. ``include_background`` adds the background class of a softmax as
    the first channel of every sample (p_0 = 1 - Σ_c p_c, g_0 = 1 - Σ_c g_c; C' = C + 1), as MONAI's
    ``include_background=True`` on a softmax output; the channels must then be exclusive classes.
    ``batch=True`` sums TP/FP/FN over the batch first (one index per channel, like nnU-Net's
    ``batch_dice``). ``validate=False`` skips the argument checks (``losses.checks``), for callers
    that validated them once.
    """
    if validate:
        check_probs_and_target(probs, gt)
        check_nonnegative("alpha", alpha)
        check_nonnegative("beta", beta)
        check_positive("smooth", smooth)
        if not isinstance(include_background, bool):
            raise TypeError(f"include_background must be True or False, got {include_background!r}")
        if include_background:
            _check_exclusive(probs)
    p, g = _masked_pairs(probs, gt, ignore_mask, include_background)
    true_pos = (p * g).sum(dim=1)
    false_pos = (p * (1.0 - g)).sum(dim=1)
    false_neg = ((1.0 - p) * g).sum(dim=1)
    if batch:
        channels = probs.shape[1] + (1 if include_background else 0)
        true_pos, false_pos, false_neg = (t.reshape(-1, channels).sum(dim=0) for t in (true_pos, false_pos, false_neg))
    return (true_pos + smooth) / (true_pos + alpha * false_pos + beta * false_neg + smooth)


def tversky_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    include_background: bool = False,
    ignore_mask: torch.Tensor | None = None,
    batch: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Tversky loss (Salehi et al. 2017): mean over (b, c) pairs of 1 - TI_bc.

        TI = (TP + s) / (TP + α·FP + β·FN + s),  TP = Σ p·g,  FP = Σ p·(1-g),  FN = Σ (1-p)·g

    α weighs false positives and β false negatives; α = 0.3, β = 0.7 is the Tversky baseline of
    CATMIL's authors (Luu et al. 2026) and the "T" term of Joshi 2026. Every (b, c) pair counts, also
    those without foreground (there TI = s / (α·FP + s) pushes the false positives down, as in
    nnU-Net's soft Dice). ``include_background=True`` adds the background class of the softmax,
    1 - Σ_c p_c, as one more channel per sample: this is MONAI's ``TverskyLoss(softmax=True)``
    with its default ``include_background=True``, the CATMIL authors' baseline (luumsk/SmallLesionMRI).
    ``batch=True``: one index per channel over the whole batch, mean over channels. ``smooth``
    (MONAI's smooth_nr = smooth_dr = 1e-5) must be > 0 so that an empty pair with an empty
    prediction is defined. Returns a float32 scalar.
    """
    index = tversky_index(
        probs,
        gt,
        alpha=alpha,
        beta=beta,
        smooth=smooth,
        include_background=include_background,
        ignore_mask=ignore_mask,
        batch=batch,
        validate=validate,
    )
    return (1.0 - index).mean()


#: ``reduction`` of :func:`focal_tversky_loss`: where the exponent 1/γ is applied
FOCAL_TVERSKY_REDUCTIONS = ("power_then_mean", "mean_then_power")


def _focal_power(distance: torch.Tensor, exponent: float) -> torch.Tensor:
    """x^(1/γ), continued below x = 1e-6 by its chord through 0 (finite gradient at x = 0)."""
    powered = distance.clamp_min(_FOCAL_TVERSKY_FLOOR).pow(exponent)
    chord = distance * _FOCAL_TVERSKY_FLOOR ** (exponent - 1.0)
    return torch.where(distance > _FOCAL_TVERSKY_FLOOR, powered, chord)


def focal_tversky_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4.0 / 3.0,
    smooth: float = 1e-5,
    include_background: bool = False,
    reduction: str = "power_then_mean",
    ignore_mask: torch.Tensor | None = None,
    batch: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Focal Tversky loss (Abraham & Khan 2019), with TI as in :func:`tversky_loss`:

        reduction "power_then_mean" (default, Abraham & Khan 2019 per class):  mean over pairs of (1 - TI_bc)^(1/γ)
        reduction "mean_then_power" (CATMIL authors' FocalTversky):           (mean over pairs of (1 - TI_bc))^(1/γ)

    γ = 4/3 and α = 0.3, β = 0.7 are the FocalTversky baseline of CATMIL's authors
    (luumsk/SmallLesionMRI), who raise MONAI's mean Tversky loss (softmax, background included:
    ``include_background=True``) to 1/γ. Below 1e-6 the power is replaced by the chord through 0,
    because the derivative of x^(1/γ) is infinite at x = 0 for γ > 1 (the value differs from the
    power by less than 1e-6^(1/γ) there). Returns a float32 scalar.
    """
    if validate:
        check_positive("gamma", gamma)
        if reduction not in FOCAL_TVERSKY_REDUCTIONS:
            raise ValueError(f"reduction must be one of {FOCAL_TVERSKY_REDUCTIONS}, got {reduction!r}")
    index = tversky_index(
        probs,
        gt,
        alpha=alpha,
        beta=beta,
        smooth=smooth,
        include_background=include_background,
        ignore_mask=ignore_mask,
        batch=batch,
        validate=validate,
    )
    distance = 1.0 - index
    if reduction == "mean_then_power":
        return _focal_power(distance.mean(), 1.0 / gamma)
    return _focal_power(distance, 1.0 / gamma).mean()


def binary_focal_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Binary (one-vs-rest) focal loss (Lin et al. 2017), mean over the non-ignored voxels of all (b, c).

        FL_i = -α_t · (1 - p_t)^γ · log(p_t),  p_t = p if g = 1 else 1 - p,
        α_t  = α if g = 1 else 1 - α  (α_t = 1 when ``alpha`` is None)

    The "F" term of Joshi 2026 (appendix of the thesis: γ = 2.0, α = 0.25, applied to the sigmoid
    probability of the lesion channel). ``gamma`` = 0 and ``alpha`` = None give binary cross-entropy.
    log(p_t) is evaluated at max(p_t, 1e-12). A batch whose voxels are all ignored gives a zero
    with a graph. Returns a float32 scalar.
    """
    if validate:
        check_nonnegative("gamma", gamma)
        if alpha is not None and (
            not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0
        ):
            raise ValueError(f"alpha must be None or a number in [0, 1], got {alpha!r}")
        check_probs_and_target(probs, gt)
    valid = valid_voxel_mask(ignore_mask, probs.shape)
    pairs = probs.shape[0] * probs.shape[1]
    p = probs.float().reshape(pairs, -1)
    is_fg = gt.reshape(pairs, -1) > 0
    p_true = torch.where(is_fg, p, 1.0 - p)
    per_voxel = -((1.0 - p_true).pow(gamma)) * torch.log(p_true.clamp_min(_LOG_FLOOR))
    if alpha is not None:
        per_voxel = per_voxel * torch.where(is_fg, alpha, 1.0 - alpha)
    if valid is None:
        return per_voxel.mean() if per_voxel.numel() else zero_with_graph(probs)
    # where (not multiply) so that a NaN/inf on an ignored voxel cannot leak into the sum
    total = torch.where(valid, per_voxel, torch.zeros_like(per_voxel)).sum()
    return total / valid.sum().clamp_min(1)


def generalized_dice_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    smooth: float = 1e-5,
    background_class: bool = False,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Generalized Dice loss (Sudre et al. 2017) of each (b, c) pair, mean over pairs.

        GDL = 1 - (2·Σ_l w_l·Σ_i p_li·g_li + s) / (Σ_l w_l·Σ_i (p_li + g_li) + s),   w_l = 1 / (Σ_i g_li)²

    over the non-ignored voxels. Default: one class per pair, l ∈ {foreground: p, g}: MONAI's
    ``GeneralizedDiceLoss`` on one sigmoid channel, as Rachmadi et al. 2024 used it (the "GD" of
    their GDF L_seg, MONAI's ``GeneralizedDiceFocalLoss``). A class absent from the ground truth
    would get an infinite weight; MONAI gives it the largest finite weight of the other classes,
    and with a single class there is none: w = 0 and the pair's loss is 1 - s/s = 0 (an empty patch
    adds nothing, without gradient). ``background_class=True`` adds the complement of the channel
    (1 - p, 1 - g) as a second class, as MONAI's loss on a two-channel softmax with the background
    included; the absent class then takes the weight of the present one. Together with
    ``binary_focal_loss`` (γ = 2, no α: MONAI's defaults) this is the GDF of Rachmadi et al. 2024.
    Returns a float32 scalar.
    """
    if validate:
        check_probs_and_target(probs, gt)
        check_positive("smooth", smooth)
        if not isinstance(background_class, bool):
            raise TypeError(f"background_class must be True or False, got {background_class!r}")
    p, g = _masked_pairs(probs, gt, ignore_mask)
    intersection, denominator, ground = [(p * g).sum(1)], [(p + g).sum(1)], [g.sum(1)]
    if background_class:
        valid = valid_voxel_mask(ignore_mask, probs.shape)
        valid = torch.ones_like(p) if valid is None else valid.to(p.dtype)
        q, h = valid - p, valid - g  # background probability and ground truth, zero where ignored
        intersection.append((q * h).sum(1))
        denominator.append((q + h).sum(1))
        ground.append(h.sum(1))
    intersection, denominator = torch.stack(intersection, dim=1), torch.stack(denominator, dim=1)
    weight = 1.0 / torch.stack(ground, dim=1).square()
    infinite = torch.isinf(weight)
    finite = torch.where(infinite, torch.zeros_like(weight), weight)
    weight = torch.where(infinite, finite.amax(dim=1, keepdim=True), weight)
    numerator = 2.0 * (weight * intersection).sum(1) + smooth
    return (1.0 - numerator / ((weight * denominator).sum(1) + smooth)).mean()
