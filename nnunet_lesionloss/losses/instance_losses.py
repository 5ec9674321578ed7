"""The instance loss family of Rachmadi, Byra & Skibbe 2024 (§2.1, eqs. 2-14) as trainable,
loop-free segment reductions.

Paper: *A new family of instance-level loss functions for improving instance-level segmentation and
detection of white matter hyperintensities in routine clinical brain MRI*, Computers in Biology and
Medicine, 2024, doi:10.1016/j.compbiomed.2024.108414; authors' code: BrainImageAnalysis/instance-loss
(docs/references.md).

Inputs (shared with every component loss of the package):

- ``probs`` float [B, C, *spatial]: foreground probability of each foreground class (softmax,
  one-vs-rest) or region (sigmoid), 2 or 3 spatial dims;
- ``component_ids`` int [B, C, *spatial]: ground-truth (GT) components, 0 = not foreground of
  channel c, 1..N_bc = the components of channel c in sample b (cc3d numbering from the loader);
- ``ignore_mask`` bool [B, 1, *spatial] (optional): True = voxel excluded from every sum and from
  the predicted components.

Each (b, c) pair is one "image" of the paper. Predicted components P_m are the connected
components of ``probs.detach() > threshold`` (same connectivity as the GT), recomputed each call
(cc3d on a uint8 host copy, one call per pair; or a torch label propagation). GT components are
G_n, g = ∪ G_n, p the soft probability.

Per-instance Dice (the paper's L_seg^DL with MONAI's Dice), for a prediction restricted to a
domain D and a target T ⊂ D:

    d(D, T) = 1 - 2·Σ_T p / (Σ_D p + |T|)        if |T| > 0
            = 1   (value)                          if |T| = 0 and |D| > 0   (empty target)
            = 0                                    if D = T = ∅

An empty target makes the Dice the constant 1, whose gradient is zero (the paper's 1e-5
smoothing leaves ≈ 1e-5/(Σ_D p)²); we keep the value 1 and pass the gradient of the smoothed
surrogate s = Σ_D p / (Σ_D p + 1) straight through (value 1 + s - sg(s)), so that a false
instance is pushed down.

Terms (all reductions over the sparse list of voxels inside a GT or predicted component, one pass
each; the only N×M objects are instance-level matrices):

- ``instance_gt`` (eq. 2): d_n = d(D_n, G_n), D_n = G_n ∪ (∪_{m: P_m∩G_n≠∅} P_m \\ ∪_{k≠n} G_k):
  1 - 2·S_n / (S_n + X_n + |G_n|), S_n = Σ_{G_n} p, X_n = Σ_{m~n} Σ_{P_m \\ g} p.
  Mean over all GT components of the batch (1/Z, Z = number of GT instances).
- ``instance_p`` (eq. 3): d_m = d(P_m, T_m), T_m = ∪_{n: G_n∩P_m≠∅} G_n:
  1 - 2·Σ_{P_m∩g} p / (Σ_{P_m} p + |T_m|). Mean over all predicted components of the batch.
- ``center`` (eq. 4): cube maps C_GT, C_P (side φ voxels, odd, scaled per axis to the finest
  spacing) around the rounded centre of mass of each GT / predicted component; the soft
  prediction inside Q = C_GT ∪ C_P against C_GT: d(Q, C_GT) = 1 - 2·Σ_{C_GT} p / (Σ_Q p + |C_GT|)
  per pair, mean over pairs.
- ``false_gt`` / ``false_p`` (eqs. 5-6): per pair, (1/N) Σ_{n missed} (1 + d_n - sg(d_n)) and
  (1/M) Σ_{m false} (1 + d_m - sg(d_m)); missed = no predicted component touches G_n, false =
  P_m touches no GT component (the paper's "instance Dice loss of 1"). The value is the paper's
  rate exactly; the gradient is that of the instance Dice of those instances (straight-through).
  A pair without GT (resp. prediction) contributes 0; mean over pairs.
- ``proximity`` (eqs. 7-10): Distance-IoU 1 - IoU + ρ²/τ² of the bounding boxes of every GT and
  predicted component of a pair (an N×M matrix per pair, batched and padded), L^GT = Σ_n
  min_m DIoU(n, m)·d_n, L^P = Σ_m min_n DIoU(n, m)·d_m, (L^GT - L^P)² per pair, mean over pairs.
  A side without instances gets the paper's artificial 3×3(×3) instance at the patch centre
  (§2.1.4) whose instance loss is the whole-pair Dice d(Ω, g). DIoU is constant (detached
  boxes); the gradient flows through d_n and d_m as in the paper (§2.2, Fig. 7).

Compounds (eqs. 12-14): ICI = 0.25·L_seg + 0.5·L_instance^GT + 0.25·L_center; False = L_seg +
L_false^P + L_false^GT; Proximity = L_seg + 0.1·L_proximity. Their weights live in one place, the
trainer configs (``configs/ici.yaml``, ``false.yaml``, ``proximity.yaml``: ``base.weight`` is the
weight of L_seg, ``subterms`` those of the instance terms); a caller without nnU-Net adds
Σ weight·term to its own L_seg.

Computation runs in float32 (float64 if ``probs`` is float64) with autocast disabled. Formulas and
deviations from the paper and its code: ``docs/formulas.md §3``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..components import check_connectivity
from .checks import check_positive, check_probs_and_ids, check_same_device, check_spacing
from .predicted_components import (
    COMPONENT_BACKENDS,
    PaddedInstances,
    label_prediction_components,
    predicted_components,
    ravel_coordinates,
    select_voxels,
)
from .segments import (
    index_count,
    index_extrema,
    renumber_per_pair,
    valid_voxel_mask,
    voxel_sums,
)

__all__ = [
    "instance_losses",
    "label_prediction_components",
    "TERM_NAMES",
]

TERM_NAMES = ("instance_gt", "instance_p", "center", "false_gt", "false_p", "proximity")

# Side of the artificial instance of §2.1.4 (3×3 in 2D, 3×3×3 in 3D).
_ARTIFICIAL_SIDE = 3


# --------------------------------------------------------------------------- argument checks


def _check_options(threshold: float, phi: int, terms: Sequence[str], backend: str) -> tuple[str, ...]:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    if isinstance(phi, bool) or not isinstance(phi, (int, np.integer)) or phi < 1 or phi % 2 == 0:
        raise ValueError(f"phi (side of the centre cubes, voxels) must be a positive odd integer, got {phi!r}")
    if isinstance(terms, str):
        terms = (terms,)
    terms = tuple(terms)
    unknown = [t for t in terms if t not in TERM_NAMES]
    if not terms or unknown:
        raise ValueError(f"terms must be a non-empty subset of {TERM_NAMES}, got {terms!r}")
    if backend not in COMPONENT_BACKENDS:
        raise ValueError(f"component_backend must be one of {COMPONENT_BACKENDS}, got {backend!r}")
    return terms


# --------------------------------------------------------------------------- small pieces


def _instance_dice(
    overlap: torch.Tensor, pred_sum: torch.Tensor, target_size: torch.Tensor, domain_size: torch.Tensor
) -> torch.Tensor:
    """d(D, T) of the module docstring, elementwise over instances (see there for the 3 cases)."""
    has_target = target_size > 0
    dice = 1.0 - 2.0 * overlap / (pred_sum + target_size).clamp_min(1e-12)
    surrogate = pred_sum / (pred_sum + 1.0)
    empty_target = (surrogate - surrogate.detach()) + 1.0  # exactly 1: the difference is exactly 0
    nothing = surrogate * 0.0
    return torch.where(has_target, dice, torch.where(domain_size > 0, empty_target, nothing))


def _straight_through_one(instance_loss: torch.Tensor) -> torch.Tensor:
    """Value exactly 1, gradient of ``instance_loss`` (the missed/false indicator of eqs. 5-6)."""
    return (instance_loss - instance_loss.detach()) + 1.0


def _cube_sides(phi: int, spacing: tuple[float, ...]) -> list[int]:
    """Odd side per axis of a cube of φ voxels along the finest axis, in physical units."""
    finest = min(spacing)
    return [max(1, 2 * int(math.floor((phi * finest / s - 1) / 2 + 0.5)) + 1) for s in spacing]


def _per_pair_mean(values: torch.Tensor) -> torch.Tensor:
    return values.mean() if values.numel() else values.sum()


# --------------------------------------------------------------------------- the terms


def instance_losses(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    *,
    threshold: float = 0.5,
    phi: int = 3,
    spacing: Sequence[float] | None = None,
    connectivity: int | None = None,
    ignore_mask: torch.Tensor | None = None,
    terms: Sequence[str] = TERM_NAMES,
    component_backend: str = "cc3d",
    proximity_reduction: str = "sum",
    max_pred_instances: int | None = None,
    too_many_factor: float | None = None,
    validate: bool = True,
) -> dict[str, torch.Tensor]:
    """The instance loss family of Rachmadi et al. 2024 (§2.1): a dict of scalar tensors.

    Args:
        probs: float [B, C, *spatial] (2D or 3D), foreground probability per channel.
        component_ids: int [B, C, *spatial], GT components (0 = background, 1..N_bc).
        threshold: predicted components are those of ``probs.detach() > threshold`` (paper: 0.5).
        phi: side in voxels (odd) of the centre cubes of L_center (paper: 3); along coarser axes
            the side shrinks with the spacing (odd, >= 1).
        spacing: physical voxel size per spatial axis; scales the cubes of L_center and the
            coordinates of the Distance-IoU of L_proximity. Default isotropic.
        connectivity: of the predicted components, the same as the GT's: 6/18/26 (3D, default
            26) or 4/8 (2D, default 8).
        ignore_mask: bool [B, 1 or C, *spatial], True = excluded everywhere.
        terms: which of ``TERM_NAMES`` to compute (the others are skipped and absent).
        component_backend: "cc3d" (host, default) or "torch" for the predicted components.
        proximity_reduction: "sum" (eqs. 9-10 as written: Σ over the instances of each side) or
            "mean" (beyond the paper: the mean over the instances of each side, so that the squared
            difference of eq. 8 does not grow with the number of false predictions; with "sum" a
            fresh network's many false instances make L^P dominate and the gradient lowers p inside
            the ground-truth lesions, see docs/formulas.md).
        max_pred_instances: L_proximity only: keep the first this many predicted instances of each
            pair (cc3d's numbering, raster order) in eq. 10 and the Distance-IoU matrix (the
            authors' code: ``max_cc_out`` = 50). None: all.
        too_many_factor: L_proximity only: a pair with N ≥ 1 GT instances and more than
            factor·N predicted ones replaces its predicted side by the artificial instance of
            §2.1.4 (the authors' code: ``mul_too_many`` = 50). None: never.
        validate: check the arguments (``losses.checks``); False for callers that checked them once.

    Returns:
        {name: scalar tensor} (float32; float64 for float64 probs) for the requested names among
        instance_gt, instance_p, center, false_gt, false_p, proximity (formulas in the module
        docstring), in the order of ``TERM_NAMES``. Every value is
        in the graph of ``probs``; a term with nothing to measure (no instance in the batch) is a
        zero with a graph.
    """
    spatial_dims = probs.dim() - 2
    if validate:
        check_probs_and_ids(probs, component_ids)
        terms = _check_options(threshold, phi, terms, component_backend)
        if proximity_reduction not in ("sum", "mean"):
            raise ValueError(f"proximity_reduction must be 'sum' or 'mean', got {proximity_reduction!r}")
        if max_pred_instances is not None and (
            isinstance(max_pred_instances, bool)
            or not isinstance(max_pred_instances, (int, np.integer))
            or max_pred_instances < 1
        ):
            raise ValueError(f"max_pred_instances must be None or an integer >= 1, got {max_pred_instances!r}")
        if too_many_factor is not None:
            check_positive("too_many_factor", too_many_factor)
        if ignore_mask is not None and not torch.is_tensor(ignore_mask):
            raise TypeError(f"ignore_mask must be a bool tensor or None, got {type(ignore_mask).__name__}")
        check_same_device(probs, component_ids=component_ids, ignore_mask=ignore_mask)
    # normalised forms (cheap, always): the terms as a tuple, full connectivity for None, spacing as floats
    terms = (terms,) if isinstance(terms, str) else tuple(terms)
    connectivity = check_connectivity(connectivity, spatial_dims)
    spacing = check_spacing(spacing, spatial_dims)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        work = probs if probs.dtype == torch.float64 else probs.float()
        return _instance_losses(
            work,
            component_ids,
            float(threshold),
            int(phi),
            spacing,
            connectivity,
            ignore_mask,
            terms,
            component_backend,
            proximity_reduction,
            max_pred_instances,
            too_many_factor,
        )


def _instance_losses(
    probs: torch.Tensor,
    component_ids: torch.Tensor,
    threshold: float,
    phi: int,
    spacing: tuple[float, ...],
    connectivity: int,
    ignore_mask: torch.Tensor | None,
    terms: tuple[str, ...],
    backend: str,
    proximity_reduction: str = "sum",
    max_pred_instances: int | None = None,
    too_many_factor: float | None = None,
) -> dict[str, torch.Tensor]:
    batch, channels = probs.shape[:2]
    spatial = tuple(probs.shape[2:])
    pairs, voxels = batch * channels, math.prod(spatial)
    dtype, device = probs.dtype, probs.device
    valid = valid_voxel_mask(ignore_mask, probs.shape)

    ids = component_ids.flatten(2)  # [B, C, V]: a view even of a channel slice of the packed target
    labelled = (ids != 0).reshape(pairs, voxels)
    prediction = (probs.detach() > threshold).reshape(pairs, voxels)
    if valid is not None:
        labelled &= valid
        prediction &= valid
    # The prediction is labelled once per call (all requested terms share it) and measured in the
    # same host pass; the GT voxels (few) are selected once (nonzero over [P, *spatial] yields pair
    # and coordinates without integer division). Every per-instance quantity below is a reduction
    # over the GT list, or one dense scatter of p over the predicted labels.
    with_coords = "center" in terms or "proximity" in terms
    predicted = predicted_components(prediction, spatial, connectivity, backend, dtype, with_coords)
    gt_pair, gt_coords, gt_positions = select_voxels(labelled, pairs, spatial, with_coords)
    gt_local = ids[gt_pair // channels, gt_pair % channels, gt_positions - gt_pair * voxels].long()
    if gt_local.numel() and int(gt_local.min()) < 0:
        raise ValueError("component_ids must be >= 0 (0 = not foreground)")
    pred_labels = predicted.labels.reshape(-1)
    largest_gt = int(gt_local.max()) if gt_local.numel() else 0  # ids absent from the patch stay empty
    if largest_gt > gt_local.numel():
        # A sparse numbering (not cc3d's 1..N, e.g. ids 1000, 2000): renumber 1..N per pair so that
        # the per-pair tables stay O(instances).
        gt_local, per_pair = renumber_per_pair(gt_local, gt_pair, pairs)
        largest_gt = int(per_pair.max()) if per_pair.numel() else 0
    gt = PaddedInstances.from_local(gt_local, gt_pair, pairs, largest_gt)
    pred = predicted.instances
    gt_segments, pred_segments = gt.num_segments, pred.num_segments
    gt_size = index_count(gt.of_voxel, gt_segments, dtype)
    pred_size = predicted.size
    gt_real, pred_real = gt.real(gt_size), pred.real(pred_size)

    # GT voxels that are also predicted: their (n, m) keys give the pairs that co-occur (one unique
    # over combined keys, O(overlap)) and their p gives Σ_{P_m ∩ g} p.
    pred_at_gt = pred_labels[gt_positions].long()
    overlap = torch.nonzero(pred_at_gt > 0).squeeze(1)
    gt_of_overlap = gt.of_voxel[overlap]
    pred_of_overlap = gt_pair[overlap] * pred.slots + pred_at_gt[overlap]
    keys = torch.unique(gt_of_overlap * pred_segments + pred_of_overlap)
    touch_gt, touch_pred = keys // pred_segments, keys % pred_segments

    # Every sum of p the terms need, in one node: S_n over the GT list, Σ_{P_m ∩ g} p over the
    # overlap, Σ_{P_m} p over the predicted labels (label 0 falls in the unused column 0 of its
    # pair), the centre cubes of L_center, and Σ_Ω p per pair for L_proximity.
    sparse = [(gt_positions, gt.of_voxel, gt_segments), (gt_positions[overlap], pred_of_overlap, pred_segments)]
    if "center" in terms:
        gt_cubes, union = _center_cubes(
            gt,
            gt_real,
            gt_size,
            gt_coords,
            pred,
            pred_real,
            pred_size,
            predicted.coordinate_sum,
            valid,
            phi,
            spacing,
            spatial,
        )
        sparse += [(gt_cubes, gt_cubes // voxels, pairs), (union, union // voxels, pairs)]
    sums = voxel_sums(
        probs.flatten(2),
        sparse,
        labels=predicted.labels,
        label_slots=pred.slots,
        pair_totals="proximity" in terms,
        valid=None if valid is None else valid.view(batch, channels, voxels),
    )
    gt_mass, pred_mass_on_gt = sums.sparse[:2]  # S_n, Σ_{P_m ∩ g} p
    pred_mass = sums.labels  # Σ_{P_m} p
    pred_mass_off_gt = pred_mass - pred_mass_on_gt  # Σ_{P_m \ g} p
    extra_mass = torch.zeros(gt_segments, dtype=dtype, device=device).index_add_(
        0, touch_gt, pred_mass_off_gt[touch_pred]
    )  # X_n
    touched_target = torch.zeros(pred_segments, dtype=dtype, device=device).index_add_(
        0, touch_pred, gt_size[touch_gt]
    )  # |T_m|
    gt_detected = torch.bincount(touch_gt, minlength=gt_segments) > 0
    pred_correct = torch.bincount(touch_pred, minlength=pred_segments) > 0

    gt_loss = _instance_dice(gt_mass, gt_mass + extra_mass, gt_size, gt_size)  # d_n, eq. 2
    pred_loss = _instance_dice(pred_mass_on_gt, pred_mass, touched_target, pred_size)  # d_m, eq. 3

    # a zero in the graph of probs, through the sums' own node: zero_with_graph would send a V-sized
    # gradient of zeros through autograd and add it to the gradient of probs
    anchor = pred_mass.sum() * 0.0
    results: dict[str, torch.Tensor] = {}
    if "instance_gt" in terms:
        results["instance_gt"] = gt_loss[gt_real].mean() if bool(gt_real.any()) else anchor
    if "instance_p" in terms:
        results["instance_p"] = pred_loss[pred_real].mean() if bool(pred_real.any()) else anchor
    if "false_gt" in terms:
        missed = gt_real & ~gt_detected
        rate = gt.pair_sum(torch.where(missed, _straight_through_one(gt_loss), gt_loss * 0)) / gt.pair_sum(
            gt_real.to(dtype)
        ).clamp_min(1.0)
        results["false_gt"] = _per_pair_mean(rate) + anchor
    if "false_p" in terms:
        false = pred_real & ~pred_correct
        rate = pred.pair_sum(torch.where(false, _straight_through_one(pred_loss), pred_loss * 0)) / pred.pair_sum(
            pred_real.to(dtype)
        ).clamp_min(1.0)
        results["false_p"] = _per_pair_mean(rate) + anchor
    if "center" in terms:
        gt_cube_mass, union_mass = sums.sparse[2:]
        gt_cube_size = index_count(gt_cubes // voxels, pairs, dtype)
        union_size = index_count(union // voxels, pairs, dtype)
        results["center"] = _per_pair_mean(_instance_dice(gt_cube_mass, union_mass, gt_cube_size, union_size)) + anchor
    if "proximity" in terms:
        gt_box = index_extrema(gt_coords, gt.of_voxel, gt_segments, dtype)
        pred_box = (predicted.lower, predicted.upper)
        # Whole-pair Dice d(Ω, g): the instance loss of the artificial instance of §2.1.4.
        pair_voxels = (
            valid.sum(1).to(dtype)
            if valid is not None
            else torch.full((pairs,), float(voxels), dtype=dtype, device=device)
        )
        pair_overlap = gt.pair_sum(torch.where(gt_real, gt_mass, gt_mass * 0))
        pair_target = gt.pair_sum(torch.where(gt_real, gt_size, gt_size * 0))
        pair_loss = _instance_dice(pair_overlap, sums.pairs, pair_target, pair_voxels)
        pred_counted = _proximity_predictions(gt_real, gt, pred_real, pred, max_pred_instances, too_many_factor)
        results["proximity"] = (
            _proximity_loss(
                (gt_box, gt_real, gt_loss, gt),
                (pred_box, pred_counted, pred_loss, pred),
                pair_loss,
                spatial,
                spacing,
                dtype,
                proximity_reduction,
            )
            + anchor
        )
    return {name: results[name] for name in TERM_NAMES if name in results}


def _cube_positions(
    centre: torch.Tensor, pair: torch.Tensor, sides: list[int], spatial: tuple[int, ...], valid: torch.Tensor | None
) -> torch.Tensor:
    """Unique flat positions ([P·V] layout) of the cubes around ``centre`` [K, D] (clipped to the patch)."""
    offsets = torch.tensor(
        list(itertools.product(*[range(-(s // 2), s // 2 + 1) for s in sides])), dtype=torch.long, device=centre.device
    )
    cells = centre[:, None, :] + offsets[None]  # [K, O, D]
    upper = torch.tensor(spatial, device=centre.device)
    inside = ((cells >= 0) & (cells < upper)).all(dim=2)
    flat = pair[:, None] * math.prod(spatial) + ravel_coordinates(cells.clamp_min(0), spatial)
    flat = torch.unique(flat[inside])
    if valid is not None:
        flat = flat[valid.reshape(-1)[flat]]
    return flat


def _center_cubes(
    gt, gt_real, gt_size, gt_coords, pred, pred_real, pred_size, pred_coord_sum, valid, phi, spacing, spatial
) -> tuple[torch.Tensor, torch.Tensor]:
    """The voxels of L_center (eq. 4): flat positions of C_GT and of C_GT ∪ C_P, the cubes of side φ
    around the rounded centre of mass of every GT and predicted component. Only the K·φ^D cube
    voxels are touched (no dense cube map, no max-pooling)."""
    device = gt_size.device
    # Coordinate sums in int64: exact for any patch (float32 would round beyond 2^24).
    gt_coord_sum = torch.zeros(gt.num_segments, len(spatial), dtype=torch.long, device=device).index_add_(
        0, gt.of_voxel, gt_coords
    )
    gt_centre = torch.floor(gt_coord_sum[gt_real].double() / gt_size[gt_real].unsqueeze(1).double() + 0.5).long()
    pred_centre = torch.floor(pred_coord_sum[pred_real].double() / pred_size[pred_real].unsqueeze(1).double() + 0.5)
    sides = _cube_sides(phi, spacing)
    gt_cubes = _cube_positions(gt_centre, torch.nonzero(gt_real).squeeze(1) // gt.slots, sides, spatial, valid)
    pred_cubes = _cube_positions(
        pred_centre.long(), torch.nonzero(pred_real).squeeze(1) // pred.slots, sides, spatial, valid
    )
    return gt_cubes, torch.unique(torch.cat([gt_cubes, pred_cubes]))


def _proximity_predictions(
    gt_real: torch.Tensor,
    gt: PaddedInstances,
    pred_real: torch.Tensor,
    pred: PaddedInstances,
    max_pred_instances: int | None,
    too_many_factor: float | None,
) -> torch.Tensor:
    """The predicted instances that enter L_proximity (bool per id), after the authors' caps:
    the first ``max_pred_instances`` of each pair, none in a pair with more than
    ``too_many_factor``·N of them (N ≥ 1 GT instances; the artificial instance stands in)."""
    counted = pred_real
    if max_pred_instances is not None:
        local = torch.arange(counted.numel(), device=counted.device) % pred.slots
        counted = counted & (local <= max_pred_instances)
    if too_many_factor is not None:
        gt_count = gt.pair_sum(gt_real.to(torch.float64))
        pred_count = pred.pair_sum(pred_real.to(torch.float64))
        too_many = (gt_count > 0) & (pred_count > too_many_factor * gt_count)
        counted = counted & ~too_many.repeat_interleave(pred.slots)
    return counted


def _proximity_loss(gt, pred, pair_loss, spatial, spacing, dtype, reduction: str = "sum") -> torch.Tensor:
    """L_proximity (eqs. 7-10) on padded per-pair N×M Distance-IoU matrices; mean over pairs."""
    scale = torch.tensor(spacing, dtype=dtype, device=pair_loss.device)
    centre_voxel = torch.tensor([s // 2 for s in spatial], dtype=dtype, device=pair_loss.device)
    half = (_ARTIFICIAL_SIDE - 1) // 2
    artificial_lower = (centre_voxel - half) * scale
    artificial_upper = (centre_voxel + half + 1) * scale

    def padded(side_terms):
        (lowest, highest), real, loss, side = side_terms
        # Boxes in physical units: voxel v spans [v, v + 1) along each axis.
        box_lower = side.per_pair(torch.where(real[:, None], lowest, 0.0) * scale)
        box_upper = side.per_pair(torch.where(real[:, None], highest + 1, 0.0) * scale)
        losses, present = side.per_pair(loss), side.per_pair(real)
        if present.shape[1] == 0:  # no instance in the whole batch: one column for the artificial one
            box_lower, box_upper = (
                box_lower.new_zeros(side.pairs, 1, len(spatial)),
                box_upper.new_zeros(side.pairs, 1, len(spatial)),
            )
            losses, present = losses.new_zeros(side.pairs, 1), present.new_zeros(side.pairs, 1)
        else:
            box_lower, box_upper, present = box_lower.clone(), box_upper.clone(), present.clone()
        empty = ~present.any(dim=1)  # §2.1.4: the artificial instance takes the first column
        box_lower[empty, 0] = artificial_lower
        box_upper[empty, 0] = artificial_upper
        first_column = torch.arange(losses.shape[1], device=losses.device) == 0
        losses = torch.where(empty[:, None] & first_column, pair_loss[:, None], losses)
        present[empty, 0] = True
        return box_lower, box_upper, losses, present

    gt_lower, gt_upper, gt_losses, gt_present = padded(gt)
    pred_lower, pred_upper, pred_losses, pred_present = padded(pred)
    # Eq. 7 accumulated axis by axis, so that the largest temporaries are [P, N, M], not [P, N, M, D].
    intersection = union_g = union_p = centre_distance = enclosing_diagonal = None
    for axis in range(len(spatial)):
        lo_g, up_g = gt_lower[:, :, None, axis], gt_upper[:, :, None, axis]  # [P, N, 1]
        lo_p, up_p = pred_lower[:, None, :, axis], pred_upper[:, None, :, axis]  # [P, 1, M]
        overlap = (torch.minimum(up_g, up_p) - torch.maximum(lo_g, lo_p)).clamp_min(0)
        offset = ((lo_g + up_g) - (lo_p + up_p)) / 2
        extent = torch.maximum(up_g, up_p) - torch.minimum(lo_g, lo_p)
        if axis == 0:
            intersection, union_g, union_p = overlap, up_g - lo_g, up_p - lo_p
            centre_distance, enclosing_diagonal = offset.square(), extent.square()
        else:
            intersection = intersection * overlap
            union_g, union_p = union_g * (up_g - lo_g), union_p * (up_p - lo_p)
            centre_distance = centre_distance + offset.square()
            enclosing_diagonal = enclosing_diagonal + extent.square()
    iou = intersection / (union_g + union_p - intersection).clamp_min(1e-12)
    diou = 1.0 - iou + centre_distance / enclosing_diagonal.clamp_min(1e-12)  # eq. 7
    both = gt_present[:, :, None] & pred_present[:, None, :]
    diou = torch.where(both, diou, torch.full_like(diou, float("inf")))
    gt_nearest = diou.amin(dim=2)  # min over predicted instances, per GT row
    pred_nearest = diou.amin(dim=1)  # min over GT instances, per predicted column
    # absent entries (padding, capped instances) have an infinite minimum: zero it before the product,
    # so that no inf·0 reaches the gradient of an instance that is left out
    gt_weighted = (torch.where(gt_present, gt_nearest, 0.0) * gt_losses).sum(1)  # eq. 9
    pred_weighted = (torch.where(pred_present, pred_nearest, 0.0) * pred_losses).sum(1)  # eq. 10
    if reduction == "mean":  # beyond the paper: per-side means keep eq. 8 on the scale of one instance
        gt_weighted = gt_weighted / gt_present.sum(1).clamp_min(1).to(gt_weighted.dtype)
        pred_weighted = pred_weighted / pred_present.sum(1).clamp_min(1).to(pred_weighted.dtype)
    return _per_pair_mean((gt_weighted - pred_weighted).pow(2))  # eq. 8
