"""Dataset statistics that trainers derive settings from: the lesion volume V_g of training patches
drawn the way nnU-Net's loader draws them, against slow loops and hand-built datasets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_lesionloss.components import group_masks, label_components
from nnunet_lesionloss.losses.size_penalty import estimate_size_penalty_tau
from nnunet_lesionloss.training.dataset_statistics import draw_training_patches, patch_foreground_volumes


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    patches=st.integers(0, 3),
    groups=st.sampled_from([[(1,)], [(1,), (2,)], [(1, 2)]]),
)
def test_patch_volumes_match_a_per_patch_loop(seed, patches, groups):
    rng = np.random.default_rng(seed)
    labels = [rng.choice([-1, 0, 0, 0, 1, 2], size=(7, 6, 5)).astype(np.int16) for _ in range(patches)]
    volumes = patch_foreground_volumes(labels, lambda patch: group_masks(patch, groups))
    expected = [int(np.isin(patch, group).sum()) for patch in labels for group in groups]
    assert volumes.dtype == np.int64 and volumes.tolist() == expected


class _CasesInMemory:
    """The interface nnU-Net's loader reads from a preprocessed dataset (identifiers, load_case with
    the foreground class locations of its properties), for hand-built label maps."""

    def __init__(self, segmentations: dict[str, np.ndarray]):
        self.segmentations = segmentations
        self.identifiers = sorted(segmentations)

    def load_case(self, key):
        seg = self.segmentations[key][None].astype(np.int16)
        locations = {1: np.argwhere(seg == 1)}
        return np.zeros(seg.shape, dtype=np.float32), seg, None, {"class_locations": locations}


LABELS = LabelManager({"background": 0, "lesion": 1}, regions_class_order=None)


def _draw(dataset, patch, oversample, count, initial=None):
    return draw_training_patches(
        dataset,
        LABELS,
        batch_size=2,
        initial_patch_size=initial or patch,
        patch_size=patch,
        oversample_foreground_percent=oversample,
        num_patches=count,
    )


def test_patches_follow_the_loaders_foreground_oversampling():
    # one lesion voxel near a corner of a 40³ case: nnU-Net forces foreground on the last
    # round(B·p) samples of each batch (B = 2, p = 0.5: the second), the first is drawn uniformly
    seg = np.zeros((40, 40, 40), dtype=np.int16)
    seg[5, 5, 5] = 1
    patches = _draw(_CasesInMemory({"a": seg}), (16, 16, 16), 0.5, 40)
    assert all(p.shape == (16, 16, 16) for p in patches)
    volumes = patch_foreground_volumes(patches, lambda p: group_masks(p, [(1,)]))
    assert volumes[1::2].tolist() == [1] * 20, "every oversampled patch holds the lesion"
    assert volumes[0::2].sum() < 10, "a uniform patch holds it with probability (6/25)³ ≈ 1 %"
    assert _draw(_CasesInMemory({"a": seg}), (16, 16, 16), 0.5, 40)[5].tolist() == patches[5].tolist(), "seeded"


def test_centre_crop_from_the_initial_patch_size():
    # nnU-Net draws the rotation-padded initial patch and keeps its centre: with the lesion voxel
    # forced to the centre of a 24³ initial patch, it lies at the centre of the 16³ patch too
    seg = np.zeros((40, 40, 40), dtype=np.int16)
    seg[20, 20, 20] = 1
    patches = _draw(_CasesInMemory({"a": seg}), (16, 16, 16), 1.0, 4, initial=(24, 24, 24))
    assert all(p.shape == (16, 16, 16) and p[8, 8, 8] == 1 for p in patches)


def test_tau_from_patch_volumes_sees_the_lesions_of_a_patch_together():
    # five 27-voxel lesions within a 16³ block: every foreground patch of 32³ holds all five, so
    # V_g = 135. τ from single components (the former statistic) was 27, which put such a patch
    # at exp(-135/27) = exp(-5); τ from the patch volumes puts it at exp(-1)
    seg = np.zeros((48, 48, 48), dtype=np.int16)
    for z, y, x in [(16, 16, 16), (16, 16, 24), (16, 24, 16), (24, 16, 16), (26, 26, 26)]:
        seg[z : z + 3, y : y + 3, x : x + 3] = 1
    patches = _draw(_CasesInMemory({"a": seg}), (32, 32, 32), 1.0, 20)
    volumes = patch_foreground_volumes(patches, lambda p: group_masks(p, [(1,)]))
    assert volumes.tolist() == [135] * 20
    component_sizes = np.bincount(label_components(seg > 0).ravel())[1:]
    assert np.median(component_sizes) == 27
    tau = estimate_size_penalty_tau(volumes)
    assert tau == 135.0
    assert np.exp(-135 / tau) == pytest.approx(np.exp(-1.0))
