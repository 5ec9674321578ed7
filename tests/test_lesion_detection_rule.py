"""Which lesions count as detected: one-to-one matching at DSC >= 0.1 by default and during training
(a predicted blob is one lesion, however many it covers), the papers' any overlap in the presets that
reproduce them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from scipy import ndimage

from conftest_evaluation import close, cube
from nnunet_lesionloss.evaluation.metrics import evaluate_binary
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, get_preset
from nnunet_lesionloss.training import lesion_validation as lv

SHAPE = (24, 24, 24)


def lesions() -> np.ndarray:
    """Five separate lesions: 27, 8, 8, 1 and 64 voxels."""
    ref = (
        cube(SHAPE, (2, 2, 2), (3, 3, 3))
        | cube(SHAPE, (10, 3, 3), (2, 2, 2))
        | cube(SHAPE, (3, 12, 18), (2, 2, 2))
        | cube(SHAPE, (18, 18, 3), (1, 1, 1))
        | cube(SHAPE, (15, 14, 14), (4, 4, 4))
    )
    return ref.astype(bool)


def blob_over_everything(fraction: float = 0.88) -> np.ndarray:
    """One predicted component over the first ``fraction`` of the image (every lesion inside it)."""
    blob = np.zeros(SHAPE, bool)
    flat = blob.reshape(-1)
    flat[: int(fraction * flat.size)] = True
    blob |= lesions()
    return blob


def test_one_blob_over_the_image_does_not_max_out_the_default_lesion_metrics():
    """Observed: lesion recall, precision and F1 were 1.0 for one predicted blob filling 88 % of the image
    (Dice 0.003), because with any overlap it 'detects' every lesion and is itself a true component."""
    ref, blob = lesions(), blob_over_everything()
    default = evaluate_binary(ref, blob, (1, 1, 1)).values
    assert default["Dice"] < 0.02 and default["n_pred_lesions"] == 1
    assert (default["lesion_recall"], default["lesion_precision"], default["lesion_f1"]) == (0.0, 0.0, 0.0)
    assert default["lesion_fn"] == 5 and default["lesion_fp"] == 1
    # the papers' any overlap, kept where a preset reproduces a paper: every lesion 'detected'
    for preset in ("catmil", "wmh", "isles22"):
        papers = evaluate_binary(ref, blob, (1, 1, 1), get_preset(preset).settings).values
        assert (papers["lesion_recall"], papers["lesion_precision"], papers["lesion_f1"]) == (1.0, 1.0, 1.0), preset


def test_a_prediction_that_merges_two_lesions_detects_one_of_them():
    """Two lesions of 27 voxels bridged into one predicted component of 27 + 27 + 3 voxels: the pair with
    the better DSC (2·27 / (27 + 57) = 0.64) is matched, the other lesion is missed."""
    ref = (cube(SHAPE, (2, 2, 2), (3, 3, 3)) | cube(SHAPE, (2, 2, 8), (3, 3, 3))).astype(bool)
    pred = ref | cube(SHAPE, (3, 3, 5), (1, 1, 3)).astype(bool)
    v = evaluate_binary(ref, pred, (1, 1, 1)).values
    assert (v["n_ref_lesions"], v["n_pred_lesions"]) == (2, 1)
    assert (v["lesion_tp"], v["lesion_tp_pred"], v["lesion_fn"], v["lesion_fp"]) == (1, 1, 1, 0)
    assert v["lesion_recall"] == 0.5 and v["lesion_precision"] == 1.0 and close(v["lesion_f1"], 2 / 3)
    any_overlap = evaluate_binary(ref, pred, (1, 1, 1), EvaluationSettings(lesion_rule="any_overlap")).values
    assert any_overlap["lesion_recall"] == 1.0 and any_overlap["lesion_f1"] == 1.0


def test_a_lesion_split_in_two_predictions_counts_one_true_and_one_false_component():
    ref = cube(SHAPE, (2, 2, 2), (2, 2, 6)).astype(bool)  # 24 voxels
    pred = (cube(SHAPE, (2, 2, 2), (2, 2, 2)) | cube(SHAPE, (2, 2, 5), (2, 2, 3))).astype(bool)  # 8 + 12 inside
    v = evaluate_binary(ref, pred, (1, 1, 1)).values
    assert (v["lesion_tp"], v["lesion_fp"], v["lesion_fn"]) == (1, 1, 0)  # DSC 24/36 and 16/32 >= 0.1
    assert close(v["lesion_precision"], 0.5) and v["lesion_recall"] == 1.0


def test_the_dsc_threshold_is_inclusive_and_small_lesion_recall_follows_the_rule():
    """A one-voxel lesion inside a 9-voxel prediction: DSC 2/10 = 0.2, detected; inside a 27-voxel
    prediction: DSC 2/28 = 0.07, missed (a prediction 27 times its size is no detection of it)."""
    ref = cube(SHAPE, (5, 5, 5), (1, 1, 1)).astype(bool)
    nine = cube(SHAPE, (5, 4, 4), (1, 3, 3)).astype(bool)
    cube27 = cube(SHAPE, (4, 4, 4), (3, 3, 3)).astype(bool)
    assert evaluate_binary(ref, nine, (1, 1, 1)).values["small_lesion_recall"] == 1.0
    assert evaluate_binary(ref, cube27, (1, 1, 1)).values["small_lesion_recall"] == 0.0
    at_02 = EvaluationSettings(lesion_rule_threshold=0.2)
    assert evaluate_binary(ref, nine, (1, 1, 1), at_02).values["lesion_tp"] == 1  # DSC 0.2 >= 0.2


def slow_one_to_one_detections(ref: np.ndarray, pred: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(reference lesions, predicted lesions, matched pairs) from the definition: every pair's DSC by
    a loop over lesions, then the one-to-one assignment of eligible pairs (DSC >= threshold) with the
    largest DSC sum by enumeration."""
    structure = ndimage.generate_binary_structure(3, 3)
    ref_ids, n_ref = ndimage.label(ref, structure)
    pred_ids, n_pred = ndimage.label(pred, structure)
    eligible = {}
    for r in range(1, n_ref + 1):
        for p in range(1, n_pred + 1):
            a, b = ref_ids == r, pred_ids == p
            dsc = 2 * (a & b).sum() / (a.sum() + b.sum())
            if dsc >= threshold:
                eligible[(r, p)] = dsc
    refs = sorted({r for r, _ in eligible})
    preds = sorted({p for _, p in eligible})
    best = (0.0, 0)
    for k in range(min(len(refs), len(preds)) + 1):
        for chosen in itertools.combinations(refs, k):
            for assigned in itertools.permutations(preds, k):
                pairs = list(zip(chosen, assigned))
                if all(pair in eligible for pair in pairs):
                    best = max(best, (sum(eligible[pair] for pair in pairs), k))
    return n_ref, n_pred, best[1]


