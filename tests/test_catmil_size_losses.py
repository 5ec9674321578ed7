"""CAT, MIL, Size Penalty, Tversky, Focal Tversky and focal loss against the equations of Luu et al.
2026 (CATMIL) and Joshi 2026 (Size Penalty).

Each vectorised loss is compared, value and gradient, with a slow reference that loops over
samples, channels and components in float64 exactly as the equations read; the remaining tests
are hand-computed numbers and the properties the papers state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunet_lesionloss.losses.functional import (
    binary_focal_loss,
    cat_loss,
    component_adaptive_weights,
    estimate_size_penalty_tau,
    focal_tversky_loss,
    generalized_dice_loss,
    mil_loss,
    size_penalty_loss,
    tversky_loss,
)

RTOL = 1e-5
ATOL = 1e-7
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


# ----------------------------------------------------------------------------- random batches


@st.composite
def random_batches(draw):
    """probs, component_ids (with id gaps, empty pairs, single voxels) and an optional ignore mask."""
    seed = draw(st.integers(0, 2**31 - 1))
    spatial_dims = draw(st.sampled_from([2, 3]))
    batch = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 5)) for _ in range(spatial_dims))
    fg_fraction = draw(st.sampled_from([0.0, 0.05, 0.3, 0.8]))
    max_id = draw(st.integers(1, 4))
    ignore = draw(st.sampled_from(["none", "shared", "per_channel"]))
    rng = np.random.default_rng(seed)
    shape = (batch, channels, *spatial)
    ids = np.where(rng.random(shape) < fg_fraction, rng.integers(1, max_id + 1, size=shape), 0)
    ids[rng.random((batch, channels)) < 0.3] = 0  # whole (b, c) pairs without foreground
    probs = rng.uniform(0.001, 0.999, size=shape).astype(np.float32)
    ignore_mask = None
    if ignore != "none":
        mask_shape = (batch, 1 if ignore == "shared" else channels, *spatial)
        ignore_mask = torch.from_numpy(rng.random(mask_shape) < 0.2)
    return torch.from_numpy(probs), torch.from_numpy(ids).long(), ignore_mask


def valid_of(ignore_mask, b, c, like):
    if ignore_mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    return ~ignore_mask[b, 0 if ignore_mask.shape[1] == 1 else c]


def value_and_grad(loss_fn, probs):
    leaf = probs.detach().clone().requires_grad_(True)
    value = loss_fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    return value, (torch.zeros_like(leaf) if grad is None else grad)


def assert_matches_reference(fast_fn, reference_fn, probs):
    fast_value, fast_grad = value_and_grad(fast_fn, probs)
    ref_value, ref_grad = value_and_grad(reference_fn, probs.double())
    assert fast_value.dtype == torch.float32 and fast_value.dim() == 0
    np.testing.assert_allclose(fast_value.item(), ref_value.item(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(fast_grad.numpy(), ref_grad.numpy(), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- slow references


def reference_weights(ids, ignore_mask, b, c, *, gamma, eps, w_bg):
    comp = ids[b, c]
    valid = valid_of(ignore_mask, b, c, comp)
    weight = torch.full(comp.shape, w_bg, dtype=torch.float64)
    for k in torch.unique(comp[comp > 0]).tolist():
        member = (comp == k) & valid
        if member.any():
            weight[member] = (int(member.sum()) + eps) ** -gamma
    weight[~valid] = 0.0
    return weight


def reference_cat(p, ids, ignore_mask, *, alpha, beta, gamma, eps, w_bg, smooth, reduction="batch"):
    """ "batch": the CATMIL authors' code (luumsk/SmallLesionMRI): per class present in the batch,
    1 - mean over all samples of the per-sample Tversky index, then the mean over those classes;
    "positive_pairs": the mean over the (b, c) pairs that have foreground."""
    per_channel, per_pair = [], []
    for c in range(p.shape[1]):
        indices, present = [], []
        for b in range(p.shape[0]):
            comp, prob = ids[b, c], p[b, c]
            valid = valid_of(ignore_mask, b, c, comp)
            weight = reference_weights(ids, ignore_mask, b, c, gamma=gamma, eps=eps, w_bg=w_bg)
            g = ((comp > 0) & valid).double()
            tp = (weight * prob * g).sum()
            fp = (weight * prob * (1 - g)).sum()
            fn = (weight * (1 - prob) * g).sum()
            indices.append((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))
            present.append(bool(g.sum() > 0))
        if any(present):
            per_channel.append(1 - torch.stack(indices).mean())
        per_pair += [1 - index for index, has in zip(indices, present) if has]
    chosen = per_channel if reduction == "batch" else per_pair
    return torch.stack(chosen).mean() if chosen else p.sum() * 0.0


def reference_mil(p, ids, ignore_mask, *, eps):
    terms = []
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            comp, prob = ids[b, c], p[b, c]
            valid = valid_of(ignore_mask, b, c, comp)
            for k in torch.unique(comp[comp > 0]).tolist():
                member = (comp == k) & valid
                if member.any():
                    terms.append(-torch.log(prob[member].max() + eps))
    return torch.stack(terms).mean() if terms else p.sum() * 0.0


def reference_size_penalty(p, gt, ignore_mask, *, tau, cap, eps, gate):
    terms = []
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            valid = valid_of(ignore_mask, b, c, gt[b, c]).double()
            v_g = (gt[b, c].double() * valid).sum()
            v_p = (p[b, c] * valid).sum()
            if v_g <= 0 or (gate is not None and v_g >= gate):
                continue
            terms.append(torch.clamp(math.exp(-v_g.item() / tau) * (v_p - v_g).abs() / (v_g + eps), max=cap))
    return torch.stack(terms).mean() if terms else p.sum() * 0.0


def reference_tversky_indices(p, gt, ignore_mask, *, alpha, beta, smooth, batch):
    counts = {}
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            valid = valid_of(ignore_mask, b, c, gt[b, c]).double()
            g, prob = gt[b, c].double() * valid, p[b, c] * valid
            key = c if batch else (b, c)
            tp, fp, fn = counts.get(key, (0.0, 0.0, 0.0))
            counts[key] = (tp + (prob * g).sum(), fp + (prob * (1 - g)).sum(), fn + ((1 - prob) * g).sum())
    return [(tp + smooth) / (tp + alpha * fp + beta * fn + smooth) for tp, fp, fn in counts.values()]


def reference_focal(p, gt, ignore_mask, *, gamma, alpha):
    total, count = p.sum() * 0.0, 0
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            valid = valid_of(ignore_mask, b, c, gt[b, c])
            for prob, label in zip(p[b, c][valid].reshape(-1), gt[b, c][valid].reshape(-1).tolist()):
                p_t = prob if label else 1 - prob
                a_t = 1.0 if alpha is None else (alpha if label else 1 - alpha)
                total = total - a_t * (1 - p_t) ** gamma * torch.log(p_t)
                count += 1
    return total / max(count, 1)


# ----------------------------------------------------------------------------- against the loops


@PROPERTY_SETTINGS
@given(
    data=random_batches(),
    alpha=st.sampled_from([0.3, 0.5, 1.0]),
    beta=st.sampled_from([0.7, 0.5, 0.0]),
    gamma=st.sampled_from([0.0, 1.0, 2.0]),
    eps=st.sampled_from([5.0, 0.0]),
    w_bg=st.sampled_from([0.01, 1.0]),
    reduction=st.sampled_from(["batch", "positive_pairs"]),
)
def test_cat_matches_per_component_loop(data, alpha, beta, gamma, eps, w_bg, reduction):
    probs, ids, ignore_mask = data
    kwargs = dict(alpha=alpha, beta=beta, gamma=gamma, eps=eps, w_bg=w_bg, smooth=1e-5, reduction=reduction)
    assert_matches_reference(
        lambda p: cat_loss(p, ids, ignore_mask=ignore_mask, **kwargs),
        lambda p: reference_cat(p, ids, ignore_mask, **kwargs),
        probs,
    )
    weights = component_adaptive_weights(ids, gamma=gamma, eps=eps, w_bg=w_bg, ignore_mask=ignore_mask)
    for b in range(ids.shape[0]):
        for c in range(ids.shape[1]):
            expected = reference_weights(ids, ignore_mask, b, c, gamma=gamma, eps=eps, w_bg=w_bg)
            np.testing.assert_allclose(weights[b, c].numpy(), expected.numpy(), rtol=RTOL)


def monai_tversky_scores(p, gt, ignore_mask, *, alpha, beta, smooth, include_background):
    """1 - TI per (sample, class) as MONAI's TverskyLoss(softmax=True, to_onehot_y=True) computes it
    (CATMIL authors' baselines): the softmax classes are [background = 1 - Σ_c p_c, p_1..p_C]."""
    scores = []
    for b in range(p.shape[0]):
        valid_all = torch.stack([valid_of(ignore_mask, b, c, gt[b, c]) for c in range(p.shape[1])]).all(dim=0)
        classes = []
        if include_background:
            classes.append((1 - p[b].sum(dim=0), 1 - gt[b].double().sum(dim=0), valid_all))
        classes += [(p[b, c], gt[b, c].double(), valid_of(ignore_mask, b, c, gt[b, c])) for c in range(p.shape[1])]
        for prob, g, valid in classes:
            prob, g = prob[valid], g[valid]
            tp, fp, fn = (prob * g).sum(), (prob * (1 - g)).sum(), ((1 - prob) * g).sum()
            scores.append(1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth))
    return torch.stack(scores)


