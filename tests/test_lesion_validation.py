"""Lesion metrics on validation patches: hand-built batches with exact counts, a slow per-lesion loop
on random batches, the reduction over split batches and over real (gloo) ranks, the EMA rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from nnunet_lesionloss.config import ConfigError, load_config
from nnunet_lesionloss.training import lesion_validation as lv

FIELDS = lv.COUNT_FIELDS


def as_dict(counts) -> dict:
    return {name: int(counts[k]) for k, name in enumerate(FIELDS)}


def box(mask, *slices):
    mask[slices] = True
    return mask


# ----------------------------------------------------------------------------- hand-built batches
def test_counts_by_hand_one_patch():
    """Reference: a 4x4x4 lesion (64 voxels, hit), a 1-voxel lesion (missed), a 2x2x2 lesion (8 voxels,
    hit). Prediction: two true components (one covers the big lesion partly, one touches the 8-voxel
    lesion by one voxel) and one false 3-voxel component."""
    ref = np.zeros((16, 16, 16), bool)
    box(ref, slice(1, 5), slice(1, 5), slice(1, 5))
    ref[10, 10, 10] = True
    box(ref, slice(12, 14), slice(2, 4), slice(2, 4))
    pred = np.zeros_like(ref)
    box(pred, slice(2, 4), slice(2, 4), slice(2, 4))
    pred[13, 3, 3] = True
    box(pred, slice(8, 9), slice(0, 3), slice(14, 15))
    counts = lv.patch_lesion_counts(pred[None, None], ref[None, None], connectivity=26, small_lesion_voxels=50)
    assert as_dict(counts) == {
        "patches": 1,
        "ref_lesions": 3,
        "ref_detected": 2,
        "small_ref_lesions": 2,  # 1 and 8 voxels; 64 > 50
        "small_ref_detected": 1,
        "pred_lesions": 3,
        "pred_true": 2,
    }
    rates = lv.lesion_rates(counts)
    assert rates["lesion_recall"] == pytest.approx(2 / 3)
    assert rates["lesion_precision"] == pytest.approx(2 / 3)
    assert rates["lesion_f1"] == pytest.approx(2 / 3)
    assert rates["small_lesion_recall"] == pytest.approx(1 / 2)
    assert rates["fp_lesions_per_patch"] == pytest.approx(1.0)


def test_a_lesion_cut_by_the_patch_border_counts_with_its_part_inside():
    """A 10x10x10 lesion (1000 voxels) of which a 3x3x3 corner lies inside the patch is one lesion of
    27 voxels there: small at a 50-voxel threshold. A lesion whose inside part is hit is detected."""
    volume = np.zeros((40, 40, 40), bool)
    box(volume, slice(0, 10), slice(0, 10), slice(0, 10))
    box(volume, slice(20, 24), slice(20, 24), slice(20, 24))  # 64 voxels, fully inside
    patch = (slice(7, 31), slice(7, 31), slice(7, 31))
    ref = volume[patch]
    assert ref.sum() == 27 + 64
    pred = np.zeros_like(ref)
    pred[0:3, 0:3, 0:3] = True  # the part of the cut lesion inside the patch
    counts = as_dict(lv.patch_lesion_counts(pred[None, None], ref[None, None], connectivity=26, small_lesion_voxels=50))
    assert counts["ref_lesions"] == 2 and counts["small_ref_lesions"] == 1
    assert counts["ref_detected"] == 1 and counts["small_ref_detected"] == 1
    assert counts["pred_lesions"] == counts["pred_true"] == 1
    # the same lesion at threshold 26 is not small: the threshold is inclusive (|g| <= τ, CATMIL eq. 3.6)
    at_26 = as_dict(lv.patch_lesion_counts(pred[None, None], ref[None, None], connectivity=26, small_lesion_voxels=26))
    at_27 = as_dict(lv.patch_lesion_counts(pred[None, None], ref[None, None], connectivity=26, small_lesion_voxels=27))
    assert at_26["small_ref_lesions"] == 0 and at_27["small_ref_lesions"] == 1


def test_empty_batch_and_one_sided_batches():
    empty = np.zeros((2, 1, 6, 6, 6), bool)
    counts = lv.patch_lesion_counts(empty, empty, connectivity=26, small_lesion_voxels=50)
    assert as_dict(counts) == dict.fromkeys(FIELDS, 0) | {"patches": 2}
    rates = lv.lesion_rates(counts)
    assert all(math.isnan(rates[name]) for name in ("lesion_recall", "lesion_precision", "lesion_f1"))
    assert math.isnan(rates["small_lesion_recall"]) and rates["fp_lesions_per_patch"] == 0.0

    only_pred = empty.copy()
    only_pred[0, 0, 1, 1, 1] = True
    rates = lv.lesion_rates(lv.patch_lesion_counts(only_pred, empty, connectivity=26, small_lesion_voxels=50))
    assert rates["lesion_precision"] == 0.0 and math.isnan(rates["lesion_recall"]) and rates["lesion_f1"] == 0.0
    assert rates["fp_lesions_per_patch"] == 0.5
    rates = lv.lesion_rates(lv.patch_lesion_counts(empty, only_pred, connectivity=26, small_lesion_voxels=50))
    assert rates["lesion_recall"] == 0.0 and math.isnan(rates["lesion_precision"]) and rates["lesion_f1"] == 0.0
    assert rates["small_lesion_recall"] == 0.0


def test_ignore_label_removes_voxels_from_both_masks():
    """A predicted component inside the ignored region is no false positive; a reference lesion inside it
    is no lesion; a component straddling the border counts with its valid part."""
    ref = np.zeros((1, 1, 12, 12, 12), bool)
    ref[0, 0, 1, 1, 1] = True  # ignored
    box(ref[0, 0], slice(8, 10), slice(8, 10), slice(8, 10))  # valid, missed
    pred = np.zeros_like(ref)
    pred[0, 0, 2, 5, 5] = True  # ignored
    box(pred[0, 0], slice(3, 8), slice(0, 1), slice(0, 1))  # straddles: x 3-5 ignored, 6-7 valid -> one false lesion
    valid = np.ones((1, 12, 12, 12), bool)
    valid[0, :6] = False
    counts = as_dict(lv.patch_lesion_counts(pred, ref, connectivity=26, small_lesion_voxels=50, valid=valid))
    assert counts["ref_lesions"] == 1 and counts["ref_detected"] == 0
    assert counts["pred_lesions"] == 1 and counts["pred_true"] == 0
    # the batch's component ids (ignored voxels already 0) give the same counts
    ids = ndimage.label(ref[0, 0] & valid[0], structure=np.ones((3, 3, 3)))[0][None, None]
    assert (
        as_dict(lv.patch_lesion_counts(pred, ref_ids=ids, connectivity=26, small_lesion_voxels=50, valid=valid))
        == counts
    )


def test_predicted_masks_label_based_and_region_based():
    logits = torch.zeros(1, 3, 2, 2, 2)
    logits[0, 1, 0] = 5.0  # class 1 on the first slab
    logits[0, 2, 1, 0] = 5.0  # class 2 on half of the second
    per_class = lv.predicted_masks(logits, [(1,), (2,)])
    assert per_class.shape == (1, 2, 2, 2, 2) and per_class.dtype == torch.bool
    assert per_class[0, 0].sum() == 4 and per_class[0, 1].sum() == 2
    union = lv.predicted_masks(logits, [(1, 2)])
    assert union[0, 0].sum() == 6
    # regions: every channel on its own, sigmoid > 0.5 <=> logit > 0; regions may overlap
    regions = torch.tensor([[[[[1.0, -1.0]]], [[[2.0, 0.0]]]]])  # [1, 2, 1, 1, 2]
    masks = lv.predicted_masks(regions, None)
    assert masks.tolist() == [[[[[True, False]]], [[[True, False]]]]]


def test_region_based_channels_are_counted_one_by_one():
    """Two overlapping regions (whole tumour ⊃ core): the same voxels are a lesion of each region."""
    wt = np.zeros((8, 8, 8), bool)
    box(wt, slice(0, 4), slice(0, 4), slice(0, 4))
    wt[7, 7, 7] = True
    core = np.zeros_like(wt)
    box(core, slice(1, 3), slice(1, 3), slice(1, 3))
    ref = np.stack([wt, core])[None]
    pred = np.stack([core, np.zeros_like(core)])[None]  # finds wt's big lesion, misses the core
    counts = as_dict(lv.patch_lesion_counts(pred, ref, connectivity=26, small_lesion_voxels=8))
    assert counts["ref_lesions"] == 3 and counts["ref_detected"] == 1
    assert counts["small_ref_lesions"] == 2 and counts["small_ref_detected"] == 0  # the 1-voxel wt lesion, the core


def test_2d_patches_and_connectivity():
    ref = np.zeros((1, 1, 6, 6), bool)
    ref[0, 0, 0, 0] = ref[0, 0, 1, 1] = True  # diagonal: one lesion at 8-, two at 4-connectivity
    pred = np.zeros_like(ref)
    pred[0, 0, 0, 0] = True
    eight = as_dict(lv.patch_lesion_counts(pred, ref, connectivity=8, small_lesion_voxels=1))
    four = as_dict(lv.patch_lesion_counts(pred, ref, connectivity=4, small_lesion_voxels=1))
    assert (eight["ref_lesions"], eight["ref_detected"], eight["small_ref_lesions"]) == (1, 1, 0)
    assert (four["ref_lesions"], four["ref_detected"], four["small_ref_lesions"]) == (2, 1, 2)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="exactly one of ref_masks or ref_ids"):
        lv.patch_lesion_counts(np.zeros((1, 1, 2, 2, 2), bool), connectivity=26, small_lesion_voxels=1)
    with pytest.raises(ValueError, match=r"\[B, C, \*spatial\]"):
        lv.patch_lesion_counts(
            np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool), connectivity=26, small_lesion_voxels=1
        )


# ----------------------------------------------------------------------------- against a slow loop
def slow_counts(pred: np.ndarray, ref: np.ndarray, connectivity: int, small: int) -> dict:
    """Per lesion, from the definitions: scipy's labelling, the DSC of every (reference, predicted) lesion
    pair by a loop, then the evaluation's default rule: a one-to-one assignment of the pairs with DSC >= 0.1
    maximising the DSC sum (scipy's assignment on the full pair matrix)."""
    from scipy.optimize import linear_sum_assignment

    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    out = dict.fromkeys(FIELDS, 0)
    out["patches"] = pred.shape[0]
    for b in range(pred.shape[0]):
        for c in range(pred.shape[1]):
            ref_ids, n_ref = ndimage.label(ref[b, c], structure=structure)
            pred_ids, n_pred = ndimage.label(pred[b, c], structure=structure)
            dsc = np.zeros((n_ref, n_pred))
            for k in range(n_ref):
                for j in range(n_pred):
                    a, p = ref_ids == k + 1, pred_ids == j + 1
                    dsc[k, j] = 2 * (a & p).sum() / (a.sum() + p.sum())
            eligible = dsc >= 0.1
            rows, cols = linear_sum_assignment(np.where(eligible, 1 - dsc, 1 + 1e-6))
            matched = [(k, j) for k, j in zip(rows, cols) if eligible[k, j]]
            hit = {k for k, _ in matched}
            for k in range(n_ref):
                out["ref_lesions"] += 1
                out["ref_detected"] += k in hit
                if (ref_ids == k + 1).sum() <= small:
                    out["small_ref_lesions"] += 1
                    out["small_ref_detected"] += k in hit
            out["pred_lesions"] += n_pred
            out["pred_true"] += len(matched)
    return out


batches = st.integers(1, 3).flatmap(
    lambda b: st.tuples(
        arrays(np.bool_, (b, 2, 5, 6, 4), elements=st.booleans()),
        arrays(np.bool_, (b, 2, 5, 6, 4), elements=st.booleans()),
    )
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(batches, st.sampled_from([6, 18, 26]), st.integers(1, 12))
def test_counts_match_a_per_lesion_loop(masks, connectivity, small):
    pred, ref = masks
    fast = lv.patch_lesion_counts(pred, ref, connectivity=connectivity, small_lesion_voxels=small)
    assert as_dict(fast) == slow_counts(pred, ref, connectivity, small)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(batches, st.integers(1, 12))
def test_counts_of_split_batches_sum_to_the_counts_of_the_batch(masks, small):
    """What DDP does: each rank counts its share, the counts are summed, the rates come last."""
    pred, ref = masks
    whole = lv.patch_lesion_counts(pred, ref, connectivity=26, small_lesion_voxels=small)
    parts = [
        lv.patch_lesion_counts(pred[k : k + 1], ref[k : k + 1], connectivity=26, small_lesion_voxels=small)
        for k in range(pred.shape[0])
    ]
    assert np.array_equal(np.sum(parts, axis=0), whole)
    assert lv.lesion_rates(np.sum(parts, axis=0)) == pytest.approx(lv.lesion_rates(whole), nan_ok=True)


def test_rates_of_summed_counts_are_not_means_of_rates():
    """Rank 0 saw 1 of 1 lesion, rank 1 saw 0 of 9: recall is 0.1, not the mean 0.5."""
    rank0 = np.array([1, 1, 1, 0, 0, 1, 1])
    rank1 = np.array([1, 9, 0, 0, 0, 0, 0])
    assert lv.lesion_rates(rank0 + rank1)["lesion_recall"] == pytest.approx(0.1)


def _rank_process(rank: int, world: int, init_file: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        counts = np.arange(len(FIELDS), dtype=np.int64) * (rank + 1)
        results[rank] = lv.sum_over_ranks(counts).tolist()
    finally:
        torch.distributed.destroy_process_group()


def test_sum_over_ranks_with_a_real_process_group(tmp_path):
    """Two gloo ranks on the CPU: both receive the sum of their counts."""
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.start_processes(
        _rank_process, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True, start_method="spawn"
    )
    expected = (np.arange(len(FIELDS)) * 3).tolist()
    assert results[0] == results[1] == expected
    assert not torch.distributed.is_initialized()
    assert lv.sum_over_ranks(np.arange(3)).tolist() == [0, 1, 2]  # no process group: unchanged


# ----------------------------------------------------------------------------- EMA, threshold, config
def test_ema_and_best_rule():
    assert lv.ema_update(None, 0.5) == 0.5
    assert lv.ema_update(0.5, 1.0) == pytest.approx(0.55)  # nnU-Net's 0.9 / 0.1
    assert lv.ema_update(0.5, float("nan")) == 0.5  # an epoch without lesions keeps the average
    assert math.isnan(lv.ema_update(None, float("nan")))
    assert lv.ema_update(float("nan"), 0.3) == 0.3
    assert lv.is_new_best([0.2])
    assert lv.is_new_best([0.2, 0.3]) and not lv.is_new_best([0.3, 0.3]) and not lv.is_new_best([0.3, 0.2])
    assert not lv.is_new_best([0.3, float("nan")]) and lv.is_new_best([float("nan"), 0.1])


def test_small_lesion_threshold_from_the_evaluation_definition():
    assert lv.small_lesion_voxels(0.05, (1.0, 1.0, 1.0)) == 50
    assert lv.small_lesion_voxels(0.05, (3.0, 1.0, 1.0)) == 16  # 16 · 3 mm³ = 48 <= 50 < 51
    assert lv.small_lesion_voxels(0.05, (0.5, 0.5, 0.5)) == 400
    assert lv.small_lesion_voxels(0.05, (4.0, 4.0, 4.0)) == 0  # no lesion is that small there


def test_lesion_validation_config_keys(tmp_path):
    config = load_config("dice_ce", env={})
    assert config["lesion_validation"] == {
        "enabled": True,
        "connectivity": "full",
        "small_lesion_voxels": "auto",
        "checkpoint_metric": "lesion_f1",
        "fold_evaluation": "default",
    }
    override = tmp_path / "o.yaml"
    override.write_text("lesion_validation: {small_lesion_voxels: 20, checkpoint_metric: small_lesion_recall}\n")
    config = load_config("catmil", env={"NNUNET_LESIONLOSS_CONFIG": str(override)})
    assert config["lesion_validation"]["small_lesion_voxels"] == 20
    assert config["lesion_validation"]["checkpoint_metric"] == "small_lesion_recall"
    assert config["lesion_validation"]["fold_evaluation"] == "default"
    for text, message in [
        ("lesion_validation: {checkpoint: x}", "unknown key"),
        ("lesion_validation: {checkpoint_metric: dice}", "checkpoint_metric must be one of"),
        ("lesion_validation: {fold_evaluation: nope}", "fold_evaluation must be an evaluation preset"),
        ("lesion_validation: {small_lesion_voxels: 0}", "small_lesion_voxels must be >= 1"),
        ("lesion_validation: {connectivity: 7}", "lesion_validation.connectivity"),
        ("lesion_validation: {enabled: 1}", "enabled must be true or false"),
        ("lesion_validation: [1]", "lesion_validation must be a mapping"),
    ]:
        override.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message):
            load_config("catmil", env={"NNUNET_LESIONLOSS_CONFIG": str(override)})
    override.write_text("lesion_validation: {checkpoint_metric: null, fold_evaluation: null}\n")
    config = load_config("catmil", env={"NNUNET_LESIONLOSS_CONFIG": str(override)})
    assert config["lesion_validation"]["checkpoint_metric"] is None
