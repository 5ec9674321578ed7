"""FROC analysis: equal to picai_eval and report_guided_annotation on random maps, hand-computed cases,
nnU-Net's probability files, the froc command, cv-summary and compare; outputs of an earlier release readable."""

from __future__ import annotations

import contextlib
import io as text_io
import json
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from conftest_evaluation import close, cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.froc import (
    Candidates,
    FrocCase,
    FrocPool,
    FrocSettings,
    average_precision,
    detection_map_candidates,
    dynamic_candidates,
    load_froc,
    match_case,
    sensitivity_at_rates,
    static_candidates,
)
from nnunet_lesionloss.evaluation.froc.cross_validation import froc_section, headline
from nnunet_lesionloss.evaluation.froc.matching import match_candidates
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.matching import OverlapTable
from nnunet_lesionloss.evaluation.probabilities import ProbabilityChannels, check_geometry

with contextlib.redirect_stdout(text_io.StringIO()):  # both print a banner on import
    from picai_eval import evaluate as picai_evaluate
    from report_guided_annotation import extract_lesion_candidates

SHAPE = (10, 11, 12)
CONFIDENCES = (0.2, 0.4, 0.6, 0.8, 1.0)  # few values: ties in confidence are frequent


# ----------------------------------------------------------------------------- random maps
@st.composite
def boxes_map(draw, max_boxes: int) -> np.ndarray:
    """A boolean map of up to ``max_boxes`` random boxes (they may touch and overlap)."""
    mask = np.zeros(SHAPE, dtype=bool)
    for _ in range(draw(st.integers(0, max_boxes))):
        corner = [draw(st.integers(0, s - 1)) for s in SHAPE]
        size = [draw(st.integers(1, 4)) for _ in SHAPE]
        mask[tuple(slice(c, c + n) for c, n in zip(corner, size))] = True
    return mask


@st.composite
def detection_case(draw) -> tuple[np.ndarray, np.ndarray]:
    """(reference mask, picai_eval detection map): touching candidate boxes form one candidate with one
    confidence, as picai_eval reads a detection map."""
    reference = draw(boxes_map(5))
    blobs = draw(boxes_map(7))
    labels, count = label_components(blobs, 26, return_count=True)
    confidences = np.array([0.0] + [draw(st.sampled_from(CONFIDENCES)) for _ in range(count)], dtype=np.float32)
    return reference, confidences[labels]


def picai_metrics(cases, **kwargs):
    return picai_evaluate([d for _, d in cases], [r.astype(np.int32) for r, _ in cases], num_parallel_calls=1, **kwargs)


def ours(cases, settings: FrocSettings) -> FrocPool:
    return FrocPool([match_case(r, detection_map_candidates(d), settings) for r, d in cases])


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cases=st.lists(detection_case(), min_size=1, max_size=4),
    overlap=st.sampled_from([("IoU", "iou", 0.1), ("IoU", "iou", 0.5), ("DSC", "dsc", 0.3)]),
    allow_unmatched=st.booleans(),
)
def test_ap_and_froc_equal_picai_eval(cases, overlap, allow_unmatched):
    """AP, lesion_TPR / lesion_FPR at every threshold and lesion_TPR_at_FPR equal picai_eval's, with cases
    without reference lesions or candidates, touching candidates and tied confidences. Thresholds where
    picai_eval's 1e-8 guard could decide do not occur: on these small maps an overlap is 0 or >= 1e-4 away
    from them."""
    picai_name, matching, min_overlap = overlap
    metrics = picai_metrics(
        cases,
        overlap_func=picai_name,
        min_overlap=min_overlap,
        allow_unmatched_candidates_with_minimal_overlap=allow_unmatched,
    )
    settings = FrocSettings(
        matching=matching, min_overlap=min_overlap, allow_unmatched_candidates_with_minimal_overlap=allow_unmatched
    )
    pool = ours(cases, settings)
    tp, fp, n_lesions = pool.counts()
    assert n_lesions == metrics.num_lesions
    if n_lesions == 0:
        assert np.isnan(average_precision(tp, fp, n_lesions))
        return
    assert close(average_precision(tp, fp, n_lesions), float(metrics.AP), 1e-12)
    curve = pool.froc()
    missed = any((case.lesion_confidence == 0).any() for case in pool.cases)
    if missed:  # picai_eval's threshold 0 is there: the same curve, point by point
        assert len(curve.sensitivity) == len(metrics.lesion_TPR)
        assert np.allclose(curve.sensitivity, metrics.lesion_TPR, rtol=1e-6)
        assert np.allclose(curve.fp_per_case, metrics.lesion_FPR, rtol=1e-6)
        for rate in (0.125, 0.25, 0.5, 1, 2, 4, 8):
            assert close(
                sensitivity_at_rates(tp, fp, n_lesions, len(cases), [rate])[0], metrics.lesion_TPR_at_FPR(rate), 1e-6
            )
    elif len(curve.sensitivity) > 2:  # every lesion found: picai_eval drops the last finite point (docs/metrics.md)
        assert np.allclose(curve.sensitivity[:-2], metrics.lesion_TPR[:-1], rtol=1e-6)
        assert np.allclose(curve.fp_per_case[:-2], metrics.lesion_FPR[:-1], rtol=1e-6)
        assert close(float(metrics.lesion_TPR[-1]), float(curve.sensitivity[-3]), 1e-6)


