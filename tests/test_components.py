"""Connected components, Voronoi cells and the transform that packs them into nnU-Net's targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from nnunet_lesionloss.components import (
    cell_count_tables,
    cell_voxel_counts,
    channel_component_maps,
    component_statistics,
    label_components,
    voronoi_cells,
)
from nnunet_lesionloss.targets import TargetLayout, split_cell_counts, split_target
from nnunet_lesionloss.training.transforms import ComponentMapsTransform


def _diagonal_pair_3d() -> np.ndarray:
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = True
    mask[1, 1, 1] = True  # touches the first voxel by a corner only
    mask[3, 3, 0] = True  # isolated
    return mask


def test_connectivity_6_vs_26_on_a_corner_touch():
    mask = _diagonal_pair_3d()
    assert label_components(mask, 6).max() == 3
    assert label_components(mask, 18).max() == 3
    assert label_components(mask, 26).max() == 2
    ids = label_components(mask)  # default: full connectivity
    assert ids.dtype == np.int32 and ids.max() == 2
    assert ids[0, 0, 0] == ids[1, 1, 1] != ids[3, 3, 0]


def test_2d_connectivity_and_invalid_values():
    mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    assert label_components(mask, 4).max() == 2
    assert label_components(mask, 8).max() == 1
    with pytest.raises(ValueError, match="connectivity 6 is not valid in 2D"):
        label_components(mask, 6)
    with pytest.raises(ValueError, match="connectivity 8 is not valid in 3D"):
        label_components(np.zeros((2, 2, 2), bool), 8)


def test_empty_mask_gives_zero_maps():
    ids, cells = channel_component_maps(np.zeros((2, 5, 5, 5), bool), with_cells=True)
    assert ids.shape == cells.shape == (2, 5, 5, 5)
    assert not ids.any() and not cells.any()
    assert ids.dtype == np.int32 and cells.dtype == np.int32


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(1, 6)), elements=st.booleans()))
def test_components_match_scipy_and_cells_are_nearest_components(mask):
    ids = label_components(mask, 26)
    reference, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert ids.max() == count
    # same partition: a bijection between our ids and scipy's
    pairs = set(zip(ids[mask].tolist(), reference[mask].tolist()))
    assert len(pairs) == count
    cells = voronoi_cells(ids)
    if count == 0:
        assert not cells.any()
        return
    assert cells.min() >= 1, "every voxel belongs to some cell"
    assert np.array_equal(cells[mask], ids[mask]), "a component voxel lies in its own cell"
    # the cell's component is at the smallest Euclidean distance
    coords = np.argwhere(mask)
    for voxel in np.ndindex(mask.shape):
        distances = np.linalg.norm(coords - np.array(voxel), axis=1)
        nearest = distances.min()
        own = np.linalg.norm(coords[ids[mask] == cells[voxel]] - np.array(voxel), axis=1).min()
        assert own == pytest.approx(nearest)


def test_ignore_voxels_are_never_foreground():
    masks = np.zeros((1, 5, 5, 5), bool)
    masks[0, 1:4, 2, 2] = True
    ignore = np.zeros((5, 5, 5), bool)
    ignore[2, 2, 2] = True  # splits the line in two
    ids, _ = channel_component_maps(masks, ignore=ignore, connectivity=6)
    assert ids[0, 2, 2, 2] == 0
    assert ids.max() == 2


def _labels() -> torch.Tensor:
    seg = torch.zeros((1, 8, 8, 8), dtype=torch.int16)
    seg[0, 0:2, 0:2, 0:2] = 1
    seg[0, 5:7, 5:7, 5:7] = 1
    seg[0, 0:2, 5:7, 0:2] = 2
    seg[0, 4, 0, 0] = 3  # ignore label
    return seg


def test_transform_per_class_with_deep_supervision_scales_and_cells():
    seg = _labels()
    scales = [seg, seg[:, ::2, ::2, ::2].contiguous()]
    transform = ComponentMapsTransform(label_groups=[(1,), (2,)], ignore_label=3, with_cells=True)
    out = transform(segmentation=scales)["segmentation"]
    layout = TargetLayout(seg_channels=1, seg_dtype=torch.int16, num_channels=2, with_cells=True, scales_with_maps=None)
    assert [o.shape[0] for o in out] == [layout.packed_channels] * 2
    assert all(o.dtype == torch.int32 for o in out)
    target, ids, cells = split_target(out[0][None], layout)
    assert target.dtype == torch.int16 and torch.equal(target[0], seg)
    assert ids[0, 0].max() == 2 and ids[0, 1].max() == 1  # class 1: two lesions; class 2: one
    assert ids[0, 0, 4, 0, 0] == 0 and ids[0, 1, 4, 0, 0] == 0  # ignore voxel
    assert (cells[0, 0] > 0).all() and (cells[0, 1] == 1).all()
    _, coarse_ids, _ = split_target(out[1][None], layout)
    assert coarse_ids.shape[2:] == (4, 4, 4) and coarse_ids[0, 0].max() == 2


def test_transform_union_full_resolution_only_and_empty_batch():
    seg = _labels()
    transform = ComponentMapsTransform(label_groups=[(1, 2)], scales_with_maps=1, connectivity=6)
    out = transform(segmentation=[seg, seg[:, ::2, ::2, ::2]])["segmentation"]
    assert out[0].shape[0] == 2 and out[1].shape[0] == 1  # coarse scale keeps nnU-Net's target only
    assert out[0][1].max() == 3  # union: the two class-1 lesions and the class-2 lesion
    layout = TargetLayout(1, torch.int16, 1, False, 1)
    coarse_target, coarse_ids, _ = split_target(out[1][None], layout)
    assert coarse_ids is None and coarse_target.shape[1] == 1
    empty = ComponentMapsTransform(label_groups=[(1,)])(segmentation=torch.zeros((1, 4, 4, 4), dtype=torch.int16))
    assert not empty["segmentation"][1:].any()


def test_transform_region_mode_with_ignore_region_in_2d():
    regions = torch.zeros((3, 6, 6), dtype=torch.bool)  # 2 regions + ignore region
    regions[0, 0, 0] = regions[0, 1, 1] = True  # diagonal: 1 component at 8-connectivity
    regions[1, 3:5, 3:5] = True
    regions[2, 3, 3] = True  # ignored voxel inside region 1's square
    out = ComponentMapsTransform(num_regions=2)(segmentation=regions)["segmentation"]
    assert out.shape == (5, 6, 6)
    assert out[3].max() == 1 and out[4].max() == 1 and out[4, 3, 3] == 0
    four = ComponentMapsTransform(num_regions=2, connectivity=4)(segmentation=regions)["segmentation"]
    assert four[3].max() == 2


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        ComponentMapsTransform()
    with pytest.raises(ValueError, match="exactly one"):
        ComponentMapsTransform(label_groups=[(1,)], num_regions=1)
    with pytest.raises(ValueError, match="connectivity 26 is not valid in 2D"):
        ComponentMapsTransform(label_groups=[(1,)], connectivity=26)(
            segmentation=torch.zeros((1, 4, 4), dtype=torch.int16)
        )
    layout = TargetLayout(1, torch.int16, 2, False, None)
    with pytest.raises(ValueError, match="expected 1 .* or 3"):
        split_target(torch.zeros((1, 2, 4, 4, 4), dtype=torch.int32), layout)


# ---------------------------------------------------------------------------------------------
# Voronoi cells: exact, with the documented tie rule (smallest id among the nearest components)


def nearest_component_by_brute_force(component_ids: np.ndarray) -> np.ndarray:
    """Per voxel, the smallest id among the components at the smallest squared Euclidean distance."""
    voxels = np.argwhere(component_ids > 0)
    labels = component_ids[component_ids > 0]
    cells = np.zeros(component_ids.shape, dtype=np.int32)
    for voxel in np.ndindex(component_ids.shape):
        squared = ((voxels - np.array(voxel)) ** 2).sum(axis=1)
        cells[voxel] = labels[squared == squared.min()].min()
    return cells


@st.composite
def id_maps(draw):
    """1D-3D maps of a few ids on sparse voxels: many equidistant voxels, hence many ties."""
    dims = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9 if dims < 3 else 6), min_size=dims, max_size=dims)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    present = rng.random(shape) < draw(st.sampled_from([0.02, 0.1, 0.3, 0.7]))
    return np.where(present, rng.integers(1, draw(st.integers(2, 9)), size=shape), 0).astype(np.int32)


@settings(max_examples=150, deadline=None)
@given(id_maps())
def test_voronoi_cells_are_exact_and_break_ties_by_the_smallest_id(component_ids):
    cells = voronoi_cells(component_ids)
    assert cells.dtype == np.int32 and cells.shape == component_ids.shape
    if not component_ids.any():
        assert not cells.any()
        return
    np.testing.assert_array_equal(cells, nearest_component_by_brute_force(component_ids))


@pytest.mark.parametrize(("line", "expected_middle"), [([1, 0, 2], 1), ([2, 0, 1], 1), ([3, 0, 0, 0, 1], 1)])
def test_voronoi_tie_goes_to_the_smaller_id_whatever_its_side(line, expected_middle):
    ids = np.array([line], dtype=np.int32)
    assert voronoi_cells(ids)[0, len(line) // 2] == expected_middle
    # the same tie across the first axis of a 3D volume (ties at every pass of the separable transform)
    volume = np.zeros((len(line), 3, 3), dtype=np.int32)
    volume[:, 1, 1] = line
    assert (voronoi_cells(volume)[len(line) // 2] == expected_middle).all()


def test_voronoi_cells_match_scipy_distances_on_lesion_maps():
    """On a realistic map (many lesions, 2 classes merged into ids): the distance from every voxel to
    the component of its cell equals scipy's exact Euclidean distance transform."""
    from nnunet_lesionloss.synthetic import make_lesion_labels

    ids = label_components(make_lesion_labels((20, 26, 31), 40, seed=3) > 0, 26)
    cells = voronoi_cells(ids)
    distance = ndimage.distance_transform_edt(ids == 0)
    for n in range(1, ids.max() + 1):  # distance to component n, where cell n is
        own = ndimage.distance_transform_edt(ids != n)
        np.testing.assert_allclose(own[cells == n], distance[cells == n])


