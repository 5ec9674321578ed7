"""scripts/run_cv.sh --slurm without SLURM: the generated batch scripts, a fake sbatch, and the
scripts themselves run as SLURM would run them (array tasks, then the dependent summary)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from test_evaluation_cv_compare import DATASET, FAKE_TRAIN, make_results_tree

from conftest_evaluation import load_strict_json

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_cv.sh"

FAKE_SBATCH = """#!/usr/bin/env bash
# records its arguments; answers like sbatch --parsable: job id;cluster
echo "$@" >> "$FAKE_SBATCH_LOG"
n=$(wc -l < "$FAKE_SBATCH_LOG")
echo "$((4000 + n));cluster"
"""


def _environment(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("nnUNetv2_train", FAKE_TRAIN.format(dataset=DATASET)), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # an override with a space in its path (quoting), one that fits every trainer (run_cv.sh checks it)
    (tmp_path / "my config.yaml").write_text("trainer: {num_epochs: 2}\n")
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        nnUNet_raw=str(tmp_path / "raw"),
        nnUNet_preprocessed=str(tmp_path / "preprocessed"),
        nnUNet_results=str(tmp_path / "results"),
        nnUNet_extTrainer=str(tmp_path / "trainers"),
        NNUNET_LESIONLOSS_CONFIG=str(tmp_path / "my config.yaml"),
        FAKE_TRAIN_LOG=str(tmp_path / "train.log"),
        FAKE_SBATCH_LOG=str(tmp_path / "sbatch.log"),
        LOG_DIR=str(tmp_path / "logs"),
    )


def _run(args, env, **kwargs):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, **kwargs)


SLURM_ARGS = ["--slurm", "--partition", "gpu", "--time", "12:00:00", "--account", "lab", "--sbatch-arg=--qos=high"]


def test_dry_run_prints_the_scripts_and_submits_nothing(tmp_path):
    env = _environment(tmp_path)
    done = _run(["999", "3d_fullres", "nnUNetTrainerCATMIL", *SLURM_ARGS, "--dry-run", "--", "--c"], env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert not (tmp_path / "sbatch.log").exists(), "a dry run submits nothing"
    assert not (tmp_path / "train.log").exists(), "and trains nothing"
    train, summary = out.split("===== ")[1], out.split("===== ")[2]
    for line in (
        "#SBATCH --array=0,1,2,3,4",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=12:00:00",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        'nnUNetv2_train 999 3d_fullres "$SLURM_ARRAY_TASK_ID" -tr nnUNetTrainerCATMIL -p nnUNetPlans --npz --c',
        "export NNUNET_LESIONLOSS_CONFIG=",
        "export nnUNet_extTrainer=",
    ):
        assert line in train, line
    assert "--array" not in summary and "--gres" not in summary, "the summary needs no GPU"
    assert "#SBATCH --partition=gpu" in summary and "#SBATCH --account=lab" in summary
    assert "nnunet-lesionloss cv-summary" in summary and "--preset default" in summary
    assert "sbatch --dependency=afterok:<array job id>" in out
    scripts = sorted((tmp_path / "logs" / "slurm").glob("*.sbatch"))
    assert [p.name for p in scripts] == [
        "cv_nnUNetTrainerCATMIL_3d_fullres_summary.sbatch",
        "cv_nnUNetTrainerCATMIL_3d_fullres_train.sbatch",
    ]
    for path in scripts:
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_submission_chains_the_summary_after_the_array_and_the_scripts_run(tmp_path):
    """With a fake sbatch: two submissions, the second after the first (afterok). Then the scripts run
    as SLURM would: one array task per fold (SLURM_ARRAY_TASK_ID), then the summary."""
    make_results_tree(tmp_path)
    env = _environment(tmp_path)
    folds = ["--folds", "0 1 2 3 4", "--job-dir", str(tmp_path / "jobs")]
    done = _run(["999", "3d_fullres", "nnUNetTrainerFake", *SLURM_ARGS, *folds], env)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    train_script = tmp_path / "jobs" / "cv_nnUNetTrainerFake_3d_fullres_train.sbatch"
    summary_script = tmp_path / "jobs" / "cv_nnUNetTrainerFake_3d_fullres_summary.sbatch"
    assert calls == [f"--parsable {train_script}", f"--parsable --dependency=afterok:4001 {summary_script}"]
    assert "array job 4001" in done.stdout and "job 4002" in done.stdout

    # what SLURM would do: the array tasks in a clean environment (the script exports what it needs)
    clean = {"HOME": os.environ.get("HOME", "/tmp"), "FAKE_TRAIN_LOG": env["FAKE_TRAIN_LOG"]}
    for fold in range(5):
        task = subprocess.run(
            ["bash", str(train_script)], env=dict(clean, SLURM_ARRAY_TASK_ID=str(fold)), capture_output=True, text=True
        )
        assert task.returncode == 0, task.stderr
    trained = sorted((tmp_path / "train.log").read_text().splitlines())
    assert [c.split()[2] for c in trained] == ["0", "1", "2", "3", "4"]
    assert all("--npz" in c and "-tr nnUNetTrainerFake" in c for c in trained)
    summary = subprocess.run(["bash", str(summary_script)], env=clean, capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    run_dir = tmp_path / "results" / DATASET / "nnUNetTrainerFake__nnUNetPlans__3d_fullres"
    result = load_strict_json(run_dir / "lesion_evaluation" / "cv_summary.json")
    assert result["folds"] == [0, 1, 2, 3, 4] and result["mean_of_fold_means"]["1"]["Dice"] == 1.0


def test_slurm_options_are_checked(tmp_path):
    env = _environment(tmp_path)
    no_slurm = _run(["999", "3d_fullres", "nnUNetTrainerFake", "--dry-run"], env)
    assert no_slurm.returncode == 2 and "need --slurm" in no_slurm.stderr
    both = _run(["999", "3d_fullres", "nnUNetTrainerFake", "--slurm", "--gpus", "0,1"], env)
    assert both.returncode == 2 and "--gpus is for local runs" in both.stderr
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(tmp_path / "bin")) + (
        os.pathsep + str(tmp_path / "only_train")
    )
    (tmp_path / "only_train").mkdir()
    (tmp_path / "only_train" / "nnUNetv2_train").symlink_to(tmp_path / "bin" / "nnUNetv2_train")
    missing = _run(["999", "3d_fullres", "nnUNetTrainerFake", "--slurm"], env)
    assert missing.returncode == 2 and "sbatch not found" in missing.stderr
