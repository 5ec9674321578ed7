"""Nothing lost, nothing hidden: cv-summary's failure report, inputs that are refused with a reason,
outputs that are checked first and written atomically, and fault injection (an unwritable output
folder, a corrupt file in the middle of a folder, a run killed during evaluation and started again)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluation_cv_compare import DATASET, SHAPE, make_results_tree, reference_case

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cv_tree(tmp_path, monkeypatch):
    runs = make_results_tree(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    return {"root": tmp_path, "run": runs["nnUNetTrainerMissesSmall"], "perfect": runs["nnUNetTrainerPerfect"]}


def evaluate(gt, pred, out, *options: str) -> int:
    """``nnunet-lesionloss evaluate --gt GT --pred PRED -o OUT --quiet OPTIONS``; the exit status."""
    return main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", *options])


def validation(run: Path, fold: int) -> Path:
    return run / f"fold_{fold}" / "validation"


# --------------------------------------------------------------------------- cv-summary: every failure listed
def test_cv_summary_lists_every_failed_or_missing_case_and_explains_its_exit_status(cv_tree, capsys):
    """Observed: cv-summary exited 1 without saying why."""
    run = cv_tree["run"]
    (validation(run, 1) / "case_03.nii.gz").unlink()  # missing prediction (case_03 is in fold 1's split)
    (validation(run, 3) / "case_06.nii.gz").write_bytes(b"corrupt")
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 1
    err = capsys.readouterr().err
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    failures = {(f["fold"], f["case"]): f["reason"] for f in summary["failures"]}
    assert set(failures) == {(1, "case_03"), (3, "case_06")}
    assert "missing prediction for case case_03" in failures[(1, "case_03")]
    assert str(validation(run, 3) / "case_06.nii.gz") in failures[(3, "case_06")]
    assert summary["n_failed"] == 2 and summary["n_evaluated"] == 8 and summary["n_cases"] == 10
    assert "fold 1, case case_03: missing prediction" in err and "fold 3, case case_06:" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("exit status 1: 2 of 10 validation cases of folds 0, 1, 2, 3, 4 failed or are missing")
    markdown = (run / "lesion_evaluation" / "cv_summary.md").read_text()
    assert "| 1 | case_03 | missing prediction" in markdown and "2 case(s) failed or are missing" in markdown


def test_cv_summary_success_also_explains_its_exit_status(cv_tree, capsys):
    assert main(["cv-summary", str(cv_tree["perfect"]), "--quiet", "-np", "1"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "exit status 0: all 10 validation cases of folds 0, 1, 2, 3, 4 evaluated"
    )


def test_a_fold_without_any_result_does_not_empty_the_table(cv_tree):
    """Observed: the labels were read from the first fold only, so a first fold whose cases all
    failed gave an empty table for the whole cross-validation."""
    run = cv_tree["run"]
    for case in ("case_00", "case_01"):  # fold 0's validation cases
        (validation(run, 0) / f"{case}.nii.gz").write_bytes(b"corrupt")
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 1
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert list(summary["mean_of_fold_means"]) == ["1"]
    assert summary["per_fold_mean"]["0"] == {}
    folds_1_to_4 = [summary["per_fold_mean"][str(f)]["1"]["lesion_recall"] for f in range(1, 5)]
    assert summary["mean_of_fold_means"]["1"]["lesion_recall"] == pytest.approx(np.mean(folds_1_to_4))
    assert summary["n_folds_of_fold_means"]["1"]["lesion_recall"] == 4
    assert "| lesion_recall | – |" in (run / "lesion_evaluation" / "cv_summary.md").read_text()


def test_without_a_splits_file_unpredicted_references_are_reported(cv_tree, capsys):
    """Observed: with no splits_final.json, a reference that no fold predicted was dropped in silence."""
    run = cv_tree["run"]
    (cv_tree["root"] / "preprocessed" / DATASET / "splits_final.json").unlink()
    (validation(run, 2) / "case_05.nii.gz").unlink()
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 1
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert summary["splits_file"] is None
    (failure,) = summary["failures"]
    assert failure["fold"] is None and failure["case"] == "case_05"
    assert "no splits_final.json" in failure["reason"]
    assert "fold -, case case_05" in capsys.readouterr().err
    # with only some folds asked for, the others' references are listed but expected to be absent
    assert main(["cv-summary", str(run), "--quiet", "-np", "1", "--folds", "0", "--overwrite"]) == 0
    subset = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert subset["failures"] == [] and len(subset["not_evaluated"]) == 8


def test_a_split_case_without_a_reference_is_a_failure_not_a_crash(cv_tree):
    run = cv_tree["run"]
    (cv_tree["root"] / "preprocessed" / DATASET / "gt_segmentations" / "case_09.nii.gz").unlink()
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 1
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert [(f["fold"], f["case"]) for f in summary["failures"]] == [(4, "case_09")]
    assert "no reference for case case_09" in summary["failures"][0]["reason"]


# --------------------------------------------------------------------------- inputs
def _pair(tmp_path, prediction: np.ndarray, name="c.nii.gz", reference=None):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_image(gt / name, cube(SHAPE, (2, 2, 2), (3, 3, 3)) if reference is None else reference)
    write_image(pred / name, prediction)
    return gt, pred


def test_nan_in_a_nifti_label_map_is_refused_per_case(tmp_path):
    """Observed: SimpleITK reads NaN in a float NIfTI file as 0, so the case was evaluated as background."""
    import SimpleITK as sitk

    prediction = cube(SHAPE, (2, 2, 2), (3, 3, 3)).astype(np.float32)
    prediction[0, 0, 0] = np.nan
    gt, pred = _pair(tmp_path, prediction)
    assert np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(pred / "c.nii.gz")))).sum() == 0  # the trap
    write_image(gt / "ok.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    write_image(pred / "ok.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, pred, tmp_path / "o") == 1
    errors = load_strict_json(tmp_path / "o" / "summary.json")["errors"]
    assert set(errors) == {"c"} and "contains NaN in 1 voxels" in errors["c"]


def test_non_integer_labels_name_an_example_value(tmp_path):
    gt, pred = _pair(tmp_path, np.full(SHAPE, 0.25, np.float32))
    assert evaluate(gt, pred, tmp_path / "o") == 1
    assert "non-integer values (e.g. 0.25" in load_strict_json(tmp_path / "o" / "summary.json")["errors"]["c"]


def test_gt_equal_to_pred_is_refused(tmp_path, capsys):
    gt, _ = _pair(tmp_path, cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, str(gt) + "/", tmp_path / "o") == 2
    assert "--gt and --pred are the same folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_labels_absent_from_dataset_json_are_an_error(tmp_path, capsys):
    gt, pred = _pair(tmp_path, cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"})
    )
    assert evaluate(gt, pred, tmp_path / "o", "--labels", "1", "7") == 2
    assert "--labels 7: " in capsys.readouterr().err
    assert evaluate(gt, pred, tmp_path / "o", "--labels", "1") == 0


def test_ignored_predictions_are_recorded_in_the_summary(tmp_path):
    gt, pred = _pair(tmp_path, cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    write_image(pred / "stray.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, pred, tmp_path / "o") == 0
    assert load_strict_json(tmp_path / "o" / "summary.json")["ignored_predictions"] == ["stray"]


def test_a_file_ending_that_does_not_match_dataset_json_is_named(tmp_path, capsys):
    gt, pred = tmp_path / "raw" / "labelsTr", tmp_path / "pred"
    for folder in (gt, pred):
        write_image(folder / "c.nrrd", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    (gt.parent / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"})
    )
    assert evaluate(gt, pred, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "holds 1 ending in .nrrd" in err and "says the file ending is .nii.gz" in err
    # references fine, predictions with another ending: said too
    write_image(gt / "c.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, pred, tmp_path / "o") == 2
    assert f"{pred} holds 1 ending in .nrrd" in capsys.readouterr().err


def test_brats_preset_on_files_without_brats_names_points_to_pairing_by_name(tmp_path, capsys):
    gt, pred = _pair(
        tmp_path, cube(SHAPE, (2, 2, 2), (3, 3, 3), value=3), reference=cube(SHAPE, (2, 2, 2), (3, 3, 3), value=3)
    )
    assert evaluate(gt, pred, tmp_path / "o", "--preset", "brats-mets") == 2
    err = capsys.readouterr().err
    assert "pairs files by the BraTS subject id" in err and "--pairing name" in err
    assert evaluate(gt, pred, tmp_path / "o", "--preset", "brats-mets", "--pairing", "name") == 0


# --------------------------------------------------------------------------- outputs
def _untouchable(monkeypatch):
    """Make any evaluation fail loudly: the commands must refuse a bad output before evaluating."""
    import nnunet_lesionloss.evaluation.runner as runner

    def refuse(*args, **kwargs):
        raise AssertionError("a case was evaluated before the output folder was checked")

    monkeypatch.setattr(runner, "evaluate_pairs", refuse)


def test_an_unwritable_output_folder_is_refused_before_any_evaluation(tmp_path, cv_tree, monkeypatch, capsys):
    """Observed: the output folder was created only after every case was evaluated, so a bad -o
    lost the whole evaluation (and crashed with a traceback)."""
    gt, pred = _pair(tmp_path, cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _untouchable(monkeypatch)
    assert evaluate(gt, pred, blocker / "out") == 2
    err = capsys.readouterr().err
    assert f"cannot create the output folder {blocker / 'out'}" in err and "exit status 2" in err
    assert main(["cv-summary", str(cv_tree["run"]), "-o", str(blocker / "cv"), "--quiet"]) == 2
    assert f"cannot create the output folder {blocker / 'cv'}" in capsys.readouterr().err
    assert main(["remove-small", str(pred), str(blocker / "clean")]) == 2
    assert main(["compare", str(cv_tree["run"]), "-o", str(blocker / "cmp")]) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_any_evaluation(tmp_path, monkeypatch, capsys):
    gt, pred = _pair(tmp_path, cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _untouchable(monkeypatch)
    assert evaluate(gt, pred, locked) == 2
    assert "cannot write into the output folder" in capsys.readouterr().err


def test_a_corrupt_file_in_the_middle_of_a_folder_stops_nothing(tmp_path, cv_tree, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k in range(5):
        write_image(gt / f"c{k}.nii.gz", reference_case(k))
        write_image(pred / f"c{k}.nii.gz", reference_case(k))
    (pred / "c2.nii.gz").write_bytes(b"\x1f\x8b half a gzip")
    for processes in ("1", "2"):
        out = tmp_path / f"o{processes}"
        assert evaluate(gt, pred, out, "-np", processes) == 1
        summary = load_strict_json(out / "summary.json")
        assert list(summary["errors"]) == ["c2"] and summary["aggregates"]["1"]["Dice"]["n"] == 4
    # cv-summary: a corrupt prediction in the middle fold
    run = cv_tree["run"]
    (validation(run, 2) / "case_04.nii.gz").write_bytes(b"corrupt")
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 1
    summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert summary["n_evaluated"] == 9 and [f["case"] for f in summary["failures"]] == ["case_04"]
    # remove-small: a corrupt file in the middle, the others are written
    capsys.readouterr()
    assert main(["remove-small", str(pred), str(tmp_path / "clean")]) == 1
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == [f"c{k}.nii.gz" for k in (0, 1, 3, 4)]
    assert "c2:" in capsys.readouterr().err


KILLER = """
import os, signal, sys
import nnunet_lesionloss.evaluation.evaluate as evaluate
import nnunet_lesionloss.evaluation.io as io
from nnunet_lesionloss.cli import main

