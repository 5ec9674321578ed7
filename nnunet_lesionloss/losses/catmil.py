"""CAT and MIL: the two auxiliary terms of CATMIL (Luu et al. 2026).

Luu, Pavlovskiy, Tuchinov: *Component-Adaptive and Lesion-Level Supervision for Improved Small
Structure Segmentation in Brain MRI*, arXiv:2604.08015, 2026 (docs/references.md), §2.1
(Component-Adaptive Tversky) and §2.2 (lesion-level Multiple Instance Learning). The trainer
combines them as L = DC+CE + λ_CAT(t)·CAT + λ_MIL·MIL with λ_CAT(t) = λ_CAT·min(t/T, 1) (§2.3).

Both terms read the ground-truth connected components ``component_ids`` [B, C, *spatial]
(0 = not foreground of channel c, 1..K_bc = lesions), computed in the loader; every per-component
quantity is one segment reduction over the batch's global component index (segments.py), never a
loop over components.
"""

from __future__ import annotations

import torch

from .checks import check_nonnegative, check_positive, check_probs_and_ids
from .segments import build_foreground_index, index_count, index_sum, pair_sum

__all__ = ["cat_loss", "mil_loss", "component_adaptive_weights", "CAT_REDUCTIONS"]

#: ``reduction`` of :func:`cat_loss`: which (b, c) pairs the per-pair term is averaged over
CAT_REDUCTIONS = ("batch", "positive_pairs")


