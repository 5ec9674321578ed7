"""Known answers (computed by hand in the comments) for every metric of evaluate_binary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest_evaluation import close, cube
from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.metrics import concordance_correlation, evaluate_binary, volume_weighted_dice
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, MatchingSpec, get_preset

SHAPE = (12, 12, 12)


def test_both_empty_gives_undefined_values_with_reasons_and_no_nan():
    empty = np.zeros(SHAPE, bool)
    result = evaluate_binary(empty, empty, (1, 1, 1))
    v, why = result.values, result.undefined
    assert v["Dice"] is None and "both empty" in why["Dice"]
    assert v["hd95"] is None and "both empty" in why["hd95"]
    assert v["lesion_recall"] is None and why["lesion_recall"] == "no reference lesion"
    assert v["lesion_f1"] is None and v["dsc0.5_pq"] is None and v["dsc0.5_rq"] is None
    assert v["lesion_fp"] == v["lesion_fn"] == v["n_ref_lesions"] == 0
    assert v["TN"] == np.prod(SHAPE)
    json.dumps(v, allow_nan=False)  # None, never NaN
    # ISLES'22 convention: F1 is 1 when both are empty
    isles = evaluate_binary(empty, empty, (1, 1, 1), get_preset("isles22").settings)
    assert isles.values["lesion_f1_count"] == 1.0 and isles.values["lesion_f1"] == 1.0


def test_empty_reference_with_one_predicted_lesion():
    pred = cube(SHAPE, (2, 2, 2), (1, 1, 3)).astype(bool)  # 3 voxels
    result = evaluate_binary(np.zeros(SHAPE, bool), pred, (2.0, 1.0, 1.0))
    v = result.values
    assert v["Dice"] == 0.0
    assert v["lesion_fp"] == 1 and v["lesion_fn"] == 0
    assert v["lesion_precision"] == 0.0 and v["lesion_recall"] is None
    assert v["lesion_f1"] == 0.0 and v["lesion_f1_count"] == 0.0
    assert v["fp_volume_mm3"] == 6.0  # 3 voxels x 2 mm³
    assert v["rve"] is None and "reference is empty" in result.undefined["rve"]
    assert v["fn_volume_fraction"] is None
    assert v["hd95"] is None and result.undefined["hd95"] == "reference is empty"
    assert v["dsc0.5_rq"] == 0.0 and v["dsc0.5_pq"] == 0.0 and v["dsc0.5_sq"] is None


def test_empty_prediction_misses_every_lesion():
    ref = cube(SHAPE, (1, 1, 1), (2, 2, 2)) | cube(SHAPE, (6, 6, 6), (1, 1, 1))
    v = evaluate_binary(ref.astype(bool), np.zeros(SHAPE, bool), (1, 1, 1)).values
    assert v["n_ref_lesions"] == 2 and v["lesion_fn"] == 2 and v["lesion_recall"] == 0.0
    assert v["lesion_precision"] is None and v["lesion_f1"] == 0.0
    assert v["fn_volume_fraction"] == 1.0 and v["rve"] == 1.0 and v["Dice"] == 0.0
    assert v["small_lesion_recall"] == 0.0  # both 9 and 1 mm³ are <= 0.05 mL


def test_one_voxel_lesions_identical_and_shifted_on_an_anisotropic_axis():
    ref = cube(SHAPE, (5, 5, 5), (1, 1, 1)).astype(bool)
    same = evaluate_binary(ref, ref, (2.0, 1.0, 1.0)).values
    assert same["Dice"] == 1.0 and same["hd95"] == 0.0 and same["assd"] == 0.0 and same["nsd"] == 1.0
    assert same["dsc0.5_pq"] == 1.0 and same["lesion_f1"] == 1.0
    shifted = cube(SHAPE, (6, 5, 5), (1, 1, 1)).astype(bool)  # one voxel along axis 0, spacing 2 mm
    v = evaluate_binary(ref, shifted, (2.0, 1.0, 1.0)).values
    assert v["Dice"] == 0.0 and v["lesion_recall"] == 0.0 and v["lesion_fp"] == 1
    assert v["hd95"] == 2.0 and v["assd"] == 2.0  # voxel centres 2 mm apart
    assert v["nsd"] == 0.0  # tolerance = smallest spacing = 1 mm < 2 mm


def test_two_cubes_shifted_by_one_voxel_with_anisotropic_spacing():
    # reference z in {0,1}, prediction z in {1,2}, both 2x2 in (y, x); spacing (3, 1, 0.5) mm
    ref = cube(SHAPE, (3, 3, 3), (2, 2, 2)).astype(bool)
    pred = cube(SHAPE, (4, 3, 3), (2, 2, 2)).astype(bool)
    spacing = (3.0, 1.0, 0.5)
    result = evaluate_binary(ref, pred, spacing)
    v = result.values
    assert v["Dice"] == 0.5 and close(v["IoU"], 1 / 3)
    assert close(v["ref_volume_ml"], 8 * 1.5 / 1000) and close(v["abs_volume_error_ml"], 0.0)
    # every voxel is a border voxel; directed distances: four 0 mm and four 3 mm -> 95th percentile 3
    assert v["hd95"] == 3.0 and close(v["assd"], 1.5)
    assert close(v["nsd"], 0.5)  # tolerance 0.5 mm: half of each border
    assert close(v["fp_volume_mm3"], 4 * 1.5) and close(v["fn_volume_fraction"], 0.5)
    # DSC 0.5 matches at DSC >= 0.5 (panoptica's non-strict test), IoU 1/3 does not at IoU >= 0.5
    assert v["dsc0.5_tp"] == 1 and v["dsc0.5_rq"] == 1.0 and v["dsc0.5_sq_dsc"] == 0.5
    assert close(v["dsc0.5_sq"], 1 / 3) and close(v["dsc0.5_pq"], 1 / 3) and v["dsc0.5_pq_dsc"] == 0.5
    assert v["dsc0.5_sq_hd95"] == 3.0 and close(v["dsc0.5_sq_assd"], 1.5)
    assert v["iou0.5_tp"] == 0 and v["iou0.5_fp"] == 1 and v["iou0.5_fn"] == 1
    assert v["iou0.5_rq"] == 0.0 and v["iou0.5_pq"] == 0.0 and v["iou0.5_sq"] is None
    assert result.undefined["iou0.5_sq"] == "no matched lesion pair"


def test_hd95_pooled_and_max_directed_differ_as_computed_by_hand():
    ref = cube(SHAPE, (5, 5, 0), (1, 1, 1)).astype(bool)
    pred = cube(SHAPE, (5, 5, 0), (1, 1, 10)).astype(bool)  # a line of 10 voxels, all border
    # ref->pred: [0] ; pred->ref: [0..9]. max-directed: max(0, p95([0..9]) = 8.55) = 8.55
    # pooled: p95([0, 0, 1, ..., 9]) = sorted[9.5] = 8.5
    directed = evaluate_binary(ref, pred, (1, 1, 1), EvaluationSettings(hd95="max_directed")).values
    pooled = evaluate_binary(ref, pred, (1, 1, 1), EvaluationSettings(hd95="pooled")).values
    assert close(directed["hd95"], 8.55) and close(pooled["hd95"], 8.5)


def test_touching_lesions_depend_on_connectivity():
    corner = cube(SHAPE, (2, 2, 2), (2, 2, 2)) | cube(SHAPE, (4, 4, 4), (2, 2, 2))  # share one corner point
    edge = cube(SHAPE, (2, 2, 2), (2, 2, 2)) | cube(SHAPE, (4, 4, 2), (2, 2, 2))  # share an edge
    face = cube(SHAPE, (2, 2, 2), (2, 2, 2)) | cube(SHAPE, (4, 2, 2), (2, 2, 2))  # share a face
    counts = {
        c: [label_components(m.astype(bool), c, return_count=True)[1] for m in (corner, edge, face)]
        for c in (6, 18, 26)
    }
    assert counts == {6: [2, 2, 1], 18: [2, 1, 1], 26: [1, 1, 1]}
    pred = cube(SHAPE, (2, 2, 2), (1, 1, 1)).astype(bool)  # hits only the first cube
    v6 = evaluate_binary(corner.astype(bool), pred, (1, 1, 1), EvaluationSettings(connectivity=6)).values
    v26 = evaluate_binary(corner.astype(bool), pred, (1, 1, 1), EvaluationSettings(connectivity=26)).values
    assert (v6["n_ref_lesions"], v6["lesion_tp"], v6["lesion_fn"]) == (2, 1, 1)
    assert (v26["n_ref_lesions"], v26["lesion_tp"], v26["lesion_fn"]) == (1, 1, 0)


def test_lesion_detection_counts_small_recall_and_size_bins():
    ref = (
        cube(SHAPE, (0, 0, 0), (1, 1, 1)) | cube(SHAPE, (3, 3, 3), (2, 2, 2)) | cube(SHAPE, (7, 7, 7), (3, 3, 3))
    ).astype(bool)  # lesions of 1, 8 and 27 voxels
    pred = (
        cube(SHAPE, (3, 3, 3), (1, 1, 1)) | cube(SHAPE, (9, 9, 9), (1, 1, 1)) | cube(SHAPE, (0, 10, 10), (2, 2, 2))
    ).astype(bool)  # hits 8 and 27 by one voxel, 1 false lesion
    # any overlap (the papers' rule): 8 mm³ small lesions; bins <5, 5-20, >=20 mm³
    settings = EvaluationSettings(small_lesion_ml=0.008, size_bins_ml=(0.005, 0.02), lesion_rule="any_overlap")
    # the default (one-to-one at DSC >= 0.1): the hit of 8 voxels has DSC 2/9, the hit of 27 voxels 2/28 < 0.1
    default = evaluate_binary(ref, pred, (1, 1, 1), settings.replace(lesion_rule="one_to_one_dsc")).values
    assert (default["lesion_tp"], default["lesion_fn"], default["lesion_fp"]) == (1, 2, 2)
    assert default["bin>=0.02mL_lesion_recall"] == 0.0 and close(default["small_lesion_recall"], 0.5)
    v = evaluate_binary(ref, pred, (1, 1, 1), settings).values
    assert (v["lesion_tp"], v["lesion_fn"], v["lesion_fp"]) == (2, 1, 1)
    assert close(v["lesion_precision"], 2 / 3) and close(v["lesion_recall"], 2 / 3) and close(v["lesion_f1"], 2 / 3)
    assert close(v["lesion_fdr"], 1 / 3) and close(v["lesion_fnr"], 1 / 3)
    assert close(v["lesion_f1_count"], 2 / (2 + 1))  # tp / (tp + (fp + fn) / 2)
    assert v["n_small_ref_lesions"] == 2 and close(v["small_lesion_recall"], 0.5)  # 1 and 8 voxels; 8 is hit
    assert v["bin<0.005mL_n_ref_lesions"] == 1 and v["bin<0.005mL_lesion_recall"] == 0.0
    assert v["bin0.005-0.02mL_lesion_recall"] == 1.0 and v["bin>=0.02mL_lesion_recall"] == 1.0
    # one-voxel hits of 8 and 27 voxels have DSC 2/9 and 2/28 < 0.5: nothing matched at DSC 0.5
    assert v["dsc0.5_tp"] == 0 and v["dsc0.1_tp"] == 1  # 2/9 >= 0.1 > 2/28
    # FP lesion (8 voxels) binned by its own volume: 5-20 mm³ bin has 1 fn (dsc0.5) + 1 fp
    assert v["bin0.005-0.02mL_rq"] == 0.0
    assert v["bin<0.005mL_rq"] == 0.0 and v["bin<0.005mL_pq_dsc"] == 0.0


def test_minimum_lesion_size_removes_components_first():
    ref = cube(SHAPE, (3, 3, 3), (2, 2, 2)).astype(bool)
    pred = ref | cube(SHAPE, (9, 9, 9), (1, 1, 1)).astype(bool)
    assert evaluate_binary(ref, pred, (1, 1, 1)).values["lesion_fp"] == 1
    v = evaluate_binary(ref, pred, (1, 1, 1), EvaluationSettings(min_lesion_voxels=5)).values
    assert v["lesion_fp"] == 0 and v["Dice"] == 1.0
    msseg = get_preset("msseg").settings  # keeps lesions > 3 mm³: 1 voxel of 2 mm³ goes, 8 voxels stay
    assert evaluate_binary(ref, pred, (2, 1, 1), msseg).values["n_pred_lesions"] == 1


def test_shifts_iou_detection_and_msseg_overlap_fraction():
    ref = cube(SHAPE, (2, 2, 2), (2, 2, 2)).astype(bool)  # 8 voxels
    pred = cube(SHAPE, (2, 2, 2), (1, 2, 2)).astype(bool)  # 4 voxels inside: IoU 0.5
    shifts = get_preset("shifts").settings
    assert evaluate_binary(ref, pred, (1, 1, 1), shifts).values["lesion_tp"] == 1
    tiny = cube(SHAPE, (2, 2, 2), (1, 1, 1)).astype(bool)  # IoU 1/8 < 0.25
    assert evaluate_binary(ref, tiny, (1, 1, 1), shifts).values["lesion_tp"] == 0
    # MSSEG: 1/8 = 12.5 % >= 10 % covered and the prediction lies inside: detected
    msseg = get_preset("msseg").settings.replace(min_lesion_volume_mm3=0.0)
    assert evaluate_binary(ref, tiny, (1, 1, 1), msseg).values["lesion_tp"] == 1
    # a prediction mostly outside (1 voxel in, 26 out: 96 % outside > 65 %) does not count
    spill = cube(SHAPE, (3, 3, 3), (3, 3, 3)).astype(bool)  # shares only voxel (3, 3, 3) with the reference
    spill_v = evaluate_binary(ref, spill, (1, 1, 1), msseg).values
    assert spill_v["lesion_tp"] == 0


def test_settings_validation_messages():
    with pytest.raises(ValueError, match="connectivity"):
        EvaluationSettings(connectivity=7)
    with pytest.raises(ValueError, match="dsc0.5"):
        MatchingSpec.parse("dice50")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="shape mismatch"):
        evaluate_binary(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), (1, 1, 1))


def test_across_case_metrics_by_hand():
    # CCC of identical series is 1; of y = x + 1 it is 2·var / (2·var + 1) with population var
    x = [1.0, 2.0, 3.0]
    assert close(concordance_correlation(x, x), 1.0)
    assert close(concordance_correlation(x, [2.0, 3.0, 4.0]), 2 * (2 / 3) / (2 * (2 / 3) + 1))
    assert concordance_correlation([1.0], [1.0]) is None
    assert close(volume_weighted_dice([0.5, 1.0, None], [1.0, 3.0, 5.0]), (0.5 + 3.0) / 4.0)


def test_evaluation_labels_with_the_package_labelling_and_refuses_a_3d_connectivity_in_2d():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one lesion at 8-connectivity, two at 4
    assert evaluate_binary(mask, mask, (1.0, 1.0), EvaluationSettings(connectivity=8)).values["n_ref_lesions"] == 1
    assert evaluate_binary(mask, mask, (1.0, 1.0), EvaluationSettings(connectivity=4)).values["n_ref_lesions"] == 2
    with pytest.raises(ValueError, match=r"connectivity 26 is not valid in 2D"):
        evaluate_binary(mask, mask, (1.0, 1.0), EvaluationSettings(connectivity=26))