def exclusive_classes(probs, ids):
    """Softmax-like probs (Σ_c p_c < 1 per voxel) and exclusive ground-truth classes from a random batch."""
    probs = probs / probs.shape[1]
    owner = torch.argmax(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)), dim=1, keepdim=True)
    ids = torch.where(torch.arange(ids.shape[1]).reshape(1, -1, *[1] * (ids.dim() - 2)) == owner, ids, 0)
    return probs, ids


@PROPERTY_SETTINGS
@given(
    data=random_batches(),
    gamma=st.sampled_from([4.0 / 3.0, 1.0]),
    reduction=st.sampled_from(["mean_then_power", "power_then_mean"]),
)
def test_tversky_with_background_matches_monai_formula(data, gamma, reduction):
    probs, ids, ignore_mask = data
    probs, ids = exclusive_classes(probs, ids)
    gt = ids > 0
    kwargs = dict(alpha=0.3, beta=0.7, smooth=1e-5)

    def focal_power(distance):
        return distance ** (1 / gamma) if distance > 1e-6 else distance * 1e-6 ** (1 / gamma - 1)

    def reference_focal(p):
        scores = monai_tversky_scores(p, gt, ignore_mask, include_background=True, **kwargs)
        if reduction == "mean_then_power":  # the authors' FocalTversky: MONAI's mean, then the power
            return focal_power(scores.mean())
        return torch.stack([focal_power(s) for s in scores]).mean()

    assert_matches_reference(
        lambda p: tversky_loss(p, gt, include_background=True, ignore_mask=ignore_mask, **kwargs),
        lambda p: monai_tversky_scores(p, gt, ignore_mask, include_background=True, **kwargs).mean(),
        probs,
    )
    assert_matches_reference(
        lambda p: focal_tversky_loss(
            p, gt, gamma=gamma, include_background=True, reduction=reduction, ignore_mask=ignore_mask, **kwargs
        ),
        reference_focal,
        probs,
    )


