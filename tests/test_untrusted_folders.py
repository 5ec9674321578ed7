"""A folder given to a tool holds data: nothing in it is executed and nothing the tool writes can turn a
value into a formula or break out of its file (issue: no silent wrong number, round four, items 12, 13, 18, 20)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from conftest_evaluation import cube, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.probabilities import load_probabilities, read_properties

SHAPE = (6, 8, 8)


class _RunsAShellCommand:
    """What a hostile ``<case>.pkl`` holds: unpickling it calls ``os.system`` with its argument."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _probability_folder(tmp_path, pkl_payload):
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    reference = cube(SHAPE, (1, 1, 1), (3, 3, 3))
    write_image(gt / "c0.nii.gz", reference, (1.0, 1.0, 1.0))
    foreground = reference.astype(np.float32) * 0.9
    probs.mkdir()
    np.savez_compressed(probs / "c0.npz", probabilities=np.stack([1 - foreground, foreground]))
    (probs / "c0.pkl").write_bytes(pickle.dumps(pkl_payload))
    (probs / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"})
    )
    return gt, probs


@pytest.mark.parametrize("command", ["froc", "choose-threshold"])
def test_a_pickle_beside_the_probabilities_never_runs_code(tmp_path, command, capsys):
    marker = tmp_path / "pwned"
    gt, probs = _probability_folder(tmp_path, {"spacing": [1.0, 1.0, 1.0], "sitk_stuff": _RunsAShellCommand(marker)})
    out = tmp_path / "out"
    arguments = ["--probabilities", str(probs), "--gt", str(gt), "--quiet"]
    if command == "froc":
        arguments += ["-o", str(out)]
    code = main([command, *arguments])
    assert not marker.exists()
    assert code != 0
    assert "c0.pkl was refused, not loaded" in capsys.readouterr().err


def test_nnunets_own_properties_load_under_every_pickle_protocol(tmp_path):
    properties = {
        "sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "origin": (0.0, 0.0, 0.0), "direction": tuple(np.eye(3).ravel())},
        "spacing": [2.0, 1.0, 1.0],
        "shape_before_cropping": (np.int64(6), np.int64(8), 8),
        "bbox_used_for_cropping": [[0, 6], [np.int64(0), 8], [0, 8]],
        "nibabel_stuff": {"original_affine": np.eye(4)},
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "c.pkl").write_bytes(pickle.dumps(properties, protocol=protocol))
        loaded = read_properties(tmp_path / "c.npz")
        assert loaded["shape_before_cropping"] == (6, 8, 8)
        np.testing.assert_array_equal(loaded["nibabel_stuff"]["original_affine"], np.eye(4))


