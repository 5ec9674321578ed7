"""`nnunet-lesionloss evaluate` on hand-made folders: outputs, bad input, regions, the BraTS golden sample."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest_evaluation import close, cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (10, 12, 14)


def make_folders(root: Path):
    """Three good cases, one missing prediction, one shape mismatch, one unreadable, one with probabilities."""
    gt, pred = root / "gt", root / "pred"
    ref_a = cube(SHAPE, (2, 2, 2), (2, 2, 2)) | cube(SHAPE, (7, 8, 9), (1, 1, 1))  # 8 + 1 voxels
    write_image(gt / "case_a.nii.gz", ref_a, spacing_xyz=(0.5, 1.0, 2.0))
    write_image(pred / "case_a.nii.gz", cube(SHAPE, (2, 2, 2), (2, 2, 2)), spacing_xyz=(0.5, 1.0, 2.0))
    write_image(gt / "case_b.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(pred / "case_b.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(gt / "case_c.nii.gz", cube(SHAPE, (1, 1, 1), (3, 3, 3)))
    write_image(pred / "case_c.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(gt / "missing.nii.gz", cube(SHAPE, (1, 1, 1), (1, 1, 1)))
    write_image(gt / "wrong_shape.nii.gz", cube(SHAPE, (1, 1, 1), (1, 1, 1)))
    write_image(pred / "wrong_shape.nii.gz", np.zeros((4, 4, 4), np.uint8))
    write_image(gt / "broken.nii.gz", cube(SHAPE, (1, 1, 1), (1, 1, 1)))
    (pred / "broken.nii.gz").write_bytes(b"not an image at all")
    write_image(gt / "probabilities.nii.gz", cube(SHAPE, (1, 1, 1), (1, 1, 1)))
    write_image(pred / "probabilities.nii.gz", np.full(SHAPE, 0.3, np.float32))
    return gt, pred


def test_evaluate_reports_bad_cases_and_still_writes_the_good_ones(tmp_path, capsys):
    gt, pred = make_folders(tmp_path)
    out = tmp_path / "out"
    code = main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "-np", "2", "--quiet"])
    assert code == 1  # some cases failed
    summary = load_strict_json(out / "summary.json")
    errors = summary["errors"]
    assert set(errors) == {"missing", "wrong_shape", "broken", "probabilities"}
    assert "missing prediction" in errors["missing"]
    assert "shape mismatch" in errors["wrong_shape"]
    assert str(pred / "broken.nii.gz") in errors["broken"]
    assert "non-integer" in errors["probabilities"]
    per_case = {c["case"]: c for c in summary["metric_per_case"]}
    a = per_case["case_a"]["metrics"]["1"]
    # spacing (x, y, z) = (0.5, 1, 2) -> voxel 1 mm³; reference 9 voxels in 2 lesions, prediction hits one
    assert a["Dice"] == 2 * 8 / (9 + 8) and a["lesion_tp"] == 1 and a["lesion_fn"] == 1
    assert close(a["ref_volume_ml"], 0.009) and close(a["fn_volume_fraction"], 1 / 9)
    b = per_case["case_b"]
    assert b["metrics"]["1"]["Dice"] is None and "both empty" in b["undefined"]["1"]["Dice"]
    # nnU-Net layout: mean per label and foreground_mean; aggregates skip undefined values
    assert summary["mean"]["1"]["lesion_recall"] == pytest.approx((0.5 + 0.0) / 2)
    assert summary["aggregates"]["1"]["lesion_recall"]["n"] == 2
    assert summary["aggregates"]["1"]["lesion_recall"]["n_undefined"] == 1
    assert summary["foreground_mean"]["Dice"] == summary["mean"]["1"]["Dice"]
    with open(out / "cases.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 and {r["case"] for r in rows if r["error"]} == set(errors)
    assert "| Dice |" in (out / "summary.md").read_text()
    # nothing is overwritten without --overwrite
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(gt),
                "--pred",
                str(pred),
                "-o",
                str(out),
                "--quiet",
                "--overwrite",
                "--preset",
                "isles22",
            ]
        )
        == 1
    )
    isles = load_strict_json(out / "summary.json")
    assert {c["case"]: c for c in isles["metric_per_case"]}["case_b"]["metrics"]["1"]["lesion_f1_count"] == 1.0


def test_dataset_json_regions_and_unexpected_labels(tmp_path):
    gt, pred = tmp_path / "raw" / "labelsTr", tmp_path / "pred"
    ref = cube(SHAPE, (1, 1, 1), (2, 2, 2), value=1) + cube(SHAPE, (1, 1, 3), (2, 2, 2), value=2)
    write_image(gt / "c1.nii.gz", ref.astype(np.uint8))
    write_image(pred / "c1.nii.gz", (ref == 2).astype(np.uint8) * 2)
    write_image(gt / "c2.nii.gz", ref.astype(np.uint8))
    write_image(pred / "c2.nii.gz", (ref > 0).astype(np.uint8) * 5)  # label 5 does not exist
    dataset = {
        "labels": {"background": 0, "whole": [1, 2], "core": 2},
        "regions_class_order": [1, 2],
        "file_ending": ".nii.gz",
    }
    (tmp_path / "raw" / "dataset.json").write_text(json.dumps(dataset))  # found beside labelsTr
    out = tmp_path / "out"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1"]) == 1
    summary = load_strict_json(out / "summary.json")
    assert "unexpected label values [5]" in summary["errors"]["c2"]
    c1 = summary["metric_per_case"][0]["metrics"]
    assert set(c1) == {"(1, 2)", "2"} and summary["label_names"] == {"(1, 2)": "whole", "2": "core"}
    assert c1["2"]["Dice"] == 1.0 and c1["(1, 2)"]["Dice"] == 2 * 8 / (16 + 8)


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path), "--quiet"]) == 2
    assert "folder not found" in capsys.readouterr().err


def _same(a, b, path=""):
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), (path, set(a) ^ set(b) if isinstance(a, dict) else a)
        for key in b:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(b, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{k}]")
    elif isinstance(b, float) and (math.isnan(b) or math.isinf(b)):
        assert a is None, (path, a)  # our JSON writes null where the evaluator wrote NaN / Infinity
    elif isinstance(b, (int, float)) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_brats_mets_preset_reproduces_the_official_evaluator(tmp_path, brats_mets_sample):
    """The evaluator's sample may not be redistributed: ``pytest --data=DIR`` with DIR/brats_mets/."""
    golden = brats_mets_sample
    out = tmp_path / "brats"
    code = main(
        [
            "evaluate",
            "--gt",
            str(golden / "ref"),
            "--pred",
            str(golden / "pred"),
            "-o",
            str(out),
            "--preset",
            "brats-mets",
            "-np",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    with open(golden / "expected_metrics.json") as handle:
        expected = json.load(handle)  # contains NaN
    ours = load_strict_json(out / "brats_metrics.json")
    by_subject = {m["subject_name"]: m for m in ours["metrics"]}
    for case in expected["metrics"]:
        _same(by_subject[case["subject_name"]], case, case["subject_name"])
    with open(golden / "expected_summary.csv") as handle:
        expected_rows = list(csv.reader(handle))
    with open(out / "brats_summary.csv") as handle:
        our_rows = list(csv.reader(handle))
    assert our_rows[0] == expected_rows[0]
    ours_by_subject = {row[0]: row for row in our_rows[1:]}
    for row in expected_rows[1:]:
        mine = ours_by_subject[row[0]]
        for name, e, o in zip(expected_rows[0][1:], row[1:], mine[1:]):
            if e == "":
                assert o == "", (row[0], name, o)
            else:
                assert math.isclose(float(o), float(e), rel_tol=1e-9, abs_tol=1e-12), (row[0], name, o, e)


def test_spacing_and_orientation_mismatches_are_reported_per_case(tmp_path):
    import SimpleITK as sitk

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    lesion = cube(SHAPE, (2, 2, 2), (2, 2, 2))
    write_image(gt / "spacing.nii.gz", lesion, spacing_xyz=(1.0, 1.0, 1.0))
    write_image(pred / "spacing.nii.gz", lesion, spacing_xyz=(1.0, 1.0, 3.0))
    write_image(gt / "orientation.nii.gz", lesion)
    flipped = sitk.GetImageFromArray(lesion)
    flipped.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(flipped, str(pred / "orientation.nii.gz"))
    write_image(gt / "fine.nii.gz", lesion)
    write_image(pred / "fine.nii.gz", lesion)
    out = tmp_path / "out"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1"]) == 1
    summary = load_strict_json(out / "summary.json")
    assert "spacing mismatch" in summary["errors"]["spacing"]
    assert "orientation mismatch" in summary["errors"]["orientation"]
    assert summary["mean"]["1"]["Dice"] == 1.0 and summary["n_failed"] == 2


def test_reported_pq_sq_rq_agree_with_panoptica_on_every_case(tmp_path, capsys):
    from nnunet_lesionloss.synthetic import make_lesion_labels

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k in range(3):
        ref = make_lesion_labels((30, 34, 28), 12, radius_range=(1.0, 4.0), num_classes=2, seed=k)
        noisy = np.roll(ref, 1, axis=k)
        noisy[make_lesion_labels((30, 34, 28), 3, radius_range=(1.0, 2.0), seed=k + 10) > 0] = 1
        write_image(gt / f"c{k}.nii.gz", ref, spacing_xyz=(0.9, 1.1, 2.0))
        write_image(pred / f"c{k}.nii.gz", noisy, spacing_xyz=(0.9, 1.1, 2.0))
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(gt),
                "--pred",
                str(pred),
                "-o",
                str(out),
                "--quiet",
                "-np",
                "1",
                "--panoptica-check",
                "--hd95",
                "pooled",
            ]
        )
        == 0
    )
    check = load_strict_json(out / "summary.json")["panoptica_check"]
    assert set(check["cases"]) == {"c0", "c1", "c2"} and set(check["cases"]["c0"]) == {"1", "2"}
    assert check["max_abs_difference"] < 1e-7
    assert "panoptica check" in capsys.readouterr().out
    summary = load_strict_json(out / "summary.json")
    c0 = {c["case"]: c for c in summary["metric_per_case"]}["c0"]["metrics"]["1"]
    assert c0["dsc0.1_tp"] > 0 and c0["dsc0.5_tp"] > 0  # the comparison had matched pairs to compare


