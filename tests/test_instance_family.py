"""Instance loss family (Rachmadi et al. 2024, §2.1) against a plain per-instance loop.

The reference below is written from the paper's equations (2)-(10) with one boolean mask per
instance, scipy's labelling for the predicted components and numpy float64; it shares no code
with ``nnunet_lesionloss.losses.instance_losses``. The differentiable forms it evaluates (the
domain of eq. 2 including G_n, the empty-target Dice value 1, the soft prediction inside the
union of the cube maps) are those stated in docs/formulas.md §3; their values equal
the paper's whenever the prediction is binary.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nnunet_lesionloss.config import ConfigError, load_config
from nnunet_lesionloss.losses.functional import instance_losses
from nnunet_lesionloss.losses.instance_losses import (
    TERM_NAMES,
    label_prediction_components,
)
from nnunet_lesionloss.losses.terms import build_term

RANK_OF_CONNECTIVITY = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}


# --------------------------------------------------------------------------- reference loop


def _dice(p, domain, target):
    """Dice loss of p restricted to ``domain`` against ``target`` (⊂ domain); empty target → 1."""
    if target.sum() > 0:
        return 1.0 - 2.0 * (p * domain * target).sum() / ((p * domain).sum() + target.sum())
    return 1.0 if domain.any() else 0.0


def _odd_side(phi, finest, step):
    wanted = phi * finest / step
    return min(range(1, 2 * phi + 2, 2), key=lambda k: (abs(k - wanted), -k))


def _cube_map(masks, shape, sides):
    cubes = np.zeros(shape, bool)
    for mask in masks:
        centre = np.floor(np.argwhere(mask).mean(axis=0) + 0.5).astype(int)
        window = tuple(slice(max(c - s // 2, 0), min(c + s // 2 + 1, n)) for c, s, n in zip(centre, sides, shape))
        cubes[window] = True
    return cubes


def _box(mask, spacing):
    where = np.argwhere(mask)
    return where.min(axis=0) * spacing, (where.max(axis=0) + 1) * spacing


def _diou(box_a, box_b):
    (lo_a, up_a), (lo_b, up_b) = box_a, box_b
    inter = np.prod(np.clip(np.minimum(up_a, up_b) - np.maximum(lo_a, lo_b), 0, None))
    union = np.prod(up_a - lo_a) + np.prod(up_b - lo_b) - inter
    rho2 = np.sum(((lo_a + up_a) / 2 - (lo_b + up_b) / 2) ** 2)
    tau2 = np.sum((np.maximum(up_a, up_b) - np.minimum(lo_a, lo_b)) ** 2)
    return 1.0 - inter / union + rho2 / tau2


def reference_terms(
    probs,
    ids,
    *,
    threshold=0.5,
    phi=3,
    spacing=None,
    connectivity=None,
    ignore=None,
    proximity_reduction="sum",
    max_pred_instances=None,
    too_many_factor=None,
):
    probs = np.asarray(probs, dtype=np.float64)
    batch, channels = probs.shape[:2]
    shape = probs.shape[2:]
    dims = len(shape)
    connectivity = connectivity or (26 if dims == 3 else 8)
    structure = ndimage.generate_binary_structure(dims, RANK_OF_CONNECTIVITY[connectivity])
    spacing = np.ones(dims) if spacing is None else np.asarray(spacing, float)
    sides = [_odd_side(phi, spacing.min(), s) for s in spacing]
    centre = np.array([n // 2 for n in shape])
    artificial_box = ((centre - 1) * spacing, (centre + 2) * spacing)
    all_gt, all_pred, missed_rates, false_rates, centers, proximities = [], [], [], [], [], []
    for b in range(batch):
        for c in range(channels):
            p = probs[b, c]
            valid = np.ones(shape, bool) if ignore is None else ~np.asarray(ignore)[b, 0]
            gt = np.where(valid, ids[b, c], 0)
            g = gt > 0
            pred, count = ndimage.label((p > threshold) & valid, structure)
            gt_ids = [n for n in np.unique(gt) if n > 0]
            pred_ids = list(range(1, count + 1))
            touches = {(n, m) for n in gt_ids for m in pred_ids if ((gt == n) & (pred == m)).any()}
            # eq. 2: prediction inside (touching predicted instances \ other GT instances) ∪ G_n
            d_gt = {}
            for n in gt_ids:
                own = gt == n
                touching = np.isin(pred, [m for m in pred_ids if (n, m) in touches])
                domain = (touching & ~(g & ~own)) | own
                d_gt[n] = _dice(p, domain, own)
            # eq. 3: prediction inside P_m against the GT instances it touches
            d_pred = {}
            for m in pred_ids:
                target = np.isin(gt, [n for n in gt_ids if (n, m) in touches])
                d_pred[m] = _dice(p, pred == m, target)
            all_gt += list(d_gt.values())
            all_pred += list(d_pred.values())
            # eqs. 5-6: missed / false instance rates
            missed = [n for n in gt_ids if not any((n, m) in touches for m in pred_ids)]
            false = [m for m in pred_ids if not any((n, m) in touches for n in gt_ids)]
            missed_rates.append(len(missed) / len(gt_ids) if gt_ids else 0.0)
            false_rates.append(len(false) / len(pred_ids) if pred_ids else 0.0)
            # eq. 4: soft prediction inside C_GT ∪ C_P against C_GT
            gt_cubes = _cube_map([gt == n for n in gt_ids], shape, sides) & valid
            pred_cubes = _cube_map([pred == m for m in pred_ids], shape, sides) & valid
            centers.append(_dice(p, gt_cubes | pred_cubes, gt_cubes))
            # eqs. 7-10 with the artificial central instance of §2.1.4
            pair_dice = _dice(p, valid, g)
            gt_side = [(_box(gt == n, spacing), d_gt[n]) for n in gt_ids] or [(artificial_box, pair_dice)]
            # the authors' code (BrainImageAnalysis/instance-loss): no predicted instance when there are
            # more than mul_too_many per GT instance, else only the first max_cc_out of them
            kept = pred_ids
            if too_many_factor is not None and gt_ids and len(pred_ids) > too_many_factor * len(gt_ids):
                kept = []
            elif max_pred_instances is not None:
                kept = pred_ids[:max_pred_instances]
            pred_side = [(_box(pred == m, spacing), d_pred[m]) for m in kept] or [(artificial_box, pair_dice)]
            matrix = np.array([[_diou(bg, bp) for bp, _ in pred_side] for bg, _ in gt_side])
            gt_sum = sum(matrix[i].min() * loss for i, (_, loss) in enumerate(gt_side))
            pred_sum = sum(matrix[:, j].min() * loss for j, (_, loss) in enumerate(pred_side))
            if proximity_reduction == "mean":
                gt_sum, pred_sum = gt_sum / len(gt_side), pred_sum / len(pred_side)
            proximities.append((gt_sum - pred_sum) ** 2)
    return {
        "instance_gt": float(np.mean(all_gt)) if all_gt else 0.0,
        "instance_p": float(np.mean(all_pred)) if all_pred else 0.0,
        "center": float(np.mean(centers)),
        "false_gt": float(np.mean(missed_rates)),
        "false_p": float(np.mean(false_rates)),
        "proximity": float(np.mean(proximities)),
    }


# --------------------------------------------------------------------------- random cases


def random_case(seed, dims, batch, channels, connectivity, with_ignore):
    rng = np.random.default_rng(seed)
    spatial = rng.integers(4, 8, size=3) if dims == 3 else rng.integers(6, 13, size=2)
    shape = (batch, channels) + tuple(int(n) for n in spatial)
    structure = ndimage.generate_binary_structure(dims, RANK_OF_CONNECTIVITY[connectivity])
    # Smoothed noise gives blobs of a few voxels: overlaps, misses and false detections.
    noise = ndimage.uniform_filter(rng.random(shape), size=(1, 1) + (2,) * dims)
    truth = noise > np.quantile(noise, rng.uniform(0.7, 0.95))
    ids = np.zeros(shape, np.int64)
    for b in range(batch):
        for c in range(channels):
            ids[b, c] = ndimage.label(truth[b, c], structure)[0]
    jitter = ndimage.uniform_filter(rng.random(shape), size=(1, 1) + (2,) * dims)
    probs = np.clip(0.55 * truth + 0.9 * jitter - 0.3 + 0.2 * rng.random(shape), 0.0, 1.0)
    ignore = (rng.random((batch, 1) + shape[2:]) < 0.1) if with_ignore else None
    return probs, ids, ignore


def _run(probs, ids, ignore, dtype=torch.float64, **kwargs):
    tensor = torch.tensor(probs, dtype=dtype)
    mask = None if ignore is None else torch.tensor(ignore)
    return instance_losses(tensor, torch.tensor(ids), ignore_mask=mask, **kwargs)


case_parameters = dict(
    seed=st.integers(0, 2**32 - 1),
    dims=st.sampled_from([2, 3]),
    batch=st.integers(1, 2),
    channels=st.integers(1, 2),
    full_connectivity=st.booleans(),
    with_ignore=st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**case_parameters)
def test_every_term_matches_the_per_instance_loop(seed, dims, batch, channels, full_connectivity, with_ignore):
    connectivity = (26 if dims == 3 else 8) if full_connectivity else (6 if dims == 3 else 4)
    probs, ids, ignore = random_case(seed, dims, batch, channels, connectivity, with_ignore)
    expected = reference_terms(probs, ids, connectivity=connectivity, ignore=ignore)
    got = _run(probs, ids, ignore, connectivity=connectivity)
    assert set(got) == set(TERM_NAMES)
    for name in TERM_NAMES:
        assert got[name].dim() == 0
        assert float(got[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    dims=st.sampled_from([2, 3]),
    phi=st.sampled_from([1, 3, 5]),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
)
def test_anisotropic_spacing_phi_and_threshold_match_the_loop(seed, dims, phi, threshold):
    connectivity = 18 if dims == 3 else 8
    probs, ids, _ = random_case(seed, dims, 1, 2, connectivity, False)
    spacing = (3.0, 1.0, 0.8)[:dims] if dims == 3 else (2.5, 1.0)
    kwargs = dict(threshold=threshold, phi=phi, spacing=spacing, connectivity=connectivity)
    expected = reference_terms(probs, ids, **kwargs)
    got = _run(probs, ids, None, **kwargs)
    for name in TERM_NAMES:
        assert float(got[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dims=st.sampled_from([2, 3]))
def test_float32_and_torch_components_agree_with_the_loop(seed, dims):
    connectivity = 26 if dims == 3 else 8
    probs, ids, ignore = random_case(seed, dims, 2, 1, connectivity, True)
    probs = probs.astype(np.float32)  # the loop sees exactly the float32 values
    expected = reference_terms(probs, ids, ignore=ignore)
    for backend in ("cc3d", "torch"):
        got = _run(probs, ids, ignore, dtype=torch.float32, component_backend=backend)
        for name in TERM_NAMES:
            assert got[name].dtype == torch.float32
            tolerance = 1e-3 if name == "proximity" else 1e-5  # (L^GT - L^P)² cancels digits in float32
            assert float(got[name]) == pytest.approx(expected[name], rel=tolerance, abs=1e-6), (backend, name)


def test_torch_and_cc3d_prediction_components_are_the_same_partition():
    rng = np.random.default_rng(7)
    for dims, connectivities in ((3, (6, 18, 26)), (2, (4, 8))):
        mask = torch.tensor(rng.random((3,) + (14,) * dims) > 0.6)
        for connectivity in connectivities:
            host = label_prediction_components(mask, connectivity, "cc3d")
            device = label_prediction_components(mask, connectivity, "torch")
            for a, b in zip(host, device):
                expected, count = ndimage.label(
                    a.numpy() > 0, ndimage.generate_binary_structure(dims, RANK_OF_CONNECTIVITY[connectivity])
                )
                assert int(a.max()) == int(b.max()) == count
                # one-to-one label correspondence ⇔ same partition
                joint = np.unique(np.stack([a.numpy().ravel(), b.numpy().ravel(), expected.ravel()]), axis=1)
                assert joint.shape[1] == count + 1


# --------------------------------------------------------------------------- Fig. 1 of the paper


def figure_1_toy():
    """10×10 toy with two GT instances and three predictions of equal DSC (48/49 = 0.9796).

    GT: A = 48 pixels (rows 1-6 × cols 1-8), B = 1 pixel at (8, 8).
    P1: A minus one pixel + one extra pixel attached to A + B      → no MI, no FI.
    P2: A + one extra pixel attached to A, B missed                → 1 MI.
    P3: A + one isolated extra pixel, B missed                     → 1 MI, 1 FI.
    """
    truth = np.zeros((10, 10), bool)
    truth[1:7, 1:9] = True
    truth[8, 8] = True
    ids = ndimage.label(truth, np.ones((3, 3)))[0]
    p1 = truth.copy()
    p1[1, 1] = False
    p1[0, 4] = True
    p2 = truth.copy()
    p2[8, 8] = False
    p2[0, 4] = True
    p3 = truth.copy()
    p3[8, 8] = False
    p3[8, 2] = True
    return truth, ids, (p1, p2, p3)


def test_figure_1_equal_dice_different_instance_scores():
    truth, ids, predictions = figure_1_toy()
    results = []
    for prediction in predictions:
        tp = (prediction & truth).sum()
        dsc = 2 * tp / (prediction.sum() + truth.sum())
        assert dsc == pytest.approx(0.9796, abs=5e-5)
        probs = torch.tensor(prediction, dtype=torch.float32)[None, None]
        results.append(instance_losses(probs, torch.tensor(ids)[None, None]))
    r1, r2, r3 = results
    # detection: P1 neither misses nor invents; P2 misses B; P3 misses B and invents one of two
    assert [float(r["false_gt"]) for r in results] == [0.0, 0.5, 0.5]
    assert [float(r["false_p"]) for r in results] == [0.0, 0.0, 0.5]
    assert (
        float(r1["false_gt"] + r1["false_p"])
        < float(r2["false_gt"] + r2["false_p"])
        < float(r3["false_gt"] + r3["false_p"])
    )
    # instance segmentation, binary outputs: exact values of eqs. 2-3
    assert float(r1["instance_gt"]) == pytest.approx((1 - 94 / 96 + 0) / 2)
    assert float(r2["instance_gt"]) == pytest.approx((1 - 96 / 97 + 1) / 2)
    assert float(r3["instance_gt"]) == pytest.approx((0 + 1) / 2)
    assert float(r1["instance_p"]) == pytest.approx((1 - 94 / 96 + 0) / 2)
    assert float(r2["instance_p"]) == pytest.approx(1 - 96 / 97)
    assert float(r3["instance_p"]) == pytest.approx((0 + 1) / 2)
    assert float(r1["instance_gt"]) < float(r2["instance_gt"])
    assert float(r1["instance_p"]) < float(r3["instance_p"])
    for prediction, result in zip(predictions, results):
        expected = reference_terms(prediction[None, None].astype(float), ids[None, None])
        for name in TERM_NAMES:
            assert float(result[name]) == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name


# --------------------------------------------------------------------------- gradients


def trainable_case(dims):
    """Case where the paper's code has no gradient: it binarises the output before every term.

    GT A (4^D) half predicted (p = 0.8 / 0.4 along the last axis), GT B (2^D) missed (p = 0.3),
    false blob C (2^D, p = 0.7). Returns probs, ids and the slices of B, C and A's unpredicted half.
    """
    shape = (12,) * dims
    lead = (slice(1, 5),) * (dims - 1)
    missed = (slice(8, 10),) * dims
    false = (slice(8, 10), slice(1, 3)) + (slice(8, 10),) * (dims - 2)
    ids = np.zeros(shape, np.int64)
    ids[lead + (slice(1, 5),)] = 1
    ids[missed] = 2
    probs = np.full(shape, 0.05)
    probs[lead + (slice(1, 3),)] = 0.8
    probs[lead + (slice(3, 5),)] = 0.4
    probs[missed] = 0.3
    probs[false] = 0.7
    return probs, ids, missed, false, lead + (slice(3, 5),)


@pytest.mark.parametrize("dims", [2, 3])
def test_every_term_has_a_gradient_where_the_papers_code_has_none(dims):
    probs, ids, missed, false, unpredicted = trainable_case(dims)
    leaf = torch.tensor(probs, dtype=torch.float32)[None, None].requires_grad_(True)
    terms = instance_losses(leaf, torch.tensor(ids)[None, None])
    assert terms["false_gt"].item() == 0.5 and terms["false_p"].item() == 0.5
    gradients = {name: torch.autograd.grad(value, leaf, retain_graph=True)[0][0, 0] for name, value in terms.items()}
    for name, gradient in gradients.items():
        assert torch.isfinite(gradient).all(), name
        assert gradient.abs().sum() > 0, name
    # missed GT instance B: raising p there lowers the GT-side terms
    assert (gradients["instance_gt"][missed] < 0).all()
    assert (gradients["false_gt"][missed] < 0).all()
    # false instance C: lowering p there lowers the prediction-side terms
    assert (gradients["instance_p"][false] > 0).all()
    assert (gradients["false_p"][false] > 0).all()
    # centre cubes: GT cube of B pulled up, predicted cube of C pushed down
    assert gradients["center"][missed].sum() < 0
    assert gradients["center"][false].sum() > 0
    # the unpredicted half of A (p = 0.4) is pulled up by the GT instance term
    assert (gradients["instance_gt"][unpredicted] < 0).all()


def test_straight_through_keeps_the_rate_value_and_the_instance_dice_gradient():
    probs, ids, missed, _, _ = trainable_case(3)
    leaf = torch.tensor(probs)[None, None].requires_grad_(True)
    terms = instance_losses(leaf, torch.tensor(ids)[None, None], terms=("false_gt",))
    assert terms["false_gt"].item() == 0.5  # 1 missed of 2, whatever the soft p inside B
    (gradient,) = torch.autograd.grad(terms["false_gt"], leaf)
    # d/dp of (1/N)·d_B with d_B = 1 - 2 S/(S + |B|): -(1/2)·2|B|/(S + |B|)² on B's voxels, 0 elsewhere
    s, size = 0.3 * 8, 8.0
    expected = -0.5 * 2 * size / (s + size) ** 2
    assert torch.allclose(gradient[0, 0][missed], torch.full((2, 2, 2), expected, dtype=torch.float64))
    gradient[0, 0][missed] = 0
    assert gradient.abs().sum() == 0


# --------------------------------------------------------------------------- empty cases (§2.1.4)


@pytest.mark.parametrize("dims", [2, 3])
def test_no_ground_truth_and_no_prediction_costs_nothing(dims):
    probs = torch.full((2, 1) + (8,) * dims, 0.1, requires_grad=True)
    terms = instance_losses(probs, torch.zeros((2, 1) + (8,) * dims, dtype=torch.long))
    for name, value in terms.items():
        assert value.item() == 0.0, name
    sum(terms.values()).backward()
    assert torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_missed_everything_uses_the_artificial_prediction(dims):
    shape = (1, 1) + (9,) * dims
    ids = np.zeros(shape, np.int64)
    ids[(0, 0) + (slice(0, 2),) * dims] = 1
    probs = np.full(shape, 0.2)
    expected = reference_terms(probs, ids)
    leaf = torch.tensor(probs).requires_grad_(True)
    terms = instance_losses(leaf, torch.tensor(ids))
    assert terms["false_gt"].item() == 1.0 and terms["false_p"].item() == 0.0 and terms["instance_p"].item() == 0.0
    assert terms["proximity"].item() > 0
    for name in TERM_NAMES:
        assert terms[name].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name
    (gradient,) = torch.autograd.grad(terms["proximity"], leaf)
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_prediction_without_ground_truth_uses_the_artificial_ground_truth(dims):
    # Two false blobs: with a single one, eq. 8 compares DIoU·1 with DIoU·1 and gives exactly 0.
    shape = (1, 1) + (9,) * dims
    probs = np.full(shape, 0.1)
    probs[(0, 0) + (slice(6, 8),) * dims] = 0.9
    probs[(0, 0) + (slice(0, 1),) * dims] = 0.8
    ids = np.zeros(shape, np.int64)
    expected = reference_terms(probs, ids)
    leaf = torch.tensor(probs).requires_grad_(True)
    terms = instance_losses(leaf, torch.tensor(ids))
    assert terms["false_p"].item() == 1.0 and terms["false_gt"].item() == 0.0 and terms["instance_gt"].item() == 0.0
    assert terms["proximity"].item() > 0
    for name in TERM_NAMES:
        assert terms[name].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name
    (gradient,) = torch.autograd.grad(terms["proximity"], leaf)
    assert gradient.abs().sum() > 0


# --------------------------------------------------------------------------- API


def test_terms_subset_autocast_and_compounds():
    probs, ids, _, _, _ = trainable_case(3)
    tensor = torch.tensor(probs, dtype=torch.bfloat16)[None, None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        subset = instance_losses(tensor, torch.tensor(ids)[None, None], terms=("instance_gt", "center"))
    assert list(subset) == ["instance_gt", "center"]
    assert all(v.dtype == torch.float32 for v in subset.values())
    full = instance_losses(tensor.float(), torch.tensor(ids)[None, None])
    assert float(subset["center"]) == pytest.approx(float(full["center"]), rel=1e-6)
    # the compounds (eqs. 12-14) as the trainer configs define them: L_seg weight and sub-term weights
    expected = {
        "ici": (0.25, 0.5 * float(full["instance_gt"]) + 0.25 * float(full["center"])),
        "false": (1.0, float(full["false_p"]) + float(full["false_gt"])),
        # the trainer's default: per-side means of eqs. 9-10 (docs/formulas.md §3)
        "proximity": (
            1.0,
            0.1
            * float(
                instance_losses(tensor.float(), torch.tensor(ids)[None, None], proximity_reduction="mean")["proximity"]
            ),
        ),
    }
    ids_tensor = torch.tensor(ids)[None, None]
    for name, (seg_weight, instance_part) in expected.items():
        config = load_config(name, env={})
        assert config["base"]["weight"] == seg_weight
        term = build_term("instance_family", config["terms"]["instance_family"])
        assert float(term(tensor.float(), ids_tensor)) == pytest.approx(instance_part, rel=1e-6)
    with pytest.raises(ConfigError, match="unknown sub-term"):
        build_term("instance_family", {"subterms": {"blob": 1.0}})
    with pytest.raises(ConfigError, match="subterms"):
        build_term("instance_family", {"params": {"weights": {"proximity": 0.1}}, "subterms": {"proximity": 0.1}})


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(threshold=1.0), ValueError, "threshold"),
        (dict(phi=2), ValueError, "phi"),
        (dict(phi=0), ValueError, "phi"),
        (dict(connectivity=8), ValueError, "connectivity must be one of \\(6, 18, 26\\)"),
        (dict(spacing=(1.0, 1.0)), ValueError, "spacing"),
        (dict(spacing=(1.0, 0.0, 1.0)), ValueError, "spacing"),
        (dict(terms=("instance_gt", "blob")), ValueError, "terms"),
        (dict(terms=()), ValueError, "terms"),
        (dict(component_backend="gpu"), ValueError, "component_backend"),
        (dict(ignore_mask=torch.zeros(1, 1, 4, 4, 4, dtype=torch.uint8)), TypeError, "ignore_mask must be bool"),
        (dict(ignore_mask=torch.zeros(1, 1, 4, 4, 5, dtype=torch.bool)), ValueError, "ignore_mask shape"),
    ],
)
def test_clear_errors(kwargs, error, message):
    probs = torch.rand(1, 1, 4, 4, 4)
    ids = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    with pytest.raises(error, match=message):
        instance_losses(probs, ids, **kwargs)


def test_clear_errors_on_inputs():
    with pytest.raises(TypeError, match="floating-point"):
        instance_losses(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="must equal probs shape"):
        instance_losses(torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        instance_losses(torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="connectivity must be one of \\(4, 8\\)"):
        instance_losses(torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long), connectivity=26)


@pytest.mark.parametrize("seed", [3, 11])
def test_each_term_alone_equals_its_value_among_all_terms(seed):
    probs, ids, ignore = random_case(seed, 3, 2, 2, 26, True)
    everything = _run(probs, ids, ignore)
    for name in TERM_NAMES:
        alone = _run(probs, ids, ignore, terms=(name,))
        assert list(alone) == [name]
        assert alone[name].item() == pytest.approx(everything[name].item(), rel=1e-12, abs=1e-15), name


def test_sparse_ground_truth_numbering_gives_the_same_terms():
    probs, ids, ignore = random_case(5, 3, 2, 2, 26, False)
    consecutive = _run(probs, ids, ignore)
    sparse = _run(probs, np.where(ids > 0, ids * 1_000_003 + 7, 0), ignore)
    for name in TERM_NAMES:
        assert sparse[name].item() == pytest.approx(consecutive[name].item(), rel=1e-12, abs=1e-15), name


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**case_parameters)
def test_proximity_mean_reduction_matches_the_loop(seed, dims, batch, channels, full_connectivity, with_ignore):
    """'mean' (beyond the paper): eq. 8 on the per-side means of eqs. 9-10."""
    connectivity = (26 if dims == 3 else 8) if full_connectivity else (6 if dims == 3 else 4)
    probs, ids, ignore = random_case(seed, dims, batch, channels, connectivity, with_ignore)
    ours = _run(probs, ids, ignore, connectivity=connectivity, terms=("proximity",), proximity_reduction="mean")
    expected = reference_terms(probs, ids, connectivity=connectivity, ignore=ignore, proximity_reduction="mean")
    assert float(ours["proximity"]) == pytest.approx(expected["proximity"], rel=1e-5, abs=1e-12)
    with pytest.raises(ValueError, match="proximity_reduction"):
        _run(probs, ids, ignore, proximity_reduction="max")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    **case_parameters,
    max_pred=st.sampled_from([None, 1, 2]),
    factor=st.sampled_from([None, 0.5, 1.0, 3.0]),
    reduction=st.sampled_from(["sum", "mean"]),
)
def test_proximity_with_the_authors_caps_matches_the_loop(
    seed, dims, batch, channels, full_connectivity, with_ignore, max_pred, factor, reduction
):
    """max_cc_out / mul_too_many of the authors' code, applied to the predicted side of eqs. 7-10."""
    connectivity = (26 if dims == 3 else 8) if full_connectivity else (6 if dims == 3 else 4)
    probs, ids, ignore = random_case(seed, dims, batch, channels, connectivity, with_ignore)
    caps = dict(proximity_reduction=reduction, max_pred_instances=max_pred, too_many_factor=factor)
    ours = _run(probs, ids, ignore, connectivity=connectivity, terms=("proximity",), **caps)
    expected = reference_terms(probs, ids, connectivity=connectivity, ignore=ignore, **caps)
    assert float(ours["proximity"]) == pytest.approx(expected["proximity"], rel=1e-5, abs=1e-12)
    leaf = torch.tensor(probs, requires_grad=True)
    mask = None if ignore is None else torch.tensor(ignore)
    value = instance_losses(leaf, torch.tensor(ids), ignore_mask=mask, connectivity=connectivity, **caps)
    (grad,) = torch.autograd.grad(value["proximity"], leaf)
    assert torch.isfinite(grad).all(), "capped instances must not leak inf·0 into the gradient"


