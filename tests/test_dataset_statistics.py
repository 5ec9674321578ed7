"""Dataset statistics that trainers derive settings from, against a slow scipy loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nnunet_lesionloss.training.dataset_statistics import component_volumes


def _slow_volumes(segmentations, label_groups, connectivity):
    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    volumes = []
    for seg in segmentations:
        for group in label_groups:
            labels, count = ndimage.label(np.isin(seg[0], group), structure=structure)
            volumes += [int((labels == k).sum()) for k in range(1, count + 1)]
    return volumes


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cases=st.integers(0, 3),
    connectivity=st.sampled_from([6, 18, 26]),
    groups=st.sampled_from([[(1,)], [(1,), (2,)], [(1, 2)]]),
)
def test_component_volumes_match_a_per_case_loop(seed, cases, connectivity, groups):
    rng = np.random.default_rng(seed)
    segmentations = [rng.choice([0, 0, 0, 1, 2], size=(1, 7, 6, 5)).astype(np.int16) for _ in range(cases)]
    volumes = component_volumes(iter(segmentations), groups, connectivity)
    assert volumes.dtype == np.int64
    assert volumes.tolist() == _slow_volumes(segmentations, groups, connectivity)


def test_component_volumes_by_hand():
    seg = np.zeros((1, 5, 5, 5), dtype=np.int16)
    seg[0, 0, 0, 0] = 1
    seg[0, 1, 1, 1] = 1  # touches (0, 0, 0) at a corner only
    seg[0, 4, 4, 2:5] = 2
    assert sorted(component_volumes([seg], [(1,), (2,)], 26).tolist()) == [2, 3]
    assert sorted(component_volumes([seg], [(1,), (2,)], 6).tolist()) == [1, 1, 3]
    assert component_volumes([], [(1,)], 6).size == 0