@PROPERTY_SETTINGS
@given(data=random_batches(), eps=st.sampled_from([1e-6, 0.1]))
def test_mil_matches_per_component_loop(data, eps):
    probs, ids, ignore_mask = data
    assert_matches_reference(
        lambda p: mil_loss(p, ids, eps=eps, ignore_mask=ignore_mask),
        lambda p: reference_mil(p, ids, ignore_mask, eps=eps),
        probs,
    )


@PROPERTY_SETTINGS
@given(
    data=random_batches(),
    tau=st.sampled_from([600.0, 3.0, 20.0]),
    cap=st.sampled_from([10.0, 0.5]),
    gate=st.sampled_from([None, 4.0, 30.0]),
)
def test_size_penalty_matches_per_sample_loop(data, tau, cap, gate):
    probs, ids, ignore_mask = data
    gt = ids > 0
    kwargs = dict(tau=tau, cap=cap, eps=1e-5, gate=gate)
    assert_matches_reference(
        lambda p: size_penalty_loss(p, gt, ignore_mask=ignore_mask, **kwargs),
        lambda p: reference_size_penalty(p, gt, ignore_mask, **kwargs),
        probs,
    )


@PROPERTY_SETTINGS
@given(
    data=random_batches(),
    alpha=st.sampled_from([0.3, 0.5]),
    beta=st.sampled_from([0.7, 0.5]),
    batch=st.booleans(),
    gamma=st.sampled_from([4.0 / 3.0, 0.75]),
)
def test_tversky_and_focal_tversky_match_loop(data, alpha, beta, batch, gamma):
    probs, ids, ignore_mask = data
    gt = ids > 0
    kwargs = dict(alpha=alpha, beta=beta, smooth=1e-5, batch=batch)

    def reference_tversky(p):
        return torch.stack([1 - ti for ti in reference_tversky_indices(p, gt, ignore_mask, **kwargs)]).mean()

    def focal_power(distance):  # the documented chord below 1e-6, where x^(1/γ) has no finite slope
        return distance ** (1 / gamma) if distance > 1e-6 else distance * 1e-6 ** (1 / gamma - 1)

    def reference_focal_tversky(p):
        return torch.stack(
            [focal_power(1 - ti) for ti in reference_tversky_indices(p, gt, ignore_mask, **kwargs)]
        ).mean()

    assert_matches_reference(lambda p: tversky_loss(p, gt, ignore_mask=ignore_mask, **kwargs), reference_tversky, probs)
    assert_matches_reference(
        lambda p: focal_tversky_loss(p, gt, gamma=gamma, ignore_mask=ignore_mask, **kwargs),
        reference_focal_tversky,
        probs,
    )


