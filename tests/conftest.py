"""Shared fixtures: a tiny synthetic nnU-Net dataset, planned and preprocessed once per session; the real data
the tests read: Open MS Data in the repository (``tests/data``), and the optional data that may not be
redistributed, found only where ``pytest --data=DIR`` points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Open MS Data (Lesjak et al. 2017, CC BY 4.0): the 30 consensus masks and two patients' 32³ crops, with their
#: licence and attribution (tests/data/open_ms_data/README.md)
OPEN_MS_DATA = REPO / "tests" / "data" / "open_ms_data"
#: the optional real data that may not be redistributed: the folder under ``--data DIR`` that holds it
OPTIONAL_DATA = {
    "brats_mets": "the official BraTS 2025 evaluator's sample (ref/, pred/, expected_metrics.json, expected_summary.csv)",
    "isles22_case0009": "one ISLES 2022 case (dwi.nii.gz, adc.nii.gz, mask.nii.gz)",
}
DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID:03d}_SyntheticLesions"


def pytest_addoption(parser):
    parser.addoption(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with the optional real data that the repository may not redistribute: "
        + "; ".join(f"{name}/: {what}" for name, what in OPTIONAL_DATA.items())
        + ". Without it, the tests that need it are skipped.",
    )


def pytest_configure(config):
    folder = config.getoption("data")
    if folder is not None and not folder.is_dir():
        raise pytest.UsageError(f"--data {folder}: not a folder (it should hold {', '.join(OPTIONAL_DATA)})")


def optional_data(config, name: str) -> Path:
    """``DIR/name`` of ``pytest --data=DIR``; skips the test, naming the option, when it is not there."""
    folder = config.getoption("data")
    if folder is None:
        pytest.skip(
            f"needs {OPTIONAL_DATA[name]}, which may not be redistributed: run pytest --data=<folder with {name}/>"
        )
    if not (folder / name).is_dir():
        pytest.skip(f"--data {folder} has no {name}/ ({OPTIONAL_DATA[name]})")
    return folder / name


@pytest.fixture(scope="session")
def brats_mets_sample(request) -> Path:
    """The BraTS 2025 evaluator's sample under ``--data``: ref/, pred/ and the evaluator's own outputs."""
    return optional_data(request.config, "brats_mets")


@pytest.fixture(scope="session")
def isles22_case(request) -> Path:
    """ISLES 2022 case 0009 under ``--data``: dwi.nii.gz, adc.nii.gz, mask.nii.gz."""
    return optional_data(request.config, "isles22_case0009")


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
