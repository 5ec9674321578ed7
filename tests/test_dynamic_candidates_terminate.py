"""The dynamic candidate extraction ends on every map and every setting FrocSettings accepts, and FrocSettings
accepts no NaN, infinity or factor below 1 (issue: no silent wrong number, round four, item 16). Written against
the public path (``extract_candidates`` with ``FrocSettings``), so it holds for any implementation behind it.

report_guided_annotation's dynamic-v2 extraction, with factor 1 and a minimum size, loops for ever: when every
component at p >= peak / 1 is too small it removes the voxels *above* the threshold, and none is above the peak."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest_evaluation import cube, load_strict_json
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.froc import FrocSettings
from nnunet_lesionloss.evaluation.froc.candidates import extract_candidates

SHAPE = (10, 10, 10)


def _dynamic(factor: float, min_voxels: int, max_candidates: int | None = None) -> FrocSettings:
    return FrocSettings(
        candidates="dynamic",
        dynamic_threshold_factor=factor,
        min_candidate_voxels=min_voxels,
        max_candidates=max_candidates,
    )


@pytest.mark.timeout(60)
def test_factor_one_with_a_minimum_size_ends_and_keeps_the_large_plateau():
    """A 27-voxel plateau at 0.8, a 5-voxel one at 0.9, the rest at 0.05. Factor 1, more than 10 voxels: the
    0.9 plateau is too small (removed), the 0.8 cube is the candidate, the background around it touches it
    (removed, no candidate), then nothing is left."""
    probability = np.full(SHAPE, 0.05, dtype=np.float32)
    probability[1:4, 1:4, 1:4] = 0.8
    probability[7, 7, 5:10] = 0.9
    candidates = extract_candidates(probability, _dynamic(1.0, 10))
    assert candidates.confidences.tolist() == [pytest.approx(0.8)]
    assert np.array_equal(candidates.labels, cube(SHAPE, (1, 1, 1), (3, 3, 3)).astype(candidates.labels.dtype))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(3))
def test_factor_one_on_a_map_of_distinct_values_ends_with_no_candidate(seed):
    """Every value distinct: at factor 1 every component is one voxel, too small for a minimum of 10 voxels."""
    probability = np.random.default_rng(seed).random(SHAPE).astype(np.float32)
    assert extract_candidates(probability, _dynamic(1.0, 10)).n == 0
    # the same map without a minimum size: each step takes the peak voxel (the first max_candidates of them)
    candidates = extract_candidates(probability, _dynamic(1.0, 0, max_candidates=3))
    assert candidates.confidences.tolist() == sorted(probability.ravel().tolist(), reverse=True)[:3]


@pytest.mark.timeout(120)
def test_the_froc_command_with_factor_one_ends(tmp_path):
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    from test_detection import _two_lesion_case, _write_probabilities

    from conftest_evaluation import write_image

    reference, foreground = _two_lesion_case(0)
    write_image(gt / "c0.nii.gz", reference.astype(np.uint8), (1.0, 1.0, 2.0))
    _write_probabilities(probs, "c0", np.stack([1 - foreground, foreground]))
    (probs / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}}))
    options = ["--candidates", "dynamic", "--dynamic-threshold-factor", "1", "--min-candidate-voxels", "10"]
    out = tmp_path / "out"
    arguments = ["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet", "-np", "1"]
    assert main([*arguments, *options]) == 0
    assert load_strict_json(out / "froc.json")["1"]["settings"]["dynamic_threshold_factor"] == 1.0


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"dynamic_threshold_factor": math.nan}, "dynamic_threshold_factor"),
        ({"dynamic_threshold_factor": math.inf}, "dynamic_threshold_factor"),
        ({"dynamic_threshold_factor": 0.5}, "dynamic_threshold_factor"),
        ({"threshold": math.nan}, "threshold"),
        ({"min_overlap": math.nan}, "min_overlap"),
        ({"min_candidate_voxels": 2.7}, "min_candidate_voxels"),
        ({"min_candidate_voxels": -1}, "min_candidate_voxels"),
        ({"max_candidates": 0}, "max_candidates"),
        ({"max_candidates": 2.5}, "max_candidates"),
        ({"min_lesion_voxels": True}, "min_lesion_voxels"),
        ({"min_lesion_volume_mm3": math.nan}, "min_lesion_volume_mm3"),
        ({"min_lesion_volume_mm3": math.inf}, "min_lesion_volume_mm3"),
        ({"fp_rates": (1.0, math.nan)}, "fp_rates"),
        ({"fp_rates": (1.0, math.inf)}, "fp_rates"),
        ({"fp_rates": (1.0, 1.0)}, "fp_rates"),
        ({"fp_rates": ()}, "fp_rates"),
        ({"size_fp_rate": math.nan}, "size_fp_rate"),
        ({"size_bins_ml": (1.0, math.nan)}, "size_bins_ml"),
        ({"size_bins_ml": (1.0, math.inf)}, "size_bins_ml"),
        ({"size_bins_ml": (1.0, 1.0)}, "size_bins_ml"),
        ({"bootstrap_resamples": 10.5}, "bootstrap_resamples"),
        ({"seed": -1}, "seed"),
        ({"allow_unmatched_candidates_with_minimal_overlap": "no"}, "allow_unmatched_candidates_with_minimal_overlap"),
    ],
)
def test_froc_settings_refuse_what_no_analysis_can_use(changes, named):
    with pytest.raises(ValueError, match=named):
        FrocSettings(**changes)
    with pytest.raises(ValueError, match=named):
        FrocSettings().replace(**changes)


def test_froc_settings_accept_numpy_numbers():
    settings = FrocSettings(
        min_candidate_voxels=np.int64(3), dynamic_threshold_factor=np.float32(2.0), seed=np.int32(1)
    )
    assert settings.min_candidate_voxels == 3


@pytest.mark.timeout(180)
def test_cv_summary_with_froc_factor_one_ends(tmp_path):
    from test_detection import _cv_run

    results, gt = _cv_run(tmp_path, "nnUNetTrainerDiceCE", True)
    options = [
        "--froc-candidates",
        "dynamic",
        "--froc-dynamic-threshold-factor",
        "1",
        "--froc-min-candidate-voxels",
        "10",
    ]
    assert main(["cv-summary", str(results), "--gt", str(gt), "--quiet", "-np", "1", *options]) == 0
    section = load_strict_json(results / "lesion_evaluation" / "cv_summary.json")["froc"]
    assert section["1"]["n_cases"] == 3 and section["1"]["n_failed"] == 0