@PROPERTY_SETTINGS
@given(data=random_batches(), gamma=st.sampled_from([2.0, 0.0, 1.5]), alpha=st.sampled_from([0.25, None]))
def test_binary_focal_matches_voxel_loop(data, gamma, alpha):
    probs, ids, ignore_mask = data
    gt = ids > 0
    assert_matches_reference(
        lambda p: binary_focal_loss(p, gt, gamma=gamma, alpha=alpha, ignore_mask=ignore_mask),
        lambda p: reference_focal(p, gt, ignore_mask, gamma=gamma, alpha=alpha),
        probs,
    )


# ----------------------------------------------------------------------------- CAT by hand and its properties


@pytest.mark.parametrize("id_dtype", [torch.int64, torch.int32, torch.uint8])
def test_cat_hand_computed_example(id_dtype):
    # one lesion of 2 voxels (weight 1/(2+5) each), two background voxels (weight 0.01)
    ids = torch.tensor([[[[1, 1, 0, 0]]]], dtype=id_dtype)
    probs = torch.tensor([[[[1.0, 0.5, 0.5, 0.0]]]])
    true_pos = (1.0 + 0.5) / 7  # w·p on the lesion
    false_pos = 0.01 * 0.5  # w_bg·p on the background
    false_neg = 0.5 / 7  # w·(1-p) on the lesion
    expected = 1 - (true_pos + 1e-5) / (true_pos + 0.3 * false_pos + 0.7 * false_neg + 1e-5)
    assert cat_loss(probs, ids).item() == pytest.approx(expected, rel=1e-6)
    assert mil_loss(probs, ids).item() == pytest.approx(-math.log(1.0 + 1e-6), abs=1e-7)


def test_cat_gives_each_lesion_total_weight_about_one_for_gamma_one():
    ids = torch.zeros(1, 1, 40, 40, dtype=torch.long)
    ids[0, 0, 0, 0] = 1  # 1 voxel
    ids[0, 0, 5:8, 5:8] = 2  # 9 voxels
    ids[0, 0, 20:40, 10:30] = 3  # 400 voxels
    eps = 1e-3
    weights = component_adaptive_weights(ids, gamma=1.0, eps=eps, w_bg=0.01)
    for k, size in ((1, 1), (2, 9), (3, 400)):
        lesion_weight = weights[ids == k].double().sum().item()
        assert lesion_weight == pytest.approx(size / (size + eps), rel=1e-5)
        assert lesion_weight == pytest.approx(1.0, abs=1e-3)
    assert torch.all(weights[ids == 0] == 0.01)


def test_cat_with_gamma_zero_and_unit_background_weight_is_tversky():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 6, 5, 4, generator=generator)
    ids = torch.randint(0, 4, probs.shape, generator=generator)  # every pair has foreground
    ignore_mask = torch.rand(2, 1, 6, 5, 4, generator=generator) < 0.1
    cat = cat_loss(probs, ids, gamma=0.0, w_bg=1.0, ignore_mask=ignore_mask)
    tversky = tversky_loss(probs, ids > 0, ignore_mask=ignore_mask)
    assert cat.item() == pytest.approx(tversky.item(), rel=1e-6)


def test_cat_positive_pairs_ignores_pairs_without_foreground():
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 1, 8, 8, generator=generator, requires_grad=True)
    ids = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    ids[0, 0, 2:4, 2:4] = 1
    loss = cat_loss(probs, ids, reduction="positive_pairs")
    loss.backward()
    assert loss.item() == pytest.approx(cat_loss(probs[:1].detach(), ids[:1]).item(), rel=1e-6)
    assert torch.all(probs.grad[1] == 0)


def test_cat_averages_over_the_whole_batch_as_the_authors_code():
    # a half-empty batch (common under nnU-Net's foreground oversampling): the empty sample adds
    # about 1 without gradient, so the positive sample gets half the gradient of "positive_pairs"
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 1, 8, 8, generator=generator)
    ids = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    ids[0, 0, 2:4, 2:4] = 1
    leaf = probs.clone().requires_grad_(True)
    batch = cat_loss(leaf, ids)
    (batch_grad,) = torch.autograd.grad(batch, leaf)
    leaf = probs.clone().requires_grad_(True)
    positive = cat_loss(leaf, ids, reduction="positive_pairs")
    (positive_grad,) = torch.autograd.grad(positive, leaf)
    empty_sample = 1 - 1e-5 / (0.3 * 0.01 * float(probs[1].sum()) + 1e-5)
    assert empty_sample == pytest.approx(1.0, abs=1e-3)
    assert batch.item() == pytest.approx((positive.item() + empty_sample) / 2, rel=1e-6)
    torch.testing.assert_close(batch_grad[0], positive_grad[0] / 2)
    assert float(batch_grad[1].abs().max()) < 1e-4 * float(positive_grad[0].abs().max())