kill_case, kill_write = os.environ.get("KILL_CASE"), os.environ.get("KILL_WRITE")
original_case, original_write = evaluate.evaluate_case, io.write_text

def case(name, *args, **kwargs):
    if name == kill_case:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a cluster's time limit would
    return original_case(name, *args, **kwargs)

def write_text(path, text):
    if kill_write and str(path).endswith(kill_write):  # die half-way through writing this file
        def half(temporary):
            temporary.write_text(text[: len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return io.atomic_write(path, half)
    return original_write(path, text)

evaluate.evaluate_case = case
io.write_text = write_text
sys.exit(main(sys.argv[1:]))
"""


def _killed_run(args: list[str], env: dict | None = None, **kill) -> subprocess.CompletedProcess:
    environment = dict(os.environ, **(env or {}), **{f"KILL_{k.upper()}": v for k, v in kill.items()})
    return subprocess.run([sys.executable, "-c", KILLER, *args], env=environment, capture_output=True, text=True)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_evaluate_killed_during_evaluation_and_started_again(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k in range(4):
        write_image(gt / f"c{k}.nii.gz", reference_case(k))
        write_image(pred / f"c{k}.nii.gz", cube(SHAPE, (1, 1, 1), (3, 3, 3)))
    out = tmp_path / "out"
    args = ["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1"]
    killed = _killed_run(args, case="c2")
    assert killed.returncode == -9
    assert _visible(out) == [], "nothing half-done may look like a result"
    assert main(args) == 0  # started again as it was: nothing to overwrite
    assert evaluate(gt, pred, tmp_path / "clean") == 0
    again, clean = load_strict_json(out / "summary.json"), load_strict_json(tmp_path / "clean" / "summary.json")
    assert again["metric_per_case"] == clean["metric_per_case"] and again["mean"] == clean["mean"]


def test_a_run_killed_while_writing_leaves_no_summary_beside_new_files(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for k in range(3):
        write_image(gt / f"c{k}.nii.gz", reference_case(k))
        write_image(pred / f"c{k}.nii.gz", reference_case(k))
    out = tmp_path / "out"
    args = ["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1"]
    assert main(args) == 0
    old_cases = (out / "cases.csv").read_text()
    write_image(pred / "c1.nii.gz", np.zeros(SHAPE, np.uint8))  # the predictions change, evaluate again
    killed = _killed_run([*args, "--overwrite"], write="summary.json")  # dies half-way through summary.json
    assert killed.returncode == -9
    assert not (out / "summary.json").exists(), "the old summary must not stand beside the new cases.csv"
    assert (out / "cases.csv").read_text() != old_cases  # the new one, complete (written atomically)
    assert any(p.name.startswith(".partial-") for p in out.iterdir()), "the half-written file stays hidden"
    assert main(["compare", str(out), "-o", str(tmp_path / "cmp")]) == 2  # no result to compare
    assert main(args) == 0  # started again as it was: what the killed run left is not a result to protect
    assert load_strict_json(out / "summary.json")["metric_per_case"][1]["metrics"]["1"]["n_pred"] == 0
    assert not any(p.name.startswith(".partial-") for p in out.iterdir()), "leftovers are cleaned on the next run"


def test_cv_summary_killed_during_a_fold_and_started_again_continues(cv_tree):
    """Observed: started again, cv-summary refused ('fold_0/summary.json exists; pass --overwrite')
    and --overwrite evaluated every fold again. Now complete folds of the same files are reused."""
    run = cv_tree["run"]
    env = {"nnUNet_preprocessed": str(cv_tree["root"] / "preprocessed")}
    args = ["cv-summary", str(run), "--quiet", "-np", "1"]
    killed = _killed_run(args, env=env, case="case_05")  # fold 2's second case
    assert killed.returncode == -9
    output = run / "lesion_evaluation"
    assert not (output / "cv_summary.json").exists() and not (output / "fold_2" / "summary.json").exists()
    assert (output / "fold_1" / "summary.json").is_file()
    assert main(args) == 0
    summary = load_strict_json(output / "cv_summary.json")
    sources = {fold: entry["source"] for fold, entry in summary["per_fold_cases"].items()}
    assert sources["0"].startswith("reused") and sources["1"].startswith("reused")
    assert sources["2"] == sources["3"] == sources["4"] == "evaluated"
    shutil.copytree(cv_tree["root"] / "results", cv_tree["root"] / "results_clean")
    clean_run = cv_tree["root"] / "results_clean" / DATASET / run.name
    shutil.rmtree(clean_run / "lesion_evaluation")
    assert main(["cv-summary", str(clean_run), "--quiet", "-np", "1"]) == 0
    clean = load_strict_json(clean_run / "lesion_evaluation" / "cv_summary.json")
    assert summary["mean_of_fold_means"] == clean["mean_of_fold_means"] and summary["pooled"] == clean["pooled"]
    # a fold whose predictions changed since is not reused: refused without --overwrite, redone with it
    (output / "cv_summary.json").unlink()
    write_image(validation(run, 0) / "case_00.nii.gz", reference_case(0))
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
