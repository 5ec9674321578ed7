"""scripts/run_cv.sh on local GPUs (or one fold after the other) with a fake nnUNetv2_train: the check
before fold 0, option validation, failing folds, then cv-summary. SLURM: test_run_cv_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from test_evaluation_cv_compare import DATASET, FAKE_TRAIN, make_results_tree

from conftest_evaluation import load_strict_json

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_cv.sh"

#: a fake nnUNetv2_train that fails (exit 3, with a traceback-like line) for the fold FAKE_TRAIN_FAIL (of
#: the results root that ends with FAKE_TRAIN_FAIL_ROOT, when set: one repeat)
FAILING_WRAPPER = """#!/usr/bin/env bash
if [[ $3 == "${FAKE_TRAIN_FAIL:-none}" && $nnUNet_results == *"${FAKE_TRAIN_FAIL_ROOT:-}" ]]; then
    echo "RuntimeError: fold $3 ran out of memory" >&2
    exit 3
fi
exec python3 "$(dirname "$0")/fake_train.py" "$@"
"""

FAKE_SBATCH = """#!/usr/bin/env bash
# records its arguments; answers like sbatch --parsable: job id;cluster
echo "$@" >> "$FAKE_SBATCH_LOG"
n=$(wc -l < "$FAKE_SBATCH_LOG")
echo "$((4000 + n));cluster"
"""

#: a user's trainer folder for nnUNet_extTrainer: the fake trainer nnU-Net's lookup must find
FAKE_TRAINER = """from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerFake(nnUNetTrainer):
    pass