def _slow_match(reference: np.ndarray, candidates: Candidates, settings: FrocSettings):
    """picai_eval's evaluate_case on candidate label maps, written from its definition: a full-volume mask per
    lesion and candidate, its overlap with the 1e-8 guard, pairs below min_overlap (exact) dropped."""
    from scipy.optimize import linear_sum_assignment

    lesions, n_ref = label_components(reference, settings.connectivity, return_count=True)
    scores = np.zeros((n_ref, candidates.n))
    for i in range(n_ref):
        lesion = lesions == i + 1
        for j in range(candidates.n):
            candidate = candidates.labels == j + 1
            inter = int(np.sum(lesion & candidate))
            if settings.matching == "dsc":
                exact = 2 * inter / (lesion.sum() + candidate.sum())
                guarded = (inter * 2.0 + 1e-8) / (candidate.sum() + lesion.sum() + 1e-8)
            else:
                union = int(candidate.sum() + lesion.sum() - inter)
                exact, guarded = inter / union, (inter + 1e-8) / (union + 1e-8)
            eligible = inter > 0 if settings.matching == "any" else exact >= settings.min_overlap
            scores[i, j] = guarded + 1 if eligible else 0
    rows, columns = linear_sum_assignment(scores, maximize=True)
    keep = scores[rows, columns] > 0
    lesion_confidence = np.zeros(n_ref)
    lesion_confidence[rows[keep]] = candidates.confidences[columns[keep]]
    if settings.allow_unmatched_candidates_with_minimal_overlap:
        false_positive = ~(scores > 0).any(axis=0)
    else:
        false_positive = np.ones(candidates.n, dtype=bool)
        false_positive[columns[keep]] = False
    return lesion_confidence, candidates.confidences[false_positive]


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reference=boxes_map(5),
    blobs=boxes_map(8),
    data=st.data(),
    matching=st.sampled_from(["iou", "dsc", "any"]),
    allow_unmatched=st.booleans(),
)
def test_touching_candidates_of_a_label_map_match_as_the_definition_says(
    reference, blobs, data, matching, allow_unmatched
):
    """Candidates given as a label map may touch (each box its own candidate): the overlap-table matching
    equals the full-mask loop written from picai_eval's definition."""
    labels, count = label_components(blobs, 6, return_count=True)  # 6-connected: 26-neighbours stay apart
    confidences = np.array([data.draw(st.sampled_from(CONFIDENCES)) for _ in range(count)])
    candidates = Candidates(labels, confidences)
    settings = FrocSettings(
        matching=matching, min_overlap=0.2, allow_unmatched_candidates_with_minimal_overlap=allow_unmatched
    )
    lesions, n_ref = label_components(reference, 26, return_count=True)
    table = OverlapTable.build(lesions, n_ref, labels, count)
    lesion_confidence, false_positive = match_candidates(table, confidences, matching, 0.2, allow_unmatched)
    expected_lesions, expected_fp = _slow_match(reference, candidates, settings)
    assert np.array_equal(lesion_confidence, expected_lesions)
    assert np.array_equal(np.sort(false_positive), np.sort(expected_fp))


# ----------------------------------------------------------------------------- hand-computed cases
def _case(lesions, false_positives) -> FrocCase:
    lesions = np.asarray(lesions, dtype=np.float64)
    return FrocCase("c", lesions, np.ones(len(lesions), dtype=np.int64), np.asarray(false_positives, float), 0)