def test_cell_count_tables_count_each_cell_inside_and_outside_its_component():
    ids = np.zeros((2, 1, 9), dtype=np.int32)
    ids[0, 0, [1, 2]] = 1
    ids[0, 0, 7] = 2
    ignore = np.zeros((1, 9), bool)
    ignore[0, 8] = True
    cells = np.stack([voronoi_cells(i) for i in ids])
    np.testing.assert_array_equal(cells[0, 0], [1, 1, 1, 1, 1, 2, 2, 2, 2])  # voxel 4/5: nearer to 1/2
    tables = cell_count_tables(ids, cells, ignore)
    assert tables.dtype == np.int32 and tables.shape == ids.shape
    # K = 2; cell 1: 3 voxels outside its component, 2 inside; cell 2: 2 outside (one ignored), 1 inside
    np.testing.assert_array_equal(tables[0, 0, :6], [2, 0, 3, 2, 2, 1])
    assert not tables[0, 0, 6:].any() and not tables[1].any()  # channel 1: no component, K = 0
    np.testing.assert_array_equal(cell_voxel_counts(ids[0], cells[0], ~ignore), [0, 0, 3, 2, 2, 1])
    # a table that does not fit in its channel: K = -1 (the loss counts the cells itself)
    checker = np.zeros((1, 5), dtype=np.int32)
    checker[0, ::2] = [1, 2, 3]
    assert cell_count_tables(checker[None], voronoi_cells(checker)[None])[0, 0, 0] == -1


