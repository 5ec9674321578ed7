"""Files that SimpleITK reads without an error but wrongly, files a folder holds twice or not at all,
values and options that would give a wrong number, and 2D label maps: each is refused with its
reason, per case where it concerns one case, or evaluated correctly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (12, 12, 12)


def evaluate(gt, pred, out, *options: str) -> int:
    return exit_status(
        ["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(out), "--quiet", "-np", "1", *options]
    )


def exit_status(args: list[str]) -> int:
    """The command's exit status, whether it returns it or argparse refuses an option (SystemExit)."""
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code)


def noisy_labels(seed: int = 0, shape=(24, 24, 24)) -> np.ndarray:
    """Scattered voxels: a label map gzip cannot squeeze into its first bytes (truncation cuts voxels, not the header)."""
    return (np.random.default_rng(seed).random(shape) > 0.7).astype(np.uint8)


def read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def truncate(path: Path, fraction: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# --------------------------------------------------------------------------- files read wrongly without an error
@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_a_truncated_nifti_file_is_refused_per_case_by_evaluate_and_remove_small(tmp_path, ending, capsys):
    """Observed: half a .nii.gz was read without error (SimpleITK fills the rest), evaluated (Dice 0.66)
    and 'cleaned' by remove-small."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for case in ("c1", "ok"):
        write_image(gt / f"{case}{ending}", noisy_labels())
        write_image(pred / f"{case}{ending}", noisy_labels())
    truncate(pred / f"c1{ending}")
    assert read(pred / f"c1{ending}").shape == (24, 24, 24)  # the trap: SimpleITK reads it
    assert evaluate(gt, pred, tmp_path / "o") == 1
    errors = load_strict_json(tmp_path / "o" / "summary.json")["errors"]
    assert set(errors) == {"c1"} and "truncated" in errors["c1"] and str(pred / f"c1{ending}") in errors["c1"]
    capsys.readouterr()
    assert main(["remove-small", str(pred), str(tmp_path / "clean")]) == 1
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == [f"ok{ending}"]
    assert "c1: " in capsys.readouterr().err


def test_infinite_values_in_a_nifti_label_map_are_refused(tmp_path):
    """Observed: SimpleITK reads +inf in a float NIfTI file as 0, so the case was evaluated as background (Dice 1)."""
    prediction = np.zeros(SHAPE, np.float32)
    prediction[2:5, 2:5, 2:5] = np.inf
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_image(gt / "c.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(pred / "c.nii.gz", prediction)
    assert not np.isinf(read(pred / "c.nii.gz")).any()  # the trap
    assert evaluate(gt, pred, tmp_path / "o") == 1
    error = load_strict_json(tmp_path / "o" / "summary.json")["errors"]["c"]
    assert "infinite values in 27 voxels" in error


def test_a_nii_file_beside_the_nii_gz_file_is_refused(tmp_path):
    """Observed: asked for c1.nii.gz, SimpleITK opens c1.nii beside it; the summary named c1.nii.gz with
    the other file's Dice."""
    gt, pred = tmp_path / "raw" / "labelsTr", tmp_path / "pred"
    for folder in (gt, pred):
        write_image(folder / "c1.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
        write_image(folder / "c2.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    (gt.parent / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"})
    )
    write_image(pred / "c1.nii", np.zeros(SHAPE, np.uint8))  # a stale copy in another format
    assert evaluate(gt, pred, tmp_path / "o") == 1
    errors = load_strict_json(tmp_path / "o" / "summary.json")["errors"]
    assert set(errors) == {"c1"} and "c1.nii" in errors["c1"] and "reads" in errors["c1"]


