"""scripts/run_cv.sh --repeats N with a fake nnUNetv2_train and sbatch: every fold trained N times, each repeat
into an nnU-Net results root of its own ($nnUNet_results/repeats/repeat_<r>), the manifest written before the
first training, failures named by repeat and fold, resuming with --c and adding repeats with --repeat-ids,
and SLURM's job array of folds x repeats (its scripts run as SLURM would). The layout and the manifest:
docs/repeats.md; the same with the real nnUNetv2_train and nnUNetv2_predict: test_repeats_nnunet.py."""

from __future__ import annotations

import json
import os
import subprocess

from test_evaluation_cv_compare import DATASET
from test_run_cv import fake_nnunet, run_cv

from conftest_evaluation import load_strict_json
from nnunet_lesionloss.repeats_layout import read_manifest

RUN = "nnUNetTrainerFake__nnUNetPlans__3d_fullres"


def trainings(tmp_path) -> list[tuple[str, str]]:
    """(results root relative to the results folder, fold) of every training, from where each one wrote."""
    found = []
    for fold_dir in sorted((tmp_path / "results").rglob(f"{DATASET}/{RUN}/fold_*")):
        root = fold_dir.parents[2].relative_to(tmp_path / "results")
        found.append((str(root), fold_dir.name.removeprefix("fold_")))
    return found


def test_repeats_train_each_fold_into_its_own_results_root_and_failures_are_named(tmp_path):
    """2 repeats of folds 0 and 1 on two GPUs, repeat 2's fold 1 failing: the other three train, each in its
    repeat's root; the failure is named by repeat and fold; cv-summary is not run. Then the failed one is
    resumed alone (--repeat-ids 2 --folds 1 -- --c), and its repeat summarised."""
    env = dict(fake_nnunet(tmp_path), FAKE_TRAIN_FAIL="1", FAKE_TRAIN_FAIL_ROOT="repeats/repeat_2")
    args = ["999", "3d_fullres", "nnUNetTrainerFake", "--repeats", "2", "--folds", "0,1"]
    done = run_cv([*args, "--gpus", "0,1"], env)
    assert done.returncode == 1
    assert "error: repeat 2 fold 1 failed (nnUNetv2_train exit status 3)" in done.stderr
    assert "fold 1 ran out of memory" in done.stderr
    assert "error: 1 of 4 trainings failed: repeat 2 fold 1 (repeats 1 2 x folds 0 1;" in done.stderr
    assert "cv-summary was not run" in done.stderr
    assert trainings(tmp_path) == [("repeats/repeat_1", "0"), ("repeats/repeat_1", "1"), ("repeats/repeat_2", "0")]
    assert (tmp_path / "logs" / "nnUNetTrainerFake_3d_fullres_repeat2_fold1.log").is_file()
    run_folder = tmp_path / "results" / "repeats" / DATASET / RUN
    manifest = read_manifest(run_folder)  # written before the first training
    assert (manifest.repeats, manifest.folds) == (2, (0, 1))
    assert manifest.repeat_folders(run_folder) == {
        r: tmp_path / "results" / "repeats" / f"repeat_{r}" / DATASET / RUN for r in (1, 2)
    }

    del env["FAKE_TRAIN_FAIL"]
    (tmp_path / "train.log").unlink()
    done = run_cv(
        ["999", "3d_fullres", "nnUNetTrainerFake", "--repeats", "2", "--repeat-ids", "2", "--folds", "1", "--", "--c"],
        env,
    )
    assert done.returncode == 0, done.stderr
    (call,) = (tmp_path / "train.log").read_text().splitlines()
    assert call.startswith("999 3d_fullres 1 -tr nnUNetTrainerFake -p nnUNetPlans --npz --c")
    summary = load_strict_json(manifest.repeat_folders(run_folder)[2] / "lesion_evaluation" / "cv_summary.json")
    assert summary["folds"] == [1] and summary["mean_of_fold_means"]["1"]["Dice"] == 1.0
    assert not (manifest.repeat_folders(run_folder)[1] / "lesion_evaluation").exists(), "only repeat 2 was trained now"
    assert f"the repeats of this run: {run_folder}/repeats.json" in done.stdout
    assert read_manifest(run_folder).folds == (0, 1), "the folds of both invocations"
    assert not (tmp_path / "results" / DATASET / RUN).exists(), "nothing in the results root of runs without repeats"