# ----------------------------------------------------------------------------- MIL


def catmil_authors_mil(fg_prob: torch.Tensor, label_map: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """The CATMIL authors' MIL term (luumsk/SmallLesionMRI, ``SmallLesionMILLoss``): per sample, the
    components of ``tgt > 0`` (scipy, 6-connectivity), -log(max(max_k p, eps)) per component, and the
    mean over every component of the batch (pooled, as this package's ``mil_loss``)."""
    from scipy import ndimage

    terms = []
    for b in range(label_map.shape[0]):
        foreground = (label_map[b] > 0).numpy()
        structure = ndimage.generate_binary_structure(foreground.ndim, 1)
        labels, count = ndimage.label(foreground, structure=structure)
        for k in range(1, count + 1):
            terms.append(-torch.log(fg_prob[b][torch.from_numpy(labels == k)].max().clamp(min=eps)))
    return torch.stack(terms).mean() if terms else fg_prob.sum() * 0.0


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), spatial_dims=st.sampled_from([2, 3]), batch=st.integers(1, 3))
def test_mil_pools_the_batch_as_the_catmil_authors_code(seed, spatial_dims, batch):
    from nnunet_lesionloss.components import label_components

    rng = np.random.default_rng(seed)
    label_map = torch.from_numpy((rng.random((batch,) + (6,) * spatial_dims) < 0.15).astype(np.int64))
    ids = torch.from_numpy(
        np.stack([label_components(m.numpy() > 0, 6 if spatial_dims == 3 else 4) for m in label_map])
    )
    probs = torch.from_numpy(rng.uniform(0.1, 1.0, size=label_map.shape)).float()
    # -log(s + ε) here, -log(max(s, ε)) there: at most ε/s = 1e-5 apart for s ≥ 0.1
    assert_matches_reference(
        lambda p: mil_loss(p[:, None], ids[:, None]),
        lambda p: catmil_authors_mil(p, label_map),
        probs,
    )


def test_mil_and_cat_leave_the_ignore_label_out_where_the_authors_count_it_as_lesion():
    # the CATMIL authors' losses take tgt > 0: nnU-Net's ignore label (here 2) becomes a lesion whose
    # probability is pulled up. Here it is excluded (ignore_mask): 1×6 image, p = [.9 .5 .1 .2 .3 .1]
    probs = torch.tensor([0.9, 0.5, 0.1, 0.2, 0.3, 0.1]).reshape(1, 1, 1, 6)
    label_map = torch.tensor([1, 1, 0, 2, 2, 0]).reshape(1, 1, 6)
    authors = catmil_authors_mil(probs[:, 0], label_map)  # two components: max .9 and max .3
    assert authors.item() == pytest.approx((-math.log(0.9) - math.log(0.3)) / 2, rel=1e-6)  # 0.655
    ids = (label_map == 1).long()[:, None]
    ours = mil_loss(probs, ids, ignore_mask=(label_map == 2)[:, None])
    assert ours.item() == pytest.approx(-math.log(0.9 + 1e-6), rel=1e-6)  # 0.105


def test_mil_gradient_reaches_only_the_argmax_voxel_of_each_component():
    generator = torch.Generator().manual_seed(2)
    probs = torch.rand(2, 2, 7, 6, 5, generator=generator, requires_grad=True)
    ids = torch.randint(0, 4, probs.shape, generator=generator)
    ids[1, 0] = 0  # one pair without lesions
    mil_loss(probs, ids).backward()
    expected_support = torch.zeros_like(ids, dtype=torch.bool)
    for b in range(2):
        for c in range(2):
            for k in torch.unique(ids[b, c][ids[b, c] > 0]).tolist():
                member = ids[b, c] == k
                flat_argmax = torch.where(member, probs[b, c].detach(), -1.0).argmax()
                expected_support[b, c].view(-1)[flat_argmax] = True
    assert torch.equal(probs.grad != 0, expected_support)
    assert torch.all(probs.grad[expected_support] < 0)  # raising a lesion's max lowers the loss


def test_mil_hand_computed_example():
    ids = torch.tensor([[[[1, 1, 0], [0, 0, 2]]], [[[0, 0, 0], [3, 0, 0]]]])
    probs = torch.tensor([[[[0.2, 0.6, 0.9], [0.1, 0.3, 0.5]]], [[[0.9, 0.9, 0.9], [0.25, 0.1, 0.1]]]])
    expected = -(math.log(0.6 + 1e-6) + math.log(0.5 + 1e-6) + math.log(0.25 + 1e-6)) / 3
    assert mil_loss(probs, ids).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- empty batches


