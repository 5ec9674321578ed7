"""Argument checks shared by the functional losses: one place for the conventions every loss states.

Every public loss validates its arguments when called with ``validate=True`` (the default of the
public API). The trainers build each term once, validate its parameters then (``losses.terms``),
and call it with ``validate=False`` on every step, so a step pays for no check it already passed.

What ``validate=True`` checks about the data: ``probs`` is a non-empty floating-point
[B, C, *spatial] tensor with 2 or 3 spatial dims whose values lie in [0, 1] (one min/max pass; NaN
fails too: the classic mistake is to pass logits); the target is a same-shaped integer id map
(negative ids are refused where the ids are indexed, ``losses.segments``) or a binary mask (bool, or 0/1 values). The min/max pass costs 2-8 % of a term's forward+backward
on a CPU (``scripts/bench_losses.py --threads 1 --check-cost``), more than a training step should pay
for inputs it builds itself, which is why the trainers leave it off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "check_nonnegative",
    "check_positive",
    "check_probs_and_target",
    "check_probs_and_ids",
    "check_ignore_mask",
    "check_same_device",
    "check_spacing",
    "check_probability_range",
    "PROBABILITY_TOLERANCE_ULPS",
]

#: values may exceed [0, 1] by this many units of the dtype's precision (eps): a sum of softmax
#: channels (the union channel) can round to 1 + a few eps; logits are off by far more
PROBABILITY_TOLERANCE_ULPS = 8


def check_nonnegative(name: str, value: float) -> None:
    """``value`` must be a finite real number >= 0 (bools are refused)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: float) -> None:
    """``value`` must be a finite real number > 0 (bools are refused)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_probs(probs: torch.Tensor) -> None:
    if not torch.is_tensor(probs) or not probs.is_floating_point():
        raise TypeError(
            f"probs must be a floating-point tensor, got {type(probs).__name__} {getattr(probs, 'dtype', '')}"
        )
    if probs.dim() not in (4, 5):
        raise ValueError(f"probs must be [B, C, *spatial] with 2 or 3 spatial dims, got shape {tuple(probs.shape)}")
    if probs.numel() == 0:
        raise ValueError(f"probs is empty (shape {tuple(probs.shape)}): [B, C, *spatial] needs every size >= 1")
    check_probability_range(probs)


def check_probability_range(probs: torch.Tensor, name: str = "probs") -> None:
    """``probs`` lies in [0, 1] (up to :data:`PROBABILITY_TOLERANCE_ULPS` eps of its dtype) and has
    no NaN: one min/max pass (on CUDA, one synchronisation)."""
    low, high = (float(v) for v in torch.stack(torch.aminmax(probs.detach())).tolist())
    tolerance = PROBABILITY_TOLERANCE_ULPS * torch.finfo(probs.dtype).eps
    if not (low >= -tolerance and high <= 1.0 + tolerance):  # written so that NaN fails
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], found values in [{low:.4g}, {high:.4g}]: "
            "pass probabilities, not logits (apply softmax or sigmoid first)"
        )


def check_probs_and_target(probs: torch.Tensor, target: torch.Tensor, name: str = "gt") -> None:
    """``probs`` [B, C, *spatial] (2D or 3D, floating point) and a same-shaped binary target."""
    _check_probs(probs)
    if not torch.is_tensor(target):
        raise TypeError(f"{name} must be a tensor (bool or 0/1), got {type(target).__name__}")
    if target.shape != probs.shape:
        raise ValueError(f"{name} shape {tuple(target.shape)} must equal probs shape {tuple(probs.shape)}")
    if target.dtype != torch.bool and bool(((target != 0) & (target != 1)).any()):
        raise ValueError(f"{name} must be a binary mask (bool, or 0/1 values); found other values")


def check_probs_and_ids(probs: torch.Tensor, component_ids: torch.Tensor, name: str = "component_ids") -> None:
    """``probs`` [B, C, *spatial] (2D or 3D, floating point) and same-shaped integer ids."""
    _check_probs(probs)
    if not torch.is_tensor(component_ids) or component_ids.is_floating_point() or component_ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {getattr(component_ids, 'dtype', type(component_ids))}")
    if component_ids.shape != probs.shape:
        raise ValueError(f"{name} shape {tuple(component_ids.shape)} must equal probs shape {tuple(probs.shape)}")


def check_ignore_mask(ignore_mask: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> None:
    """An ignore mask is bool [B, 1 or C, *spatial] (True = excluded) for tensors of ``shape``."""
    if not torch.is_tensor(ignore_mask) or ignore_mask.dtype != torch.bool:
        raise TypeError(
            "ignore_mask must be bool (a tensor, True = excluded), got "
            f"{getattr(ignore_mask, 'dtype', type(ignore_mask).__name__)}"
        )
    batch, channels = shape[:2]
    if (
        ignore_mask.dim() != len(shape)
        or ignore_mask.shape[0] != batch
        or tuple(ignore_mask.shape[2:]) != tuple(shape[2:])
        or ignore_mask.shape[1] not in (1, channels)
    ):
        raise ValueError(
            f"ignore_mask shape {tuple(ignore_mask.shape)} must be [B, 1 or C, *spatial] for shape {tuple(shape)}"
        )


def check_same_device(probs: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    """Every given tensor (None is skipped) lies on the device of ``probs``."""
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != probs.device:
            raise ValueError(
                f"{name} is on {tensor.device} but probs is on {probs.device}; move both to the same device"
            )


def check_spacing(spacing: Sequence[float] | None, spatial_dims: int) -> tuple[float, ...]:
    """The voxel spacing as a tuple of ``spatial_dims`` finite positive floats (None = isotropic 1)."""
    if spacing is None:
        return (1.0,) * spatial_dims
    try:
        values = tuple(float(s) for s in spacing)
    except TypeError as error:
        raise TypeError(f"spacing must be a sequence of {spatial_dims} positive numbers, got {spacing!r}") from error
    if len(values) != spatial_dims or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"spacing must be {spatial_dims} finite positive numbers (one per spatial axis), got {spacing!r}"
        )
    return values
