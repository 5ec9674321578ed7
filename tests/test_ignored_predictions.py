"""Predictions no reference claims are recorded and said, as ``evaluate`` does (issue: no silent wrong number,
round four, item 15): the ``froc`` command and ``remove-small --sweep`` list them in their JSON
(``ignored_predictions``) and Markdown, and note them on stderr, also with ``--quiet``."""

from __future__ import annotations

import json
import pickle

import numpy as np

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (8, 8, 8)
BINARY = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
NOTE = "note: 1 predictions in {folder} without a reference are ignored: x9"


def test_froc_records_and_says_the_probabilities_without_a_reference(tmp_path, capsys):
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3))
    write_image(gt / "c0.nii.gz", reference)
    foreground = reference * np.float32(0.9)
    probs.mkdir()
    for case in ("c0", "x9"):
        np.savez_compressed(probs / f"{case}.npz", probabilities=np.stack([1 - foreground, foreground]))
        (probs / f"{case}.pkl").write_bytes(pickle.dumps({"spacing": [1.0, 1.0, 1.0]}))
    (probs / "dataset.json").write_text(json.dumps(BINARY))
    out = tmp_path / "out"
    assert main(["froc", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out), "--quiet", "-np", "1"]) == 0
    assert NOTE.format(folder=probs) in capsys.readouterr().err
    assert load_strict_json(out / "froc.json")["1"]["ignored_predictions"] == ["x9"]
    assert "x9" in (out / "froc.md").read_text()


def test_the_min_size_sweep_records_and_says_the_predictions_without_a_reference(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3))
    write_image(gt / "c0.nii.gz", reference)
    write_image(pred / "c0.nii.gz", reference)
    write_image(pred / "x9.nii.gz", reference)
    out = tmp_path / "sweep"
    assert main(["remove-small", str(pred), str(out), "--sweep", "--gt", str(gt), "--min-sizes", "0", "5"]) == 0
    assert NOTE.format(folder=pred) in capsys.readouterr().err
    assert load_strict_json(out / "min_size_sweep.json")["ignored_predictions"] == ["x9"]
    assert "x9" in (out / "min_size_sweep.md").read_text()
