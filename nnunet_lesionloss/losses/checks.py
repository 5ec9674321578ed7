"""Argument checks shared by the functional losses: one place for the conventions every loss states.

Every public loss validates its arguments when called with ``validate=True`` (the default of the
public API). The trainers build each term once, validate its parameters then (``losses.terms``),
and call it with ``validate=False`` on every step, so a step pays for no check it already passed.

What ``validate=True`` checks about the data: ``probs`` is a non-empty floating-point
[B, C, *spatial] tensor with 2 or 3 spatial dims whose values lie in [0, 1] (one min and one max
pass; NaN fails too: the classic mistake is to pass logits); the target is a same-shaped integer
id map (negative ids are refused where the ids are indexed, ``losses.segments``) or a binary mask
(bool, or 0/1 values); the CC loss's Voronoi cells and cell counts must be those of the ids
(``losses.cc``). The checks that read every voxel run once per distinct input
(:func:`checked_once`): a tensor that passed is not read again until it changes.
What they cost, as a share of each term's forward + backward: ``scripts/bench_losses.py
--check-cost`` (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence

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
    "check_probs",
    "check_integer_map",
    "checked_once",
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


#: how many passed (check, inputs) entries :func:`checked_once` remembers
_REMEMBERED_CHECKS = 64
_passed: OrderedDict[tuple, tuple] = OrderedDict()


def _identity(tensor: torch.Tensor | None) -> tuple | None:
    """What must be unchanged for a passed check to hold again: the same tensor object (``id``,
    confirmed by a weak reference, so a new tensor at a reused address is a new input), its version
    counter (every in-place change through any view bumps it), its data pointer, shape and strides."""
    if tensor is None:
        return None
    return (id(tensor), tensor._version, tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


def checked_once(name: str, check: Callable[[], None], *tensors: torch.Tensor | None) -> None:
    """Run ``check`` (which raises on bad input) unless it already passed on these very tensors, unchanged.

    For the checks that read every voxel: a training loop gives new tensors every step (each is
    checked), a caller that passes the same maps again pays once. A change the version counter
    does not see (writes through ``.data`` or a numpy view) is not noticed; such a caller passes
    ``validate=True`` on a fresh tensor. The tensors are held by weak references only.
    """
    try:
        key = (name, *(_identity(t) for t in tensors))
    except RuntimeError:  # inference tensors have no version counter: nothing to remember them by
        check()
        return
    entry = _passed.get(key)
    if entry is not None and all(
        (ref is None and t is None) or (ref is not None and ref() is t) for ref, t in zip(entry, tensors)
    ):
        _passed.move_to_end(key)
        return
    check()
    _passed[key] = tuple(None if t is None else weakref.ref(t) for t in tensors)
    while len(_passed) > _REMEMBERED_CHECKS:
        _passed.popitem(last=False)


def check_probs(probs: torch.Tensor) -> None:
    """``probs`` is a non-empty floating-point [B, C, *spatial] tensor (2D or 3D) of probabilities."""
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
    no NaN: one min and one max pass (on CUDA, one synchronisation), once per distinct tensor
    (:func:`checked_once`). ``amin`` and ``amax`` rather than ``aminmax``: on the CPU, aminmax over
    the trainers' channel slice of the softmax is 7x slower than both together (measured, torch 2.14)."""

    def check() -> None:
        detached = probs.detach()
        low, high = (float(v) for v in torch.stack([detached.amin(), detached.amax()]).tolist())
        tolerance = PROBABILITY_TOLERANCE_ULPS * torch.finfo(probs.dtype).eps
        if not (low >= -tolerance and high <= 1.0 + tolerance):  # written so that NaN fails
            raise ValueError(
                f"{name} must hold probabilities in [0, 1], found values in [{low:.4g}, {high:.4g}]: "
                "pass probabilities, not logits (apply softmax or sigmoid first)"
            )

    checked_once(f"probability range of {name}", check, probs)


def check_probs_and_target(probs: torch.Tensor, target: torch.Tensor, name: str = "gt") -> None:
    """``probs`` [B, C, *spatial] (2D or 3D, floating point) and a same-shaped binary target."""
    check_probs(probs)
    if not torch.is_tensor(target):
        raise TypeError(f"{name} must be a tensor (bool or 0/1), got {type(target).__name__}")
    if target.shape != probs.shape:
        raise ValueError(f"{name} shape {tuple(target.shape)} must equal probs shape {tuple(probs.shape)}")
    if target.dtype != torch.bool:

        def binary() -> None:
            low, high = (float(v) for v in torch.stack([target.amin(), target.amax()]).double().tolist())
            # in [0, 1], and (floating point) nothing strictly between: t·(1 - t) = 0 only at 0 and 1
            fractional = target.is_floating_point() and bool((target * (1 - target)).any())
            if not (low >= 0 and high <= 1) or fractional:
                raise ValueError(f"{name} must be a binary mask (bool, or 0/1 values); found other values")

        checked_once(f"binary {name}", binary, target)


def check_probs_and_ids(probs: torch.Tensor, component_ids: torch.Tensor, name: str = "component_ids") -> None:
    """``probs`` [B, C, *spatial] (2D or 3D, floating point) and same-shaped integer ids."""
    check_probs(probs)
    check_integer_map(probs, component_ids, name)


def check_integer_map(probs: torch.Tensor, component_ids: torch.Tensor, name: str = "component_ids") -> None:
    """``component_ids`` is an integer tensor of the shape of ``probs`` (no pass over the values)."""
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