def test_panoptica_check_detects_a_wrong_value():
    from nnunet_lesionloss.evaluation.evaluate import panoptica_difference
    from nnunet_lesionloss.evaluation.metrics import evaluate_binary
    from nnunet_lesionloss.evaluation.settings import EvaluationSettings

    ref = cube(SHAPE, (2, 2, 2), (3, 3, 3)).astype(bool)
    pred = cube(SHAPE, (3, 2, 2), (3, 3, 3)).astype(bool)
    settings = EvaluationSettings(hd95="pooled")
    values = dict(evaluate_binary(ref, pred, (1.0, 2.0, 1.0), settings).values)
    assert panoptica_difference(ref, pred, (1.0, 2.0, 1.0), settings, values) < 1e-9
    values["dsc0.5_pq"] += 0.25
    assert close(panoptica_difference(ref, pred, (1.0, 2.0, 1.0), settings, values), 0.25, tol=1e-9)


def test_default_output_folder_does_not_touch_nnunets_own_summary(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "validation"
    write_image(gt / "c.nii.gz", cube(SHAPE, (2, 2, 2), (2, 2, 2)))
    write_image(pred / "c.nii.gz", cube(SHAPE, (2, 2, 2), (2, 2, 2)))
    (pred / "summary.json").write_text("{}")  # what nnU-Net's validation leaves there
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--quiet", "-np", "1"]) == 0
    assert (pred / "summary.json").read_text() == "{}"
    assert load_strict_json(pred / "lesion_evaluation" / "summary.json")["mean"]["1"]["Dice"] == 1.0


def test_without_dataset_json_every_label_found_is_evaluated_in_every_case(tmp_path):
    """issue 26 item 7: one false positive of label 2 in one of three cases is 1/3 FP per case, not 1.0 (a label
    averaged only over the cases where it appears); and an empty case adds no label nothing else has."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    lesion = cube(SHAPE, (2, 2, 2), (2, 2, 2))
    for k in range(3):
        write_image(gt / f"c{k}.nii.gz", lesion * 3)
        predicted = lesion * 3
        if k == 0:
            predicted = predicted + cube(SHAPE, (7, 8, 9), (2, 2, 2)) * 2  # label 2: one false positive
        write_image(pred / f"c{k}.nii.gz", predicted.astype(np.uint8))
    write_image(gt / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(pred / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    out = tmp_path / "out"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1"]) == 0
    summary = load_strict_json(out / "summary.json")
    assert sorted(summary["mean"]) == ["2", "3"]
    assert summary["mean"]["2"]["lesion_fp"] == pytest.approx(1 / 4)  # four cases, one false positive
    assert summary["mean"]["3"]["lesion_fn"] == pytest.approx(0.0)
    with open(out / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({row["label"] for row in rows}) == ["2", "3"] and len(rows) == 8
