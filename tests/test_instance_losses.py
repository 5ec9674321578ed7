"""Blob, CC and global inverse-weighted losses against plain per-component loops written from the
definitions of docs/formulas.md §1, plus hand-computed values, gradients, autocast
and argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nnunet_lesionloss.components import cell_count_tables
from nnunet_lesionloss.losses.functional import blob_loss, cc_loss, inverse_weighted_loss
from nnunet_lesionloss.losses.instance import CE_PROB_CLAMP

# ----------------------------------------------------------------------------------------------
# Reference implementations: loops over b, c and components, straight from the definitions.
# ----------------------------------------------------------------------------------------------


def _weighted_dice_ce(p: torch.Tensor, g: torch.Tensor, w: torch.Tensor, base: str, smooth: float) -> torch.Tensor:
    """Dice (+ CE) of the voxels p, g (1D, one domain) with voxel weights w."""
    g = g.to(p.dtype)
    dice = 1 - (2 * (w * p * g).sum() + smooth) / ((w * p).sum() + (w * g).sum() + smooth)
    if base == "dice":
        return dice
    pc = p.clamp(CE_PROB_CLAMP, 1 - CE_PROB_CLAMP)
    ce = -(g * torch.log(pc) + (1 - g) * torch.log(1 - pc))
    return dice + (w * ce).sum() / w.sum()


def _aggregate(pair_losses: list[torch.Tensor], probs: torch.Tensor) -> torch.Tensor:
    if not pair_losses:
        return probs.sum() * 0
    return torch.stack(pair_losses).mean()


def reference_iwl_weight(domain: float, size: float, iwl_max: float, reading: str) -> float:
    """clamp(|Ω|/|C|, 1, iwl_max), or the power reading (|Ω|/|C|)^κ, κ = min(1, ln iwl_max / ln |Ω|)."""
    ratio = max(domain / size, 1.0)
    if reading == "clamp":
        return min(ratio, iwl_max)
    exponent = 1.0 if domain <= iwl_max else math.log(iwl_max) / math.log(domain)
    return ratio**exponent


def reference_instance_loss(
    probs, component_ids, voronoi_cells=None, *, base, iwl, iwl_max, smooth, ignore_mask, iwl_reading="power"
):
    """Blob loss (voronoi_cells None) or CC loss, one component at a time."""
    batch, channels = probs.shape[:2]
    pair_losses = []
    for b in range(batch):
        valid = torch.ones(probs.shape[2:], dtype=torch.bool) if ignore_mask is None else ~ignore_mask[b, 0]
        for c in range(channels):
            ids, p = component_ids[b, c], probs[b, c]
            component_losses = []
            for n in torch.unique(ids[ids > 0]).tolist():
                if voronoi_cells is None:
                    domain = valid & ((ids == 0) | (ids == n))
                else:
                    domain = valid & (voronoi_cells[b, c] == n)
                g = ids[domain] == n
                if not g.any():
                    continue  # component entirely ignored (or outside its cell): not counted
                weight = torch.ones(int(domain.sum()), dtype=p.dtype)
                if iwl:
                    w_n = reference_iwl_weight(float(domain.sum()), float(g.sum()), iwl_max, iwl_reading)
                    weight = torch.where(g, torch.full_like(weight, w_n), weight)
                component_losses.append(_weighted_dice_ce(p[domain], g, weight, base, smooth))
            if component_losses:
                pair_losses.append(torch.stack(component_losses).mean())
    return _aggregate(pair_losses, probs)


def reference_inverse_weighted(probs, component_ids, *, base, smooth, ignore_mask, balance="lesions"):
    """Voxel weight map per pair. "lesions": the authors' ``cc2weights`` (neuro-ml/inverse_weighting),
    background 1 and |foreground| / (K·|C_k|) on component k; "lesions_and_background": N/((K+1)·|part|);
    "none": every weight 1 (the plain loss)."""
    batch, channels = probs.shape[:2]
    pair_losses = []
    for b in range(batch):
        valid = torch.ones(probs.shape[2:], dtype=torch.bool) if ignore_mask is None else ~ignore_mask[b, 0]
        for c in range(channels):
            ids, p = component_ids[b, c][valid], probs[b, c][valid]
            if ids.numel() == 0:
                continue
            labels = torch.unique(ids[ids > 0]).tolist()
            weight = torch.ones(ids.numel(), dtype=p.dtype)
            if balance == "lesions":
                n_positive = float((ids > 0).sum())
                for n in labels:
                    weight[ids == n] = n_positive / (len(labels) * float((ids == n).sum()))
            elif balance == "lesions_and_background":
                parts, n_voxels = len(labels) + 1, ids.numel()
                for n in labels:
                    weight[ids == n] = n_voxels / (parts * float((ids == n).sum()))
                background = ids == 0
                if background.any():
                    weight[background] = n_voxels / (parts * float(background.sum()))
            pair_losses.append(_weighted_dice_ce(p, ids > 0, weight, base, smooth))
    return _aggregate(pair_losses, probs)


# ----------------------------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------------------------


def voronoi_from_ids(component_ids: np.ndarray) -> np.ndarray:
    """Nearest-component id per voxel and channel (Euclidean EDT), 0 where a channel has none."""
    cells = np.zeros_like(component_ids)
    for b in range(component_ids.shape[0]):
        for c in range(component_ids.shape[1]):
            ids = component_ids[b, c]
            if ids.max() == 0:
                continue
            _, nearest = ndimage.distance_transform_edt(ids == 0, return_indices=True)
            cells[b, c] = ids[tuple(nearest)]
    return cells


@st.composite
def lesion_batches(draw):
    """Batches of random component maps: 2D/3D, 1-3 channels, 0-60 components per pair (single
    voxels, touching and non-connected ones), empty pairs, optional ignore masks."""
    spatial = draw(st.sampled_from([2, 3]))
    shape = tuple(
        draw(st.lists(st.integers(3, 9) if spatial == 2 else st.integers(2, 5), min_size=spatial, max_size=spatial))
    )
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    component_ids = np.zeros((batch, channels, *shape), dtype=np.int64)
    for b in range(batch):
        for c in range(channels):
            kind = rng.integers(0, 4)
            if kind == 0:
                continue  # empty pair
            foreground = rng.random(shape) < rng.uniform(0.05, 0.6)
            if kind == 1:  # connected components, 4/6-connectivity (diagonal neighbours are separate)
                ids, _ = ndimage.label(foreground)
            else:  # arbitrary ids: touching components, scattered single voxels
                ids = np.where(foreground, rng.integers(1, rng.integers(2, 62), size=shape), 0)
            _, ids = np.unique(ids, return_inverse=True)  # consecutive 0..K (0 stays background)
            ids = ids.reshape(shape)
            if not foreground.any():
                ids[...] = 0
            component_ids[b, c] = ids[:]
    component_ids = np.minimum(component_ids, 60)  # at most 60 components per pair: larger ids merge into id 60
    probs = rng.uniform(0.02, 0.98, size=component_ids.shape)
    ignore = None
    if draw(st.booleans()):
        ignore = torch.from_numpy(rng.random((batch, 1, *shape)) < 0.2)
    cells = voronoi_from_ids(component_ids)
    if draw(st.booleans()):
        # cells that disagree with the components (resampled maps, user input): g = [ids == cell id]
        # must still hold inside each cell, and voxels of cell 0 belong to no domain
        scrambled = rng.random(cells.shape) < 0.15
        cells = np.where(scrambled, rng.integers(0, cells.max() + 1, size=cells.shape), cells)
    return (
        torch.tensor(probs, dtype=torch.float64, requires_grad=True),
        torch.from_numpy(component_ids),
        torch.from_numpy(cells),
        ignore,
    )


OPTIONS = st.fixed_dictionaries(
    {
        "base": st.sampled_from(["dice", "dice_ce"]),
        "iwl": st.booleans(),
        "iwl_max": st.sampled_from([1.0, 3.0, 100.0]),
        "iwl_reading": st.sampled_from(["power", "clamp"]),
        "smooth": st.sampled_from([1e-5, 1.0]),
    }
)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_value_and_grad_match(loss, expected, probs):
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-9)
    (grad,) = torch.autograd.grad(loss, probs, retain_graph=True, allow_unused=True)
    (expected_grad,) = torch.autograd.grad(expected, probs, allow_unused=True)
    grad = torch.zeros_like(probs) if grad is None else grad
    expected_grad = torch.zeros_like(probs) if expected_grad is None else expected_grad
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-9)


@PROPERTY_SETTINGS
@given(lesion_batches(), OPTIONS)
def test_blob_loss_matches_per_component_loop(batch, options):
    probs, component_ids, _, ignore = batch
    loss = blob_loss(probs, component_ids, ignore_mask=ignore, **options)
    expected = reference_instance_loss(probs, component_ids, ignore_mask=ignore, **options)
    assert_value_and_grad_match(loss, expected, probs)


@PROPERTY_SETTINGS
@given(lesion_batches(), OPTIONS)
def test_cc_loss_matches_per_cell_loop(batch, options):
    probs, component_ids, cells, ignore = batch
    loss = cc_loss(probs, component_ids, cells, ignore_mask=ignore, **options)
    expected = reference_instance_loss(probs, component_ids, cells, ignore_mask=ignore, **options)
    assert_value_and_grad_match(loss, expected, probs)


def loader_cell_counts(component_ids: torch.Tensor, cells: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """The cell-count tables the loader packs into the target (one sample at a time)."""
    return torch.from_numpy(
        np.stack(
            [
                cell_count_tables(ids.numpy(), cell.numpy(), None if ignore is None else ignore[b, 0].numpy())
                for b, (ids, cell) in enumerate(zip(component_ids, cells))
            ]
        )
    )


@PROPERTY_SETTINGS
@given(lesion_batches(), OPTIONS)
def test_cc_loss_with_the_loaders_cell_counts_matches_the_per_cell_loop(batch, options):
    probs, component_ids, cells, ignore = batch
    counts = loader_cell_counts(component_ids, cells, ignore)
    loss = cc_loss(probs, component_ids, cells, ignore_mask=ignore, cell_counts=counts, **options)
    expected = reference_instance_loss(probs, component_ids, cells, ignore_mask=ignore, **options)
    assert_value_and_grad_match(loss, expected, probs)


def test_cc_loss_refuses_cell_counts_of_other_maps():
    probs, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    counts = loader_cell_counts(ids, cells, None)
    cc_loss(probs, ids, cells, cell_counts=counts)  # the right table passes
    ignore = torch.zeros((ids.shape[0], 1, *ids.shape[2:]), dtype=torch.bool)
    ignore[..., 0] = True
    with pytest.raises(ValueError, match="cell_counts do not match"):
        cc_loss(probs, ids, cells, cell_counts=counts, ignore_mask=ignore)  # counted without the ignore mask
    with pytest.raises(TypeError, match="cell_counts must be an integer tensor"):
        cc_loss(probs, ids, cells, cell_counts=counts.float())


@PROPERTY_SETTINGS
@given(
    lesion_batches(),
    st.sampled_from(["dice", "dice_ce"]),
    st.sampled_from([1e-5, 1.0]),
    st.sampled_from(["lesions", "lesions_and_background"]),
)
def test_inverse_weighted_loss_matches_voxel_weight_map(batch, base, smooth, balance):
    probs, component_ids, _, ignore = batch
    loss = inverse_weighted_loss(probs, component_ids, base=base, smooth=smooth, ignore_mask=ignore, balance=balance)
    expected = reference_inverse_weighted(
        probs, component_ids, base=base, smooth=smooth, ignore_mask=ignore, balance=balance
    )
    assert_value_and_grad_match(loss, expected, probs)


# ----------------------------------------------------------------------------------------------
# Hand-computed examples on a 1×5 image: p = [.8 .1 .2 .5 .3], components {0} and {3}
# ----------------------------------------------------------------------------------------------

HAND_PROBS = torch.tensor([0.8, 0.1, 0.2, 0.5, 0.3], dtype=torch.float64).reshape(1, 1, 1, 5)
HAND_IDS = torch.tensor([1, 0, 0, 2, 0]).reshape(1, 1, 1, 5)
HAND_CELLS = torch.tensor([1, 1, 2, 2, 2]).reshape(1, 1, 1, 5)  # voxel 2 is 1 from component 2, 2 from component 1


def test_blob_dice_by_hand():
    # Ω_1 = {0,1,2,4}: 1 - 2·.8/(1.4 + 1) = 1/3;  Ω_2 = {1,2,3,4}: 1 - 2·.5/(1.1 + 1) = 11/21
    loss = blob_loss(HAND_PROBS, HAND_IDS, base="dice", smooth=0.0)
    assert loss.item() == pytest.approx((1 / 3 + 11 / 21) / 2, rel=1e-12)


def test_blob_dice_ce_by_hand():
    ce_1 = -(math.log(0.8) + math.log(0.9) + math.log(0.8) + math.log(0.7)) / 4
    ce_2 = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.7)) / 4
    loss = blob_loss(HAND_PROBS, HAND_IDS, base="dice_ce", smooth=0.0)
    assert loss.item() == pytest.approx((1 / 3 + ce_1 + 11 / 21 + ce_2) / 2, rel=1e-12)


def test_iwl_blob_dice_by_hand():
    # w = |Ω|/|C| = 4 for both: Ω_1: 1 - 6.4/(3.2 + .6 + 4) = 7/39;  Ω_2: 1 - 4/(2 + .6 + 4) = 13/33
    loss = blob_loss(HAND_PROBS, HAND_IDS, base="dice", iwl=True, iwl_max=10.0, smooth=0.0)
    assert loss.item() == pytest.approx((7 / 39 + 13 / 33) / 2, rel=1e-12)
    # iwl_max = 2 clamps w to 2: Ω_1: 1 - 3.2/(1.6 + .6 + 2) = 4/21;  Ω_2: 1 - 2/(1 + .6 + 2) = 4/9
    clamped = blob_loss(HAND_PROBS, HAND_IDS, base="dice", iwl=True, iwl_max=2.0, smooth=0.0)
    assert clamped.item() == pytest.approx((1 - 3.2 / 4.2 + 1 - 2 / 3.6) / 2, rel=1e-12)


def test_iwl_power_reading_by_hand():
    # 1×8 image, one 2-voxel lesion {0, 1}: Ω = 8, r = 4. Bound 2: clamp → 2; power → 4^(ln 2/ln 8) = 4^(1/3)
    probs = torch.tensor([0.8, 0.4, 0.1, 0.0, 0.2, 0.0, 0.1, 0.2], dtype=torch.float64).reshape(1, 1, 1, 8)
    ids = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0]).reshape(1, 1, 1, 8)
    for reading, w in (("clamp", 2.0), ("power", 4 ** (1 / 3))):
        loss = blob_loss(probs, ids, base="dice", iwl=True, iwl_max=2.0, iwl_reading=reading, smooth=0.0)
        assert loss.item() == pytest.approx(1 - 2 * w * 1.2 / (w * 1.2 + 0.6 + 2 * w), rel=1e-12), reading


def test_iwl_weights_keep_their_size_dependence_in_a_128_cubed_patch():
    # blob domain of a 128³ patch: with clamp(r, 1, 100) every lesion below 1% of the patch weighs
    # 100, so lesions of 1 to 10,000 voxels are weighted alike; the power reading keeps them apart
    from nnunet_lesionloss.losses.instance import iwl_weight

    sizes = torch.tensor([1.0, 10.0, 100.0, 1000.0, 10000.0], dtype=torch.float64)
    domain = torch.full_like(sizes, 128.0**3)
    clamped = iwl_weight(domain / sizes, domain, reading="clamp", iwl_max=100.0)
    power = iwl_weight(domain / sizes, domain, reading="power", iwl_max=100.0)
    assert clamped.tolist() == [100.0] * 5
    assert torch.all(power[:-1] > power[1:]) and power[0].item() == pytest.approx(100.0)
    for weight, size in zip(power.tolist(), sizes.tolist()):
        assert weight == pytest.approx(reference_iwl_weight(128.0**3, size, 100.0, "power"), rel=1e-12)


def test_cc_dice_by_hand():
    # cell 1 = {0,1}: 1 - 1.6/(.9 + 1) = 3/19;  cell 2 = {2,3,4}: 1 - 1/(1 + 1) = 1/2
    loss = cc_loss(HAND_PROBS, HAND_IDS, HAND_CELLS, base="dice", smooth=0.0)
    assert loss.item() == pytest.approx((3 / 19 + 1 / 2) / 2, rel=1e-12)


def test_cc_dice_ce_by_hand():
    ce_1 = -(math.log(0.8) + math.log(0.9)) / 2
    ce_2 = -(math.log(0.8) + math.log(0.5) + math.log(0.7)) / 3
    loss = cc_loss(HAND_PROBS, HAND_IDS, HAND_CELLS, base="dice_ce", smooth=0.0)
    assert loss.item() == pytest.approx((3 / 19 + ce_1 + 1 / 2 + ce_2) / 2, rel=1e-12)


def test_inverse_weighted_dice_by_hand():
    # authors' weights: F = 2, K = 2, |C_k| = 1: w_fg = 2/(2·1) = 1, w_bg = 1 → the plain Dice 1 - 2.6/3.9 = 1/3
    loss = inverse_weighted_loss(HAND_PROBS, HAND_IDS, base="dice", smooth=0.0)
    assert loss.item() == pytest.approx(1 / 3, rel=1e-12)
    # background as a (K+1)-th part: N = 5, w_fg = 5/(3·1) = 5/3, w_bg = 5/(3·3) = 5/9
    # Σwpg = 5/3·1.3, Σwp = 5/3·1.3 + 5/9·.6 = 2.5, Σwg = 10/3 → 1 - (13/3)/(35/6) = 9/35
    balanced = inverse_weighted_loss(HAND_PROBS, HAND_IDS, base="dice", smooth=0.0, balance="lesions_and_background")
    assert balanced.item() == pytest.approx(9 / 35, rel=1e-12)


def test_inverse_weighted_dice_sees_false_positives_like_the_reference():
    # one 100-voxel lesion predicted exactly, p = 0.1 on the rest of a 32³ patch: the authors'
    # weights leave the background at 1 (Dice 1 - 200/(100 + 3266.8 + 100) = 0.942); counting the
    # background as a second part down-weights it to 0.50 and the loss no longer sees the false positives
    ids = torch.zeros(1, 1, 32, 32, 32, dtype=torch.long)
    ids[0, 0, :4, :5, :5] = 1
    probs = torch.where(ids > 0, 1.0, torch.tensor(0.1, dtype=torch.float64))
    loss = inverse_weighted_loss(probs, ids, base="dice", smooth=0.0)
    assert loss.item() == pytest.approx(1 - 200 / (200 + 0.1 * (32**3 - 100)), rel=1e-12)
    assert loss.item() == pytest.approx(0.942, abs=5e-4)
    former = inverse_weighted_loss(probs, ids, base="dice", smooth=0.0, balance="lesions_and_background")
    assert former.item() == pytest.approx(0.048, abs=5e-4)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from(["dice", "dice_ce"]))
def test_inverse_weighting_of_a_single_component_is_the_plain_loss(batch, base):
    # the foreground keeps its total weight: one component per pair → every weight is 1
    probs, component_ids, _, ignore = batch
    single = (component_ids > 0).long()
    weighted = inverse_weighted_loss(probs, single, base=base, ignore_mask=ignore)
    plain = reference_inverse_weighted(probs, single, base=base, smooth=1e-5, ignore_mask=ignore, balance="none")
    assert weighted.item() == pytest.approx(plain.item(), rel=1e-5, abs=1e-7)


def test_ignored_voxels_leave_every_sum():
    ignore = torch.tensor([False, False, True, False, False]).reshape(1, 1, 1, 5)
    # voxel 2 gone: Ω_1 = {0,1,4}: 1 - 1.6/(1.2 + 1) = 3/11;  Ω_2 = {1,3,4}: 1 - 1/(.9 + 1) = 9/19
    loss = blob_loss(HAND_PROBS, HAND_IDS, base="dice", smooth=0.0, ignore_mask=ignore)
    assert loss.item() == pytest.approx((3 / 11 + 9 / 19) / 2, rel=1e-12)


def test_classes_count_equally_whatever_their_number_of_components():
    # channel 0 has the two hand components, channel 1 a single one: (mean of ch0 + ch1) / 2
    probs = torch.cat([HAND_PROBS, HAND_PROBS.flip(-1)], dim=1)
    ids = torch.cat([HAND_IDS, torch.tensor([0, 0, 0, 0, 1]).reshape(1, 1, 1, 5)], dim=1)
    channel_1 = 1 - 2 * 0.8 / (1.9 + 1)  # p flipped = [.3 .5 .2 .1 .8], component {4}, Ω = all
    loss = blob_loss(probs, ids, base="dice", smooth=0.0)
    assert loss.item() == pytest.approx(((1 / 3 + 11 / 21) / 2 + channel_1) / 2, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Gradients, empty batches, precision, gradcheck
# ----------------------------------------------------------------------------------------------


def _two_lesion_volume(dtype=torch.float32):
    ids = torch.zeros(2, 2, 6, 7, 5, dtype=torch.long)
    ids[0, 0, 1:3, 1:3, 1:3] = 1
    ids[0, 0, 4, 5, 3] = 2  # a single voxel
    ids[1, 1, 0:2, 4:7, 0:2] = 1
    probs = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)).mul(0.9).add(0.05).to(dtype)
    return probs.requires_grad_(True), ids


@pytest.mark.parametrize("name", ["blob", "cc", "inverse"])
def test_gradient_reaches_every_voxel_of_every_domain(name):
    probs, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    ignore = torch.zeros(2, 1, 6, 7, 5, dtype=torch.bool)
    ignore[0, 0, 5, 0, 0] = True
    loss = {
        "blob": lambda: blob_loss(probs, ids, ignore_mask=ignore),
        "cc": lambda: cc_loss(probs, ids, cells, ignore_mask=ignore),
        "inverse": lambda: inverse_weighted_loss(probs, ids, ignore_mask=ignore),
    }[name]()
    loss.backward()
    grad = probs.grad
    with_components = torch.tensor([[True, False], [False, True]])  # pairs (b, c) holding a lesion
    in_domain = with_components[:, :, None, None, None].expand_as(grad) & ~ignore.expand_as(grad)
    if name == "inverse":  # a whole-volume loss: lesion-free pairs are part of it too
        in_domain = ~ignore.expand_as(grad)
    assert torch.all(grad[in_domain] != 0)
    assert torch.all(grad[~in_domain] == 0)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_batch_without_components_gives_zero_with_graph(spatial):
    probs = torch.rand(2, 3, *spatial, requires_grad=True)
    ids = torch.zeros(2, 3, *spatial, dtype=torch.long)
    for loss in (blob_loss(probs, ids), cc_loss(probs, ids, ids.clone()), blob_loss(probs, ids, iwl=True)):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.all(probs.grad == 0)
    inverse = inverse_weighted_loss(probs, ids)  # plain Dice + CE of "no lesion" on every pair
    assert torch.isfinite(inverse) and inverse.item() > 0


def test_fully_ignored_components_are_not_counted_and_stay_finite():
    probs, ids = _two_lesion_volume()
    ignore = torch.ones(2, 1, 6, 7, 5, dtype=torch.bool)
    for loss in (
        blob_loss(probs, ids, ignore_mask=ignore, iwl=True),
        cc_loss(probs, ids, ids.clone(), ignore_mask=ignore),
    ):
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("name", ["blob", "cc", "inverse"])
def test_autocast_bfloat16_still_computes_in_float32(name):
    probs, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    functions = {
        "blob": lambda p: blob_loss(p, ids, iwl=True),
        "cc": lambda p: cc_loss(p, ids, cells),
        "inverse": lambda p: inverse_weighted_loss(p, ids),
    }
    reference = functions[name](probs.detach())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low_precision = functions[name](probs.detach().to(torch.bfloat16))
    assert low_precision.dtype == torch.float32
    # only the input was rounded to bf16 (3 significant digits), not the sums
    assert low_precision.item() == pytest.approx(reference.item(), rel=1e-2)


@pytest.mark.parametrize("iwl", [False, True])
def test_gradcheck_on_double_inputs(iwl):
    probs, ids = _two_lesion_volume(torch.float64)
    probs = probs[:, :, :3, :4, :3].detach().requires_grad_(True)
    ids = ids[:, :, :3, :4, :3].contiguous()
    ids[0, 0, 2, 3, 2] = 2
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    assert torch.autograd.gradcheck(lambda p: blob_loss(p, ids, iwl=iwl, iwl_max=5.0), (probs,))
    assert torch.autograd.gradcheck(lambda p: cc_loss(p, ids, cells, iwl=iwl, iwl_max=5.0), (probs,))
    assert torch.autograd.gradcheck(lambda p: inverse_weighted_loss(p, ids), (probs,))


# ----------------------------------------------------------------------------------------------
# Argument errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, i: blob_loss(p, i, base="tversky"), ValueError, "base must be one of"),
        (lambda p, i: blob_loss(p, i, iwl=True, iwl_max=0.5), ValueError, "iwl_max must be a number >= 1"),
        (lambda p, i: blob_loss(p, i, smooth=-1.0), ValueError, "smooth must be"),
        (lambda p, i: blob_loss(p, i, iwl=1), TypeError, "iwl must be True or False"),
        (lambda p, i: blob_loss(p, i, iwl=True, iwl_reading="log"), ValueError, "iwl_reading must be one of"),
        (lambda p, i: blob_loss(p, i.float()), TypeError, "component_ids must be an integer tensor"),
        (lambda p, i: blob_loss(p, i[:, :1]), ValueError, "must equal probs shape"),
        (lambda p, i: blob_loss(p[0, 0], i[0, 0]), ValueError, "2 or 3 spatial dims"),
        (lambda p, i: blob_loss(p, -i), ValueError, "must be >= 0"),
        (lambda p, i: blob_loss(p, i, ignore_mask=torch.zeros(2, 1, 6, 7, 5)), TypeError, "ignore_mask must be bool"),
        (
            lambda p, i: blob_loss(p, i, ignore_mask=torch.zeros(2, 1, 6, 7, dtype=torch.bool)),
            ValueError,
            "ignore_mask shape",
        ),
        (lambda p, i: cc_loss(p, i, i.float()), TypeError, "voronoi_cells must be an integer tensor"),
        (lambda p, i: cc_loss(p, i, i[:1]), ValueError, "voronoi_cells shape"),
        (lambda p, i: inverse_weighted_loss(p, i, base="ce"), ValueError, "base must be one of"),
        (lambda p, i: inverse_weighted_loss(p.long(), i), TypeError, "probs must be a floating-point tensor"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    probs, ids = _two_lesion_volume()
    with pytest.raises(error, match=match):
        call(probs, ids)
