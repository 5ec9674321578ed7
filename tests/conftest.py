"""Shared fixtures: a tiny synthetic nnU-Net dataset, planned and preprocessed once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID:03d}_SyntheticLesions"


def nnunet_environment(root: Path) -> dict:
    """Environment for nnU-Net's CLI: private folders, our trainers, no spawn storms on 2 cores."""
    from nnunet_lesionloss.installation import trainer_folder

    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        nnUNet_extTrainer=trainer_folder(),
        nnUNet_n_proc_DA="0",  # augmentation in the main process: deterministic and light for CI
        nnUNet_def_n_proc="1",  # nnU-Net's export pool spawns this many Python processes
        nnUNet_compile="false",
        OMP_NUM_THREADS="2",
    )
    return env


def run_cli(args: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def preprocessed_dataset(tmp_path_factory) -> dict:
    """Synthetic dataset (6 cases of 32³, one lesion class) through nnUNetv2_plan_and_preprocess.

    Fold 0 is rewritten to 5 training cases and 1 validation case to keep nnU-Net's final
    validation short. Returns the environment for nnU-Net's CLI and the folders.
    """
    from nnunet_lesionloss.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("nnunet")
    for name in ("raw", "preprocessed", "results"):
        (root / name).mkdir()
    env = nnunet_environment(root)
    write_synthetic_dataset(
        str(root / "raw"), DATASET_ID, num_cases=6, shape=(32, 32, 32), lesions_per_case=(4, 10), seed=3
    )
    # planning calls torch.set_num_threads(n_proc_DA), which must be positive
    run_cli(
        ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "2d", "-np", "1", "-npfp", "1"],
        dict(env, nnUNet_n_proc_DA="1"),
    )
    keys = [f"case_{i:03d}" for i in range(6)]
    splits = [{"train": keys[:5], "val": keys[5:]}]
    (root / "preprocessed" / DATASET_NAME / "splits_final.json").write_text(json.dumps(splits))
    return {"env": env, "root": root, "dataset": DATASET_NAME, "dataset_id": DATASET_ID}


@pytest.fixture()
def short_run_config(tmp_path) -> Path:
    """An override file that shortens any trainer to 2 epochs of 2 iterations (the config mechanism)."""
    path = tmp_path / "short.yaml"
    path.write_text("trainer: {num_epochs: 2, num_iterations_per_epoch: 2, num_val_iterations_per_epoch: 1}\n")
    return path


PYTHON = sys.executable