def test_hand_computed_froc_ap_and_cpm():
    # case 1: lesions found at 0.9 and 0.5, one missed; a false positive at 0.7. case 2: no lesion, FPs 0.9, 0.3
    pool = FrocPool([_case([0.9, 0.5, 0.0], [0.7]), _case([], [0.9, 0.3])])
    tp, fp, n = pool.counts()
    assert list(pool.thresholds) == [0.9, 0.7, 0.5, 0.3]
    assert list(tp) == [1, 1, 2, 2] and list(fp) == [1, 2, 2, 3] and n == 3
    # AP: recall steps 1/3 at 0.9 (precision 1/2) and 1/3 at 0.5 (precision 2/4)
    assert close(average_precision(tp, fp, n), 1 / 3 * 1 / 2 + 1 / 3 * 2 / 4)
    # FP per case: 0.5, 1, 1, 1.5 -> sensitivity at 0.25: 0 (no threshold); 0.5: 1/3; 1: 2/3; 2 and more: 2/3
    values = sensitivity_at_rates(tp, fp, n, 2, (0.125, 0.25, 0.5, 1, 2, 4, 8))
    assert np.allclose(values, [0, 0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    curve = pool.froc()
    assert list(curve.fp_per_case[:-1]) == [0.5, 1, 1, 1.5] and np.isinf(curve.fp_per_case[-1])
    assert curve.true_positives[-1] == 2


@hyp_settings(max_examples=40, deadline=None)
@given(
    cases=st.lists(
        st.tuples(
            st.lists(st.sampled_from((0.0,) + CONFIDENCES), max_size=4),
            st.lists(st.sampled_from(CONFIDENCES), max_size=4),
        ),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
)
def test_bootstrap_weights_count_a_case_as_often_as_it_was_drawn(cases, data):
    """The bootstrap's weighted counts equal the counts of a pool in which each case appears that often."""
    frocs = [_case(lesions, fps) for lesions, fps in cases]
    weights = np.array([data.draw(st.integers(0, 3)) for _ in frocs], dtype=np.float64)
    repeated = FrocPool([d for d, w in zip(frocs, weights) for _ in range(int(w))])
    tp, fp, n = FrocPool(frocs).counts(weights)
    expected_tp, expected_fp, expected_n = repeated.counts()
    assert n == expected_n
    rates = (0.125, 0.5, 1, 2, 8)
    if weights.sum() and expected_n:
        size = len(frocs)  # the resample has as many cases as the data
        assert close(average_precision(tp, fp, n), average_precision(expected_tp, expected_fp, expected_n))
        assert np.allclose(
            sensitivity_at_rates(tp, fp, n, size, rates),
            sensitivity_at_rates(expected_tp, expected_fp, expected_n, size, rates),
        )


def test_every_lesion_found_keeps_the_lowest_operating_point_that_picai_eval_drops():
    """picai_eval replaces the lowest threshold's point by (previous sensitivity, ∞) even when no lesion is
    missed; here the only lesion is found at the lowest confidence: picai_eval reports sensitivity 0 at any
    FP rate, the curve it means to draw (and ours) reaches 1 at 1 FP per case."""
    reference = cube(SHAPE, (1, 1, 1), (3, 3, 3)).astype(bool)
    detection_map = (cube(SHAPE, (1, 1, 1), (3, 3, 3)) * 0.3 + cube(SHAPE, (6, 6, 6), (2, 2, 2)) * 0.9).astype(
        np.float32
    )
    metrics = picai_metrics([(reference, detection_map)])
    pool = ours([(reference, detection_map)], FrocSettings())
    tp, fp, n = pool.counts()
    assert metrics.lesion_TPR_at_FPR(8) == 0
    assert sensitivity_at_rates(tp, fp, n, 1, [0.5, 1, 8]).tolist() == [0, 1, 1]


def test_a_disjoint_candidate_is_never_a_match_whatever_the_minimum_overlap():
    """picai_eval's IoU is (overlap + 1e-8) / (union + 1e-8): a candidate that touches no lesion has IoU > 0,
    so at min_overlap 1e-12 picai_eval matches it; here it stays a false positive, and 'any' needs a shared voxel."""
    reference = cube(SHAPE, (0, 0, 0), (2, 2, 2)).astype(bool)
    disjoint = cube(SHAPE, (6, 6, 6), (2, 2, 2)).astype(np.float32) * 0.8
    metrics = picai_metrics([(reference, disjoint)], min_overlap=1e-12)
    assert metrics.AP == 1.0 and metrics.lesion_results[0][0][:2] == (1, pytest.approx(0.8))  # the trap
    for matching in ("iou", "any"):
        detection = match_case(
            reference, detection_map_candidates(disjoint), FrocSettings(matching=matching, min_overlap=1e-12)
        )
        assert detection.lesion_confidence.tolist() == [0.0] and detection.false_positive_confidence.tolist() == [
            pytest.approx(0.8)
        ]
    touching = cube(SHAPE, (1, 1, 1), (4, 4, 4)).astype(np.float32) * 0.5  # one shared voxel: IoU 1/71
    detection = match_case(reference, detection_map_candidates(touching), FrocSettings(matching="any"))
    assert detection.lesion_confidence.tolist() == [0.5] and len(detection.false_positive_confidence) == 0
    assert match_case(reference, detection_map_candidates(touching), FrocSettings()).lesion_confidence[0] == 0


def test_a_second_candidate_on_a_lesion_is_ignored_or_a_false_positive():
    reference = cube(SHAPE, (1, 1, 1), (4, 4, 4)).astype(bool)
    labels = cube(SHAPE, (1, 1, 1), (4, 4, 2)) + 2 * cube(SHAPE, (1, 1, 4), (4, 4, 1))
    candidates = Candidates(labels.astype(np.int32), np.array([0.9, 0.5]))
    ignored = match_case(reference, candidates, FrocSettings(matching="any"))
    counted = match_case(
        reference,
        candidates,
        FrocSettings(matching="any", allow_unmatched_candidates_with_minimal_overlap=False),
    )
    assert ignored.lesion_confidence.tolist() == [0.9] and ignored.n_ignored == 1
    assert len(ignored.false_positive_confidence) == 0
    assert counted.false_positive_confidence.tolist() == [0.5] and counted.n_ignored == 0


def test_a_detection_map_with_several_values_in_one_component_is_refused():
    probability = np.zeros(SHAPE, dtype=np.float32)
    probability[2:5, 2:5, 2:5] = 0.4
    probability[3, 3, 3] = 0.9
    with pytest.raises(ValueError, match="one confidence per connected component"):
        detection_map_candidates(probability)


# ----------------------------------------------------------------------------- candidates vs report_guided_annotation
@st.composite
def smooth_probability(draw) -> np.ndarray:
    from scipy import ndimage

    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    shape = tuple(draw(st.integers(6, 14)) for _ in range(3))
    values = ndimage.gaussian_filter(rng.random(shape), draw(st.floats(0.6, 2.0)))
    values = (values - values.min()) / (values.max() - values.min() + 1e-9)
    values = values ** draw(st.floats(1.0, 6.0))
    if draw(st.booleans()):
        values = np.round(values * 4) / 4  # plateaus and tied peaks
    return values.astype(np.float32)


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    probability=smooth_probability(),
    threshold=st.sampled_from([0.1, 0.25, 0.5]),
    min_voxels=st.integers(0, 3),
    factor=st.sampled_from([1.5, 2.5, 4.0]),
    limit=st.integers(1, 15),
)
def test_candidates_equal_report_guided_annotation(probability, threshold, min_voxels, factor, limit):
    theirs = extract_lesion_candidates(probability, threshold=threshold, min_voxels_detection=min_voxels)[0]
    assert np.array_equal(static_candidates(probability, threshold, 26, min_voxels).detection_map(), theirs)
    theirs = extract_lesion_candidates(
        probability,
        threshold="dynamic-v2",
        num_lesions_to_extract=limit,
        min_voxels_detection=min_voxels,
        dynamic_threshold_factor=factor,
    )[0]
    assert np.array_equal(dynamic_candidates(probability, factor, min_voxels, limit).detection_map(), theirs)


def test_dynamic_candidates_split_touching_lesions_by_their_peaks():
    """Two touching lesions, each around its own peak: the static component at 0.1 is their union; the
    dynamic candidate of the higher peak stops at p >= 0.9 / 2.5, and the second lesion, touching it, is
    dropped (report_guided_annotation's remove_adjacent_lesion_candidates); one voxel apart, both are kept."""
    probability = np.zeros(SHAPE, dtype=np.float32)
    probability[2:6, 2:6, 1:5] = 0.5
    probability[2:6, 2:6, 5:9] = 0.34
    probability[3:5, 3:5, 2:4] = 0.9
    probability[3:5, 3:5, 6:8] = 0.8
    union = static_candidates(probability, 0.1)
    assert union.n == 1 and np.count_nonzero(union.labels) == 128
    dynamic = dynamic_candidates(probability)
    assert dynamic.confidences.tolist() == [pytest.approx(0.9)] and np.count_nonzero(dynamic.labels) == 64
    probability[:, :, 5] = 0.0  # a one-voxel gap
    assert dynamic_candidates(probability).confidences.tolist() == pytest.approx([0.9, 0.8])


# ----------------------------------------------------------------------------- nnU-Net's probabilities
REGIONS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}


def test_channels_of_a_softmax_and_of_a_region_model():
    probabilities = np.random.default_rng(0).random((4, 3, 3, 3)).astype(np.float32)
    softmax = ProbabilityChannels.from_dataset_json({"labels": {"background": 0, "a": 1, "b": 2, "c": 3}})
    assert not softmax.has_regions and softmax.n_channels == 4
    assert np.array_equal(softmax.probability(probabilities, (2,)), probabilities[2])
    assert np.allclose(softmax.probability(probabilities, (1, 3)), probabilities[1] + probabilities[3])
    assert np.allclose(softmax.any_foreground(probabilities), 1 - probabilities[0])
    regions = ProbabilityChannels.from_dataset_json({"labels": REGIONS})
    assert regions.has_regions and regions.n_channels == 3
    assert np.array_equal(regions.probability(probabilities[:3], (3, 2)), probabilities[1])
    assert np.array_equal(regions.probability(probabilities[:3], (3,)), probabilities[2])
    # the region that holds every label, not 1 - channel 0
    assert np.array_equal(regions.any_foreground(probabilities[:3]), probabilities[0])
    with pytest.raises(CaseError, match="none of the model's regions"):
        regions.probability(probabilities[:3], (1,))
    with pytest.raises(CaseError, match="4 channels, but"):
        regions.check(probabilities)


def _reference(tmp_path, array, spacing_xyz=(1.0, 1.0, 2.0)) -> io.LabelImage:
    return io.read_label_image(write_image(tmp_path / "ref.nii.gz", array, spacing_xyz))


def test_geometry_mismatches_are_named(tmp_path):
    reference = _reference(tmp_path, np.zeros((4, 5, 6), dtype=np.uint8))
    npz = tmp_path / "c.npz"
    good = np.zeros((2, 4, 5, 6), dtype=np.float32)
    assert check_geometry(good, reference, npz).shape == good.shape
    with pytest.raises(CaseError, match="axes are reversed"):
        check_geometry(np.zeros((2, 6, 5, 4), np.float32), reference, npz)
    cropped = {"shape_after_cropping_and_before_resampling": (3, 5, 6)}
    with pytest.raises(CaseError, match="cropped image"):
        check_geometry(np.zeros((2, 3, 5, 6), np.float32), reference, npz, cropped)
    with pytest.raises(CaseError, match=r"spacing \(3.0, 1.0, 1.0\)"):
        check_geometry(good, reference, npz, {"spacing": [3.0, 1.0, 1.0]})
    with pytest.raises(CaseError, match="orientation"):
        check_geometry(good, reference, npz, {"sitk_stuff": {"direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)}})
    two_d = _reference(tmp_path, np.zeros((5, 6), dtype=np.uint8), (1.0, 1.0))
    assert check_geometry(np.zeros((2, 1, 5, 6), np.float32), two_d, npz).shape == (2, 5, 6)


# ----------------------------------------------------------------------------- the command
def _write_probabilities(folder, case, probabilities, spacing_zyx=(2.0, 1.0, 1.0)):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{case}.npz", probabilities=probabilities.astype(np.float32))
    with open(folder / f"{case}.pkl", "wb") as handle:  # what nnU-Net pickles beside it (the part we read)
        pickle.dump({"spacing": list(spacing_zyx), "sitk_stuff": {"spacing": spacing_zyx[::-1]}}, handle)


def _two_lesion_case(shift: int):
    reference = cube(SHAPE, (1, 1, 1), (3, 3, 3)) + cube(SHAPE, (6, 6, 6 + shift % 2), (2, 2, 2))
    foreground = np.zeros(SHAPE, dtype=np.float32)
    foreground[1:4, 1:4, 1:4] = 0.3
    foreground[2, 2, 2] = 0.9  # lesion 1 found at 0.9
    foreground[0:2, 8:10, 8:10] = 0.6 + 0.1 * shift  # a false positive
    return reference, foreground  # lesion 2 is missed


def test_froc_command_writes_the_documented_outputs_and_names_failed_cases(tmp_path, capsys):
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    dataset = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    cases = []
    for k in range(3):
        reference, foreground = _two_lesion_case(k)
        write_image(gt / f"c{k}.nii.gz", reference.astype(np.uint8), (1.0, 1.0, 2.0))
        if k < 2:
            _write_probabilities(probs, f"c{k}", np.stack([1 - foreground, foreground]))
            cases.append((reference > 0, foreground))
    (probs / "dataset.json").write_text(json.dumps(dataset))
    out = tmp_path / "out"
    # static candidates: the 0.3 halo around lesion 1's peak is part of its candidate (dynamic candidates,
    # the default, take the peak voxel alone here: the next test)
    static = ["--candidates", "static"]
    code = main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet", *static])
    assert code == 1
    assert "c2: no probabilities c2.npz" in capsys.readouterr().err
    result = load_strict_json(out / "froc.json")
    entry = result["1"]
    for key in ("ap", "cpm", "sensitivity_at_fp", "froc", "n_cases", "n_lesions", "n_candidates", "settings"):
        assert key in entry
    assert list(entry["sensitivity_at_fp"]) == ["0.125", "0.25", "0.5", "1", "2", "4", "8"]
    assert entry["n_cases"] == 2 and entry["n_lesions"] == 4 and entry["n_candidates"] == 4
    assert entry["failed_cases"] == [{"case": "c2", "fold": None, "reason": f"no probabilities c2.npz in {probs}"}]
    assert entry["settings"]["matching"] == "iou" and entry["settings"]["min_overlap"] == 0.1
    assert entry["settings"]["allow_unmatched_candidates_with_minimal_overlap"] is True
    # the same numbers as picai_eval on the detection maps of our candidates
    maps = [(r, static_candidates(f, 0.1).detection_map().astype(np.float32)) for r, f in cases]
    metrics = picai_metrics(maps)
    assert close(entry["ap"], float(metrics.AP), 1e-9)
    for rate, value in entry["sensitivity_at_fp"].items():
        assert close(value, float(metrics.lesion_TPR_at_FPR(float(rate))), 1e-6)
    assert entry["cpm"] == pytest.approx(np.mean(list(entry["sensitivity_at_fp"].values())))
    assert entry["sensitivity_by_size"]["<1mL"]["n_lesions"] == 4
    assert (out / "froc_1.png").is_file()
    rows = (out / "froc_1.csv").read_text().splitlines()
    assert rows[0] == "threshold,fp_per_case,sensitivity,true_positives,false_positives" and len(rows) == 4
    assert "| – | c2 | no probabilities" in (out / "froc.md").read_text()
    # nothing is overwritten without --overwrite
    assert main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet", *static]) == 2


def test_froc_command_extracts_dynamic_candidates_by_default(tmp_path):
    """Without --candidates the command extracts report_guided_annotation's dynamic candidates (its own
    default) and records it; its numbers are picai_eval's on the detection maps of those candidates."""
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    cases = []
    for k in range(2):
        reference, foreground = _two_lesion_case(k)
        foreground[1:4, 1:4, 1:4] = np.maximum(foreground[1:4, 1:4, 1:4], 0.5)  # p >= 0.9 / 2.5: one candidate
        if k == 0:  # lesion 2 found too, below the false positive (one lesion stays missed: picai_eval's
            foreground[6:8, 6:8, 6:8] = 0.35  # curve and ours are equal point by point only then, docs/metrics.md)
        write_image(gt / f"c{k}.nii.gz", reference.astype(np.uint8), (1.0, 1.0, 2.0))
        _write_probabilities(probs, f"c{k}", np.stack([1 - foreground, foreground]))
        cases.append((reference > 0, foreground))
    (probs / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}}))
    out = tmp_path / "out"
    assert main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet", "-np", "1"]) == 0
    entry = load_strict_json(out / "froc.json")["1"]
    assert entry["settings"]["candidates"] == "dynamic" and entry["settings"]["threshold"] is None
    assert entry["settings"]["dynamic_threshold_factor"] == 2.5
    maps = [(r, dynamic_candidates(f).detection_map().astype(np.float32)) for r, f in cases]
    assert entry["n_candidates"] == sum(int(np.unique(m).size) - 1 for _, m in maps) == 5
    metrics = picai_metrics(maps)
    assert close(entry["ap"], float(metrics.AP), 1e-9) and entry["ap"] > 0.5
    for rate, value in entry["sensitivity_at_fp"].items():
        assert close(value, float(metrics.lesion_TPR_at_FPR(float(rate))), 1e-6)


def test_region_model_probabilities_are_analysed_per_region(tmp_path):
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    reference = cube(SHAPE, (1, 1, 1), (4, 4, 4)) + cube(SHAPE, (2, 2, 2), (2, 2, 2))  # label 2 inside label 1
    write_image(gt / "c.nii.gz", reference.astype(np.uint8))
    whole = (reference > 0).astype(np.float32) * 0.8
    core = (reference == 2).astype(np.float32) * 0.7
    _write_probabilities(probs, "c", np.stack([whole, core]), (1.0, 1.0, 1.0))
    (probs / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "whole": [1, 2], "core": 2}, "file_ending": ".nii.gz"})
    )
    out = tmp_path / "out"
    assert main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet"]) == 0
    result = load_strict_json(out / "froc.json")
    assert set(result) == {"(1, 2)", "2"}
    assert result["(1, 2)"]["name"] == "whole" and result["(1, 2)"]["sensitivity_at_fp"]["1"] == 1.0
    assert result["2"]["n_lesions"] == 1 and result["2"]["ap"] == 1.0
    # label 1 alone is no region of this model: refused before any case is read
    code = main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(tmp_path / "o2"), "--labels", "1"])
    assert code == 2


