"""One rule for label values that dataset.json does not list (issue: no silent wrong number, round four, item 6):
every command that reads references fails the case and names the values, as ``evaluate`` does
(``io.check_label_values``); none drops those lesions, counts them as missed or skips them in silence."""

from __future__ import annotations

import json
import pickle

import numpy as np

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (10, 10, 10)
#: dataset.json names label 1 only; the references also hold a lesion of label 2
ONE_LABEL = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}


def _folders(tmp_path):
    """c0: a label-1 lesion (found at p = 0.9) and a label-2 lesion (p = 0); c1: a label-1 lesion only."""
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    for case, with_label_2 in (("c0", True), ("c1", False)):
        reference = cube(SHAPE, (1, 1, 1), (3, 3, 3))
        if with_label_2:
            reference += cube(SHAPE, (6, 6, 6), (3, 3, 3), value=2)
        write_image(gt / f"{case}.nii.gz", reference)
        foreground = np.where(reference == 1, 0.9, 0.0).astype(np.float32)
        probs.mkdir(exist_ok=True)
        np.savez_compressed(probs / f"{case}.npz", probabilities=np.stack([1 - foreground, foreground]))
        (probs / f"{case}.pkl").write_bytes(pickle.dumps({"spacing": [1.0, 1.0, 1.0]}))
        write_image(probs / f"{case}.nii.gz", (foreground >= 0.5).astype(np.uint8))
    (probs / "dataset.json").write_text(json.dumps(ONE_LABEL))
    return gt, probs


REASON = "unexpected label values [2] in the reference"


def test_evaluate_fails_the_case_with_the_values(tmp_path, capsys):
    gt, probs = _folders(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(ONE_LABEL))  # GT/../dataset.json
    code = main(["evaluate", "--gt", str(gt), "--pred", str(probs), "-o", str(tmp_path / "e"), "--quiet"])
    assert code == 1
    summary = load_strict_json(tmp_path / "e" / "summary.json")
    assert list(summary["errors"]) == ["c0"] and REASON in summary["errors"]["c0"]


def test_froc_fails_the_case_instead_of_dropping_the_lesion(tmp_path, capsys):
    gt, probs = _folders(tmp_path)
    out = tmp_path / "froc"
    assert main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet"]) == 1
    entry = load_strict_json(out / "froc.json")["1"]
    assert [f["case"] for f in entry["failed_cases"]] == ["c0"]
    assert REASON in entry["failed_cases"][0]["reason"]
    assert entry["n_cases"] == 1 and entry["n_lesions"] == 1  # c1 only: the label-2 lesion is no lesion of c1
    assert "c0: " + REASON in capsys.readouterr().err


def test_choose_threshold_fails_the_case_instead_of_counting_the_lesion_missed(tmp_path, capsys):
    gt, probs = _folders(tmp_path)
    out = tmp_path / "choice.json"
    arguments = ["--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--criterion", "sensitivity"]
    assert main(["choose-threshold", *arguments, "--max-fp-per-case", "1", "--quiet", "-np", "1"]) == 1
    record = load_strict_json(out)
    assert [f["case"] for f in record["failures"]] == ["c0"] and REASON in record["failures"][0]["reason"]
    assert record["cases"] == ["c1"] and record["targets"]["foreground"]["optimistic"]["sensitivity"] == 1.0
    assert REASON in capsys.readouterr().err


def test_inspect_reports_the_case_instead_of_skipping_its_lesion(tmp_path, capsys):
    gt, _ = _folders(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(ONE_LABEL))
    out = tmp_path / "inspect"
    assert main(["inspect", str(gt), "-o", str(out), "--quiet", "--no-tau"]) == 1
    report = load_strict_json(out / "inspect.json")
    assert list(report["errors"]) == ["c0"]
    assert "unexpected label values [2] in the label image" in report["errors"]["c0"]
    assert report["labels"]["1"]["cases"] == 1 and report["labels"]["1"]["lesions"] == 1


def test_inspect_takes_the_ignore_label_and_negative_values_by_the_same_rule(tmp_path):
    labels = cube(SHAPE, (1, 1, 1), (3, 3, 3)).astype(np.int16)
    labels[8, 8, 8] = 3  # nnU-Net's ignore label of this dataset.json: allowed, no lesion
    write_image(tmp_path / "labels" / "a.nii.gz", labels)
    labels[0, 0, 0] = -1
    write_image(tmp_path / "labels" / "b.nii.gz", labels)
    dataset = {"labels": {"background": 0, "lesion": 1, "ignore": 3}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    out = tmp_path / "inspect"
    assert main(["inspect", str(tmp_path / "labels"), "-o", str(out), "--quiet", "--no-tau"]) == 1
    report = load_strict_json(out / "inspect.json")
    assert list(report["errors"]) == ["b"] and "negative label values [-1]" in report["errors"]["b"]
    assert report["labels"]["1"]["lesions"] == 1