def test_a_case_with_two_reference_files_is_a_failure_not_a_dropped_file(tmp_path):
    """Observed: without a dataset.json, c1.nii.gz and c1.mha as references: one was dropped silently."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_image(gt / "c1.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    write_image(gt / "c1.mha", np.zeros(SHAPE, np.uint8))
    write_image(gt / "c2.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    for case in ("c1", "c2"):
        write_image(pred / f"{case}.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, pred, tmp_path / "o") == 1
    summary = load_strict_json(tmp_path / "o" / "summary.json")
    assert set(summary["errors"]) == {"c1"}
    assert "c1.mha" in summary["errors"]["c1"] and "c1.nii.gz" in summary["errors"]["c1"]
    assert "--file-ending" in summary["errors"]["c1"]
    assert evaluate(gt, pred, tmp_path / "o2", "--file-ending", ".nii.gz") == 0  # the user chooses


def test_a_broken_symbolic_link_is_a_failure_of_its_case_even_with_quiet(tmp_path, capsys):
    """Observed: a broken-symlink reference disappeared with exit 0 ('all 1 cases evaluated'); only a note,
    hidden by --quiet, said so. A broken-symlink prediction was 'no c2.nii.gz in pred'."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        write_image(folder / "c1.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
        write_image(folder / "c3.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    os.symlink(tmp_path / "moved" / "c2.nii.gz", gt / "c2.nii.gz")
    write_image(pred / "c2.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    os.symlink(tmp_path / "moved" / "c3.nii.gz", pred / "c3b.nii.gz")  # no reference: listed, not a case
    (pred / "c3.nii.gz").unlink()
    os.symlink(tmp_path / "moved" / "c3.nii.gz", pred / "c3.nii.gz")
    assert evaluate(gt, pred, tmp_path / "o") == 1
    err = capsys.readouterr().err
    errors = load_strict_json(tmp_path / "o" / "summary.json")["errors"]
    assert set(errors) == {"c2", "c3"}
    assert "broken symbolic link" in errors["c2"] and str(tmp_path / "moved" / "c2.nii.gz") in errors["c2"]
    assert "broken symbolic link" in errors["c3"] and "no c3.nii.gz" not in errors["c3"]
    assert "c2: " in err and "c3: " in err and "c3b" in err  # failures and ignored predictions, despite --quiet


# --------------------------------------------------------------------------- labels and options
def test_a_negative_label_is_refused_without_a_dataset_json(tmp_path):
    """Observed: without dataset.json a label -1 became class '-1' and halved foreground_mean."""
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3)).astype(np.int16)
    prediction = reference.copy()
    prediction[8, 8, 8] = -1
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_image(gt / "c.nii.gz", reference)
    write_image(pred / "c.nii.gz", prediction)
    write_image(gt / "ok.nii.gz", reference)
    write_image(pred / "ok.nii.gz", reference)
    assert evaluate(gt, pred, tmp_path / "o") == 1
    summary = load_strict_json(tmp_path / "o" / "summary.json")
    assert set(summary["errors"]) == {"c"} and "negative label values [-1]" in summary["errors"]["c"]
    assert list(summary["mean"]) == ["1"] and summary["foreground_mean"]["Dice"] == 1.0