# ----------------------------------------------------------------------------- cv-summary and compare
def _cv_run(tmp_path, name: str, with_npz: bool, scale: float = 1.0):
    """A trainer folder with fold_0/validation (predictions and, optionally, nnU-Net's .npz files)."""
    root = tmp_path / "results" / "Dataset901_X" / f"{name}__nnUNetPlans__3d_fullres"
    validation = root / "fold_0" / "validation"
    validation.mkdir(parents=True)
    dataset = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(dataset))
    gt = tmp_path / "gt"
    for k in range(3):
        reference, foreground = _two_lesion_case(k)
        foreground = foreground * scale
        if not (gt / f"c{k}.nii.gz").exists():
            write_image(gt / f"c{k}.nii.gz", reference.astype(np.uint8), (1.0, 1.0, 2.0))
        write_image(validation / f"c{k}.nii.gz", (foreground >= 0.5).astype(np.uint8), (1.0, 1.0, 2.0))
        if with_npz and not (k == 2 and scale != 1.0):
            _write_probabilities(validation, f"c{k}", np.stack([1 - foreground, foreground]))
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": [], "val": ["c0", "c1", "c2"]}]))
    return root, gt


def test_cv_summary_adds_the_froc_section_and_compare_overlays_the_runs(tmp_path, capsys):
    from nnunet_lesionloss.evaluation.cv import cv_summary

    base, gt = _cv_run(tmp_path, "nnUNetTrainerDiceCE", True)
    other, _ = _cv_run(tmp_path, "nnUNetTrainerCATMIL", True, scale=0.9)  # its c2.npz is missing
    plain, _ = _cv_run(tmp_path, "nnUNetTrainerBlob", False)
    result = cv_summary(base, gt_dir=gt, progress=False)
    assert result["froc"]["1"]["n_cases"] == 3 and result["froc"]["1"]["n_failed"] == 0
    assert (base / "lesion_evaluation" / "froc.json").is_file()
    assert "## FROC analysis" in (base / "lesion_evaluation" / "cv_summary.md").read_text()
    per_fold = load_strict_json(base / "lesion_evaluation" / "froc.json")["1"]["per_fold"]
    assert per_fold["0"]["n_cases"] == 3
    assert main(["cv-summary", str(other), "--gt", str(gt), "--quiet", "--froc-bootstrap-resamples", "100"]) == 1
    assert "FROC analysis, fold 0, case c2: no probabilities c2.npz" in capsys.readouterr().err
    assert main(["cv-summary", str(plain), "--gt", str(gt), "--quiet"]) == 0
    assert (
        "no .npz probabilities" in load_strict_json(plain / "lesion_evaluation" / "cv_summary.json")["froc"]["skipped"]
    )
    out = tmp_path / "comparison"
    code = main(["compare", str(base), str(other), str(plain), "-o", str(out), "--bootstrap-resamples", "200"])
    assert code == 1  # the run without probabilities is a warning, never dropped in silence
    text = (out / "compare.md").read_text()
    assert "nnUNetTrainerBlob has no FROC analysis" in text
    assert "No FROC analysis (no probabilities): nnUNetTrainerBlob" in text
    assert (out / "froc.png").is_file()
    rows = {row.split(",")[0]: row.split(",") for row in (out / "compare_froc.csv").read_text().splitlines()}
    header = rows["run"]
    catmil = dict(zip(header, rows["nnUNetTrainerCATMIL"]))
    # per case (c0, c1; c2 has no probabilities in CATMIL): each run's threshold for 1 FP/case finds lesion 1
    # of both cases in both runs -> the per-case differences are 0
    assert catmil["n_paired"] == "2" and float(catmil["mean_case_difference_at_1fp"]) == 0.0


