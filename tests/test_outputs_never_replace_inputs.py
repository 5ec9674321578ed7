"""No command writes where it reads (issue: no silent wrong number, round four, item 14). An output folder equal to
an input folder is refused before any work (exit status 2, naming both), with or without --overwrite; so is an
output folder where a later run of the same command would read it back (cv-summary and choose-threshold find
RESULTS_DIR/fold_*/validation by name) and an output file that is a file the command reads. An output folder
*inside* an input folder is allowed where nothing reads it: every folder is listed without its sub-folders."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest_evaluation import cube, write_image
from nnunet_lesionloss.cli import main

SHAPE = (8, 8, 8)
BINARY = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}


@pytest.fixture
def folders(tmp_path):
    """gt/c0, pred/c0 (a second model: other/c0), probs/ (nnUNetv2_predict --save_probabilities: c0.npz, .pkl,
    .nii.gz, dataset.json) and labels/ with dataset.json beside it."""
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3))
    write_image(tmp_path / "gt" / "c0.nii.gz", reference)
    write_image(tmp_path / "pred" / "c0.nii.gz", reference)
    write_image(tmp_path / "other" / "c0.nii.gz", reference)
    probs = tmp_path / "probs"
    foreground = reference * np.float32(0.9)
    probs.mkdir()
    np.savez_compressed(probs / "c0.npz", probabilities=np.stack([1 - foreground, foreground]))
    (probs / "c0.pkl").write_bytes(pickle.dumps({"spacing": [1.0, 1.0, 1.0]}))
    write_image(probs / "c0.nii.gz", reference)
    (probs / "dataset.json").write_text(json.dumps(BINARY))
    (tmp_path / "dataset.json").write_text(json.dumps(BINARY))  # beside gt/ (evaluate, inspect find it there)
    return tmp_path


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(arguments, named, root, capsys):
    before = _snapshot(root)
    assert main(arguments) == 2, arguments
    error = capsys.readouterr().err
    assert named in error, error
    assert _snapshot(root) == before  # nothing replaced, nothing added


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["remove-small", "{pred}", "{pred}", "--overwrite"], "INPUT"),
        (["remove-small", "{pred}", "{pred}", "--sweep", "--gt", "{gt}", "--overwrite"], "INPUT"),
        (["remove-small", "{pred}", "{gt}", "--sweep", "--gt", "{gt}", "--overwrite"], "--gt"),
        (["merge-by-volume", "--small-model", "{pred}", "--large-model", "{other}", "-o", "{pred}"], "--small-model"),
        (["merge-by-volume", "--small-model", "{pred}", "--large-model", "{other}", "-o", "{other}"], "--large-model"),
        (["apply-threshold", "--probabilities", "{probs}", "--threshold", "0.5", "-o", "{probs}"], "--probabilities"),
        (
            ["apply-threshold", "--probabilities", "{probs}", "--threshold", "0.5", "--template-dir", "{pred}"]
            + ["-o", "{pred}"],
            "--template-dir",
        ),
        (["evaluate", "--gt", "{gt}", "--pred", "{pred}", "-o", "{gt}"], "--gt"),
        (["evaluate", "--gt", "{gt}", "--pred", "{pred}", "-o", "{pred}"], "--pred"),
        (["froc", "--probabilities", "{probs}", "--gt", "{gt}", "-o", "{probs}"], "--probabilities"),
        (["froc", "--probabilities", "{probs}", "--gt", "{gt}", "-o", "{gt}"], "--gt"),
        (["inspect", "{gt}", "-o", "{gt}", "--no-tau"], "DATASET"),
        (
            ["choose-threshold", "--probabilities", "{probs}", "--gt", "{gt}", "-o", "{probs}/dataset.json"],
            "dataset.json",
        ),
        (["choose-threshold", "--probabilities", "{probs}", "--gt", "{gt}", "-o", "{probs}/c0.npz"], "--probabilities"),
        (["choose-threshold", "--probabilities", "{probs}", "--gt", "{gt}", "-o", "{gt}/c9.nii.gz"], "--gt"),
    ],
)
def test_an_output_equal_to_an_input_is_refused_before_any_work(folders, arguments, named, capsys):
    places = {name: str(folders / name) for name in ("gt", "pred", "other", "probs")}
    arguments = [a.format(**places) for a in arguments]
    _refused(
        arguments + ["--overwrite"] * ("--overwrite" not in arguments and arguments[0] != "inspect"),
        named,
        folders,
        capsys,
    )


def test_an_output_folder_inside_an_input_folder_is_allowed_where_nothing_reads_it(folders):
    probs, pred = folders / "probs", folders / "pred"
    assert main(["apply-threshold", "--probabilities", str(probs), "--threshold", "0.5", "-o", str(probs / "t")]) == 0
    assert main(["remove-small", str(pred), str(pred / "cleaned")]) == 0
    assert (
        main(
            [
                "choose-threshold",
                "--probabilities",
                str(probs),
                "--gt",
                str(folders / "gt"),
                "-o",
                str(probs / "choice.json"),
                "--quiet",
                "-np",
                "1",
            ]
        )
        == 0
    )
    # ... and the next run does not read it: the same command again lists the same cases
    assert main(["remove-small", str(pred), str(pred / "cleaned"), "--overwrite"]) == 0


def test_cv_summary_refuses_its_results_folder_and_any_fold_validation_folder(tmp_path, capsys):
    from test_detection import _cv_run

    results, gt = _cv_run(tmp_path, "nnUNetTrainerDiceCE", False)
    for output, named in (
        (results, "RESULTS_DIR"),
        (gt, "--gt"),
        (results / "fold_0" / "validation", "fold_*/validation"),
        (results / "fold_7" / "validation", "fold_*/validation"),  # not there yet: the next run would read it
    ):
        _refused(["cv-summary", str(results), "--gt", str(gt), "-o", str(output), "--quiet"], named, tmp_path, capsys)
    assert not (results / "fold_7").exists()


def test_choose_threshold_refuses_a_file_of_a_fold_validation_folder(tmp_path, capsys):
    from test_detection import _cv_run

    results, gt = _cv_run(tmp_path, "nnUNetTrainerDiceCE", True)
    output = results / "fold_0" / "validation" / "c9.npz"
    _refused(
        ["choose-threshold", "--probabilities", str(results), "--gt", str(gt), "-o", str(output)],
        "fold_*/validation",
        tmp_path,
        capsys,
    )