@pytest.mark.parametrize("options", [["--nsd-tolerance", "-1"], ["--nsd-tolerance", "0"], ["--labels", "0"]])
def test_options_that_would_give_a_wrong_number_are_refused(tmp_path, options, capsys):
    """Observed: --nsd-tolerance -1 was accepted (NSD 0 for a perfect case)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        write_image(folder / "c.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, pred, tmp_path / "o", *options) == 2
    assert options[0] in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["remove-small", "IN", "OUT", "--min-voxels", "-3"],
        ["remove-small", "IN", "OUT", "--min-voxels", "0"],
        ["merge-by-volume", "--small-model", "IN", "--large-model", "IN", "-o", "OUT", "--volume-ml", "-1"],
        ["merge-by-volume", "--small-model", "IN", "--large-model", "IN", "-o", "OUT", "--volume-ml", "nan"],
    ],
)
def test_post_processing_refuses_meaningless_sizes(tmp_path, command, capsys):
    """Observed: remove-small --min-voxels -3 and merge-by-volume --volume-ml -1 were accepted silently."""
    write_image(tmp_path / "in" / "c.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    args = [str(tmp_path / "in") if a == "IN" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    assert exit_status(args) == 2
    assert command[-2] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 2D label maps
def lesions_2d() -> np.ndarray:
    """Two 2D lesions: a 3x3 square and two diagonal pixels (one lesion at 8-connectivity, two at 4)."""
    image = np.zeros((16, 16), np.uint8)
    image[2:5, 2:5] = 1
    image[10, 10] = image[11, 11] = 1
    return image


@pytest.mark.parametrize("ending", [".nii.gz", ".png"])
def test_2d_label_maps_are_evaluated_with_the_connectivity_of_their_dimension(tmp_path, ending):
    """Observed: every 2D case failed by default (connectivity 26 is invalid in 2D)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    prediction = lesions_2d()
    prediction[11, 11] = 0  # one of the two diagonal pixels
    write_image(gt / f"c{ending}", lesions_2d(), spacing_xyz=(1.0, 1.0), origin=(0.0, 0.0))
    write_image(pred / f"c{ending}", prediction, spacing_xyz=(1.0, 1.0), origin=(0.0, 0.0))
    assert read(gt / f"c{ending}").ndim == 2
    assert evaluate(gt, pred, tmp_path / "o") == 0
    metrics = load_strict_json(tmp_path / "o" / "summary.json")["metric_per_case"][0]["metrics"]["1"]
    assert metrics["n_ref_lesions"] == 2 and metrics["lesion_tp"] == 2  # 26 applied in 2D: 8-connected
    assert evaluate(gt, pred, tmp_path / "o6", "--preset", "msseg", "--min-lesion-volume", "0") == 0
    face = load_strict_json(tmp_path / "o6" / "summary.json")["metric_per_case"][0]["metrics"]["1"]
    assert face["n_ref_lesions"] == 3  # msseg's 6-connectivity applied in 2D: 4-connected
    assert evaluate(gt, pred, tmp_path / "o4", "--connectivity", "4") == 0
    # a 2D connectivity has no meaning in 3D: the case fails with the reason
    write_image(gt / "d.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    write_image(pred / "d.nii.gz", cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert evaluate(gt, pred, tmp_path / "o4b", "--connectivity", "4") == 1
    error = load_strict_json(tmp_path / "o4b" / "summary.json")["errors"]["d"]
    assert "connectivity 4" in error and "3D" in error


def test_remove_small_and_merge_by_volume_work_on_2d_label_maps(tmp_path):
    image = np.zeros((16, 16), np.uint8)
    image[1, 1:3] = 1  # 2 pixels: removed
    image[5:8, 5:8] = 1  # 9 pixels: kept
    image[12, 12] = image[13, 13] = image[14, 14] = image[12, 14] = image[14, 12] = 1  # 5 pixels, 8-connected
    write_image(tmp_path / "in" / "c.nii.gz", image, spacing_xyz=(1.0, 1.0), origin=(0.0, 0.0))
    assert main(["remove-small", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    expected = image.copy()
    expected[1, 1:3] = 0
    assert np.array_equal(read(tmp_path / "out" / "c.nii.gz"), expected)  # 18 applied in 2D: 8-connected
    small = np.zeros((16, 16), np.uint8)
    small[0, 0] = 1
    write_image(tmp_path / "a" / "c.nii.gz", small, spacing_xyz=(1.0, 1.0), origin=(0.0, 0.0))
    args = ["merge-by-volume", "--small-model", str(tmp_path / "a"), "--large-model", str(tmp_path / "in")]
    assert main([*args, "-o", str(tmp_path / "m"), "--volume-ml", "0.004"]) == 0  # 4 mm² pixels of 1 mm
    merged = read(tmp_path / "m" / "c.nii.gz")
    assert merged[0, 0] == 1 and merged[6, 6] == 1 and merged[13, 13] == 1 and merged[1, 1] == 0


def test_post_processing_drops_no_file_of_a_case_with_two_files(tmp_path, capsys):
    """remove-small works file by file (both files of c1 are cleaned); merge-by-volume pairs cases, so a
    case with two files in one folder fails with the reason instead of vanishing."""
    for name in ("c1.nii.gz", "c1.mha", "c2.nii.gz"):
        write_image(tmp_path / "in" / name, cube(SHAPE, (2, 2, 2), (3, 3, 3)))
    assert main(["remove-small", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c1.mha", "c1.nii.gz", "c2.nii.gz"]
    capsys.readouterr()
    args = ["merge-by-volume", "--small-model", str(tmp_path / "in"), "--large-model", str(tmp_path / "out")]
    assert main([*args, "-o", str(tmp_path / "m")]) == 1
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["c2.nii.gz"]
    assert "c1: 2 image files for case c1" in capsys.readouterr().err