def test_outputs_of_the_release_before_the_rename_stay_readable(tmp_path):
    """An earlier release wrote detection.json / detection_cases.json and cv_summary.json's section
    "detection": load_froc, froc_section and compare read them as the current names, and a stale
    detection.json beside a current froc.json is never read."""
    from nnunet_lesionloss.evaluation.cv import cv_summary

    quick = FrocSettings(bootstrap_resamples=20)
    base, gt = _cv_run(tmp_path, "nnUNetTrainerDiceCE", True)
    other, _ = _cv_run(tmp_path, "nnUNetTrainerCATMIL", True, scale=0.9)
    for run in (base, other):
        cv_summary(run, gt_dir=gt, progress=False, froc=quick)
    base_out, old = base / "lesion_evaluation", other / "lesion_evaluation"
    current = load_froc(old)
    summary = load_strict_json(old / "cv_summary.json")
    assert current is not None and froc_section(summary) == summary["froc"]
    (old / "froc.json").rename(old / "detection.json")
    (old / "froc_cases.json").rename(old / "detection_cases.json")
    summary["detection"] = summary.pop("froc")
    (old / "cv_summary.json").write_text(json.dumps(summary))
    assert load_froc(old) == current
    assert froc_section(load_strict_json(old / "cv_summary.json")) == headline(current[0])
    assert froc_section({"failures": []}) is None
    # both names: the current files decide (here an impossible AP left under the earlier name)
    stale = {key: {**entry, "ap": -1.0} for key, entry in load_froc(base_out)[0].items()}
    (base_out / "detection.json").write_text(json.dumps(stale))
    (base_out / "detection_cases.json").write_text(json.dumps({"labels": {}}))
    assert load_froc(base_out)[0]["1"]["ap"] >= 0
    out = tmp_path / "comparison"
    assert main(["compare", str(base), str(other), "-o", str(out), "--bootstrap-resamples", "100"]) == 1
    rows = {row.split(",")[0]: row.split(",") for row in (out / "compare_froc.csv").read_text().splitlines()}
    catmil = dict(zip(rows["run"], rows["nnUNetTrainerCATMIL"]))
    assert catmil["n_paired"] == "2" and float(catmil["ap"]) == pytest.approx(current[0]["1"]["ap"])


