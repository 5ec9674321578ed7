"""apply-threshold trusts neither a geometry template nor a hand-edited operating-point JSON (issue: no silent
wrong number, round four, items 8 and 17): a template whose geometry differs from what nnU-Net's ``.pkl`` records
fails the case, named; every field of the JSON is checked, and a bad one is a usage error naming the key and
its allowed values (never a KeyError, never a truncated size)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest_evaluation import cube, write_image
from nnunet_lesionloss.cli import main

SHAPE = (8, 8, 8)
BINARY = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}


def _probabilities(tmp_path, spacing_xyz=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    """nnUNetv2_predict --save_probabilities: c0.npz, c0.pkl (spacing and origin of the exported image) and
    c0.nii.gz with that geometry; dataset.json."""
    probs = tmp_path / "probs"
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3))
    foreground = reference * np.float32(0.9)
    probs.mkdir()
    np.savez_compressed(probs / "c0.npz", probabilities=np.stack([1 - foreground, foreground]))
    properties = {
        "spacing": list(spacing_xyz[::-1]),
        "sitk_stuff": {"spacing": spacing_xyz, "origin": origin, "direction": tuple(np.eye(3).ravel())},
    }
    (probs / "c0.pkl").write_bytes(pickle.dumps(properties))
    write_image(probs / "c0.nii.gz", (foreground >= 0.5).astype(np.uint8), spacing_xyz, origin)
    (probs / "dataset.json").write_text(json.dumps(BINARY))
    return probs, reference


# --------------------------------------------------------------------------- item 8: the template's geometry
@pytest.mark.parametrize(
    "template_geometry, named",
    [
        (((2.0, 2.0, 5.0), (0.0, 0.0, 0.0)), "spacing"),
        (((1.0, 1.0, 1.0), (10.0, -4.0, 3.0)), "origin"),
    ],
)
def test_a_template_of_another_geometry_than_the_pkl_fails_the_case(tmp_path, capsys, template_geometry, named):
    probs, reference = _probabilities(tmp_path)
    templates = tmp_path / "templates"
    write_image(templates / "c0.nii.gz", reference, *template_geometry)
    out = tmp_path / "out"
    arguments = ["--probabilities", str(probs), "--threshold", "0.5", "-o", str(out), "--template-dir", str(templates)]
    assert main(["apply-threshold", *arguments]) == 1
    error = capsys.readouterr().err
    assert "c0: " in error and named in error and "c0.pkl" in error and "template" in error
    assert not (out / "c0.nii.gz").exists()


def test_a_template_of_the_pkls_geometry_is_used(tmp_path):
    import SimpleITK as sitk

    probs, reference = _probabilities(tmp_path, (0.5, 0.5, 2.0), (1.0, 2.0, 3.0))
    templates = tmp_path / "templates"
    write_image(templates / "c0.nii.gz", reference, (0.5, 0.5, 2.0), (1.0, 2.0, 3.0))
    out = tmp_path / "out"
    arguments = ["--probabilities", str(probs), "--threshold", "0.5", "-o", str(out), "--template-dir", str(templates)]
    assert main(["apply-threshold", *arguments]) == 0
    written = sitk.ReadImage(str(out / "c0.nii.gz"))
    assert written.GetSpacing() == (0.5, 0.5, 2.0) and written.GetOrigin() == (1.0, 2.0, 3.0)
    assert np.array_equal(sitk.GetArrayFromImage(written), reference)


# --------------------------------------------------------------------------- item 17: the JSON's fields
def _record(**target_changes) -> dict:
    target = {"threshold": 0.5, "min_size_voxels": 0, "channel": None, **target_changes}
    return {"targets": {"foreground": {k: v for k, v in target.items() if v is not _DROP}}, "connectivity": 18}


_DROP = object()


@pytest.mark.parametrize(
    "record, named",
    [
        (_record(threshold=_DROP), "'threshold'"),
        (_record(threshold=None), "'threshold'"),
        (_record(threshold="0.5"), "'threshold'"),
        (_record(threshold=1.5), "'threshold'"),
        (_record(threshold=float("nan")), "'threshold'"),
        (_record(min_size_voxels=2.7), "'min_size_voxels'"),
        (_record(min_size_voxels=-1), "'min_size_voxels'"),
        (_record(min_size_voxels=_DROP), "'min_size_voxels'"),
        (_record(min_size_voxels=True), "'min_size_voxels'"),
        ({"targets": {"foreground": {"threshold": 0.5, "min_size_voxels": 0, "channel": None}}}, "'connectivity'"),
        ({**_record(), "connectivity": None}, "'connectivity'"),
        ({**_record(), "connectivity": 5}, "'connectivity'"),
        ({**_record(), "connectivity": "diagonal"}, "'connectivity'"),
        ({"targets": [0.5], "connectivity": 18}, "'targets'"),
        ({"targets": {"foreground": 0.5}, "connectivity": 18}, "'targets'"),
        ({"best_threshold": None, "min_voxels": 0, "connectivity": 18}, "'best_threshold'"),
        ({"best_threshold": 0.5, "min_voxels": 2.7, "connectivity": 18}, "'min_voxels'"),
        ({"best_threshold": 0.5, "min_voxels": 0, "connectivity": "x"}, "'connectivity'"),
        ({**_record(), "probability_mapping": [1]}, "'probability_mapping'"),
    ],
)
def test_a_broken_field_of_the_json_is_a_usage_error_naming_it(tmp_path, capsys, record, named):
    probs, _ = _probabilities(tmp_path)
    path = tmp_path / "point.json"
    path.write_text(json.dumps(record))
    out = tmp_path / "out"
    assert main(["apply-threshold", "--probabilities", str(probs), "--threshold-json", str(path), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert named in error and "Traceback" not in error
    assert not out.exists()


def test_a_complete_hand_written_json_is_applied(tmp_path):
    probs, reference = _probabilities(tmp_path)
    path = tmp_path / "point.json"
    path.write_text(json.dumps(_record(min_size_voxels=2)))
    out = tmp_path / "out"
    assert main(["apply-threshold", "--probabilities", str(probs), "--threshold-json", str(path), "-o", str(out)]) == 0
    assert (out / "c0.nii.gz").is_file()
