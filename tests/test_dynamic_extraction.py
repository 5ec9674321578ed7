"""The one-pass dynamic candidates (``nnunet_lesionloss.evaluation.froc.dynamic_extraction``) equal
report_guided_annotation's dynamic extraction and the per-step implementation the evaluation had before
(tests/per_step_dynamic_candidates.py: other connectivities, 2D maps, factor 1 with a minimum size), voxel
for voxel, on random smooth maps with plateaus and tied peaks, and on hand-made cases."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from per_step_dynamic_candidates import per_step_dynamic_candidates
from scipy import ndimage

from nnunet_lesionloss.evaluation.froc.dynamic_extraction import dynamic_candidate_labels as dynamic_candidates

with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
    from report_guided_annotation import extract_lesion_candidates


@st.composite
def smooth_probability(draw, dims: int = 3) -> np.ndarray:
    """Smoothed noise raised to a power (peaks of several sizes), optionally rounded to quarters (plateaus
    and tied peaks), float32 or float64."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    shape = tuple(draw(st.integers(6, 16)) for _ in range(dims))
    values = ndimage.gaussian_filter(rng.random(shape), draw(st.floats(0.6, 2.0)))
    values = (values - values.min()) / (values.max() - values.min() + 1e-9)
    values = values ** draw(st.floats(1.0, 6.0))
    if draw(st.booleans()):
        values = np.round(values * draw(st.sampled_from([4, 8, 20]))) / 4  # plateaus and tied peaks
        values = np.clip(values, 0.0, 1.0)
    return values.astype(draw(st.sampled_from([np.float32, np.float64])))


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    probability=smooth_probability(),
    min_voxels=st.integers(0, 4),
    factor=st.sampled_from([1.0, 1.5, 2.5, 4.0]),
    limit=st.one_of(st.none(), st.integers(0, 15)),
)
def test_equal_to_report_guided_annotation_voxel_for_voxel(probability, min_voxels, factor, limit):
    if factor == 1.0:
        min_voxels = 0  # with factor 1 and only too-small components, report_guided_annotation loops forever
    labels, confidences = dynamic_candidates(probability, factor, min_voxels, limit)
    detection_map, found, indexed = extract_lesion_candidates(
        probability,
        threshold="dynamic-v2",
        num_lesions_to_extract=probability.size if limit is None else limit,
        min_voxels_detection=min_voxels,
        dynamic_threshold_factor=factor,
    )
    assert np.array_equal(labels, indexed)
    assert confidences.tolist() == [confidence for _, confidence in found]
    assert np.array_equal(np.concatenate([[0.0], confidences])[labels], detection_map)


@SETTINGS
@given(
    probability=smooth_probability(),
    factor=st.sampled_from([1.5, 2.5]),
    limit=st.one_of(st.none(), st.integers(1, 15)),
)
def test_equal_to_report_guided_annotation_version_1_without_a_size_limit(probability, factor, limit):
    """Version 1 ("dynamic") differs from version 2 only when components are too small to count."""
    labels, _ = dynamic_candidates(probability, factor, 0, limit)
    _, _, indexed = extract_lesion_candidates(
        probability,
        threshold="dynamic",
        num_lesions_to_extract=probability.size if limit is None else limit,
        min_voxels_detection=0,
        dynamic_threshold_factor=factor,
    )
    assert np.array_equal(labels, indexed)


@SETTINGS
@given(
    probability=st.one_of(smooth_probability(3), smooth_probability(2)),
    min_voxels=st.integers(0, 4),
    factor=st.sampled_from([1.0, 1.5, 2.5, 4.0]),
    limit=st.one_of(st.none(), st.integers(0, 15)),
    connectivity=st.sampled_from(["full", "face", 18]),
)
def test_equal_to_the_per_step_implementation(probability, min_voxels, factor, limit, connectivity):
    """Factor 1 with a minimum size included: there the voxels at p_max leave when every component is too
    small (report_guided_annotation would loop for ever), and both must do the same."""
    if probability.ndim == 2 and connectivity == 18:
        connectivity = 8
    labels, confidences = dynamic_candidates(probability, factor, min_voxels, limit, connectivity)
    expected_labels, expected_confidences = per_step_dynamic_candidates(
        probability, factor, min_voxels, limit, connectivity
    )
    assert np.array_equal(labels, expected_labels)
    assert confidences.tolist() == expected_confidences.tolist()


