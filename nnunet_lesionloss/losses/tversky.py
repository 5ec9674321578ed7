"""Tversky, Focal Tversky and binary focal loss: the voxel-level baselines of CATMIL (Luu et al.
2026) and Size Penalty (Joshi 2026); full citations in docs/references.md.

* Tversky (Salehi et al. 2017, arXiv:1706.05721), the nnUNet-Tversky baseline of CATMIL
  and the "T" term of Size Penalty's DTS combination (Joshi 2026, appendix: α = 0.3, β = 0.7).
* Focal Tversky (Abraham & Khan 2019, ISBI 2019), the nnUNet-FocalTversky baseline of CATMIL; the
  CATMIL authors' code (luumsk/SmallLesionMRI) uses (1 - TI)^(1/γ) with γ = 4/3.
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

__all__ = ["tversky_loss", "focal_tversky_loss", "binary_focal_loss", "tversky_index"]

# (1 - TI)^(1/γ) has an infinite derivative at TI = 1 when 1/γ < 1; below this point it is continued
# by the chord through 0 (x · floor^(1/γ - 1)), which keeps the value 0 at TI = 1 and the gradient finite.
_FOCAL_TVERSKY_FLOOR = 1e-6
# -log(p_t) is evaluated at max(p_t, floor) so that a hard 0 probability gives a finite loss.
_LOG_FLOOR = 1e-12


def _masked_pairs(
    probs: torch.Tensor, gt: torch.Tensor, ignore_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """probs and gt as float32 [B·C, V] with ignored voxels zeroed (after the activation, never before)."""
    valid = valid_voxel_mask(ignore_mask, probs.shape)
    pairs = probs.shape[0] * probs.shape[1]
    p = probs.float().reshape(pairs, -1)
    g = gt.to(torch.float32).reshape(pairs, -1)
    if valid is not None:
        p = p * valid
        g = g * valid
    return p, g


def tversky_index(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    batch: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Tversky index TI = (TP + s) / (TP + α·FP + β·FN + s) per (b, c) pair ([B·C]) or per channel ([C]).

    TP = Σ p·g, FP = Σ p·(1 - g), FN = Σ (1 - p)·g over the non-ignored voxels; α weighs false
    positives, β false negatives. ``batch=True`` sums TP/FP/FN over the batch first (one index per
    channel, like nnU-Net's ``batch_dice``). ``validate=False`` skips the argument checks
    (``losses.checks``), for callers that validated them once.
    """
    if validate:
        check_probs_and_target(probs, gt)
        check_nonnegative("alpha", alpha)
        check_nonnegative("beta", beta)
        check_positive("smooth", smooth)
    p, g = _masked_pairs(probs, gt, ignore_mask)
    true_pos = (p * g).sum(dim=1)
    false_pos = (p * (1.0 - g)).sum(dim=1)
    false_neg = ((1.0 - p) * g).sum(dim=1)
    if batch:
        channels = probs.shape[1]
        true_pos, false_pos, false_neg = (t.reshape(-1, channels).sum(dim=0) for t in (true_pos, false_pos, false_neg))
    return (true_pos + smooth) / (true_pos + alpha * false_pos + beta * false_neg + smooth)


def tversky_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    batch: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Tversky loss (Salehi et al. 2017): mean over (b, c) pairs of 1 - TI_bc.

        TI = (TP + s) / (TP + α·FP + β·FN + s),  TP = Σ p·g,  FP = Σ p·(1-g),  FN = Σ (1-p)·g

    α weighs false positives and β false negatives; the defaults α = 0.3, β = 0.7 are the Tversky
    baseline of CATMIL's authors (Luu et al. 2026) and the "T" term of Joshi 2026. Every (b, c) pair counts, also
    those without foreground (there TI = s / (α·FP + s) pushes the false positives down, as in
    nnU-Net's soft Dice). ``batch=True``: one index per channel over the whole batch, mean over
    channels. ``smooth`` must be > 0 so that an empty pair with an empty prediction is defined.
    Returns a float32 scalar.
    """
    index = tversky_index(
        probs, gt, alpha=alpha, beta=beta, smooth=smooth, ignore_mask=ignore_mask, batch=batch, validate=validate
    )
    return (1.0 - index).mean()


def focal_tversky_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4.0 / 3.0,
    smooth: float = 1e-5,
    ignore_mask: torch.Tensor | None = None,
    batch: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Focal Tversky loss (Abraham & Khan 2019): mean over (b, c) pairs of (1 - TI_bc)^(1/γ).

    TI as in :func:`tversky_loss`; γ = 4/3 and α = 0.3, β = 0.7 are the FocalTversky baseline of
    CATMIL's authors (luumsk/SmallLesionMRI). The exponent is applied per (b, c) pair (per channel with
    ``batch=True``) and then averaged, as Abraham & Khan sum it per class. Below 1 - TI = 1e-6 the
    power is replaced by the chord through 0, because the derivative of x^(1/γ) is infinite at
    x = 0 for γ > 1 (the value differs from the power by less than 1e-6^(1/γ) there).
    Returns a float32 scalar.
    """
    if validate:
        check_positive("gamma", gamma)
    index = tversky_index(
        probs, gt, alpha=alpha, beta=beta, smooth=smooth, ignore_mask=ignore_mask, batch=batch, validate=validate
    )
    distance = 1.0 - index
    exponent = 1.0 / gamma
    powered = distance.clamp_min(_FOCAL_TVERSKY_FLOOR).pow(exponent)
    chord = distance * _FOCAL_TVERSKY_FLOOR ** (exponent - 1.0)
    return torch.where(distance > _FOCAL_TVERSKY_FLOOR, powered, chord).mean()


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
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Generalized Dice loss (Sudre et al. 2017) of each (b, c) pair over its two classes, mean over pairs.

        GDL = 1 - (2·Σ_l w_l·Σ_i p_li·g_li + s) / (Σ_l w_l·Σ_i (p_li + g_li) + s),   w_l = 1 / (Σ_i g_li)²

    with l ∈ {foreground: p, g; background: 1 - p, 1 - g} over the non-ignored voxels. A class
    absent from the ground truth would get an infinite weight; as in MONAI's GeneralizedDiceLoss
    (the "GDF" L_seg of Rachmadi et al. 2024) it gets the largest finite weight of the pair instead.
    Together with ``binary_focal_loss`` (γ = 2, no α: MONAI's defaults) this is the GDF of Rachmadi
    et al. 2024. Returns a
    float32 scalar.
    """
    if validate:
        check_probs_and_target(probs, gt)
        check_positive("smooth", smooth)
    p, g = _masked_pairs(probs, gt, ignore_mask)
    valid = valid_voxel_mask(ignore_mask, probs.shape)
    valid = torch.ones_like(p) if valid is None else valid.to(p.dtype)
    q, h = valid - p, valid - g  # background probability and ground truth, zero where ignored
    intersection = torch.stack([(p * g).sum(1), (q * h).sum(1)], dim=1)
    denominator = torch.stack([(p + g).sum(1), (q + h).sum(1)], dim=1)
    weight = 1.0 / torch.stack([g.sum(1), h.sum(1)], dim=1).square()
    infinite = torch.isinf(weight)
    finite = torch.where(infinite, torch.zeros_like(weight), weight)
    weight = torch.where(infinite, finite.amax(dim=1, keepdim=True), weight)
    numerator = 2.0 * (weight * intersection).sum(1) + smooth
    return (1.0 - numerator / ((weight * denominator).sum(1) + smooth)).mean()
