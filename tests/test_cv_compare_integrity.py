"""cv-summary counts every fold of the split once and names the missing ones; compare refuses runs
evaluated against different references, survives runs it cannot test, and names a file it cannot read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_evaluation_cv_compare import DATASET, SHAPE, make_results_tree, reference_case

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main


@pytest.fixture()
def cv_tree(tmp_path, monkeypatch):
    runs = make_results_tree(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    return {"root": tmp_path, "run": runs["nnUNetTrainerMissesSmall"], "perfect": runs["nnUNetTrainerPerfect"]}


def cv_summary(run, *options: str) -> int:
    return main(["cv-summary", str(run), "--quiet", "-np", "1", *options])


# --------------------------------------------------------------------------- cv-summary: folds
def test_a_fold_without_validation_folder_is_reported_missing(cv_tree, capsys):
    """Observed: exit 0 with 'all 8 validation cases of folds 0, 1, 2, 4 evaluated'."""
    run = cv_tree["run"]
    shutil.rmtree(run / "fold_3" / "validation")
    assert cv_summary(run) == 1
    err = capsys.readouterr().err
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert summary["folds"] == [0, 1, 2, 4] and [m["fold"] for m in summary["missing_folds"]] == [3]
    assert {(f["fold"], f["case"]) for f in summary["failures"]} == {(3, "case_06"), (3, "case_07")}
    assert summary["n_cases"] == 10 and summary["n_evaluated"] == 8 and summary["n_failed"] == 2
    assert "fold 3" in err.strip().splitlines()[-1] and "no validation folder" in err
    assert "fold 3" in (run / "lesion_evaluation" / "cv_summary.md").read_text()


def test_folds_of_the_split_that_were_never_trained_are_reported_missing(cv_tree, capsys):
    """Observed: only folds 0-1 of a 5-fold split trained: exit 0, 'all 4 validation cases evaluated'."""
    run = cv_tree["run"]
    for fold in (2, 3, 4):
        shutil.rmtree(run / f"fold_{fold}")
    assert cv_summary(run) == 1
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert [m["fold"] for m in summary["missing_folds"]] == [2, 3, 4]
    assert summary["n_failed"] == 6 and summary["n_evaluated"] == 4
    assert "folds 2, 3, 4" in capsys.readouterr().err.strip().splitlines()[-1]
    # asking for the trained folds only is a complete summary of those folds
    assert cv_summary(run, "--folds", "0", "1", "--overwrite") == 0
    assert load_strict_json(run / "lesion_evaluation" / "cv_summary.json")["missing_folds"] == []


def test_a_backup_copy_of_a_fold_is_not_counted_as_that_fold(cv_tree, capsys):
    """Observed: fold_4_old was counted as fold 4 a second time: folds [0, 1, 2, 3, 4, 4], 12 of 10 cases."""
    run = cv_tree["run"]
    shutil.copytree(run / "fold_4", run / "fold_4_old")
    assert cv_summary(run) == 0
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert summary["folds"] == [0, 1, 2, 3, 4] and summary["n_cases"] == 10
    assert summary["ignored_folders"] == ["fold_4_old"]
    assert "fold_4_old" in capsys.readouterr().err


def test_a_corrupt_fold_summary_is_named_as_unreadable(cv_tree, capsys):
    """Observed: a corrupt fold summary was reported as 'an evaluation of other files or settings'."""
    run = cv_tree["run"]
    assert cv_summary(run) == 0
    (run / "lesion_evaluation" / "cv_summary.json").unlink()
    (run / "lesion_evaluation" / "fold_2" / "summary.json").write_text('{"settings": ')
    assert cv_summary(run) == 2
    err = capsys.readouterr().err
    assert "fold_2/summary.json cannot be read" in err and "other files or settings" not in err
    # a summary of other settings says which setting differs
    assert cv_summary(run, "--overwrite") == 0
    (run / "lesion_evaluation" / "cv_summary.json").unlink()
    assert cv_summary(run, "--small-lesion-ml", "0.01") == 2
    assert "small_lesion_ml" in capsys.readouterr().err


# --------------------------------------------------------------------------- compare: references
def _evaluate(gt, pred, out) -> int:
    return main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1"])


def test_compare_refuses_runs_evaluated_against_different_references(tmp_path, capsys):
    """Observed: compare paired two runs evaluated against different reference folders (paired Dice
    difference +0.77, p < 0.001, no warning)."""
    pred = tmp_path / "pred"
    gt_a, gt_b, gt_copy = tmp_path / "gt_a", tmp_path / "gt_b", tmp_path / "gt_copy"
    for k in range(4):
        write_image(pred / f"c{k}.nii.gz", reference_case(k))
        write_image(gt_a / f"c{k}.nii.gz", reference_case(k))
        write_image(gt_b / f"c{k}.nii.gz", cube(SHAPE, (6, 6, 6), (2, 2, 2)))
    shutil.copytree(gt_a, gt_copy)
    for name, gt in (("a", gt_a), ("b", gt_b), ("copy", gt_copy)):
        assert _evaluate(gt, pred, tmp_path / name) == 0
    summary = load_strict_json(tmp_path / "a" / "summary.json")
    assert summary["reference_folder"] == str(gt_a.resolve())
    assert len(summary["reference_checksums"]) == 4 and all(
        len(v) == 64 for v in summary["reference_checksums"].values()
    )
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "reference" in err and str(gt_a.resolve()) in err and str(gt_b.resolve()) in err
    assert not (tmp_path / "cmp").exists()
    args = [
        "compare",
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "-o",
        str(tmp_path / "cmp"),
        "--allow-different-settings",
    ]
    assert main(args) == 1
    assert str(gt_b.resolve()) in (tmp_path / "cmp" / "compare.md").read_text()
    # the same files in another folder (labelsTr vs gt_segmentations) are the same references
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "copy"), "-o", str(tmp_path / "same")]) == 0


def test_cv_summary_records_its_references(cv_tree):
    run = cv_tree["perfect"]
    assert cv_summary(run) == 0
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    gt = cv_tree["root"] / "preprocessed" / DATASET / "gt_segmentations"
    assert summary["reference_folder"] == str(gt.resolve())
    assert sorted(summary["reference_checksums"]) == [f"case_{k:02d}" for k in range(10)]


# --------------------------------------------------------------------------- compare: runs it cannot test
def test_compare_with_a_single_shared_case_of_zero_difference_writes_its_table(tmp_path):
    """Observed: scipy's 'each sample must contain two or more observations' crashed compare, nothing written."""
    gt, pred_a, pred_b = tmp_path / "gt", tmp_path / "pa", tmp_path / "pb"
    write_image(gt / "c0.nii.gz", reference_case(0))
    write_image(pred_a / "c0.nii.gz", reference_case(0))
    write_image(pred_b / "c0.nii.gz", reference_case(0))
    assert _evaluate(gt, pred_a, tmp_path / "a") == 0 and _evaluate(gt, pred_b, tmp_path / "b") == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "--names", "A", "B"]) == 0
    assert "| Dice ↑ | 0.0000, p = – (n = 1) |" in (out / "compare.md").read_text()