def test_touching_lesions_and_ties_by_hand():
    """Two touching lesions around their own peaks: the second touches the first candidate and is dropped;
    one voxel apart both are kept. Two separate blobs with the same peak: the one first in raster order
    is found first."""
    probability = np.zeros((10, 11, 12), dtype=np.float32)
    probability[2:6, 2:6, 1:5] = 0.5
    probability[2:6, 2:6, 5:9] = 0.34
    probability[3:5, 3:5, 2:4] = 0.9
    probability[3:5, 3:5, 6:8] = 0.8
    labels, confidences = dynamic_candidates(probability)
    assert confidences.tolist() == [pytest.approx(0.9)] and np.count_nonzero(labels) == 64
    probability[:, :, 5] = 0.0
    labels, confidences = dynamic_candidates(probability)
    assert confidences.tolist() == pytest.approx([0.9, 0.8])
    tied = np.zeros((6, 6, 6), dtype=np.float32)
    tied[4, 4, 4] = tied[1, 1, 1] = 0.7
    labels, _ = dynamic_candidates(tied)
    assert labels[1, 1, 1] == 1 and labels[4, 4, 4] == 2


def test_small_components_are_skipped_and_their_voxels_removed():
    """A 1-voxel peak with min_voxels 1 is never a candidate; the larger, lower blob is."""
    probability = np.zeros((8, 8, 8), dtype=np.float32)
    probability[1, 1, 1] = 0.95
    probability[4:7, 4:7, 4:7] = 0.6
    labels, confidences = dynamic_candidates(probability, min_voxels=1)
    assert confidences.tolist() == [pytest.approx(0.6)] and labels[1, 1, 1] == 0 and np.count_nonzero(labels) == 27


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold_factor": 0.5}, "threshold_factor"),
        ({"threshold_factor": float("nan")}, "threshold_factor"),
        ({"min_voxels": -1}, "min_voxels"),
        ({"max_candidates": -2}, "max_candidates"),
        ({"connectivity": 5}, "connectivity"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dynamic_candidates(np.zeros((4, 4, 4), dtype=np.float32), **kwargs)


def test_maps_that_are_not_probability_volumes_are_refused():
    with pytest.raises(ValueError, match="2D or 3D"):
        dynamic_candidates(np.zeros(5, dtype=np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        dynamic_candidates(np.zeros((4, 4, 4), dtype=np.int32))


def test_factor_one_with_only_small_components_ends():
    """t = p_max and no component large enough: no voxel is > t, so report_guided_annotation's loop would
    never end; here the peak voxels leave the map and the next peak is tried, down to 0.01."""
    probability = np.zeros((6, 6, 6), dtype=np.float32)
    probability[1, 1, 1] = 0.9
    probability[4, 4, 4] = 0.5
    probability[3:5, 0:2, 0:2] = 0.3  # 8 voxels: large enough for min_voxels 1
    labels, confidences = dynamic_candidates(probability, threshold_factor=1.0, min_voxels=1)
    assert confidences.tolist() == [pytest.approx(0.3)] and np.count_nonzero(labels) == 8
    labels, confidences = dynamic_candidates(probability, threshold_factor=1.0)
    assert confidences.tolist() == pytest.approx([0.9, 0.5, 0.3])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_maps_are_refused(bad):
    probability = np.zeros((4, 4, 4), dtype=np.float32)
    probability[1, 2, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        dynamic_candidates(probability)