def test_transform_packs_the_cell_count_tables_after_the_cells():
    seg = _labels()
    out = ComponentMapsTransform(label_groups=[(1,), (2,)], ignore_label=3, with_cells=True)(segmentation=seg)
    packed = out["segmentation"][None]
    layout = TargetLayout(seg_channels=1, seg_dtype=torch.int16, num_channels=2, with_cells=True, scales_with_maps=None)
    _, ids, cells = split_target(packed, layout)
    tables = split_cell_counts(packed, layout)
    expected = cell_count_tables(ids[0].numpy(), cells[0].numpy(), seg[0].numpy() == 3)
    np.testing.assert_array_equal(tables[0].numpy(), expected)
    assert tables[0, 0].reshape(-1)[0] == 2 and tables[0, 1].reshape(-1)[0] == 1  # K per class
    no_cells = TargetLayout(1, torch.int16, 2, False, None)
    assert split_cell_counts(packed[:, :3], no_cells) is None


@settings(max_examples=40, deadline=None)
@given(id_maps().filter(lambda ids: ids.ndim >= 2), st.integers(1, 3))
def test_component_statistics_match_a_loop_over_components(component_ids, pairs):
    labels = np.stack([np.roll(component_ids, shift, axis=0) for shift in range(pairs)])
    slots = int(labels.max()) + 2  # one unused id more than needed: an empty slot
    counts, sums, lower, upper = component_statistics(labels, slots)
    spatial = labels.ndim - 1
    assert counts.shape == (pairs * slots,) and sums.shape == lower.shape == upper.shape == (pairs * slots, spatial)
    for pair in range(pairs):
        for label in range(1, slots):
            coords = np.argwhere(labels[pair] == label)
            row = pair * slots + label
            assert counts[row] == len(coords)
            if len(coords):
                np.testing.assert_array_equal(sums[row], coords.sum(axis=0))
                np.testing.assert_array_equal(lower[row], coords.min(axis=0))
                np.testing.assert_array_equal(upper[row], coords.max(axis=0))
            else:
                assert (upper[row] == -1).all()
    with pytest.raises(ValueError, match="beyond slots"):
        component_statistics(labels, 1 if labels.max() > 0 else 0)