def component_adaptive_weights(
    component_ids: torch.Tensor,
    *,
    gamma: float = 1.0,
    eps: float = 5.0,
    w_bg: float = 0.01,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """CAT voxel weights (CATMIL §2.1), float32 with the shape of ``component_ids``.

        w_i = (|C_k| + ε)^-γ  if voxel i lies in component C_k,   w_i = w_bg  if g_i = 0

    |C_k| counts the component's non-ignored voxels; ignored voxels get weight 0. For γ = 1 a
    lesion's total weight is |C_k| / (|C_k| + ε) ≈ 1 whatever its size (the paper's lesion-level
    interpretation).
    """
    if not torch.is_tensor(component_ids) or component_ids.dim() not in (4, 5):
        raise ValueError(
            f"component_ids must be a [B, C, *spatial] tensor with 2 or 3 spatial dims, got {getattr(component_ids, 'shape', component_ids)!r}"
        )
    check_nonnegative("gamma", gamma)
    check_nonnegative("eps", eps)
    check_nonnegative("w_bg", w_bg)
    index = build_foreground_index(component_ids, ignore_mask)
    component_sizes = index_count(index.component_of_voxel, index.num_components)
    weights = torch.full((index.num_pairs, component_ids[0, 0].numel()), float(w_bg), device=component_ids.device)
    if index.valid_voxels is not None:
        weights = weights * index.valid_voxels  # ignored voxels weigh nothing
    weights.view(-1)[index.positions] = (component_sizes + eps).pow(-gamma)[index.component_of_voxel]
    return weights.reshape(component_ids.shape)


def cat_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 1.0,
    eps: float = 5.0,
    w_bg: float = 0.01,
    smooth: float = 1e-5,
    reduction: str = "batch",
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Component-Adaptive Tversky loss (Luu et al. 2026 (CATMIL), §2.1).

        w_i  = (|C_k| + ε)^-γ in component C_k,  w_bg on background,  0 on ignored voxels
        TP_w = Σ w·p·g,   FP_w = Σ w·p·(1 - g),   FN_w = Σ w·(1 - p)·g      per (b, c)
        CAT  = 1 - (TP_w + δ) / (TP_w + α·FP_w + β·FN_w + δ)

    g_i = [component_ids_i > 0]. α weighs false positives and β false negatives (the CATMIL
    equation and its authors' code); defaults α = 0.3, β = 0.7, γ = 1, ε = 5, w_bg = 0.01 are those
    of the authors' trainers (luumsk/SmallLesionMRI), δ = ``smooth``. Aggregation (``reduction``):

    * "batch" (default, the authors' code): for each channel c that has foreground somewhere in the
      batch, the mean over *all* B samples of CAT_bc (a sample without foreground there adds
      1 - δ/(α·w_bg·Σp + δ) ≈ 1, with almost no gradient), then the mean over those channels;
    * "positive_pairs": the mean over the (b, c) pairs that have foreground themselves.

    A batch without any non-ignored foreground voxel gives a zero with a graph. γ = 0 with
    w_bg = 1 is the plain Tversky loss. Computes in float32; returns a float32 scalar.
    """
    if validate:
        check_probs_and_ids(probs, component_ids)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("eps", eps), ("w_bg", w_bg)):
            check_nonnegative(name, value)
        check_positive("smooth", smooth)
        if reduction not in CAT_REDUCTIONS:
            raise ValueError(f"reduction must be one of {CAT_REDUCTIONS}, got {reduction!r}")
    index = build_foreground_index(component_ids, ignore_mask)
    # The weight is constant on each component and on the background, so every weighted sum is a
    # per-component sum times its weight: one scatter of p over the lesion voxels and one plain sum
    # per pair replace any per-voxel weight map.
    component_sizes = index_count(index.component_of_voxel, index.num_components)
    # id gaps and fully ignored components have size 0 and must weigh nothing (0^-γ would be inf)
    component_weight = torch.where(
        component_sizes > 0, (component_sizes + eps).pow(-gamma), torch.zeros_like(component_sizes)
    )
    p_in_component = index_sum(
        probs.float().reshape(-1)[index.positions], index.component_of_voxel, index.num_components
    )
    per_pair = index.sum_per_pair
    true_pos = per_pair(component_weight * p_in_component)  # Σ_k w_k Σ_{C_k} p
    false_neg = per_pair(component_weight * component_sizes) - true_pos  # Σ_k w_k Σ_{C_k} (1 - p)
    p_in_background = pair_sum(probs, index.valid_voxels) - per_pair(p_in_component)
    false_pos = w_bg * p_in_background
    tversky = (true_pos + smooth) / (true_pos + alpha * false_pos + beta * false_neg + smooth)
    has_fg = per_pair(component_sizes) > 0
    if reduction == "batch":  # every sample of a channel that has foreground in the batch
        per_sample = has_fg.reshape(-1, probs.shape[1])
        counted = per_sample.any(dim=0, keepdim=True).expand_as(per_sample).reshape(-1)
    else:
        counted = has_fg
    per_pair_loss = torch.where(counted, 1.0 - tversky, torch.zeros_like(tversky))
    # summing the masked per-pair terms keeps the graph, so a lesion-free batch yields 0 with a grad_fn
    return per_pair_loss.sum() / counted.sum().clamp_min(1)


def mil_loss(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    eps: float = 1e-6,
    ignore_mask: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Lesion-level Multiple Instance Learning loss (Luu et al. 2026 (CATMIL), §2.2).

        s_k = max_{i ∈ C_k} p_i,      MIL = (1/K) Σ_k -log(s_k + ε)

    over all K components of the batch (every (b, c) pair pooled, as the CATMIL authors' code pools
    them, so that every lesion of the batch weighs the same; the paper writes it per volume). The max is one
    ``scatter_reduce(amax)`` over the component index, so the gradient of each component reaches
    only its arg-max voxel (split evenly between exact ties).
    Ignored voxels are left out of the max, and a component whose voxels are all ignored does not
    count (the authors' code takes ``tgt > 0``, which makes nnU-Net's ignore label a lesion:
    docs/formulas.md §2). No component in the batch gives a zero with a graph (the paper's "L_MIL = 0
    for K = 0"). Default ε = 1e-6 (the authors' code, where it clamps the max: -log(max(s, ε))).
    Returns a float32 scalar.
    """
    if validate:
        check_probs_and_ids(probs, component_ids)
        check_positive("eps", eps)
    # the max runs over the F component voxels only (sparse index), not over every voxel
    index = build_foreground_index(component_ids, ignore_mask)
    p = probs.float().reshape(-1)[index.positions]
    num_components = index.num_components
    component_sizes = index_count(index.component_of_voxel, num_components)
    detection_score = p.new_full((num_components,), float("-inf")).scatter_reduce(
        0, index.component_of_voxel, p, reduce="amax", include_self=True
    )
    present = component_sizes > 0  # id gaps and fully ignored components are empty (-inf max)
    safe_score = torch.where(present, detection_score, torch.ones_like(detection_score))
    per_component = torch.where(present, -torch.log(safe_score + eps), torch.zeros_like(safe_score))
    # no component: a sum over zero elements of a tensor computed from probs, i.e. 0 with a graph
    return (per_component.sum() + probs.float().sum() * 0.0) / present.sum().clamp_min(1)
