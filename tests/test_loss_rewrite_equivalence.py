"""The one-pass rewrites of blob, IWL-blob, inverse weighting and the instance family give the values and
gradients of the implementations they replaced (frozen in ``tests/frozen_losses``), to 1e-6 relative in
float64, on random batches (ignore masks, lesion-free pairs, single components, every option) with
probabilities at and beyond the CE clamp (0, 1e-8, 1e-7, 1 - 1e-7, 1), where the clamp passes no gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from frozen_losses import blob as frozen_blob
from frozen_losses import instance_losses as frozen_instance
from frozen_losses import inverse_weighting as frozen_inverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_instance_losses import OPTIONS, lesion_batches

from nnunet_lesionloss.losses.functional import blob_loss, instance_losses, inverse_weighted_loss

EQUIVALENCE_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: probabilities where the CE clamp [1e-7, 1 - 1e-7] acts or is at its edge
EDGE_VALUES = [0.0, 1e-8, 1e-7, 2e-7, 0.5, 1.0 - 1e-7, 1.0 - 1e-9, 1.0]


def with_edge_values(probs: torch.Tensor, seed: int, share: float) -> torch.Tensor:
    """``probs`` with a share of its voxels set to :data:`EDGE_VALUES` (a fresh leaf)."""
    rng = np.random.default_rng(seed)
    values = probs.detach().numpy().copy()
    chosen = rng.random(values.shape) < share
    values[chosen] = rng.choice(EDGE_VALUES, size=int(chosen.sum()))
    return torch.tensor(values, dtype=probs.dtype, requires_grad=True)


def assert_same_value_and_gradient(
    new: torch.Tensor, old: torch.Tensor, leaf: torch.Tensor, rtol: float = 1e-6, atol_share: float = 1e-9
):
    """Equal values, and gradients equal to ``rtol`` or to ``atol_share`` of the largest one (rounding of
    the near-zero entries)."""
    assert torch.isfinite(new) == torch.isfinite(old)
    assert new.item() == pytest.approx(old.item(), rel=rtol, abs=1e-12)
    (new_grad,) = torch.autograd.grad(new, leaf, retain_graph=True, allow_unused=True)
    old_grad = None
    if old.requires_grad:
        (old_grad,) = torch.autograd.grad(old, leaf, retain_graph=True, allow_unused=True)
    new_grad = torch.zeros_like(leaf) if new_grad is None else new_grad
    old_grad = torch.zeros_like(leaf) if old_grad is None else old_grad
    scale = float(old_grad.abs().max()) if old_grad.numel() else 0.0
    torch.testing.assert_close(new_grad, old_grad, rtol=rtol, atol=1e-12 + atol_share * scale)


@EQUIVALENCE_SETTINGS
@given(lesion_batches(), OPTIONS, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.3]))
def test_blob_and_iwl_blob_equal_the_previous_implementation(batch, options, seed, edge_share):
    probs, component_ids, _, ignore, _ = batch
    probs = with_edge_values(probs, seed, edge_share)
    new = blob_loss(probs, component_ids, ignore_mask=ignore, **options)
    old = frozen_blob.blob_loss(probs, component_ids, ignore_mask=ignore, **options)
    assert_same_value_and_gradient(new, old, probs)


INVERSE_OPTIONS = st.fixed_dictionaries(
    {
        "base": st.sampled_from(["dice", "dice_ce"]),
        "balance": st.sampled_from(["lesions_and_background", "lesions"]),
        "weight_clip": st.sampled_from([None, (1.0, 2e5), (0.5, 3.0)]),
        "dice_denominator": st.sampled_from(["squared", "plain"]),
        "smooth": st.sampled_from([None, 0.0, 1e-5, 1.0]),
    }
)


@EQUIVALENCE_SETTINGS
@given(lesion_batches(), INVERSE_OPTIONS, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.3]))
def test_inverse_weighting_equals_the_previous_implementation(batch, options, seed, edge_share):
    probs, component_ids, _, ignore, _ = batch
    probs = with_edge_values(probs, seed, edge_share)
    new = inverse_weighted_loss(probs, component_ids, ignore_mask=ignore, **options)
    old = frozen_inverse.inverse_weighted_loss(probs, component_ids, ignore_mask=ignore, **options)
    assert_same_value_and_gradient(new, old, probs)


@pytest.mark.parametrize("loss", ["blob", "iwl_blob", "inverse"])
def test_float32_inputs_stay_within_float32_rounding_of_the_previous_implementation(loss):
    """The trainers' case: float32 channel slices of a softmax, 2 × 2 × 24³ with 30 lesions per channel."""
    from nnunet_lesionloss.losses.compound import foreground_probabilities
    from nnunet_lesionloss.synthetic import make_lesion_labels

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn((2, 3, 24, 24, 24), generator=generator, dtype=torch.float32).requires_grad_(True)
    labels = np.stack([make_lesion_labels((24, 24, 24), 30, num_classes=2, seed=s) for s in (1, 2)])
    from nnunet_lesionloss.components import label_components

    ids = torch.from_numpy(
        np.stack([[label_components(labels[b] == c, 26) for c in (1, 2)] for b in range(2)]).astype(np.int16)
    )
    ignore = torch.from_numpy(np.random.default_rng(0).random((2, 1, 24, 24, 24)) < 0.1)
    call = {
        "blob": lambda f, p: f.blob_loss(p, ids, ignore_mask=ignore),
        "iwl_blob": lambda f, p: f.blob_loss(p, ids, iwl=True, ignore_mask=ignore),
        "inverse": lambda f, p: f.inverse_weighted_loss(p, ids, ignore_mask=ignore),
    }[loss]
    from nnunet_lesionloss.losses import functional as current

    frozen = {"blob": frozen_blob, "iwl_blob": frozen_blob, "inverse": frozen_inverse}[loss]
    new = call(current, foreground_probabilities(logits, [(1,), (2,)]))
    old = call(frozen, foreground_probabilities(logits, [(1,), (2,)]))
    assert_same_value_and_gradient(new, old, logits, rtol=2e-5, atol_share=1e-6)