COMPONENT_LOSSES = {
    "cat": lambda p, ids, ignore_mask: cat_loss(p, ids, ignore_mask=ignore_mask),
    "mil": lambda p, ids, ignore_mask: mil_loss(p, ids, ignore_mask=ignore_mask),
    "size_penalty": lambda p, ids, ignore_mask: size_penalty_loss(p, ids > 0, ignore_mask=ignore_mask),
}


@pytest.mark.parametrize("name", sorted(COMPONENT_LOSSES))
@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("foreground_all_ignored", [False, True])
def test_no_foreground_gives_zero_with_graph(name, shape, foreground_all_ignored):
    probs = torch.rand(shape, requires_grad=True)
    ids = torch.zeros(shape, dtype=torch.long)
    ignore_mask = None
    if foreground_all_ignored:
        ids[0, 0, 1, 1] = 1
        ignore_mask = torch.ones(shape[0], 1, *shape[2:], dtype=torch.bool)
    loss = COMPONENT_LOSSES[name](probs, ids, ignore_mask)
    assert loss.dtype == torch.float32 and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(probs.grad == 0)


# ----------------------------------------------------------------------------- Size Penalty


def test_size_penalty_hand_computed_example_at_v_g_equal_tau():
    gt = torch.zeros(1, 1, 10, 10, 10, dtype=torch.bool)
    gt.view(-1)[:600] = True  # V_g = τ = 600 voxels: size weight e^-1 (Joshi 2026 §3.4)
    probs = torch.full((1, 1, 10, 10, 10), 0.3)  # V_p = 300
    expected = math.exp(-1.0) * 300 / (600 + 1e-5)
    assert size_penalty_loss(probs, gt).item() == pytest.approx(expected, rel=1e-5)


def test_size_penalty_clamp_saturates_with_zero_gradient():
    gt = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    gt[0, 0, 0, 0] = True  # V_g = 1
    gt[1, 0, :4] = True  # V_g = 32
    probs = torch.full((2, 1, 8, 8), 0.9)
    probs[1] = gt[1].float() * 0.5
    probs.requires_grad_(True)
    loss = size_penalty_loss(probs, gt, cap=10.0)
    loss.backward()
    saturated = 10.0  # sample 0: exp(-1/600)·|57.6 - 1|/1 ≈ 56.5 > cap
    unsaturated = math.exp(-32 / 600) * 16 / (32 + 1e-5)
    assert loss.item() == pytest.approx((saturated + unsaturated) / 2, rel=1e-5)
    assert torch.all(probs.grad[0] == 0)
    assert torch.all(probs.grad[1] != 0)


def test_size_penalty_lesion_free_samples_do_not_contribute():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(3, 1, 6, 6, generator=generator, requires_grad=True)
    gt = torch.zeros(3, 1, 6, 6, dtype=torch.bool)
    gt[0, 0, :2, :3] = True
    gt[2, 0, 4:, 4:] = True
    loss = size_penalty_loss(probs, gt, tau=10.0)
    loss.backward()
    lesion_only = size_penalty_loss(probs[[0, 2]].detach(), gt[[0, 2]], tau=10.0)
    assert loss.item() == pytest.approx(lesion_only.item(), rel=1e-6)
    assert torch.all(probs.grad[1] == 0)


def test_size_penalty_gate_keeps_only_pairs_below_it():
    probs = torch.full((2, 1, 10, 10), 0.5, requires_grad=True)
    gt = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    gt[0, 0, 0, :5] = True  # V_g = 5
    gt[1, 0, :5] = True  # V_g = 50
    small_only = size_penalty_loss(probs, gt, tau=100.0, gate=20.0)
    small_only.backward()
    assert small_only.item() == pytest.approx(size_penalty_loss(probs[:1].detach(), gt[:1], tau=100.0).item(), rel=1e-6)
    assert torch.all(probs.grad[1] == 0) and torch.all(probs.grad[0] != 0)
    none_below = size_penalty_loss(probs, gt, tau=100.0, gate=5.0)  # V_g = 5 is not below 5
    assert none_below.item() == 0.0 and none_below.requires_grad


def test_estimate_tau_is_the_median_positive_volume():
    assert estimate_size_penalty_tau([0, 3, 10, 1000, 0]) == 10.0
    assert estimate_size_penalty_tau(np.array([4, 8, 12, 16]), quantile=0.5) == 10.0
    assert estimate_size_penalty_tau(torch.tensor([2.0, 4.0, 100.0]), quantile=1.0) == 100.0


def test_estimate_tau_falls_back_to_the_paper_without_foreground():
    with pytest.warns(UserWarning, match="600"):
        assert estimate_size_penalty_tau([]) == 600.0
    with pytest.warns(UserWarning):
        assert estimate_size_penalty_tau(np.zeros(5), fallback_tau=123.0) == 123.0


