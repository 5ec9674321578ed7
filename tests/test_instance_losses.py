"""Blob, CC and global inverse-weighted losses against slow loops: re-derivations of what the
authors' code computes (the CC authors' nnU-Net loss, Bouteille et al. 2025; Kofler et al.'s blob
code; the inverse-weighting authors' ``cc2weight`` and weighted Dice / BCE, Shirokikh et al. 2020)
and of this package's definitions (docs/formulas.md §1), plus hand-computed values, gradients,
autocast, argument errors, mismatched cells and huge component ids."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nnunet_lesionloss.components import cell_count_tables
from nnunet_lesionloss.losses.component_dice import CE_PROB_CLAMP
from nnunet_lesionloss.losses.functional import blob_loss, cc_loss, inverse_weighted_loss

# ----------------------------------------------------------------------------------------------
# Reference implementations of this package's definitions: loops over b, c and components.
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


def _valid(ignore_mask, b: int, shape) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool) if ignore_mask is None else ~ignore_mask[b, 0]


def reference_iwl_weight(domain: float, size: float, iwl_max: float, reading: str) -> float:
    """clamp(|Ω|/|C|, 1, iwl_max) (Kundu et al. 2026 §2.5, "bounded to"), or the power reading
    (|Ω|/|C|)^κ, κ = min(1, ln iwl_max / ln |Ω|)."""
    ratio = max(domain / size, 1.0)
    if reading == "clamp":
        return min(ratio, iwl_max)
    exponent = 1.0 if domain <= iwl_max else math.log(iwl_max) / math.log(domain)
    return ratio**exponent


def reference_instance_loss(
    probs,
    component_ids,
    voronoi_cells=None,
    *,
    base,
    iwl,
    iwl_max,
    smooth,
    ignore_mask,
    iwl_reading="clamp",
    empty_pairs="skip",
):
    """Blob loss (voronoi_cells None) or CC loss, one component at a time (docs/formulas.md §1)."""
    batch, channels = probs.shape[:2]
    pair_losses = []
    for b in range(batch):
        valid = _valid(ignore_mask, b, probs.shape[2:])
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
            elif empty_pairs == "whole_patch" and valid.any():  # the pair as one domain, g = 0
                g = torch.zeros(int(valid.sum()), dtype=torch.bool)
                pair_losses.append(_weighted_dice_ce(p[valid], g, torch.ones_like(p[valid]), base, smooth))
    return _aggregate(pair_losses, probs)


def reference_first_commit_inverse_weighted(probs, component_ids, *, base, smooth, ignore_mask, weights="lesions"):
    """The package's earlier InvWeight: voxel weight map per pair, nnU-Net's soft Dice and CE / Σw.
    "lesions": the map of neuro-ml/inverse_weighting's first commit (``cc2weights`` in ``iw/torch.py``
    there), background 1 and |foreground| / (K·|C_k|) on component k; "none": every weight 1."""
    batch, channels = probs.shape[:2]
    pair_losses = []
    for b in range(batch):
        valid = _valid(ignore_mask, b, probs.shape[2:])
        for c in range(channels):
            ids, p = component_ids[b, c][valid], probs[b, c][valid]
            if ids.numel() == 0:
                continue
            weight = torch.ones(ids.numel(), dtype=p.dtype)
            if weights == "lesions":
                labels = torch.unique(ids[ids > 0]).tolist()
                n_positive = float((ids > 0).sum())
                for n in labels:
                    weight[ids == n] = n_positive / (len(labels) * float((ids == n).sum()))
            pair_losses.append(_weighted_dice_ce(p, ids > 0, weight, base, smooth))
    return _aggregate(pair_losses, probs)


# ----------------------------------------------------------------------------------------------
# Re-derivations of the authors' code (read, not copied), one (b, c) pair at a time as one of
# their binary samples. Their code has no ignore label: with an ignore mask the references run
# on the non-ignored voxels of each pair (this package's extension, docs/formulas.md §1).
# ----------------------------------------------------------------------------------------------


def _cc_authors_reduction(probs, component_ids, domains_of, *, base, ignore_mask):
    """The reduction their ``VectorizedCCLoss`` and ``VectorizedBlobLoss`` share: per sample, every
    domain with voxels scores 1 - 2I / max(P + G, 1e-7) (+ Σ ce / count), ce = -log(max(p of the true
    class, 1e-7)), g = the sample's foreground; the sample is the mean over its domains, or, without
    any, 1 (+ the mean ce of the whole sample); the batch is the mean over samples.
    ``domains_of(b, c, valid)`` lists the domains of a pair as masks over its non-ignored voxels."""
    batch, channels = probs.shape[:2]
    samples = []
    for b in range(batch):
        valid = _valid(ignore_mask, b, probs.shape[2:])
        for c in range(channels):
            if not valid.any():
                continue
            p = probs[b, c][valid]
            g = (component_ids[b, c][valid] > 0).to(p.dtype)
            ce = -torch.log(torch.where(g > 0, p, 1 - p).clamp_min(1e-7))
            losses = []
            for domain in domains_of(b, c, valid):
                dice = 1 - 2 * (p * g)[domain].sum() / (p[domain].sum() + g[domain].sum()).clamp_min(1e-7)
                losses.append(dice if base == "dice" else dice + ce[domain].sum() / domain.sum())
            if losses:
                samples.append(torch.stack(losses).mean())
            else:
                samples.append(p.new_tensor(1.0) if base == "dice" else 1.0 + ce.mean())
    return torch.stack(samples).mean() if samples else probs.sum() * 0


def authors_cc_loss(probs, component_ids, voronoi_cells, *, base, ignore_mask=None):
    """The CC authors' CC loss (Bouteille et al. 2025; their nnU-Net's ``instance_losses.py``,
    ``VectorizedCCLoss`` as ``nnUNetTrainerGlobalCCDiceCE`` uses it): the domains are the Voronoi
    ids 1..K (K = the largest id of the batch) that hold voxels. With an ignore mask a cell counts
    when it keeps a voxel of its lesion."""
    slots = max(1, int(voronoi_cells.max()))

    def cells_of(b, c, valid):
        cells, lesion = voronoi_cells[b, c][valid], component_ids[b, c][valid] > 0
        for n in range(1, slots + 1):
            inside = cells == n
            if inside.any() and (ignore_mask is None or lesion[inside].any()):
                yield inside

    return _cc_authors_reduction(probs, component_ids, cells_of, base=base, ignore_mask=ignore_mask)


def authors_whole_patch_blob_loss(probs, component_ids, *, base, ignore_mask=None):
    """The CC authors' blob loss (``VectorizedBlobLoss`` of the same file): the domain of component n
    is background ∪ C_n."""

    def blobs_of(b, c, valid):
        ids = component_ids[b, c][valid]
        for n in torch.unique(ids[ids > 0]).tolist():
            yield (ids == 0) | (ids == n)

    return _cc_authors_reduction(probs, component_ids, blobs_of, base=base, ignore_mask=ignore_mask)


def kofler_blob_dice(probs, component_ids, *, smooth, ignore_mask=None):
    """Kofler et al.'s blob loss (neuronflow/blob_loss, ``compute_blob_loss_multi``) with a soft Dice
    criterion: per element, each blob's criterion on the output multiplied by its mask (background
    ∪ the blob; the other blobs zeroed after the activation), mean over the element's blobs; the
    batch is the mean over the elements that have blobs (an element without any is skipped)."""
    batch, channels = probs.shape[:2]
    elements = []
    for b in range(batch):
        valid = _valid(ignore_mask, b, probs.shape[2:])
        for c in range(channels):
            ids = torch.where(valid, component_ids[b, c], 0)
            blob_losses = []
            for n in torch.unique(ids[ids > 0]).tolist():
                mask = ((ids == 0) | (ids == n)) & valid
                masked = probs[b, c] * mask
                g = (ids == n).to(probs.dtype)
                blob_losses.append(1 - (2 * (masked * g).sum() + smooth) / (masked.sum() + g.sum() + smooth))
            if blob_losses:
                elements.append(sum(blob_losses) / len(blob_losses))
    return sum(elements) / len(elements) if elements else probs.sum() * 0


def authors_cc2weight(cc: np.ndarray, w_min: float = 1.0, w_max: float = 2e5) -> np.ndarray:
    """``iw/batch_iter.py::cc2weight`` of neuro-ml/inverse_weighting (its current code and README):
    every value of the patch's component map (0 included) is a part; N / ((K + 1)·|part|) with
    K + 1 = the number of values present and N the patch's voxels; clipped to [w_min, w_max]."""
    weight = np.zeros(cc.shape, dtype=np.float64)
    items = np.unique(cc)
    k = len(items) - 1
    n = np.prod(cc.shape)
    for item in items:
        weight[cc == item] = n / ((k + 1) * np.sum(cc == item))
    return np.clip(weight, w_min, w_max)


