"""The layout of training repeats and its manifest (nnunet_lesionloss.repeats_layout): written, merged across
invocations, never losing a repeat, refused when it is not ours or not where it says; and the check of the
folds of a dataset's split (installation.check_folds, `config --folds`)."""

from __future__ import annotations

import json

import pytest

from nnunet_lesionloss.cli import main
from nnunet_lesionloss.installation import check_folds, cross_validation_folds
from nnunet_lesionloss.repeats_layout import (
    MANIFEST_NAME,
    ManifestError,
    RepeatsManifest,
    read_manifest,
    record_repeats,
    repeat_root,
    repeats_run_folder,
)

RUN = ("Dataset501_MS", "nnUNetTrainerCATMIL", "nnUNetPlans", "3d_fullres")


def test_every_repeat_is_a_results_root_and_the_manifest_names_its_folders(tmp_path):
    path, manifest, notes = record_repeats(tmp_path, *RUN, repeats=3, folds=None)
    folder = repeats_run_folder(tmp_path, *RUN)
    assert (
        path
        == folder / MANIFEST_NAME
        == tmp_path / "repeats" / "Dataset501_MS" / ("nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres") / "repeats.json"
    )
    assert notes == [] and read_manifest(folder) == manifest
    assert manifest.repeat_folders(folder) == {
        r: repeat_root(tmp_path, r) / "Dataset501_MS" / "nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres"
        for r in (1, 2, 3)
    }
    assert repeat_root(tmp_path, 2) == tmp_path / "repeats" / "repeat_2"
    record = json.loads(path.read_text())
    assert record["repeat_folders"]["2"] == "../../repeat_2/Dataset501_MS/nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres"
    assert record["folds"] is None and record["repeats"] == 3
    # the whole results tree moved elsewhere: the manifest still finds the repeats
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    assert read_manifest(repeats_run_folder(moved, *RUN)).repeat_folders(repeats_run_folder(moved, *RUN))[1] == (
        moved / "repeats" / "repeat_1" / "Dataset501_MS" / "nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres"
    )


def test_a_later_invocation_adds_repeats_and_folds_and_never_drops_a_repeat(tmp_path):
    record_repeats(tmp_path, *RUN, repeats=3, folds=(1, 0))
    _, manifest, notes = record_repeats(tmp_path, *RUN, repeats=5, folds=(2,))
    assert (manifest.repeats, manifest.folds) == (5, (0, 1, 2))
    assert notes == ["repeats 3 -> 5", "folds 0 1 -> 0 1 2"]
    _, manifest, notes = record_repeats(tmp_path, *RUN, repeats=5, folds=None)
    assert manifest.folds is None and notes == ["folds 0 1 2 -> all of the split"]
    _, manifest, _ = record_repeats(tmp_path, *RUN, repeats=5, folds=(4,))
    assert manifest.folds is None, "every fold stays every fold"
    with pytest.raises(ManifestError, match="records 5 repeats of this run; --repeats 4 would leave repeats 5-5 out"):
        record_repeats(tmp_path, *RUN, repeats=4, folds=None)
    assert read_manifest(repeats_run_folder(tmp_path, *RUN)).repeats == 5


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(kind="something else"), "is not a repeats manifest"),
        (lambda r: r.update(version=2), "version 2 is not 1"),
        (lambda r: r.pop("folds"), "lacks folds"),
        (lambda r: r.update(repeats=0), "repeats must be an integer >= 1, got 0"),
        (lambda r: r.update(repeats=True), "repeats must be an integer >= 1"),
        (lambda r: r.update(folds=[0, 0]), "lists a fold twice"),
        (lambda r: r.update(folds=[-1]), "folds must be fold numbers"),
        (lambda r: r.update(trainer="../../etc"), "trainer must be a folder name"),
        (lambda r: r["repeat_folders"].update({"1": "/etc"}), "are not the layout's"),
        (lambda r: r.update(dataset="Dataset502_Other"), "describes Dataset502_Other/"),
    ],
)
def test_a_manifest_that_is_not_ours_or_not_where_it_says_is_refused(tmp_path, change, message):
    path, _, _ = record_repeats(tmp_path, *RUN, repeats=2, folds=None)
    record = json.loads(path.read_text())
    change(record)
    if record.get("dataset") == "Dataset502_Other":  # a consistent manifest of another run, copied here
        record["repeat_folders"] = {
            str(r): f"../../repeat_{r}/Dataset502_Other/nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres" for r in (1, 2)
        }
    path.write_text(json.dumps(record))
    with pytest.raises(ManifestError, match=message):
        read_manifest(path.parent)


def test_a_missing_or_unreadable_manifest_is_named(tmp_path):
    with pytest.raises(ManifestError, match="is not a run trained with repeats"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(ManifestError, match=f"cannot read {tmp_path / MANIFEST_NAME}"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="dataset must be a folder name"):
        RepeatsManifest("a/b", "T", "P", "C", 1, None)


def test_record_repeats_command_writes_and_refuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    args = ["record-repeats", "Dataset501_MS", "3d_fullres", "nnUNetTrainerCATMIL", "--repeats"]
    assert main([*args, "3", "--folds", "0", "1"]) == 0
    assert "(3 repeats, folds 0 1)" in capsys.readouterr().out
    assert main([*args, "2"]) == 2 and "records 3 repeats" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # refused where it is parsed
        main([*args, "0"])
    assert refused.value.code == 2 and "argument --repeats: must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.delenv("nnUNet_results")
    assert main([*args, "3"]) == 2 and "nnUNet_results is not set" in capsys.readouterr().err


# --------------------------------------------------------------------------- the folds of the split
def test_the_folds_of_a_split(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    (tmp_path / "Dataset501_MS").mkdir()
    assert cross_validation_folds("Dataset501_MS")[0] == 5, "no split yet: nnU-Net's 5 folds"
    assert "folds 0 4 of Dataset501_MS" in check_folds("Dataset501_MS", [0, 4])
    splits = tmp_path / "Dataset501_MS" / "splits_final.json"
    splits.write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 3))
    assert cross_validation_folds("Dataset501_MS") == (3, f"{splits} has 3 folds")
    with pytest.raises(
        RuntimeError, match=r"fold\(s\) 3 7 of --folds are not folds of Dataset501_MS: .* \(folds 0-2\)"
    ):
        check_folds("Dataset501_MS", [0, 3, 7])
    splits.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(RuntimeError, match="is not an nnU-Net splits file"):
        cross_validation_folds("Dataset501_MS")


def test_config_folds_needs_a_dataset(capsys):
    assert main(["config", "nnUNetTrainerCATMIL", "--folds", "0"]) == 2
    assert "--folds needs DATASET and CONFIGURATION" in capsys.readouterr().err
