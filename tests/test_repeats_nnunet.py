"""Training repeats through nnU-Net's real CLI: scripts/run_cv.sh --repeats 2 trains fold 0 twice with
nnUNetv2_train (each repeat into its own results root), then nnUNetv2_predict predicts with each repeat by
pointing nnUNet_results at it, and nnUNetv2_ensemble averages the two repeats' predictions; no file renamed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli
from nnunet_lesionloss.repeats_layout import read_manifest, repeat_root

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_cv.sh"
TRAINER = "nnUNetTrainerDiceCE"


@pytest.mark.slow
def test_two_repeats_train_predict_and_ensemble_through_nnunet(preprocessed_dataset, short_run_config, tmp_path):
    results = tmp_path / "results"
    env = dict(
        preprocessed_dataset["env"],
        nnUNet_results=str(results),
        NNUNET_LESIONLOSS_CONFIG=str(short_run_config),
        LOG_DIR=str(tmp_path / "logs"),
    )
    dataset, dataset_id = preprocessed_dataset["dataset"], str(preprocessed_dataset["dataset_id"])
    done = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            dataset_id,
            "3d_fullres",
            TRAINER,
            "--repeats",
            "2",
            "--folds",
            "0",
            "--",
            "-device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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