def test_a_pickle_that_is_no_dictionary_or_no_pickle_is_refused(tmp_path):
    (tmp_path / "c.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CaseError, match="not nnU-Net's image properties"):
        read_properties(tmp_path / "c.npz")
    (tmp_path / "c.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CaseError, match="cannot be read"):
        read_properties(tmp_path / "c.npz")
    assert read_properties(tmp_path / "absent.npz") is None


def test_an_npz_that_is_no_zip_is_refused_without_advice_to_allow_pickle(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(pickle.dumps({"probabilities": [0.5]}))
    with pytest.raises(CaseError) as refused:
        load_probabilities(path)
    assert "not an .npz archive" in str(refused.value) and "allow_pickle" not in str(refused.value)
    np.savez(path, probabilities=np.array([object(), 1], dtype=object))
    assert zipfile.is_zipfile(path)
    with pytest.raises(CaseError) as refused:
        load_probabilities(path)
    assert "holds Python objects" in str(refused.value) and "allow_pickle" not in str(refused.value)


@pytest.mark.parametrize("name", ["=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"])
def test_csv_cells_cannot_become_spreadsheet_formulas(tmp_path, name):
    path = io.write_csv(tmp_path / "t.csv", ["case", "value"], [[name, -0.5], ["plain", 1.0]])
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == "'" + name  # the OWASP mitigation: a leading apostrophe makes it text
    assert rows[1][1] == "-0.5"  # numbers stay numbers
    assert rows[2][0] == "plain"
    numbers_as_text = io.write_csv(tmp_path / "n.csv", ["x"], [["-13.75"], ["+1e-3"], ["-inf"]])
    with open(numbers_as_text, newline="") as handle:
        assert [row[0] for row in csv.reader(handle)][1:] == ["-13.75", "+1e-3", "-inf"]


def test_a_long_legal_case_name_is_written_by_the_tools_that_write_images(tmp_path):
    case = "c" * 240  # + ".nii.gz" = 247 bytes: a legal name, whatever the tool's temporary name is
    folder, out = tmp_path / "in", tmp_path / "out"
    write_image(folder / f"{case}.nii.gz", cube(SHAPE, (1, 1, 1), (3, 3, 3)) + cube(SHAPE, (5, 6, 6), (1, 1, 1)))
    assert main(["remove-small", str(folder), str(out), "--min-voxels", "2"]) == 0
    assert (out / f"{case}.nii.gz").is_file()
    assert (
        main(["merge-by-volume", "--small-model", str(folder), "--large-model", str(folder), "-o", str(tmp_path / "m")])
        == 0
    )
    assert (tmp_path / "m" / f"{case}.nii.gz").is_file()


def test_a_users_own_file_with_an_output_name_is_never_replaced_without_overwrite(tmp_path, capsys):
    """issue 26 item 14: a cases.csv of the user's own, beside no summary.json, was taken for the leftover of an
    interrupted run and replaced. Only files beside this package's record of an interrupted run are."""
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    write_image(gt / "c0.nii.gz", cube(SHAPE, (1, 1, 1), (3, 3, 3)))
    write_image(pred / "c0.nii.gz", cube(SHAPE, (1, 1, 1), (3, 3, 3)))
    out.mkdir()
    (out / "cases.csv").write_text("the user's own table\n")
    arguments = ["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet"]
    assert main(arguments) == 2
    assert "cases.csv exists" in capsys.readouterr().err
    assert (out / "cases.csv").read_text() == "the user's own table\n"
    assert main([*arguments, "--overwrite"]) == 0


def test_an_output_folder_that_is_an_input_folder_is_refused():
    with pytest.raises(ValueError, match="is the folder of --probabilities"):
        io.check_output_apart("/data/p/../p", {"--template-dir": None, "--probabilities": "/data/p"})
    io.check_output_apart("/data/out", {"--probabilities": "/data/p"})


@pytest.mark.parametrize(
    "corrupt, named",
    [
        (lambda p: p * 13 - 6, "logits instead of probabilities"),  # values in [-6, 7]
        (lambda p: np.concatenate([np.where(p[:1] > 0.5, np.nan, p[:1]), p[1:]]), "NaN or infinite values"),
        (lambda p: np.concatenate([p[:1], np.where(p[1:] < 0.5, -np.inf, p[1:])]), "NaN or infinite values"),
        (lambda p: np.concatenate([p[:1] * 0.5, p[1:]]), "do not sum to 1"),
    ],
)
@pytest.mark.parametrize("command", ["froc", "choose-threshold"])
def test_what_is_not_a_probability_is_refused_by_every_command_that_reads_them(
    tmp_path, command, corrupt, named, capsys
):
    """issue 26 item 1: froc took logits (AP 0.25, "every case analysed") where choose-threshold refused them."""
    gt, probs = _probability_folder(tmp_path, {"spacing": [1.0, 1.0, 1.0]})
    with np.load(probs / "c0.npz") as data:
        good = data["probabilities"]
    np.savez_compressed(probs / "c0.npz", probabilities=corrupt(good.astype(np.float32)).astype(np.float32))
    arguments = ["--probabilities", str(probs), "--gt", str(gt), "--quiet"]
    if command == "froc":
        arguments += ["-o", str(tmp_path / "out")]
    assert main([command, *arguments]) != 0
    assert named in capsys.readouterr().err


def test_inspecting_a_planned_dataset_never_runs_a_pickle_of_its_preprocessed_folder(
    preprocessed_dataset, tmp_path, monkeypatch
):
    """nnU-Net's dataset classes read each case's .pkl with a plain pickle.load; inspect makes them use the
    restricted unpickler, for the lesion statistics and for the patches of the Size Penalty tau alike."""
    import shutil
    from pathlib import Path

    env = preprocessed_dataset["env"]
    copy = tmp_path / "preprocessed" / preprocessed_dataset["dataset"]
    shutil.copytree(Path(env["nnUNet_preprocessed"]) / preprocessed_dataset["dataset"], copy)
    monkeypatch.setenv("nnUNet_raw", env["nnUNet_raw"])
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("NNUNET_LESIONLOSS_CONFIG", str(tmp_path / "tau.yaml"))
    (tmp_path / "tau.yaml").write_text("auto_tau: {patches: 12}\n")
    marker = tmp_path / "pwned"
    hostile = {"spacing": [1.0, 1.0, 1.0], "class_locations": _RunsAShellCommand(marker)}
    (copy / "nnUNetPlans_3d_fullres" / "case_000.pkl").write_bytes(pickle.dumps(hostile))
    out = tmp_path / "out"
    assert main(["inspect", str(preprocessed_dataset["dataset_id"]), "-o", str(out), "--quiet"]) == 1
    assert not marker.exists()
    report = json.loads((out / "inspect.json").read_text())
    assert list(report["errors"]) == ["case_000"] and "case_000.pkl was refused" in report["errors"]["case_000"]
    assert "refused" in report["size_penalty_auto"]["skipped"]