@hyp_settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.04, 0.25))
def test_default_detection_is_the_one_to_one_matching_at_dsc_01(seed, density):
    rng = np.random.default_rng(seed)
    ref, pred = rng.random((5, 6, 6)) < density, rng.random((5, 6, 6)) < density
    v = evaluate_binary(ref, pred, (1, 1, 1)).values
    n_ref, n_pred, matched = slow_one_to_one_detections(ref, pred, 0.1)
    if matched > 6:  # the enumeration above stays small
        return
    assert (v["n_ref_lesions"], v["n_pred_lesions"], v["lesion_tp"], v["lesion_tp_pred"]) == (
        n_ref,
        n_pred,
        matched,
        matched,
    )
    # and it is the dsc0.1 matching of the instance metrics: lesion F1 = RQ at DSC 0.1
    assert v["lesion_tp"] == v["dsc0.1_tp"] and v["lesion_fp"] == v["dsc0.1_fp"]
    if v["lesion_f1"] is not None:
        assert close(v["lesion_f1"], v["dsc0.1_rq"])


def test_presets_say_how_they_match():
    assert get_preset("default").settings.lesion_rule == "one_to_one_dsc"
    assert get_preset("default").settings.lesion_rule_threshold == 0.1
    assert get_preset("brats-mets").settings.lesion_rule == "one_to_one_dsc"
    catmil = get_preset("catmil").settings
    assert (catmil.lesion_rule, catmil.connectivity, catmil.hd95) == ("any_overlap", "face", "pooled")
    with pytest.raises(ValueError, match="lesion_rule_threshold"):
        EvaluationSettings(lesion_rule="one_to_one_dsc", lesion_rule_threshold=0.0)