@pytest.mark.parametrize(
    "volumes, kwargs, message",
    [
        ([1, 2], dict(quantile=1.5), "quantile"),
        ([1, -2], {}, ">= 0"),
        ([1, float("nan")], {}, "finite"),
        ([1], dict(fallback_tau=0.0), "fallback_tau"),
    ],
)
def test_estimate_tau_rejects_bad_arguments(volumes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_size_penalty_tau(volumes, **kwargs)


# ----------------------------------------------------------------------------- focal loss by hand


def test_binary_focal_hand_computed_example():
    probs = torch.tensor([[[[0.9, 0.2]]]])
    gt = torch.tensor([[[[True, False]]]])
    positive = -0.25 * (1 - 0.9) ** 2 * math.log(0.9)
    negative = -0.75 * 0.2**2 * math.log(0.8)
    assert binary_focal_loss(probs, gt).item() == pytest.approx((positive + negative) / 2, rel=1e-6)


def test_tversky_batch_mode_is_one_index_over_the_concatenated_batch():
    generator = torch.Generator().manual_seed(6)
    probs = torch.rand(2, 3, 4, 5, generator=generator)
    gt = torch.rand(2, 3, 4, 5, generator=generator) < 0.3
    as_one_sample = (torch.cat([probs[0], probs[1]], dim=1)[None], torch.cat([gt[0], gt[1]], dim=1)[None])
    batched = tversky_loss(probs, gt, batch=True)
    assert batched.item() == pytest.approx(tversky_loss(*as_one_sample).item(), rel=1e-6)
    assert batched.item() != pytest.approx(tversky_loss(probs, gt).item(), rel=1e-3)


def test_tversky_baselines_with_background_by_hand():
    # 10 voxels, lesion = the first 2, p = 0.2 everywhere. Foreground: TP .4, FP 1.6, FN 1.6 →
    # TI = .4/2 = .2; background (p 0.8 on 8 voxels): TP 6.4, FP 1.6, FN 1.6 → TI = 6.4/8 = .8
    probs = torch.full((1, 1, 1, 10), 0.2, dtype=torch.float64)
    gt = torch.zeros(1, 1, 1, 10, dtype=torch.bool)
    gt[..., :2] = True
    kwargs = dict(alpha=0.3, beta=0.7, smooth=1e-12)
    # the authors' Tversky (MONAI, background included) and Focal Tversky (mean, then ^(1/γ))
    assert tversky_loss(probs, gt, include_background=True, **kwargs).item() == pytest.approx(0.5, rel=1e-6)
    authors = focal_tversky_loss(probs, gt, include_background=True, reduction="mean_then_power", **kwargs)
    assert authors.item() == pytest.approx(0.5**0.75, rel=1e-6)
    # foreground only, power per pair (Abraham & Khan 2019): 0.8 and 0.8^0.75
    assert tversky_loss(probs, gt, **kwargs).item() == pytest.approx(0.8, rel=1e-6)
    assert focal_tversky_loss(probs, gt, **kwargs).item() == pytest.approx(0.8**0.75, rel=1e-6)


def test_include_background_refuses_non_exclusive_channels():
    probs = torch.full((1, 2, 3, 3), 0.7)
    with pytest.raises(ValueError, match="exclusive classes"):
        tversky_loss(probs, probs > 1, include_background=True)


def monai_generalized_dice_one_channel(p, gt, ignore_mask, smooth=1e-5):
    """MONAI's GeneralizedDiceLoss(sigmoid=True) on one channel per (b, c), as Rachmadi et al. 2024
    used it: w = 1/(Σg)², and an absent class gets the largest finite weight of the other classes
    of its sample, which for a single class is none (w = 0)."""
    values = []
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            valid = valid_of(ignore_mask, b, c, gt[b, c])
            prob, g = p[b, c][valid], gt[b, c][valid].double()
            weight = 1 / float(g.sum()) ** 2 if g.sum() > 0 else 0.0
            tp, fp, fn = (prob * g).sum(), (prob * (1 - g)).sum(), ((1 - prob) * g).sum()
            values.append(1 - (2 * weight * tp + smooth) / (weight * (2 * tp + fp + fn) + smooth))
    return torch.stack(values).mean()


@PROPERTY_SETTINGS
@given(data=random_batches())
def test_generalized_dice_matches_monai_on_one_sigmoid_channel(data):
    probs, ids, ignore_mask = data
    gt = ids > 0
    assert_matches_reference(
        lambda p: generalized_dice_loss(p, gt, ignore_mask=ignore_mask),
        lambda p: monai_generalized_dice_one_channel(p, gt, ignore_mask),
        probs,
    )


def test_generalized_dice_of_an_empty_patch_is_zero():
    # MONAI's rule on one channel: no foreground → weight 0 → loss 0 without gradient; with the
    # complement as a second class (the former default) the same patch costs about 0.3 at p = 0.3
    probs = torch.full((1, 1, 8, 8, 8), 0.3, requires_grad=True)
    gt = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
    loss = generalized_dice_loss(probs, gt)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(probs.grad == 0)
    assert generalized_dice_loss(probs, gt, background_class=True).item() == pytest.approx(0.3, abs=0.02)


def test_focal_tversky_with_gamma_one_is_tversky():
    generator = torch.Generator().manual_seed(4)
    probs = torch.rand(2, 2, 5, 5, generator=generator)
    gt = torch.rand(2, 2, 5, 5, generator=generator) < 0.3
    assert focal_tversky_loss(probs, gt, gamma=1.0).item() == pytest.approx(tversky_loss(probs, gt).item(), rel=1e-6)


# ----------------------------------------------------------------------------- dtypes and arguments

ALL_LOSSES = {
    "cat": lambda p, ids: cat_loss(p, ids),
    "mil": lambda p, ids: mil_loss(p, ids),
    "size_penalty": lambda p, ids: size_penalty_loss(p, ids > 0),
    "tversky": lambda p, ids: tversky_loss(p, ids > 0),
    "focal_tversky": lambda p, ids: focal_tversky_loss(p, ids > 0),
    "focal": lambda p, ids: binary_focal_loss(p, ids > 0),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_bfloat16_input_under_autocast_gives_float32(name):
    generator = torch.Generator().manual_seed(5)
    probs = torch.rand(2, 2, 6, 6, 6, generator=generator)
    ids = torch.randint(0, 3, probs.shape, generator=generator)
    leaf = probs.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ALL_LOSSES[name](leaf, ids)
    assert loss.dtype == torch.float32
    reference = ALL_LOSSES[name](leaf.detach().float(), ids)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert leaf.grad.dtype == torch.bfloat16 and torch.isfinite(leaf.grad.float()).all()


PROBS = torch.rand(1, 1, 4, 4)
IDS = torch.zeros(1, 1, 4, 4, dtype=torch.long)
GT = IDS > 0


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: cat_loss(PROBS, IDS, alpha=-0.1), ValueError, "alpha"),
        (lambda: cat_loss(PROBS, IDS, beta=float("nan")), ValueError, "beta"),
        (lambda: cat_loss(PROBS, IDS, gamma=-1.0), ValueError, "gamma"),
        (lambda: cat_loss(PROBS, IDS, eps=-5.0), ValueError, "eps"),
        (lambda: cat_loss(PROBS, IDS, w_bg=-0.01), ValueError, "w_bg"),
        (lambda: cat_loss(PROBS, IDS, smooth=0.0), ValueError, "smooth"),
        (lambda: cat_loss(PROBS, IDS.float()), TypeError, "integer"),
        (lambda: cat_loss(PROBS, IDS[..., :3]), ValueError, "shape"),
        (lambda: cat_loss(PROBS, IDS, ignore_mask=torch.zeros(1, 1, 4, 4)), TypeError, "bool"),
        (lambda: cat_loss(PROBS[0], IDS[0]), ValueError, "spatial"),
        (lambda: cat_loss(PROBS, IDS - 1), ValueError, ">= 0"),
        (lambda: cat_loss(PROBS, IDS, reduction="mean"), ValueError, "reduction"),
        (lambda: mil_loss(PROBS, IDS, eps=0.0), ValueError, "eps"),
        (lambda: mil_loss(PROBS.long(), IDS), TypeError, "floating"),
        (lambda: size_penalty_loss(PROBS, GT, tau=0.0), ValueError, "tau"),
        (lambda: size_penalty_loss(PROBS, GT, cap=-1.0), ValueError, "cap"),
        (lambda: size_penalty_loss(PROBS, GT, gate=0.0), ValueError, "gate"),
        (lambda: size_penalty_loss(PROBS, GT[..., :2]), ValueError, "shape"),
        (
            lambda: size_penalty_loss(PROBS, GT, ignore_mask=torch.zeros(1, 2, 4, 4, dtype=torch.bool)),
            ValueError,
            "ignore_mask",
        ),
        (lambda: tversky_loss(PROBS, GT, alpha=-1.0), ValueError, "alpha"),
        (lambda: focal_tversky_loss(PROBS, GT, gamma=0.0), ValueError, "gamma"),
        (lambda: focal_tversky_loss(PROBS, GT, reduction="sum"), ValueError, "reduction"),
        (lambda: tversky_loss(PROBS, GT, include_background=1), TypeError, "include_background"),
        (lambda: binary_focal_loss(PROBS, GT, gamma=-2.0), ValueError, "gamma"),
        (lambda: binary_focal_loss(PROBS, GT, alpha=1.5), ValueError, "alpha"),
        (lambda: component_adaptive_weights(IDS, gamma=-1.0), ValueError, "gamma"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