"""

#: the part of nnU-Net's plans the check before fold 0 reads (patch dimension, spacing, label manager)
FAKE_PLANS = {
    "dataset_name": DATASET,
    "plans_name": "nnUNetPlans",
    "label_manager": "LabelManager",
    "configurations": {"3d_fullres": {"patch_size": [16, 16, 16], "spacing": [1.0, 1.0, 1.0], "architecture": {}}},
}


def fake_nnunet(tmp_path: Path) -> dict:
    """nnU-Net folders with a planned Dataset999 (references, splits, plans), a fake nnUNetv2_train and
    sbatch on PATH, the fake trainer on nnUNet_extTrainer; the environment to run run_cv.sh in."""
    from nnunet_lesionloss.installation import trainer_folder

    make_results_tree(tmp_path)
    preprocessed = tmp_path / "preprocessed" / DATASET
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(FAKE_PLANS))
    (preprocessed / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "fake_train.py").write_text(FAKE_TRAIN.format(dataset=DATASET))
    for name, text in (("nnUNetv2_train", FAILING_WRAPPER), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    trainers = tmp_path / "trainers"
    trainers.mkdir(exist_ok=True)
    (trainers / "fake_trainers.py").write_text(FAKE_TRAINER)
    # an override with a space in its path (quoting), one that fits every trainer (the check reads it)
    (tmp_path / "my config.yaml").write_text("trainer: {num_epochs: 2}\n")
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        nnUNet_raw=str(tmp_path / "raw"),
        nnUNet_preprocessed=str(tmp_path / "preprocessed"),
        nnUNet_results=str(tmp_path / "results"),
        nnUNet_extTrainer=f"{trainer_folder()}{os.pathsep}{trainers}",
        NNUNET_LESIONLOSS_CONFIG=str(tmp_path / "my config.yaml"),
        FAKE_TRAIN_LOG=str(tmp_path / "train.log"),
        FAKE_SBATCH_LOG=str(tmp_path / "sbatch.log"),
        LOG_DIR=str(tmp_path / "logs"),
        POLL_SECONDS="0.2",
    )


def run_cv(args, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600, **kwargs)


def trained_folds(tmp_path: Path) -> list[str]:
    log = tmp_path / "train.log"
    return sorted(line.split()[2] for line in log.read_text().splitlines()) if log.exists() else []


def test_run_cv_script_trains_every_fold_with_npz_then_summarises(tmp_path):
    env = fake_nnunet(tmp_path)
    env.pop("NNUNET_LESIONLOSS_CONFIG")
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", "--gpus", "0,1"], env)
    assert done.returncode == 0, done.stderr
    calls = sorted((tmp_path / "train.log").read_text().splitlines())
    assert len(calls) == 5 and all("--npz" in c and "-tr nnUNetTrainerFake" in c for c in calls)
    assert {c.split("gpu=")[1] for c in calls} == {"0", "1"}
    run_dir = tmp_path / "results" / DATASET / "nnUNetTrainerFake__nnUNetPlans__3d_fullres"
    summary = load_strict_json(run_dir / "lesion_evaluation" / "cv_summary.json")
    assert summary["folds"] == [0, 1, 2, 3, 4] and summary["mean_of_fold_means"]["1"]["Dice"] == 1.0
    assert "config override: none" in done.stdout and "reads no lesion-loss config" in done.stdout
    usage = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage" in usage.stderr


def test_run_cv_script_prints_the_override_and_stops_when_it_does_not_fit(tmp_path):
    """The override in use is printed with what it changes; a CATMIL file given to Blob stops the
    script before the first fold (instead of five folds of Blob + CAT + MIL)."""
    env = fake_nnunet(tmp_path)
    override = tmp_path / "my_catmil.yaml"
    override.write_text("terms: {mil: {weight: 1.0}}\n")
    env["NNUNET_LESIONLOSS_CONFIG"] = str(override)
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerBlob"], env)
    assert done.returncode == 2 and f"config override in use: NNUNET_LESIONLOSS_CONFIG={override}" in done.stdout
    assert "nnUNetTrainerBlob has no term 'mil'" in done.stderr and trained_folds(tmp_path) == []
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--folds", "0"], env)
    assert done.returncode == 0, done.stderr
    assert '"terms.mil.weight": {' in done.stdout and trained_folds(tmp_path) == ["0"]
    # --folds: the summary covers the folds trained, and says how to summarise all of them later
    assert "the summary covers folds 0 only (--folds)" in done.stdout


# --------------------------------------------------------------------------- the check before fold 0
def test_overrides_the_trainer_refuses_stop_the_script_before_fold_0(tmp_path):
    """They passed the check and then stopped every fold at start."""
    env = fake_nnunet(tmp_path)
    for text, message in (
        ("add_terms: {bogus: {weight: 1}}\n", "unknown loss term 'bogus'"),
        ("terms: {mil: {params: {gama: 2}}}\n", "unknown param(s) ['gama'] in terms.mil.params"),
    ):
        (tmp_path / "bad.yaml").write_text(text)
        env["NNUNET_LESIONLOSS_CONFIG"] = str(tmp_path / "bad.yaml")
        done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--slurm", "--job-dir", str(tmp_path / "jobs")], env)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "nothing was trained or submitted" in done.stderr
        assert not (tmp_path / "jobs").exists() and not (tmp_path / "sbatch.log").exists()


def test_a_bogus_preset_an_unknown_trainer_and_an_unplanned_configuration_stop_before_fold_0(tmp_path):
    env = fake_nnunet(tmp_path)
    for args, message in (
        (["999", "3d_fullres", "nnUNetTrainerCATMIL", "--preset", "bogus"], "unknown evaluation preset 'bogus'"),
        (["999", "3d_fullres", "nnUNetTrainerNobodyWrote"], "nnU-Net finds no trainer nnUNetTrainerNobodyWrote"),
        (["999", "2d", "nnUNetTrainerCATMIL"], "configuration 2d not found"),
    ):
        done = run_cv(args, env)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert trained_folds(tmp_path) == [], "no fold trained"


# --------------------------------------------------------------------------- folds
def test_a_failing_fold_is_named_and_the_others_still_train(tmp_path):
    """Without --gpus a failing fold ended the script at once with exit 1 and no error line."""
    env = dict(fake_nnunet(tmp_path), FAKE_TRAIN_FAIL="1")
    for gpus in ([], ["--gpus", "0,1"]):
        (tmp_path / "train.log").unlink(missing_ok=True)
        done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", *gpus], env)
        assert done.returncode == 1
        assert "error: fold 1 failed (nnUNetv2_train exit status 3)" in done.stderr
        assert "fold 1 ran out of memory" in done.stderr, "the end of the fold's log is shown"
        assert "error: fold(s) 1 of 0 1 2 3 4 failed" in done.stderr and "cv-summary was not run" in done.stderr
        assert trained_folds(tmp_path) == ["0", "2", "3", "4"]
        assert not (
            tmp_path / "results" / DATASET / "nnUNetTrainerFake__nnUNetPlans__3d_fullres" / "lesion_evaluation"
        ).exists()


def test_folds_are_numbers_never_file_names(tmp_path):
    env = fake_nnunet(tmp_path)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "notes.txt").write_text("a file a glob would expand to")
    for folds, message in (("*", "got '*'"), ("0 a", "got 'a'"), ("0 1 1", "fold 1 is listed twice"), (" ", "no fold")):
        done = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--folds", folds], env, cwd=tmp_path / "cwd")
        assert done.returncode == 2 and message in done.stderr, (folds, done.stderr)
    assert trained_folds(tmp_path) == []
    run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--folds", "3,1"], env)  # cv-summary: folds 1 and 3
    assert trained_folds(tmp_path) == ["1", "3"]
    missing = run_cv(["999", "3d_fullres", "nnUNetTrainerCATMIL", "--folds"], env)
    assert missing.returncode == 2 and "--folds needs a value" in missing.stderr


# --------------------------------------------------------------------------- dataset ids and the folds of the split
def test_a_dataset_id_with_leading_zeros_is_decimal_as_nnunet_reads_it(tmp_path):
    """0999 is dataset 999 for nnU-Net; bash read it as an octal number ('invalid octal number'), searched
    Dataset000_* for the results and did not find them."""
    env = fake_nnunet(tmp_path)
    done = run_cv(["0999", "3d_fullres", "nnUNetTrainerFake", "--folds", "0"], env)
    assert done.returncode == 0, done.stderr
    assert "octal" not in done.stderr
    run_dir = tmp_path / "results" / DATASET / "nnUNetTrainerFake__nnUNetPlans__3d_fullres"
    assert f"summary: {run_dir}/lesion_evaluation/cv_summary.md" in done.stdout
    assert load_strict_json(run_dir / "lesion_evaluation" / "cv_summary.json")["folds"] == [0]


def test_folds_outside_the_split_are_refused_before_fold_0(tmp_path):
    """--folds 9 was accepted for a 5-fold dataset: nnU-Net then trains a random 80:20 split, which no
    cross-validation summary counts."""
    env = fake_nnunet(tmp_path)
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", "--folds", "0 9"], env)
    assert done.returncode == 2 and f"fold(s) 9 of --folds are not folds of {DATASET}" in done.stderr
    assert "splits_final.json has 5 folds (folds 0-4)" in done.stderr
    # a split of 3 folds: the default folds 0-4 are refused too; without a split, nnU-Net's 5 folds
    splits_file = tmp_path / "preprocessed" / DATASET / "splits_final.json"
    splits_file.write_text(json.dumps(json.loads(splits_file.read_text())[:3]))
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", "--slurm", "--dry-run"], env)
    assert done.returncode == 2 and "fold(s) 3 4 of --folds" in done.stderr and "has 3 folds (folds 0-2)" in done.stderr
    splits_file.unlink()
    done = run_cv(["999", "3d_fullres", "nnUNetTrainerFake", "--folds", "5", "--slurm", "--dry-run"], env)
    assert done.returncode == 2 and "no splits_final.json yet; nnU-Net writes a 5-fold one" in done.stderr
    assert trained_folds(tmp_path) == [] and not (tmp_path / "sbatch.log").exists()