def test_repeat_options_are_checked_and_the_manifest_never_loses_a_repeat(tmp_path):
    env = fake_nnunet(tmp_path)
    base = ["999", "3d_fullres", "nnUNetTrainerFake"]
    for extra, message in (
        (["--repeats", "0"], "--repeats takes the number of repeats, an integer >= 1, got '0'"),
        (["--repeats", "two"], "got 'two'"),
        (["--repeats", "3", "--repeat-ids", "4"], "--repeat-ids takes repeats 1 to 3 (--repeats 3), got 4"),
        (["--repeats", "3", "--repeat-ids", "1 1"], "repeat 1 is listed twice in --repeat-ids"),
        (["--repeats", "3", "--repeat-ids", "1-2"], "got '1-2'"),
        (["--repeat-ids", "1"], "--repeat-ids needs --repeats"),
        (["--repeats"], "--repeats needs a value"),
    ):
        done = run_cv([*base, *extra], env)
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
    # a run recorded with 3 repeats: --repeats 2 would drop repeat 3 from it
    recorded = subprocess.run(
        ["nnunet-lesionloss", "record-repeats", DATASET, "3d_fullres", "nnUNetTrainerFake", "--repeats", "3"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert recorded.returncode == 0, recorded.stderr
    done = run_cv([*base, "--repeats", "2"], env)
    assert done.returncode == 2 and "records 3 repeats of this run; --repeats 2 would leave repeats 3-3 out" in (
        done.stderr
    )
    assert "nothing was trained or submitted" in done.stderr
    assert not (tmp_path / "train.log").exists()


def test_slurm_submits_folds_x_repeats_as_one_array_and_its_scripts_run(tmp_path):
    """--dry-run writes the scripts and nothing else (no manifest); the submission records the manifest and
    chains the summary; each array task k trains repeat k // folds, fold k % folds, into its repeat's root;
    the summary job summarises every repeat."""
    env = fake_nnunet(tmp_path)
    args = ["999", "3d_fullres", "nnUNetTrainerFake", "--repeats", "3", "--folds", "0 1", "--slurm", "--job-dir"]
    jobs = tmp_path / "jobs"
    done = run_cv([*args, str(jobs), "--dry-run", "--", "--c"], env)
    assert done.returncode == 0, done.stderr
    train, summary = done.stdout.split("===== ")[1:3]
    for line in (
        "#SBATCH --array=0-5",
        "#SBATCH --gres=gpu:1",
        f"#SBATCH --output={tmp_path}/logs/nnUNetTrainerFake_3d_fullres_repeats_task%a.log",
        "REPEAT_IDS=(1 2 3)",
        "FOLDS=(0 1)",
        f'export nnUNet_results={tmp_path}/results/repeats/repeat_"$REPEAT"',
        'nnUNetv2_train 999 3d_fullres "$FOLD" -tr nnUNetTrainerFake -p nnUNetPlans --npz --c',
    ):
        assert line in train, line
    for r in (1, 2, 3):
        assert f"cv-summary {tmp_path}/results/repeats/repeat_{r}/{DATASET}/{RUN} --preset default" in summary
    assert "array tasks (repeat, fold): 0=repeat 1 fold 0; 1=repeat 1 fold 1; 2=repeat 2 fold 0;" in done.stdout
    assert "nnunet-lesionloss record-repeats" in done.stdout.split("===== ")[3]
    assert not (tmp_path / "results" / "repeats").exists() and not (tmp_path / "sbatch.log").exists()

    done = run_cv([*args, str(jobs)], env)
    assert done.returncode == 0, done.stderr
    assert "submitted repeats 1 2 3 of folds 0 1 as array job 4001 (6 tasks)" in done.stdout
    assert read_manifest(tmp_path / "results" / "repeats" / DATASET / RUN).repeats == 3
    clean = {"HOME": os.environ.get("HOME", "/tmp"), "FAKE_TRAIN_LOG": env["FAKE_TRAIN_LOG"]}
    for task in range(6):
        ran = subprocess.run(
            ["bash", str(jobs / "cv_nnUNetTrainerFake_3d_fullres_train.sbatch")],
            env=dict(clean, SLURM_ARRAY_TASK_ID=str(task)),
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, ran.stderr
        assert f"array task {task}: repeat {task // 2 + 1} fold {task % 2}" in ran.stdout
    assert trainings(tmp_path) == [(f"repeats/repeat_{r}", f) for r in "123" for f in "01"]
    summarised = subprocess.run(
        ["bash", str(jobs / "cv_nnUNetTrainerFake_3d_fullres_summary.sbatch")],
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert summarised.returncode == 0, summarised.stderr
    for r in (1, 2, 3):
        run = tmp_path / "results" / "repeats" / f"repeat_{r}" / DATASET / RUN
        assert json.loads((run / "lesion_evaluation" / "cv_summary.json").read_text())["folds"] == [0, 1]
