"""The functional losses refuse what they cannot mean (``validate=True``, the public API's default):
logits instead of probabilities, NaN, empty tensors, a non-binary mask where a binary one is meant."""

from __future__ import annotations

import pytest
import torch

from nnunet_lesionloss.losses import functional as F


def _ids(shape=(2, 1, 6, 6, 6)) -> torch.Tensor:
    ids = torch.zeros(shape, dtype=torch.int64)
    ids[:, :, 1:3, 1:3, 1:3] = 1
    ids[:, :, 4, 4, 4] = 2
    return ids


#: every public loss of the functional API, called as a user would (ids -> gt where it takes a mask)
CALLS = {
    "blob_loss": lambda p, i: F.blob_loss(p, i),
    "cc_loss": lambda p, i: F.cc_loss(p, i, torch.ones_like(i)),
    "inverse_weighted_loss": lambda p, i: F.inverse_weighted_loss(p, i),
    "cat_loss": lambda p, i: F.cat_loss(p, i),
    "mil_loss": lambda p, i: F.mil_loss(p, i),
    "size_penalty_loss": lambda p, i: F.size_penalty_loss(p, i > 0),
    "tversky_loss": lambda p, i: F.tversky_loss(p, i > 0),
    "focal_tversky_loss": lambda p, i: F.focal_tversky_loss(p, i > 0),
    "binary_focal_loss": lambda p, i: F.binary_focal_loss(p, i > 0),
    "generalized_dice_loss": lambda p, i: F.generalized_dice_loss(p, i > 0),
    "instance_losses": lambda p, i: F.instance_losses(p, i),
}


def test_every_public_loss_is_covered():
    losses = {name for name in F.__all__ if name.endswith(("_loss", "_losses"))}
    assert losses == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_logits_are_refused_with_the_reason(name):
    """Observed: blob_loss given logits returned -1e9 (or 4.8e10) instead of an error."""
    logits = torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) * 4
    with pytest.raises(ValueError, match="pass probabilities, not logits"):
        CALLS[name](logits, _ids())
    with pytest.raises(ValueError, match="pass probabilities, not logits"):
        CALLS[name](torch.full((2, 1, 6, 6, 6), -30.0), _ids())  # all below 0: no value above 1 to notice


@pytest.mark.parametrize("name", sorted(CALLS))
def test_nan_probabilities_are_refused(name):
    probs = torch.full((2, 1, 6, 6, 6), 0.5)
    probs[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"found values in \[nan"):
        CALLS[name](probs, _ids())


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("shape", [(0, 1, 6, 6, 6), (2, 0, 6, 6, 6), (2, 1, 0, 6, 6)])
def test_empty_tensors_are_refused(name, shape):
    with pytest.raises(ValueError, match="probs is empty"):
        CALLS[name](torch.rand(shape), torch.zeros(shape, dtype=torch.int64))


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("shape", [(6, 6, 6), (2, 1, 6, 6, 6, 6), (6, 6)])
def test_shapes_that_are_not_batch_channel_spatial_are_refused(name, shape):
    with pytest.raises(ValueError, match=r"\[B, C, \*spatial\]"):
        CALLS[name](torch.rand(shape), torch.zeros(shape, dtype=torch.int64))


@pytest.mark.parametrize("name", ["size_penalty_loss", "tversky_loss", "binary_focal_loss", "generalized_dice_loss"])
def test_a_mask_that_is_not_binary_is_refused(name):
    """Observed: size_penalty_loss(probs, labels 0..2) gave a value instead of saying that gt is a mask."""
    function = getattr(F, name)
    probs = torch.rand(2, 1, 6, 6, 6)
    with pytest.raises(ValueError, match="must be a binary mask"):
        function(probs, _ids().float() * 2)
    with pytest.raises(ValueError, match="must be a binary mask"):
        function(probs, torch.rand(2, 1, 6, 6, 6))  # probabilities where the mask goes
    assert torch.isfinite(function(probs, (_ids() > 0).float()))  # 0/1 floats are a mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_sum_of_softmax_channels_that_rounds_above_one_is_accepted(dtype):
    """The union channel (sum of the foreground softmax) can round to 1 + a few eps."""
    from nnunet_lesionloss.losses.checks import PROBABILITY_TOLERANCE_ULPS

    eps = torch.finfo(dtype).eps
    probs = torch.full((1, 1, 4, 4, 4), 0.5, dtype=dtype)
    probs[0, 0, 0, 0, 0] = 1 + eps
    ids = torch.zeros((1, 1, 4, 4, 4), dtype=torch.int64)
    ids[0, 0, 1, 1, 1] = 1
    assert torch.isfinite(F.mil_loss(probs, ids))
    probs[0, 0, 0, 0, 0] = 1 + 4 * PROBABILITY_TOLERANCE_ULPS * eps
    with pytest.raises(ValueError, match="not logits"):
        F.mil_loss(probs, ids)


def test_validate_false_skips_the_checks_as_the_trainers_do():
    """The trainers call every term with validate=False (checked once at build): no data pass."""
    logits = torch.full((1, 1, 4, 4, 4), 3.0)
    ids = torch.zeros((1, 1, 4, 4, 4), dtype=torch.int64)
    ids[0, 0, 1, 1, 1] = 1
    F.mil_loss(logits.clamp(0, 1), ids, validate=False)
    F.tversky_loss(logits, ids > 0, validate=False)  # no error: the caller vouched for its inputs


def test_a_check_that_passed_runs_again_when_the_tensor_changes_in_place():
    """validate=True reads every voxel once per distinct input (checks.checked_once): a tensor changed in
    place after it passed is read again, and so is a new tensor with the same values."""
    probs = torch.full((1, 1, 4, 4, 4), 0.5)
    ids = torch.zeros((1, 1, 4, 4, 4), dtype=torch.int64)
    ids[0, 0, 1, 1, 1] = 1
    F.blob_loss(probs, ids)  # passes and is remembered
    F.blob_loss(probs, ids)
    probs[0, 0, 0, 0, 0] = 3.0  # an in-place change bumps the version counter
    with pytest.raises(ValueError, match="not logits"):
        F.blob_loss(probs, ids)
    view = probs[:, :, :2]  # a view shares the version counter of its base
    probs[0, 0, 0, 0, 0] = 0.5
    F.blob_loss(view, ids[:, :, :2])
    probs[0, 0, 1, 0, 0] = float("nan")  # changed through the base: the view is read again
    with pytest.raises(ValueError, match="found values in"):
        F.blob_loss(view, ids[:, :, :2])


def test_cc_checks_of_the_maps_run_again_on_other_maps():
    from nnunet_lesionloss.components import voronoi_cells

    probs = torch.full((1, 1, 6, 6, 6), 0.5)
    ids = torch.zeros((1, 1, 6, 6, 6), dtype=torch.int64)
    ids[0, 0, 1, 1, 1], ids[0, 0, 4, 4, 4] = 1, 2
    cells = torch.from_numpy(voronoi_cells(ids[0].numpy()))[None]
    F.cc_loss(probs, ids, cells)
    F.cc_loss(probs, ids, cells)  # remembered: no pass over the maps
    cells[0, 0, 0, 0, 0] = 0
    with pytest.raises(ValueError, match="have no cell"):
        F.cc_loss(probs, ids, cells)
