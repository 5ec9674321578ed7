"""scripts/run_cv.sh --slurm without SLURM: the generated batch scripts, a fake sbatch, and the
scripts themselves run as SLURM would run them (array tasks, then the dependent summary)."""

from __future__ import annotations

import json
import os
import subprocess

from test_evaluation_cv_compare import DATASET
from test_run_cv import FAKE_PLANS, fake_nnunet, run_cv

from conftest_evaluation import load_strict_json

SLURM_ARGS = ["--slurm", "--partition", "gpu", "--time", "12:00:00", "--account", "lab", "--sbatch-arg", "--qos=high"]


def test_dry_run_prints_the_scripts_and_submits_nothing(tmp_path):
    env = fake_nnunet(tmp_path)
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", *SLURM_ARGS, "--dry-run", "--", "--c"], env)
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
    env = fake_nnunet(tmp_path)
    folds = ["--folds", "0 1 2 3 4", "--job-dir", str(tmp_path / "jobs")]
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", *SLURM_ARGS, *folds], env)
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
    env = fake_nnunet(tmp_path)
    no_slurm = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", "--dry-run"], env)
    assert no_slurm.returncode == 2 and "need --slurm" in no_slurm.stderr
    both = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", "--slurm", "--gpus", "0,1"], env)
    assert both.returncode == 2 and "--gpus is for local runs" in both.stderr
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(tmp_path / "bin")) + (
        os.pathsep + str(tmp_path / "only_train")
    )
    (tmp_path / "only_train").mkdir()
    (tmp_path / "only_train" / "nnUNetv2_train").symlink_to(tmp_path / "bin" / "nnUNetv2_train")
    missing = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--slurm"], env)
    assert missing.returncode == 2 and "sbatch not found" in missing.stderr


def test_a_control_character_in_any_option_is_refused_before_a_script_is_written(tmp_path):
    """A newline inside --partition (or --time, --account, --sbatch-arg) became a line of its own in
    the job script, which the job ran as a command."""
    env = fake_nnunet(tmp_path)
    jobs = ["--job-dir", str(tmp_path / "jobs")]
    for option in ("--partition", "--time", "--account", "--sbatch-arg"):
        value = f"gpu\ntouch {tmp_path / 'pwned'}"
        done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--slurm", option, value, *jobs], env)
        assert done.returncode == 2 and "contains a control character" in done.stderr, (option, done.stderr)
    for value in ("--qos=high\r", "--comment=a\tb", "--x=\x1b[31m"):
        done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--slurm", f"--sbatch-arg={value}", *jobs], env)
        assert done.returncode == 2 and "control character" in done.stderr
    done = run_cv(["999", "3d_fullres", "nnUNetTrainer$(id)", "--slurm", *jobs], env)
    assert done.returncode == 2 and "trainer class name" in done.stderr
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "pwned").exists()


def test_every_value_is_quoted_in_the_scripts(tmp_path):
    """Spaces, quotes, '#' (sbatch's comment sign) and shell characters stay inside their own word:
    #SBATCH words in double quotes as sbatch reads them, shell words quoted for bash."""
    env = fake_nnunet(tmp_path)
    env["LOG_DIR"] = str(tmp_path / "my logs")
    odd = ['--sbatch-arg=--comment=run #1 "first" $(touch pwned)', "--partition", "gpu a100"]
    done = run_cv(
        [
            "999",
            "3d_fullres",
            "nnUNetTrainerCATMIL",
            "--slurm",
            *odd,
            "--dry-run",
            "--",
            "-pretrained_weights",
            "a b;c",
        ],
        env,
    )
    assert done.returncode == 0, done.stderr
    train = (tmp_path / "my logs" / "slurm" / "cv_nnUNetTrainerCATMIL_3d_fullres_train.sbatch").read_text()
    assert '#SBATCH "--comment=run #1 \\"first\\" $(touch pwned)"' in train
    assert '#SBATCH "--partition=gpu a100"' in train
    assert f'#SBATCH "--output={tmp_path}/my logs/nnUNetTrainerCATMIL_3d_fullres_fold%a.log"' in train
    assert "-pretrained_weights a\\ b\\;c" in train
    # run as the job would (nnUNetv2_train is the fake): nothing but the training runs
    task = subprocess.run(
        ["bash", str(tmp_path / "my logs" / "slurm" / "cv_nnUNetTrainerCATMIL_3d_fullres_train.sbatch")],
        env={"HOME": str(tmp_path), "FAKE_TRAIN_LOG": env["FAKE_TRAIN_LOG"], "SLURM_ARRAY_TASK_ID": "0"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert task.returncode == 0, task.stderr
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "train.log").read_text().split()[:3] == ["999", "3d_fullres", "0"]


def test_relative_paths_are_written_absolute_and_the_dry_run_says_where(tmp_path):
    """A relative NNUNET_LESIONLOSS_CONFIG was written relative into the job scripts, and --dry-run
    wrote them into ./cv_logs/slurm of the current folder without saying so."""
    env = fake_nnunet(tmp_path)
    env["NNUNET_LESIONLOSS_CONFIG"] = "my config.yaml"
    env.pop("LOG_DIR")
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--slurm", "--dry-run"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    jobs = tmp_path / "cv_logs" / "slurm"
    assert f"job scripts written to {jobs}: " in done.stdout and "nothing submitted" in done.stdout
    train = (jobs / "cv_nnUNetTrainerCATMIL_3d_fullres_train.sbatch").read_text()
    quoted = str(tmp_path / "my config.yaml").replace(" ", "\\ ")
    assert f"export NNUNET_LESIONLOSS_CONFIG={quoted}\n" in train
    # the job finds the file from any working directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f'source <(grep "^export" {jobs / "cv_nnUNetTrainerCATMIL_3d_fullres_train.sbatch"}); '
            'cat "$NNUNET_LESIONLOSS_CONFIG"',
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert shown.stdout == "trainer: {num_epochs: 2}\n", shown.stderr


def test_the_summary_job_summarises_the_dataset_the_folds_train(tmp_path):
    """`run_cv.sh 010`: nnU-Net trains dataset 10, but printf '%03d' 010 is octal (8) in bash, so the summary
    job searched Dataset008_* and summarised another dataset; `0999` wrote Dataset000_* after 'invalid octal
    number' and exited 0. The summary job now names the dataset folder the check found."""
    env = fake_nnunet(tmp_path)
    ten = tmp_path / "preprocessed" / "Dataset010_Ten"
    ten.mkdir()
    (ten / "nnUNetPlans.json").write_text(json.dumps(dict(FAKE_PLANS, dataset_name="Dataset010_Ten")))
    (ten / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}}))
    (tmp_path / "results" / "Dataset008_Eight" / "nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres").mkdir(parents=True)
    for dataset, name in (("010", "Dataset010_Ten"), ("0999", DATASET)):
        done = run_cv([dataset, "3d_fullres", "nnUNetTrainerCATMIL", "--slurm", "--dry-run"], env)
        assert done.returncode == 0 and "octal" not in done.stderr, done.stderr
        train, summary = done.stdout.split("===== ")[1:3]
        assert (
            f"nnunet-lesionloss cv-summary {tmp_path}/results/{name}/nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres "
            in (summary)
        )
        assert "Dataset008" not in summary and "Dataset000" not in summary
        assert f'nnUNetv2_train {dataset} 3d_fullres "$SLURM_ARRAY_TASK_ID"' in train
