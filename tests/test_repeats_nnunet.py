"""Training repeats through nnU-Net's real CLI: scripts/run_cv.sh --repeats 2 trains fold 0 twice with
nnUNetv2_train (each repeat into its own results root), then nnUNetv2_predict predicts with each repeat by
pointing nnUNet_results at it, and nnUNetv2_ensemble averages the two repeats' predictions; no file renamed.
A second trainer trained the same way, cv-summary summarises each run over its two repeats and compare takes
the two runs with their repeats (two-level intervals, P(better), verdicts)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli
from conftest_evaluation import load_strict_json
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.repeat_statistics import VERDICTS
from nnunet_lesionloss.repeats_layout import read_manifest, repeat_root

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_cv.sh"
TRAINER = "nnUNetTrainerDiceCE"
OTHER = "nnUNetTrainerCATMIL"


def train_repeats(trainer: str, env: dict, dataset_id: str) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), dataset_id, "3d_fullres", trainer, "--repeats", "2", "--folds", "0"]
        + ["--", "-device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_two_repeats_train_predict_ensemble_and_compare_through_nnunet(
    preprocessed_dataset, short_run_config, tmp_path, monkeypatch
):
    results = tmp_path / "results"
    dataset, dataset_id = preprocessed_dataset["dataset"], str(preprocessed_dataset["dataset_id"])
    # the session's preprocessed dataset, with fold 0 validating 3 of the 6 cases (paired intervals need >= 2)
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(Path(preprocessed_dataset["root"]) / "preprocessed" / dataset, preprocessed / dataset)
    keys = [f"case_{i:03d}" for i in range(6)]
    (preprocessed / dataset / "splits_final.json").write_text(json.dumps([{"train": keys[:3], "val": keys[3:]}]))
    env = dict(
        preprocessed_dataset["env"],
        nnUNet_results=str(results),
        nnUNet_preprocessed=str(preprocessed),
        NNUNET_LESIONLOSS_CONFIG=str(short_run_config),
        LOG_DIR=str(tmp_path / "logs"),
    )
    train_repeats(TRAINER, env, dataset_id)
    run_folder = results / "repeats" / dataset / f"{TRAINER}__nnUNetPlans__3d_fullres"
    folders = read_manifest(run_folder).repeat_folders(run_folder)
    for folder in folders.values():
        assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
        assert (folder / "lesion_evaluation" / "cv_summary.json").is_file()
    assert not (results / dataset).exists(), "the results root itself holds no dataset: nnU-Net passes 'repeats' by"
    # two trainings, not one twice: their validation probabilities differ
    validation = [sorted((f / "fold_0" / "validation").glob("*.npz")) for f in folders.values()]
    assert [p.name for p in validation[0]] == [p.name for p in validation[1]] and validation[0]
    first, second = (np.load(v[0])["probabilities"] for v in validation)
    assert not np.array_equal(first, second)

    case = Path(preprocessed_dataset["root"]) / "raw" / dataset / "imagesTr" / "case_005_0000.nii.gz"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / case.name).write_bytes(case.read_bytes())
    predictions = []
    for repeat in (1, 2):
        out = tmp_path / f"predicted_repeat_{repeat}"
        run_cli(
            [
                *("nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", dataset_id, "-c", "3d_fullres"),
                *("-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "--save_probabilities"),
                *("-npp", "1", "-nps", "1"),
            ],
            dict(env, nnUNet_results=str(repeat_root(results, repeat))),
        )
        assert (out / "case_005.nii.gz").is_file()
        predictions.append(out)
    ensemble = tmp_path / "ensemble"
    run_cli(["nnUNetv2_ensemble", "-i", *map(str, predictions), "-o", str(ensemble), "-np", "1", "--save_npz"], env)
    averaged = np.load(ensemble / "case_005.npz")["probabilities"]
    each = [np.load(p / "case_005.npz")["probabilities"] for p in predictions]
    assert np.allclose(averaged, (each[0] + each[1]) / 2, atol=1e-6)
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(ensemble / "case_005.nii.gz")))
    assert set(np.unique(segmentation)) <= {0, 1}

    # a second trainer with two repeats; cv-summary of each run over its repeats, then compare of the two runs
    train_repeats(OTHER, env, dataset_id)
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    runs = [results / "repeats" / dataset / f"{t}__nnUNetPlans__3d_fullres" for t in (TRAINER, OTHER)]
    for run in runs:
        assert main(["cv-summary", str(run), "--quiet", "-np", "1", "--froc-bootstrap-resamples", "100"]) == 0
        summary = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
        dice = summary["metrics"]["1"]["Dice"]
        assert set(dice["per_repeat"]) == {"1", "2"} and dice["n_repeats"] == 2
        assert dice["sd_between_repeats"] is not None and summary["missing_repeats"] == []
        assert set(summary["froc"]["1"]["ap"]["per_repeat"]) == {"1", "2"}
        with open(run / "lesion_evaluation" / "cases.csv") as handle:
            assert sorted(r["case"] for r in csv.DictReader(handle)) == keys[3:]
    out = tmp_path / "compare"
    code = main(
        ["compare", *map(str, runs), "--names", "DiceCE", "CATMIL", "-o", str(out), "--bootstrap-resamples", "500"]
    )
    assert code == 0
    data = load_strict_json(out / "compare.json")
    assert data["runs"]["DiceCE"]["n_repeats"] == 2 and data["runs"]["CATMIL"]["n_repeats"] == 2
    for metric in (
        "Dice",
        "lesion_f1",
        "small_lesion_recall",
        "lesion_fp",
        "froc_ap",
        "froc_cpm",
        "froc_sensitivity_at_1fp",
    ):
        catmil = data["metrics"][metric]["CATMIL"]
        assert catmil["n_repeats"] == 2 and catmil["verdict"] in VERDICTS
        assert catmil["diff"] == pytest.approx(catmil["mean"] - data["metrics"][metric]["DiceCE"]["mean"], abs=1e-9)
        if catmil["ci_low"] is not None:
            assert catmil["covers_retraining"] and catmil["ci_low"] <= catmil["ci_high"]
            assert 0 <= catmil["p_better"] <= 1
    table = (out / "compare.md").read_text()
    assert "| repeats | 2 | 2 |" in table and "CATMIL: verdict" in table