def _early_training_batch(size=32, seed=0):
    """Two small lesions per patch, foreground logit -2 + N(0, 1): a fresh network's speckles."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((2, 1, size, size, size), np.int64)
    for b in range(2):
        ids[b, 0, 8:11, 8:11, 8:11] = 1
        ids[b, 0, 20:22, 20:23, 14:16] = 2
    probs = 1 / (1 + np.exp(-(-2.0 + rng.standard_normal(ids.shape))))
    return probs, ids


def test_proximity_of_early_training_stays_on_the_scale_of_one_instance():
    # eqs. 9-10 as sums grow with the square of the number of predicted instances: 0.1·L_proximity
    # is in the thousands on a fresh network's speckles; the per-side means (the trainer's default)
    # are below DIoU·d < 2 per side, so 0.1·L_proximity < 0.4, and the authors' caps bound the sums
    probs, ids = _early_training_batch()
    summed = 0.1 * float(_run(probs, ids, None, terms=("proximity",), proximity_reduction="sum")["proximity"])
    mean = 0.1 * float(_run(probs, ids, None, terms=("proximity",), proximity_reduction="mean")["proximity"])
    capped = _run(probs, ids, None, terms=("proximity",), max_pred_instances=50, too_many_factor=50)
    assert summed > 1e3
    assert mean < 0.4
    assert 0.1 * float(capped["proximity"]) < 1.0


def test_proximity_caps_are_validated():
    probs, ids, ignore = random_case(0, 2, 1, 1, 8, False)
    with pytest.raises(ValueError, match="max_pred_instances"):
        _run(probs, ids, ignore, max_pred_instances=0)
    with pytest.raises(ValueError, match="too_many_factor"):
        _run(probs, ids, ignore, too_many_factor=-1.0)
