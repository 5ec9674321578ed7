"""Size Penalty loss (Joshi 2026): a size-stratified relative volume error, plus its data-driven τ.

Joshi: *Size Penalty Loss — "What Dice Misses": Size-Stratified Volume Regularization for Ischemic
Stroke Lesion Prognostication*, B.Tech. thesis, IIT Bombay, 2026 (docs/references.md), §3.2 and
the PyTorch listing of §3.3. The term has
no localization signal (§3.6) and is meant as an auxiliary of spatial losses: DC+CE + 0.3·S,
DTS = Dice + Tversky + 0.3·S, FSD = Focal + 0.3·S + Dice.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .checks import check_positive, check_probs_and_target
from .segments import pair_sum, valid_voxel_mask

__all__ = ["size_penalty_loss", "estimate_size_penalty_tau", "PAPER_SIZE_PENALTY_TAU"]

#: τ_s of the experiments of Joshi 2026 (§3.2), in voxels.
PAPER_SIZE_PENALTY_TAU = 600.0


def size_penalty_loss(
    probs: torch.Tensor,
    gt: torch.Tensor,
    *,
    tau: float = PAPER_SIZE_PENALTY_TAU,
    cap: float = 10.0,
    eps: float = 1e-5,
    gate: float | None = None,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Size Penalty loss (Joshi 2026 §3.2): mean over lesion-positive (b, c) pairs of

        ℓ = min(c, exp(-V_g/τ) · |V_p - V_g| / (V_g + ε)),   V_p = Σ p,   V_g = Σ g

    V_p and V_g are soft / true volumes in voxels of the patch, per (b, c) pair (the paper's
    listing sums over its single lesion channel). Pairs with V_g = 0 do not contribute (§3.2: an
    empty mask makes the relative error ill-conditioned). Defaults τ = 600 voxels, c = 10,
    ε = 1e-5 are the paper's. Once the cap is reached the term's gradient is zero (§3.5).

    ``gate`` (voxels, beyond the paper: its "strongest methodological next step", §6.4-6.5, §7):
    only pairs with 0 < V_g < gate contribute. ``ignore_mask`` [B, 1 or C, *spatial] (True =
    excluded) leaves voxels out of both volumes. No contributing pair gives a zero with a graph.
    Computes in float32; returns a float32 scalar.
    """
    if validate:
        check_probs_and_target(probs, gt)
        check_positive("tau", tau)
        check_positive("cap", cap)
        check_positive("eps", eps)
        if gate is not None:
            check_positive("gate", gate)
    valid = valid_voxel_mask(ignore_mask, probs.shape)
    predicted_volume = pair_sum(probs, valid)
    true_volume = pair_sum(gt, valid)
    size_weight = torch.exp(-true_volume / tau)
    relative_error = (predicted_volume - true_volume).abs() / (true_volume + eps)
    per_pair = (size_weight * relative_error).clamp(max=cap)
    contributes = true_volume > 0
    if gate is not None:
        contributes = contributes & (true_volume < gate)
    per_pair = torch.where(contributes, per_pair, torch.zeros_like(per_pair))
    return per_pair.sum() / contributes.sum().clamp_min(1)


def estimate_size_penalty_tau(
    volumes,
    *,
    quantile: float = 0.5,
    fallback_tau: float = PAPER_SIZE_PENALTY_TAU,
) -> float:
    """τ for Size Penalty from a dataset's lesion volumes (beyond the paper: Joshi 2026 §6.5, "estimate
    τ_s from each dataset's object-size distribution"; used by nnUNetTrainerSizePenaltyAuto).

    ``volumes`` are the V_g the penalty is applied to (voxels, at the resolution the loss sees): the
    foreground volume of one channel of one training patch, as nnUNetTrainerSizePenaltyAuto measures
    them on patches drawn like nnU-Net's loader. τ = their ``quantile`` (default 0.5: the median)
    over the positive entries (the penalty ignores V_g = 0), so that the size weight exp(-V_g/τ) is
    e^-1 at the typical lesion-positive patch and larger below it. Without any positive volume it
    returns ``fallback_tau`` (the paper's τ = 600 voxels) and emits a ``UserWarning`` saying so.
    The same function with a higher quantile can serve to derive a gate.
    """
    if not isinstance(quantile, (int, float)) or isinstance(quantile, bool) or not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
    check_positive("fallback_tau", fallback_tau)
    if torch.is_tensor(volumes):
        volumes = volumes.detach().cpu().numpy()
    volumes = np.asarray(volumes, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(volumes)) or np.any(volumes < 0):
        raise ValueError("volumes must be finite and >= 0 (voxels)")
    volumes = volumes[volumes > 0]
    if volumes.size == 0:
        warnings.warn(
            f"no lesion-positive volumes: falling back to the paper's size-penalty tau = {fallback_tau:g} voxels",
            UserWarning,
            stacklevel=2,
        )
        return float(fallback_tau)
    return float(np.quantile(volumes, quantile))