def authors_weighted_bce_with_logits(logit: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dpipe's ``weighted_cross_entropy_with_logits`` (the authors' iwbce): the stable log-sum-exp BCE
    of the logits times the weight, reduced by ``torch.mean`` over every voxel."""
    max_val = -logit.clamp(min=0)
    log_sum = (max_val.exp() + (logit + max_val).exp()).log()
    loss = -target * (logit + max_val - log_sum) + (1 - target) * (-max_val + log_sum)
    return (loss * weight).mean()


def authors_weighted_dice(logit: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``iw/torch.py::dice_loss`` with a weight: 1 - 2·Σ w·p·g / Σ w·(p² + g²), p = sigmoid(logit)."""
    preds = torch.sigmoid(logit)
    return 1 - 2 * (weight * preds * target).sum() / (weight * (preds**2 + target**2)).sum()


def authors_inverse_weighted(logits, component_ids, *, base, ignore_mask=None):
    """The authors' inverse weighting per (b, c) pair: ``cc2weight`` of the pair's component map, their
    weighted Dice (mean over samples) and, for base "dice_ce", plus their weighted BCE (the mean over
    the voxels; equal to the mean over pairs of per-pair means, the pairs being the same size)."""
    batch, channels = logits.shape[:2]
    dice, bce = [], []
    for b in range(batch):
        valid = _valid(ignore_mask, b, logits.shape[2:])
        for c in range(channels):
            if not valid.any():
                continue
            ids = component_ids[b, c][valid]
            weight = torch.from_numpy(authors_cc2weight(ids.numpy())).to(logits.dtype)
            target = (ids > 0).to(logits.dtype)
            dice.append(authors_weighted_dice(logits[b, c][valid], target, weight))
            bce.append(authors_weighted_bce_with_logits(logits[b, c][valid], target, weight))
    loss = torch.stack(dice).mean()
    return loss if base == "dice" else loss + torch.stack(bce).mean()


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
    voxels, touching and non-connected ones), empty pairs, single-component pairs, optional ignore
    masks, and cells that match the components or (flag ``cells_match`` False) disagree with them."""
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
            kind = rng.integers(0, 5)
            if kind == 0:
                continue  # empty pair
            if kind == 4:  # a single component: one box
                corner = [int(rng.integers(0, n)) for n in shape]
                box = tuple(slice(i, i + int(rng.integers(1, 3))) for i in corner)
                component_ids[b, c][box] = 1
                continue
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
    cells_match = draw(st.booleans())
    if not cells_match:
        # cells that disagree with the components (resampled maps, user input): refused with
        # validate=True; with validate=False g = [ids == cell id] still holds inside each cell
        scrambled = rng.random(cells.shape) < 0.15
        cells = np.where(scrambled, rng.integers(0, cells.max() + 1, size=cells.shape), cells)
        cells_match = bool(np.array_equal(cells, voronoi_from_ids(component_ids)))
    return (
        torch.tensor(probs, dtype=torch.float64, requires_grad=True),
        torch.from_numpy(component_ids),
        torch.from_numpy(cells),
        ignore,
        cells_match,
    )


OPTIONS = st.fixed_dictionaries(
    {
        "base": st.sampled_from(["dice", "dice_ce"]),
        "iwl": st.booleans(),
        "iwl_max": st.sampled_from([1.0, 3.0, 100.0]),
        "iwl_reading": st.sampled_from(["power", "clamp"]),
        "empty_pairs": st.sampled_from(["skip", "whole_patch"]),
        "smooth": st.sampled_from([1e-5, 1.0]),
    }
)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_value_and_grad_match(loss, expected, leaf):
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-9)
    (grad,) = torch.autograd.grad(loss, leaf, retain_graph=True, allow_unused=True)
    expected_grad = None  # a constant reference (a lesion-free Dice of 1) has no graph
    if expected.requires_grad:
        (expected_grad,) = torch.autograd.grad(expected, leaf, allow_unused=True)
    grad = torch.zeros_like(leaf) if grad is None else grad
    expected_grad = torch.zeros_like(leaf) if expected_grad is None else expected_grad
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-9)


@PROPERTY_SETTINGS
@given(lesion_batches(), OPTIONS)
def test_blob_loss_matches_per_component_loop(batch, options):
    probs, component_ids, _, ignore, _ = batch
    loss = blob_loss(probs, component_ids, ignore_mask=ignore, **options)
    expected = reference_instance_loss(probs, component_ids, ignore_mask=ignore, **options)
    assert_value_and_grad_match(loss, expected, probs)


@PROPERTY_SETTINGS
@given(lesion_batches(), OPTIONS)
def test_cc_loss_matches_per_cell_loop(batch, options):
    probs, component_ids, cells, ignore, cells_match = batch
    # cells that disagree with the ids are refused when validated (below); unvalidated, the definition holds
    loss = cc_loss(probs, component_ids, cells, ignore_mask=ignore, validate=cells_match, **options)
    expected = reference_instance_loss(probs, component_ids, cells, ignore_mask=ignore, **options)
    assert torch.isfinite(loss)
    if cells_match or options["empty_pairs"] == "skip":  # a lesion-free pair's term assumes matching cells
        assert_value_and_grad_match(loss, expected, probs)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from(["dice", "dice_ce"]))
def test_cc_loss_equals_the_cc_authors_code(batch, base):
    # default empty_pairs="whole_patch": a sample without lesions scores the whole patch, mean over all
    # samples; smooth=0 as the authors' Dice (1 - 2I / max(P + G, 1e-7))
    probs, component_ids, _, ignore, _ = batch
    cells = torch.from_numpy(voronoi_from_ids(component_ids.numpy()))
    loss = cc_loss(probs, component_ids, cells, base=base, smooth=0.0, ignore_mask=ignore)
    expected = authors_cc_loss(probs, component_ids, cells, base=base, ignore_mask=ignore)
    assert_value_and_grad_match(loss, expected, probs)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from(["dice", "dice_ce"]))
def test_blob_loss_whole_patch_equals_the_cc_authors_blob_code(batch, base):
    probs, component_ids, _, ignore, _ = batch
    loss = blob_loss(probs, component_ids, base=base, smooth=0.0, empty_pairs="whole_patch", ignore_mask=ignore)
    expected = authors_whole_patch_blob_loss(probs, component_ids, base=base, ignore_mask=ignore)
    assert_value_and_grad_match(loss, expected, probs)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from([1e-5, 1.0]))
def test_blob_loss_skips_lesion_free_pairs_as_koflers_code(batch, smooth):
    # the Dice criterion: Kofler et al.'s CE is the mean over the whole volume with the other blobs
    # zeroed (a factor |Ω_n|/N against ours, test_blob_ce_normalisation_differs_from_koflers_by_hand)
    probs, component_ids, _, ignore, _ = batch
    loss = blob_loss(probs, component_ids, base="dice", smooth=smooth, ignore_mask=ignore)
    expected = kofler_blob_dice(probs, component_ids, smooth=smooth, ignore_mask=ignore)
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
    probs, component_ids, _, ignore, _ = batch
    cells = torch.from_numpy(voronoi_from_ids(component_ids.numpy()))
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


def _logits_of(probs: torch.Tensor) -> torch.Tensor:
    return torch.logit(probs.detach()).requires_grad_(True)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from(["dice", "dice_ce"]))
def test_inverse_weighted_loss_equals_the_authors_code(batch, base):
    # default: cc2weight (every part N/((K+1)·|part|), clip [1, 2e5]), squared-denominator weighted
    # Dice and their weighted BCE; values and gradients with respect to the logits
    probs, component_ids, _, ignore, _ = batch
    logits = _logits_of(probs)
    loss = inverse_weighted_loss(torch.sigmoid(logits), component_ids, base=base, ignore_mask=ignore)
    expected = authors_inverse_weighted(logits, component_ids, base=base, ignore_mask=ignore)
    assert_value_and_grad_match(loss, expected, logits)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from(["dice", "dice_ce"]), st.sampled_from([1e-5, 1.0]))
def test_inverse_weighted_first_commit_map_with_the_plain_dice_is_kept_as_an_option(batch, base, smooth):
    probs, component_ids, _, ignore, _ = batch
    options = {"balance": "lesions", "weight_clip": None, "dice_denominator": "plain", "smooth": smooth}
    loss = inverse_weighted_loss(probs, component_ids, base=base, ignore_mask=ignore, **options)
    expected = reference_first_commit_inverse_weighted(
        probs, component_ids, base=base, smooth=smooth, ignore_mask=ignore
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
    from nnunet_lesionloss.losses.component_dice import iwl_weight

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


def test_iwl_default_is_the_clip_of_the_ratio():
    # Kundu et al. 2026 §2.5: the ratio |Ω_n|/|C_n| "bounded to" [1, iwl_max]. 1×8 image, one 2-voxel
    # lesion: r = 4, iwl_max 2 → w = 2 (the power reading: 4^(ln 2/ln 8) = 1.59)
    probs = torch.tensor([0.8, 0.4, 0.1, 0.0, 0.2, 0.0, 0.1, 0.2], dtype=torch.float64).reshape(1, 1, 1, 8)
    ids = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0]).reshape(1, 1, 1, 8)
    cells = torch.ones_like(ids)
    w = 2.0
    expected = 1 - 2 * w * 1.2 / (w * 1.2 + 0.6 + 2 * w)
    for loss in (
        blob_loss(probs, ids, base="dice", iwl=True, iwl_max=2.0, smooth=0.0),
        cc_loss(probs, ids, cells, base="dice", iwl=True, iwl_max=2.0, smooth=0.0),
    ):
        assert loss.item() == pytest.approx(expected, rel=1e-12)


LESION_FREE_PROBS = torch.tensor([0.2, 0.4, 0.1, 0.1, 0.2], dtype=torch.float64).reshape(1, 1, 1, 5)


def _hand_batch_with_a_lesion_free_sample():
    probs = torch.cat([HAND_PROBS, LESION_FREE_PROBS]).requires_grad_(True)
    ids = torch.cat([HAND_IDS, torch.zeros_like(HAND_IDS)])
    return probs, ids, torch.cat([HAND_CELLS, torch.zeros_like(HAND_CELLS)])


def test_cc_lesion_free_sample_scores_the_whole_patch_by_hand():
    # the CC authors' code: a sample without lesions adds Dice 1 + the mean CE of its whole patch, and
    # the mean runs over both samples; it gets a gradient (CE: 1/(1 - p)/5 per voxel, halved by the mean)
    probs, ids, cells = _hand_batch_with_a_lesion_free_sample()
    lesion_sample = (
        3 / 19 - (math.log(0.8) + math.log(0.9)) / 2 + 1 / 2 - (math.log(0.8) + math.log(0.5) + math.log(0.7)) / 3
    )
    lesion_sample /= 2
    lesion_free = 1 - sum(math.log(1 - p) for p in LESION_FREE_PROBS.flatten().tolist()) / 5
    loss = cc_loss(probs, ids, cells, smooth=0.0)
    assert loss.item() == pytest.approx((lesion_sample + lesion_free) / 2, rel=1e-12)
    (grad,) = torch.autograd.grad(loss, probs)
    expected = 1 / (1 - LESION_FREE_PROBS.flatten()) / 5 / 2
    torch.testing.assert_close(grad[1].flatten(), expected)
    skipped = cc_loss(probs, ids, cells, smooth=0.0, empty_pairs="skip")  # the former aggregation
    assert skipped.item() == pytest.approx(lesion_sample, rel=1e-12)
    (grad,) = torch.autograd.grad(skipped, probs)
    assert torch.all(grad[1] == 0)


def test_blob_keeps_skipping_lesion_free_samples_by_default():
    probs, ids, _ = _hand_batch_with_a_lesion_free_sample()
    lesion_sample = blob_loss(HAND_PROBS, HAND_IDS, smooth=0.0)
    assert blob_loss(probs, ids, smooth=0.0).item() == pytest.approx(lesion_sample.item(), rel=1e-12)
    lesion_free = 1 - sum(math.log(1 - p) for p in LESION_FREE_PROBS.flatten().tolist()) / 5
    whole = blob_loss(probs, ids, smooth=0.0, empty_pairs="whole_patch")
    assert whole.item() == pytest.approx((lesion_sample.item() + lesion_free) / 2, rel=1e-12)


def test_blob_ce_normalisation_differs_from_koflers_by_hand():
    # Kofler et al.'s code averages the CE of a blob over the whole volume, the other blobs zeroed
    # (they add -log(1 - 0) = 0): Σ_Ω ce / N; ours (and the CC authors' blob) Σ_Ω ce / |Ω_n|
    ce_1 = -(math.log(0.8) + math.log(0.9) + math.log(0.8) + math.log(0.7))  # Ω_1 = {0,1,2,4}
    ce_2 = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.7))  # Ω_2 = {1,2,3,4}
    dice = blob_loss(HAND_PROBS, HAND_IDS, base="dice", smooth=0.0)
    ours = blob_loss(HAND_PROBS, HAND_IDS, base="dice_ce", smooth=0.0) - dice
    assert ours.item() == pytest.approx((ce_1 / 4 + ce_2 / 4) / 2, rel=1e-12)
    koflers = (ce_1 / 5 + ce_2 / 5) / 2
    assert koflers / ours.item() == pytest.approx(4 / 5, rel=1e-12)  # |Ω_n| / N


def test_inverse_weighted_loss_by_hand():
    # the authors' cc2weight on HAND: N = 5, three parts (background of 3 voxels, two 1-voxel lesions):
    # lesions 5/(3·1) = 5/3, background 5/(3·3) = 5/9 → clipped to 1
    w = 5 / 3
    intersection = w * (0.8 + 0.5)
    squared = w * (0.8**2 + 1 + 0.5**2 + 1) + (0.1**2 + 0.2**2 + 0.3**2)
    ce = (w * -(math.log(0.8) + math.log(0.5)) - (math.log(0.9) + math.log(0.8) + math.log(0.7))) / 5
    loss = inverse_weighted_loss(HAND_PROBS, HAND_IDS, base="dice")
    assert loss.item() == pytest.approx(1 - 2 * intersection / squared, rel=1e-12)
    loss = inverse_weighted_loss(HAND_PROBS, HAND_IDS)
    assert loss.item() == pytest.approx(1 - 2 * intersection / squared + ce, rel=1e-12)
    # the first commit's map (F = 2, K = 2: every weight 1), nnU-Net's plain Dice: 1 - 2.6/3.9 = 1/3
    first = {"balance": "lesions", "weight_clip": None, "dice_denominator": "plain", "smooth": 0.0}
    assert inverse_weighted_loss(HAND_PROBS, HAND_IDS, base="dice", **first).item() == pytest.approx(1 / 3)
    # the authors' map without its clip (background 5/9), plain Dice: Σwpg = 5/3·1.3, Σwp = 5/3·1.3 + 5/9·.6,
    # Σwg = 10/3 → 1 - (13/3)/(35/6) = 9/35
    unclipped = {"weight_clip": None, "dice_denominator": "plain", "smooth": 0.0}
    assert inverse_weighted_loss(HAND_PROBS, HAND_IDS, base="dice", **unclipped).item() == pytest.approx(9 / 35)


def test_inverse_weighted_dice_of_a_found_lesion_with_false_positives_by_hand():
    # one 100-voxel lesion predicted exactly, p = 0.1 on the rest of a 32³ patch. The authors' loss:
    # lesion weight 32768/(2·100) = 163.84, background 32768/(2·32668) → clipped to 1, squared Dice
    # 1 - 2·163.84·100 / (163.84·200 + 0.01·32668) = 0.0099: the exact lesion dominates the false
    # positives. The first commit's map with nnU-Net's Dice: 1 - 200/(200 + 3266.8) = 0.942
    ids = torch.zeros(1, 1, 32, 32, 32, dtype=torch.long)
    ids[0, 0, :4, :5, :5] = 1
    probs = torch.where(ids > 0, 1.0, torch.tensor(0.1, dtype=torch.float64))
    w = 32**3 / 200
    loss = inverse_weighted_loss(probs, ids, base="dice")
    assert loss.item() == pytest.approx(1 - 2 * w * 100 / (w * 200 + 0.01 * (32**3 - 100)), rel=1e-12)
    assert loss.item() == pytest.approx(0.0099, abs=5e-5)
    first = {"balance": "lesions", "weight_clip": None, "dice_denominator": "plain", "smooth": 0.0}
    assert inverse_weighted_loss(probs, ids, base="dice", **first).item() == pytest.approx(
        1 - 200 / (200 + 0.1 * (32**3 - 100)), rel=1e-12
    )
    # the authors' map without its clip (background 32768/(2·32668) = 0.50) and nnU-Net's Dice: 0.048
    unclipped = inverse_weighted_loss(probs, ids, base="dice", weight_clip=None, dice_denominator="plain", smooth=0.0)
    assert unclipped.item() == pytest.approx(0.048, abs=5e-4)


@PROPERTY_SETTINGS
@given(lesion_batches(), st.sampled_from(["dice", "dice_ce"]))
def test_single_component_first_commit_map_is_the_plain_loss(batch, base):
    # the first commit's map keeps the foreground's total weight: one component per pair → every
    # weight is 1. The authors' current map does not (the lesion weighs N/(2|C|), the background 1 after the clip)
    probs, component_ids, _, ignore, _ = batch
    single = (component_ids > 0).long()
    first = {"balance": "lesions", "weight_clip": None, "dice_denominator": "plain"}
    weighted = inverse_weighted_loss(probs, single, base=base, ignore_mask=ignore, **first)
    plain = reference_first_commit_inverse_weighted(
        probs, single, base=base, smooth=1e-5, ignore_mask=ignore, weights="none"
    )
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


@pytest.mark.parametrize("name", ["blob", "blob_whole_patch", "cc", "cc_skip", "inverse"])
def test_gradient_reaches_every_voxel_of_every_domain(name):
    probs, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    ignore = torch.zeros(2, 1, 6, 7, 5, dtype=torch.bool)
    ignore[0, 0, 5, 0, 0] = True
    loss = {
        "blob": lambda: blob_loss(probs, ids, ignore_mask=ignore),
        "blob_whole_patch": lambda: blob_loss(probs, ids, ignore_mask=ignore, empty_pairs="whole_patch"),
        "cc": lambda: cc_loss(probs, ids, cells, ignore_mask=ignore),
        "cc_skip": lambda: cc_loss(probs, ids, cells, ignore_mask=ignore, empty_pairs="skip"),
        "inverse": lambda: inverse_weighted_loss(probs, ids, ignore_mask=ignore),
    }[name]()
    loss.backward()
    grad = probs.grad
    with_components = torch.tensor([[True, False], [False, True]])  # pairs (b, c) holding a lesion
    in_domain = with_components[:, :, None, None, None].expand_as(grad) & ~ignore.expand_as(grad)
    if name in ("inverse", "cc", "blob_whole_patch"):  # lesion-free pairs are scored whole
        in_domain = ~ignore.expand_as(grad)
    assert torch.all(grad[in_domain] != 0)
    assert torch.all(grad[~in_domain] == 0)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_batch_without_components(spatial):
    # skipping lesion-free pairs (blob's default): a zero that carries a graph
    probs = torch.rand(2, 3, *spatial, requires_grad=True)
    ids = torch.zeros(2, 3, *spatial, dtype=torch.long)
    for loss in (
        blob_loss(probs, ids),
        cc_loss(probs, ids, ids.clone(), empty_pairs="skip"),
        blob_loss(probs, ids, iwl=True),
    ):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.all(probs.grad == 0)
    # scoring them whole (CC's default) and the whole-volume inverse weighting: Dice + CE of "no lesion"
    for loss in (cc_loss(probs, ids, ids.clone()), inverse_weighted_loss(probs, ids)):
        assert torch.isfinite(loss) and loss.item() > 0
        (grad,) = torch.autograd.grad(loss, probs)
        assert torch.all(grad > 0)  # every voxel is pushed towards background


def test_fully_ignored_components_are_not_counted_and_stay_finite():
    probs, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    ignore = torch.ones(2, 1, 6, 7, 5, dtype=torch.bool)
    for loss in (
        blob_loss(probs, ids, ignore_mask=ignore, iwl=True),
        blob_loss(probs, ids, ignore_mask=ignore, empty_pairs="whole_patch"),
        cc_loss(probs, ids, cells, ignore_mask=ignore),
        inverse_weighted_loss(probs, ids, ignore_mask=ignore),
    ):
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(probs.grad).all()


def test_a_pair_whose_lesions_are_all_ignored_is_scored_whole():
    # pair (0, 0): its lesions are ignored, the rest is background (g = 0) → Dice 1 + CE of the rest
    probs, ids = _two_lesion_volume(torch.float64)
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    ignore = (ids[:, :1] > 0) & (torch.arange(2)[:, None, None, None, None] == 0)
    loss = cc_loss(probs, ids, cells, ignore_mask=ignore, smooth=0.0)
    expected = reference_instance_loss(
        probs,
        ids,
        cells,
        base="dice_ce",
        iwl=False,
        iwl_max=1.0,
        smooth=0.0,
        ignore_mask=ignore,
        empty_pairs="whole_patch",
    )
    assert_value_and_grad_match(loss, expected, probs)


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
    assert torch.autograd.gradcheck(lambda p: cc_loss(p, ids, cells, iwl=iwl, empty_pairs="skip"), (probs,))
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
        (lambda p, i: blob_loss(p, i, empty_pairs="drop"), ValueError, "empty_pairs must be one of"),
        (lambda p, i: inverse_weighted_loss(p, i, base="ce"), ValueError, "base must be one of"),
        (lambda p, i: inverse_weighted_loss(p, i, balance="parts"), ValueError, "balance must be one of"),
        (lambda p, i: inverse_weighted_loss(p, i, dice_denominator="cubed"), ValueError, "dice_denominator must"),
        (lambda p, i: inverse_weighted_loss(p, i, weight_clip=(5.0, 1.0)), ValueError, "weight_clip must be"),
        (lambda p, i: inverse_weighted_loss(p, i, weight_clip=3.0), ValueError, "weight_clip must be"),
        (lambda p, i: inverse_weighted_loss(p.long(), i), TypeError, "probs must be a floating-point tensor"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    probs, ids = _two_lesion_volume()
    with pytest.raises(error, match=match):
        call(probs, ids)


# ----------------------------------------------------------------------------------------------
# Cells of other ids are refused; component ids of any size
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cells_of, match",
    [  # no cells at all (the loss returned 0 without a word), another numbering, another sample's cells, a stray cell
        (lambda ids, cells: torch.zeros_like(cells), r"[1-9]\d* voxel\(s\) of a channel with components have no cell"),
        (lambda ids, cells: torch.where(cells > 0, cells + 2, 0), r"[1-9]\d* component voxel\(s\) lie outside"),
        (lambda ids, cells: cells.flip(0), r"[1-9]\d* component voxel\(s\) lie outside"),
        (lambda ids, cells: torch.where(ids > 0, ids, 3), r"[1-9]\d* cell\(s\) hold no voxel of the component"),
    ],
)
def test_cc_loss_refuses_cells_that_do_not_match_the_components(cells_of, match):
    probs, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    with pytest.raises(ValueError, match=match):
        cc_loss(probs, ids, cells_of(ids, cells))
    cc_loss(probs, ids, cells_of(ids, cells), validate=False)  # the trainers' path checks nothing


def _sparse_ids(ids: torch.Tensor, largest: int) -> torch.Tensor:
    """The same components with ids spread up to ``largest`` (the compact ids k → k·largest / K)."""
    factor = largest // int(ids.max())
    return ids.long() * factor


@pytest.mark.parametrize("largest", [10**8, 2 * 10**9, 2**62])
def test_huge_component_ids_give_the_compact_result(largest):
    probs, ids = _two_lesion_volume(torch.float64)
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    sparse, sparse_cells = _sparse_ids(ids, largest), _sparse_ids(cells, largest)
    from nnunet_lesionloss.losses.functional import cat_loss, instance_losses, mil_loss

    for name, function in {
        "blob": lambda i, c: blob_loss(probs, i, iwl=True),
        "cc": lambda i, c: cc_loss(probs, i, c),
        "inverse": lambda i, c: inverse_weighted_loss(probs, i),
        "cat": lambda i, c: cat_loss(probs, i),
        "mil": lambda i, c: mil_loss(probs, i),
        "instance": lambda i, c: instance_losses(probs, i, terms=("instance_gt", "center"))["instance_gt"],
    }.items():
        assert function(sparse, sparse_cells).item() == pytest.approx(function(ids, cells).item(), rel=1e-12), name


def test_segment_index_of_huge_ids_is_as_long_as_the_number_of_components():
    from nnunet_lesionloss.losses.segments import build_cell_slots, build_foreground_index

    _, ids = _two_lesion_volume()
    cells = torch.from_numpy(voronoi_from_ids(ids.numpy()))
    sparse, sparse_cells = _sparse_ids(ids, 10**12), _sparse_ids(cells, 10**12)
    assert build_foreground_index(sparse).num_components == 3  # before: 2·10^12 (an allocation error)
    slots = build_cell_slots(sparse, sparse_cells)
    assert slots.num_slots == build_cell_slots(ids, cells).num_slots == 2 * (3 + 4) + 1
    assert slots.cell_slot.numel() == 3


def test_memory_of_huge_ids_stays_that_of_the_compact_ids():
    # peak resident memory of a fresh process, after the losses ran on ids 1..K and then on the same
    # components with ids up to 2·10^9 (before: tables by id value, 16 GB and more, a killed process)
    script = """
import resource, numpy as np, torch
from nnunet_lesionloss.components import voronoi_cells
from nnunet_lesionloss.losses.functional import blob_loss, cc_loss
ids = np.zeros((2, 2, 32, 32, 32), dtype=np.int64)
ids[0, 0, 2:5, 2:5, 2:5] = 1
ids[0, 0, 20:22, 20:22, 20:22] = 2
ids[1, 1, 10:12, 0:3, 0:2] = 1
cells = np.stack([np.stack([voronoi_cells(channel) for channel in sample]) for sample in ids])
probs = torch.rand(ids.shape, requires_grad=True)
for scale in (1, 10**9):  # ids 1, 2 become scale, 2·scale
    maps = torch.from_numpy(ids * scale).int(), torch.from_numpy(cells * scale).int()
    for _ in range(2):
        (blob_loss(probs, maps[0]) + cc_loss(probs, *maps)).backward()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    compact, huge = (int(line) for line in result.stdout.split()[-2:])
    assert huge < compact + 64 * 1024, (compact, huge)  # KiB: within 64 MiB of the compact ids