# --------------------------------------------------------------------------- training-time patch metric
def test_the_training_patch_metric_is_immune_to_one_blob():
    """lesion F1 chooses checkpoint_best_lesion_f1.pth: a network that predicts one blob over the patch
    must not score F1 1."""
    ref, blob = lesions()[None, None], blob_over_everything()[None, None]
    rates = lv.lesion_rates(lv.patch_lesion_counts(blob, ref, connectivity=26, small_lesion_voxels=50))
    assert rates["lesion_f1"] == 0.0 and rates["lesion_recall"] == 0.0 and rates["lesion_precision"] == 0.0
    # a network that finds every lesion scores 1
    perfect = lv.lesion_rates(lv.patch_lesion_counts(ref, ref, connectivity=26, small_lesion_voxels=50))
    assert perfect["lesion_f1"] == 1.0


@hyp_settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.04, 0.3))
def test_the_patch_counts_follow_the_evaluation(seed, density):
    """The training-time counts of one patch are the evaluation's counts of the same masks."""
    rng = np.random.default_rng(seed)
    ref, pred = rng.random((6, 7, 5)) < density, rng.random((6, 7, 5)) < density
    counts = lv.patch_lesion_counts(pred[None, None], ref[None, None], connectivity=26, small_lesion_voxels=4)
    n = {name: int(counts[k]) for k, name in enumerate(lv.COUNT_FIELDS)}
    settings = EvaluationSettings(small_lesion_ml=0.004)  # 4 voxels of 1 mm³
    v = evaluate_binary(ref, pred, (1, 1, 1), settings).values
    assert (n["ref_lesions"], n["ref_detected"], n["pred_lesions"], n["pred_true"]) == (
        v["n_ref_lesions"],
        v["lesion_tp"],
        v["n_pred_lesions"],
        v["lesion_tp_pred"],
    )
    assert n["small_ref_lesions"] == v["n_small_ref_lesions"]