def test_benchmark_script_checks_picai_eval_and_prints_its_table():
    """scripts/bench_detection.py at a tiny size (docs/benchmarks.md's numbers come from its default size)."""
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_detection.py"), "--repeats", "1"]
        + ["--shape", "30", "32", "34", "--lesions", "4", "--candidates", "12"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 reference lesions, 12 candidates" in result.stdout
    assert "| picai_eval evaluate_case |" in result.stdout


@pytest.mark.slow
def test_nnunet_training_with_npz_feeds_the_froc_section_of_cv_summary(
    preprocessed_dataset, short_run_config, tmp_path
):
    """A short real nnUNetv2_train --npz: nnU-Net writes <case>.npz (softmax, in the reference's array shape)
    and <case>.pkl into fold_0/validation, and cv-summary's FROC section reads them without a failure."""
    from conftest import run_cli
    from nnunet_lesionloss.evaluation.cv import cv_summary

    results = tmp_path / "results"
    env = dict(preprocessed_dataset["env"], nnUNet_results=str(results), NNUNET_LESIONLOSS_CONFIG=str(short_run_config))
    trainer = "nnUNetTrainerDiceCE"
    run_cli(
        ["nnUNetv2_train", str(preprocessed_dataset["dataset_id"]), "3d_fullres", "0", "-tr", trainer]
        + ["-device", "cpu", "--npz"],
        env,
    )
    run_dir = results / preprocessed_dataset["dataset"] / f"{trainer}__nnUNetPlans__3d_fullres"
    validation = run_dir / "fold_0" / "validation"
    gt = preprocessed_dataset["root"] / "preprocessed" / preprocessed_dataset["dataset"] / "gt_segmentations"
    reference = io.read_label_image(gt / "case_005.nii.gz")
    with np.load(validation / "case_005.npz") as data:
        assert data["probabilities"].shape == (2, *reference.array.shape)
    assert (validation / "case_005.pkl").is_file()
    result = cv_summary(
        run_dir,
        gt_dir=gt,
        output_dir=tmp_path / "cv",
        progress=False,
        froc=FrocSettings(bootstrap_resamples=20),
    )
    section = result["froc"]["1"]
    assert section["n_cases"] == 1 and section["n_failed"] == 0
    n_lesions = label_components(reference.array == 1, 26, return_count=True)[1]
    assert section["n_lesions"] == n_lesions
    written = load_strict_json(tmp_path / "cv" / "froc.json")["1"]
    assert written["settings"]["connectivity"] == "full" and (tmp_path / "cv" / "froc_1.png").is_file()