# ---------------------------------------------------------------------------------------------- instance family


@st.composite
def instance_batches(draw):
    """Random probabilities with blobs of high probability (predicted components) and random GT components."""
    from nnunet_lesionloss.components import label_components

    spatial = draw(st.sampled_from([2, 3]))
    shape = tuple(
        draw(st.lists(st.integers(4, 12) if spatial == 2 else st.integers(3, 7), min_size=spatial, max_size=spatial))
    )
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    probs = rng.uniform(0.0, 1.0, size=(batch, channels, *shape)) ** draw(st.sampled_from([1.0, 3.0]))
    ids = np.zeros((batch, channels, *shape), dtype=np.int64)
    for b in range(batch):
        for c in range(channels):
            if rng.random() < 0.2:
                continue  # a lesion-free pair
            ids[b, c] = label_components(rng.random(shape) < rng.uniform(0.05, 0.4), 3**spatial - 1)
    ignore = torch.from_numpy(rng.random((batch, 1, *shape)) < 0.15) if draw(st.booleans()) else None
    return torch.tensor(probs, dtype=torch.float64, requires_grad=True), torch.from_numpy(ids), ignore


INSTANCE_OPTIONS = st.fixed_dictionaries(
    {
        "threshold": st.sampled_from([0.3, 0.5]),
        "phi": st.sampled_from([1, 3]),
        "proximity_reduction": st.sampled_from(["sum", "mean"]),
        "max_pred_instances": st.sampled_from([None, 2]),
        "too_many_factor": st.sampled_from([None, 1.5]),
        "component_backend": st.sampled_from(["cc3d", "torch"]),
    }
)


@EQUIVALENCE_SETTINGS
@given(instance_batches(), INSTANCE_OPTIONS, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.2]))
def test_instance_family_equals_the_previous_implementation(batch, options, seed, edge_share):
    probs, component_ids, ignore = batch
    probs = with_edge_values(probs, seed, edge_share)
    spacing = (1.0,) * (probs.dim() - 2)
    new = instance_losses(probs, component_ids, ignore_mask=ignore, spacing=spacing, **options)
    old = frozen_instance.instance_losses(probs, component_ids, ignore_mask=ignore, spacing=spacing, **options)
    assert list(new) == list(old)
    for name in old:
        assert_same_value_and_gradient(new[name], old[name], probs)