def test_the_measurement_script_prints_the_blob_rows():
    """scripts/lesion_matching_cases.py (docs/metrics.md quotes its table) runs; --quick: synthetic cases only."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "lesion_matching_cases.py"
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "| blob over 88 % of the image | one-to-one, DSC >= 0.1 (default) | 10 | 1 | 0.003 | 0.000 | 0.000 | 0.000 |"
        in (result.stdout)
    )
    assert (
        "| blob over 88 % of the image | any overlap (papers) | 10 | 1 | 0.003 | 1.000 | 1.000 | 1.000 |"
        in result.stdout
    )


def test_settings_recorded_by_an_earlier_release_read_with_todays_names():
    """summary.json of the release before the rename recorded the lesion rule as "detection"."""
    from nnunet_lesionloss.evaluation.settings import current_settings_record

    earlier = {"connectivity": "full", "detection": "any_overlap", "detection_threshold": 0.0, "detection_beta": 0.65}
    assert current_settings_record(earlier) == {
        "connectivity": "full",
        "lesion_rule": "any_overlap",
        "lesion_rule_threshold": 0.0,
        "lesion_rule_beta": 0.65,
    }
    assert current_settings_record(EvaluationSettings().to_dict()) == EvaluationSettings().to_dict()


def test_the_earlier_option_names_of_the_lesion_rule_are_answered_with_the_new_ones(tmp_path, capsys):
    from nnunet_lesionloss.cli import main

    for old, new in (("--detection", "--lesion-rule"), ("--detection-threshold", "--lesion-rule-threshold")):
        with pytest.raises(SystemExit) as stopped:
            main(["evaluate", "--gt", str(tmp_path), "--pred", str(tmp_path), old, "any_overlap"])
        assert stopped.value.code == 2
        assert f"use {new}" in capsys.readouterr().err
    assert main(["detection", "--probabilities", str(tmp_path)]) == 2
    assert "use 'nnunet-lesionloss froc'" in capsys.readouterr().err


@hyp_settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    ref_density=st.sampled_from([0.0, 0.05, 0.15]),
    pred_density=st.sampled_from([0.0, 0.05, 0.15]),
)
def test_evaluate_the_operating_point_and_training_counts_give_one_lesion_f1(seed, ref_density, pred_density):
    """One lesion-F1 rule: the evaluation of a case, the operating point's counts of the same prediction and
    the training-time patch counts agree on random cases (empty sides included)."""
    from nnunet_lesionloss.evaluation.operating_point import grid_counts, per_case_lesion_f1

    rng = np.random.default_rng(seed)
    ref = ndimage.binary_opening(rng.random((12, 12, 12)) < ref_density * 3) | (
        rng.random((12, 12, 12)) < ref_density / 5
    )
    pred = rng.random((12, 12, 12)) < pred_density
    settings = EvaluationSettings()
    evaluated = evaluate_binary(ref, pred, (1, 1, 1), settings).values["lesion_f1"]
    counts = grid_counts(pred.astype(np.float32), ref, (1, 1, 1), settings, (0.5,), (0,))
    chosen = per_case_lesion_f1(counts[None], settings.f1_both_empty)[0, 0, 0]
    patch = lv.patch_lesion_counts(pred[None, None], ref_masks=ref[None, None], connectivity=26, small_lesion_voxels=50)
    trained = lv.lesion_rates(patch)["lesion_f1"]
    if evaluated is None:
        assert np.isnan(chosen) and np.isnan(trained)
    else:
        assert chosen == pytest.approx(evaluated) and trained == pytest.approx(evaluated)


@pytest.mark.parametrize("rule", ["iou", "overlap_fraction"])
def test_a_lesion_no_prediction_touches_is_never_detected(rule):
    """issue 26 item 2: at threshold 0 the touching-lesion rules counted an untouched lesion as detected (recall and
    precision 1.0 for a case with one miss and one false positive), and a case with no overlapping pair at all
    gave 0/0. A threshold must be above 0; and whatever it is, an untouched lesion is a miss."""
    ref = cube(SHAPE, (1, 1, 1), (2, 2, 2)).astype(bool)
    pred = cube(SHAPE, (6, 6, 6), (2, 2, 2)).astype(bool)
    with pytest.raises(ValueError, match="lesion_rule_threshold"):
        EvaluationSettings(lesion_rule=rule, lesion_rule_threshold=0.0)
    values = evaluate_binary(
        ref, pred, (1, 1, 1), EvaluationSettings(lesion_rule=rule, lesion_rule_threshold=1e-9)
    ).values
    assert (values["lesion_tp"], values["lesion_fp"], values["lesion_fn"]) == (0, 1, 1)
    assert values["lesion_recall"] == 0.0 and values["lesion_precision"] == 0.0


def test_an_option_the_lesion_rule_ignores_is_refused(tmp_path, capsys):
    from nnunet_lesionloss.cli import main

    arguments = ["evaluate", "--gt", str(tmp_path / "a"), "--pred", str(tmp_path / "b")]
    assert main([*arguments, "--lesion-rule", "any_overlap", "--lesion-rule-threshold", "0.5"]) == 2
    assert "--lesion-rule-threshold" in capsys.readouterr().err
    assert main([*arguments, "--preset", "catmil", "--lesion-rule-threshold", "0.5"]) == 2