def test_compare_shows_a_run_whose_cases_all_failed(tmp_path, capsys):
    """Observed: 'label 1 not in ... (has none)': a run whose cases all failed could not be compared."""
    gt, good, bad = tmp_path / "gt", tmp_path / "good", tmp_path / "bad"
    for k in range(2):
        write_image(gt / f"c{k}.nii.gz", reference_case(k))
        write_image(good / f"c{k}.nii.gz", reference_case(k))
        (bad / f"c{k}.nii.gz").parent.mkdir(exist_ok=True)
        (bad / f"c{k}.nii.gz").write_bytes(b"corrupt")
    assert _evaluate(gt, good, tmp_path / "g") == 0 and _evaluate(gt, bad, tmp_path / "b") == 1
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "g"), str(tmp_path / "b"), "-o", str(out), "--names", "good", "bad"]) == 1
    table = (out / "compare.md").read_text()
    assert "| cases evaluated (n) | 2 | 0 |" in table and "bad †" in table
    assert "bad has no evaluated case" in capsys.readouterr().err


def test_compare_names_a_corrupt_summary(tmp_path, capsys):
    """Observed: a corrupt cv_summary.json gave 'Expecting value: line 1 column 1' without naming the file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "cv_summary.json").write_text("")
    assert main(["compare", str(run), "-o", str(tmp_path / "cmp")]) == 2
    assert str(run / "cv_summary.json") in capsys.readouterr().err


# --------------------------------------------------------------------------- cv-summary on 2D label maps
def test_cv_summary_of_a_2d_dataset(tmp_path, monkeypatch):
    """Observed: a 2D dataset's fold evaluation failed entirely (connectivity 26 is invalid in 2D)."""
    gt = tmp_path / "preprocessed" / DATASET / "gt_segmentations"
    run = tmp_path / "results" / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    cases = ["a", "b"]
    for k, case in enumerate(cases):
        image = np.zeros((16, 16), np.uint8)
        image[2:5, 2 + k : 5 + k] = 1
        write_image(gt / f"{case}.nii.gz", image, spacing_xyz=(1.0, 1.0), origin=(0.0, 0.0))
        write_image(
            run / f"fold_{k}" / "validation" / f"{case}.nii.gz", image, spacing_xyz=(1.0, 1.0), origin=(0.0, 0.0)
        )
    (gt.parent / "splits_final.json").write_text(
        json.dumps([{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}])
    )
    (run / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 0
    assert load_strict_json(run / "lesion_evaluation" / "cv_summary.json")["mean_of_fold_means"]["1"]["Dice"] == 1.0


def test_a_fold_with_an_ambiguous_reference_is_reused_when_started_again(cv_tree):
    """A case with two reference files fails in its fold; the fold's evaluation still describes the files,
    so a second run reuses it instead of refusing it as 'an evaluation of other files'."""
    run = cv_tree["run"]
    (run / "dataset.json").unlink()  # no file ending: every image ending counts
    gt = cv_tree["root"] / "preprocessed" / DATASET / "gt_segmentations"
    write_image(gt / "case_00.mha", reference_case(0))
    assert cv_summary(run) == 1
    first = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert [(f["fold"], f["case"]) for f in first["failures"]] == [(0, "case_00")]
    assert "2 reference files for case case_00" in first["failures"][0]["reason"]
    (run / "lesion_evaluation" / "cv_summary.json").unlink()
    assert cv_summary(run) == 1
    again = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert again["per_fold_cases"]["0"]["source"].startswith("reused") and again["failures"] == first["failures"]
