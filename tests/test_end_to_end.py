"""End to end through nnU-Net's real CLI: nnUNetv2_train with nnUNet_extTrainer, then nnUNetv2_predict."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli

TRAINERS = [
    "nnUNetTrainerBlob",
    "nnUNetTrainerCC",
    "nnUNetTrainerCATMIL",
    "nnUNetTrainerICI",
    "nnUNetTrainerFalse",
    "nnUNetTrainerProximity",
]


def _train(preprocessed_dataset, trainer: str, config_path, *extra: str) -> dict:
    env = dict(preprocessed_dataset["env"], NNUNET_LESIONLOSS_CONFIG=str(config_path))
    run_cli(
        ["nnUNetv2_train", str(preprocessed_dataset["dataset_id"]), "3d_fullres", "0", "-tr", trainer, "-device", "cpu"]
        + list(extra),
        env,
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS)
def test_train_and_predict_through_nnunet_cli(preprocessed_dataset, short_run_config, trainer, tmp_path):
    output = (
        preprocessed_dataset["root"]
        / "results"
        / preprocessed_dataset["dataset"]
        / f"{trainer}__nnUNetPlans__3d_fullres"
    )
    fold = output / "fold_0"
    # the session's results folder is shared: other tests' trainers may have left logs in this fold
    earlier_logs = set(fold.glob("training_log_*.txt"))
    env = _train(preprocessed_dataset, trainer, short_run_config)
    assert (fold / "checkpoint_final.pth").is_file()
    (log_file,) = set(fold.glob("training_log_*.txt")) - earlier_logs
    log = log_file.read_text()
    assert "Epoch 1" in log and "loss term weights" in log
    effective = json.loads((fold / "lesionloss_config.json").read_text())
    assert effective["trainer"] == trainer and effective["trainer_settings"]["num_epochs"] == 2
    assert (fold / "debug.json").is_file()
    losses = json.loads((fold / "debug.json").read_text())
    assert "LesionAwareLoss" in losses["loss"]

    raw_images = preprocessed_dataset["root"] / "raw" / preprocessed_dataset["dataset"] / "imagesTr"
    inputs = tmp_path / "in"
    inputs.mkdir()
    case = raw_images / "case_005_0000.nii.gz"
    (inputs / case.name).write_bytes(case.read_bytes())
    predictions = tmp_path / "out"
    run_cli(
        [
            "nnUNetv2_predict",
            "-i",
            str(inputs),
            "-o",
            str(predictions),
            "-d",
            str(preprocessed_dataset["dataset_id"]),
            "-c",
            "3d_fullres",
            "-f",
            "0",
            "-tr",
            trainer,
            "-device",
            "cpu",
            "--disable_tta",
            "-npp",
            "1",
            "-nps",
            "1",
        ],
        env,
    )
    predicted = sitk.ReadImage(str(predictions / "case_005.nii.gz"))
    reference = sitk.ReadImage(str(case))
    assert predicted.GetSize() == reference.GetSize()
    assert np.allclose(predicted.GetSpacing(), reference.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1}


@pytest.mark.slow
def test_resume_with_c_continues_the_warm_up(preprocessed_dataset, tmp_path):
    """nnUNetv2_train --c restores current_epoch from the checkpoint; the hook then sets λ_CAT(t) from it.
    A config that differs from the one in the checkpoint (here: more epochs) stops the resumed run
    naming the difference, until NNUNET_LESIONLOSS_RESUME=new says to train on with it; the record
    then holds both configs by epoch."""
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    common = "terms: {cat: {warmup_epochs: 4}}\n"
    first.write_text(
        common + "trainer: {num_epochs: 2, num_iterations_per_epoch: 2, num_val_iterations_per_epoch: 1}\n"
    )
    second.write_text(
        common + "trainer: {num_epochs: 4, num_iterations_per_epoch: 2, num_val_iterations_per_epoch: 1}\n"
    )
    env = _train(preprocessed_dataset, "nnUNetTrainerCAT", first)
    fold = (
        preprocessed_dataset["root"]
        / "results"
        / preprocessed_dataset["dataset"]
        / "nnUNetTrainerCAT__nnUNetPlans__3d_fullres"
        / "fold_0"
    )
    record = (fold / "lesionloss_config.json").read_text()
    command = ["nnUNetv2_train", str(preprocessed_dataset["dataset_id"]), "3d_fullres", "0", "-tr", "nnUNetTrainerCAT"]
    command += ["-device", "cpu", "--c"]
    refused = subprocess.run(
        command, env=dict(env, NNUNET_LESIONLOSS_CONFIG=str(second)), capture_output=True, text=True, timeout=900
    )
    assert refused.returncode != 0
    assert "trainer.num_epochs: 2 in the checkpoint, 4 now" in refused.stderr, refused.stderr[-3000:]
    assert (fold / "lesionloss_config.json").read_text() == record, "the refused run rewrote nothing"
    run_cli(command, dict(env, NNUNET_LESIONLOSS_CONFIG=str(second), NNUNET_LESIONLOSS_RESUME="new"))
    logs = sorted(fold.glob("training_log_*.txt"))
    resumed = logs[-1].read_text()
    assert "Epoch 0\n" not in resumed and "Epoch 2" in resumed
    assert "loss term weights: cat=0.05, mil=0" in resumed  # 0.1 · 2/4 at epoch 2
    assert "loss term weights: cat=0.075, mil=0" in resumed  # epoch 3
    assert "NNUNET_LESIONLOSS_RESUME=new: from epoch 2 on" in resumed
    history = json.loads((fold / "lesionloss_config.json").read_text())["history"]
    assert [(p["first_epoch"], p.get("last_epoch"), p["trainer_settings"]["num_epochs"]) for p in history] == [
        (0, 1, 2),
        (2, None, 4),
    ]
