"""Hostile probes, round five: inputs and options that gave a wrong or misleading number without an error.

Each test names what was seen; the expected values are computed by hand from the arrays written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (10, 10, 10)


def test_true_negatives_leave_the_ignore_label_out_as_nnunet_does(tmp_path):
    """Seen: TN counted the voxels of nnU-Net's ignore label (TN = image size - TP - FP - FN), although the docs
    give nnU-Net's counts, and nnU-Net's compute_tp_fp_fn_tn counts TN only where the reference is not ignored."""
    reference = cube(SHAPE, (1, 1, 1), (2, 2, 2)) + cube(SHAPE, (5, 5, 5), (4, 4, 4), value=2)  # 8 lesion, 64 ignored
    prediction = cube(SHAPE, (1, 1, 1), (2, 2, 2)) + cube(SHAPE, (6, 6, 6), (2, 2, 2))  # the lesion, and 8 in ignore
    write_image(tmp_path / "gt" / "c.nii.gz", reference)
    write_image(tmp_path / "pred" / "c.nii.gz", prediction)
    dataset = {"labels": {"background": 0, "lesion": 1, "ignore": 2}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "-o", str(out), "--quiet"])
        == 0
    )
    metrics = load_strict_json(out / "summary.json")["metric_per_case"][0]["metrics"]["1"]
    assert (metrics["TP"], metrics["FP"], metrics["FN"]) == (8, 0, 0)
    assert metrics["TN"] == 1000 - 64 - 8  # every voxel that is neither ignored nor foreground


def test_an_nsd_tolerance_in_mm_is_refused_where_the_preset_measures_in_voxels(tmp_path, capsys):
    """Seen: evaluate --preset brats-mets --nsd-tolerance 3 on 1x1x3 mm voxels compared whole-mask surface
    distances in voxels with 3 (so up to 9 mm along z counted as within '3 mm'), without a word."""
    write_image(tmp_path / "gt" / "BraTS-MET-00001-000-seg.nii.gz", cube(SHAPE, (2, 2, 2), (4, 4, 4), value=3))
    write_image(tmp_path / "pred" / "BraTS-MET-00001-000.nii.gz", cube(SHAPE, (3, 2, 2), (4, 4, 4), value=3))
    args = ["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--quiet"]
    args += ["-o", str(tmp_path / "out"), "--preset", "brats-mets", "--nsd-tolerance", "3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--nsd-tolerance" in err and "--preset brats-mets" in err
    assert not (tmp_path / "out" / "summary.json").exists()
    assert main(args[:-2]) == 0  # the preset's own tolerance (0.5 voxel) still works


@pytest.mark.parametrize(
    "froc_options",
    [["--froc-threshold", "0.3"], ["--froc-bootstrap-resamples", "0"], ["--froc-fp-rates", "1", "2"]],
)
def test_cv_summary_refuses_froc_options_with_no_froc(tmp_path, capsys, froc_options):
    """Seen: cv-summary --no-froc --froc-threshold 0.3 ran as if the option had not been given."""
    results = tmp_path / "Dataset001_X" / "T__P__3d_fullres"
    write_image(results / "fold_0" / "validation" / "c.nii.gz", cube(SHAPE, (1, 1, 1), (2, 2, 2)))
    write_image(tmp_path / "gt" / "c.nii.gz", cube(SHAPE, (1, 1, 1), (2, 2, 2)))
    out = tmp_path / "out"
    arguments = ["cv-summary", str(results), "--gt", str(tmp_path / "gt"), "-o", str(out), "--quiet", "--no-froc"]
    assert main([*arguments, *froc_options]) == 2
    err = capsys.readouterr().err
    assert f"{froc_options[0]} has no effect with --no-froc" in err
    assert not out.exists()


def test_synth_refuses_more_classes_than_its_uint8_label_maps_hold(tmp_path, capsys):
    """Seen: synth --classes 300 wrote a dataset.json with labels 1..300 and uint8 label maps in which the
    labels above 255 had wrapped around (300 -> 44): lesions of one class stored under another, silently."""
    from nnunet_lesionloss.synthetic import make_lesion_labels

    arguments = ["synth", "--raw", str(tmp_path), "--dataset-id", "901", "--cases", "2", "--shape", "8", "8", "8"]
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, "--classes", "300"])
    assert stopped.value.code == 2
    assert "--classes: must be in 1..255" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="num_classes"):
        make_lesion_labels((8, 8, 8), 3, num_classes=256)
    labels = make_lesion_labels((16, 16, 16), 40, num_classes=255, seed=1)
    assert labels.max() <= 255 and labels.dtype == "uint8"


@pytest.mark.parametrize(
    "labels, named",
    [
        ({"background": 0, "lesion": 1, "ignore": 1}, "ignore label 1 is also the value of a label"),
        ({"background": 0, "lesion": 1, "ignore": 0}, "ignore label 0 is also the background"),
        ({"background": 0, "a": [1, 2], "b": 2, "ignore": 2}, "ignore label 2 is also the value of a label"),
        ({"background": 0, "lesion": 1.5}, "'lesion' has the value 1.5"),
        ({"background": 0, "lesion": True}, "'lesion' has the value True"),
    ],
)
def test_a_dataset_json_whose_labels_contradict_themselves_is_refused(tmp_path, capsys, labels, named):
    """Seen: with "ignore": 1 beside "lesion": 1 every reference lesion was ignored and the predicted lesions counted
    as false positives (Dice 0 for a case with Dice 0.24); with "ignore": 0 the false positives in the background
    vanished (Dice 0.33); "lesion": 1.5 was read as 1. All without a word."""
    reference = cube(SHAPE, (1, 1, 1), (2, 2, 2)) + cube(SHAPE, (6, 6, 6), (2, 2, 2))
    prediction = cube(SHAPE, (1, 1, 1), (2, 2, 2)) + cube(SHAPE, (4, 0, 0), (1, 1, 1))
    write_image(tmp_path / "gt" / "c.nii.gz", reference)
    write_image(tmp_path / "pred" / "c.nii.gz", prediction)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "-o", str(out), "--quiet"])
        == 2
    )
    assert named in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("value", [1, 1.0, "1"])
def test_label_values_nnunet_reads_as_integers_stay_accepted(tmp_path, value):
    reference = cube(SHAPE, (1, 1, 1), (2, 2, 2))
    write_image(tmp_path / "gt" / "c.nii.gz", reference)
    write_image(tmp_path / "pred" / "c.nii.gz", reference)
    dataset = {"labels": {"background": 0, "lesion": value, "ignore": 2}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "-o", str(out), "--quiet"])
        == 0
    )
    assert load_strict_json(out / "summary.json")["metric_per_case"][0]["metrics"]["1"]["Dice"] == 1.0


def test_cv_summary_does_not_call_a_prediction_of_another_folds_case_one_without_a_reference(tmp_path, capsys):
    """Seen: a prediction in fold_0/validation of a case splits_final.json puts in fold 1 was noted as 'without a
    reference', although its reference was there: the note now names both reasons a prediction is left out."""
    reference = cube(SHAPE, (1, 1, 1), (2, 2, 2))
    results = tmp_path / "Dataset001_X" / "T__P__3d_fullres"
    for case, fold in (("c0", 0), ("c1", 1)):
        write_image(tmp_path / "gt" / f"{case}.nii.gz", reference)
        write_image(results / f"fold_{fold}" / "validation" / f"{case}.nii.gz", reference)
    write_image(results / "fold_0" / "validation" / "c1.nii.gz", reference)  # fold 1's case, in fold 0
    (tmp_path / "splits_final.json").write_text(
        json.dumps([{"train": ["c1"], "val": ["c0"]}, {"train": ["c0"], "val": ["c1"]}])
    )
    arguments = ["cv-summary", str(results), "--gt", str(tmp_path / "gt"), "-o", str(tmp_path / "out"), "--quiet"]
    assert main([*arguments, "--no-froc"]) == 0
    err = capsys.readouterr().err
    assert "fold 0: 1 predictions of no validation case of this fold with a reference" in err
    assert "without a reference" not in err


def test_compare_gives_a_cv_summary_run_and_an_evaluate_run_of_the_same_predictions_the_same_means(tmp_path):
    """Seen on the main of round five: compare of a cv-summary run (folds of 1 and 2 cases) and an evaluate run of
    the very same predictions showed Dice 0.6667 against 0.5556 and marked the first best, while the paired
    difference was 0 (a mean of fold means beside a mean over cases). Issue 23's compare takes every run's value
    from its cases; this keeps it so."""
    import csv

    reference = cube(SHAPE, (1, 1, 1), (2, 2, 2))
    predictions = {
        "c0": (0, reference),  # Dice 1
        "c1": (1, cube(SHAPE, (1, 1, 1), (2, 2, 1))),  # Dice 2*4/12
        "c2": (1, cube(SHAPE, (6, 6, 6), (2, 2, 2))),  # Dice 0
    }
    results = tmp_path / "Dataset001_X" / "T__P__3d_fullres"
    for case, (fold, prediction) in predictions.items():
        write_image(tmp_path / "gt" / f"{case}.nii.gz", reference)
        write_image(results / f"fold_{fold}" / "validation" / f"{case}.nii.gz", prediction)
        write_image(tmp_path / "all" / f"{case}.nii.gz", prediction)
    gt = str(tmp_path / "gt")
    assert main(["cv-summary", str(results), "--gt", gt, "-o", str(tmp_path / "cv"), "--quiet", "--no-froc"]) == 0
    assert main(["evaluate", "--gt", gt, "--pred", str(tmp_path / "all"), "-o", str(tmp_path / "ev"), "--quiet"]) == 0
    out = tmp_path / "cmp"
    runs = [str(tmp_path / "cv"), str(tmp_path / "ev")]
    assert main(["compare", *runs, "--names", "cv", "ev", "-o", str(out), "--bootstrap-resamples", "100"]) == 0
    dice = next(row for row in csv.DictReader(open(out / "compare.csv")) if row["metric"] == "Dice")
    case_mean = (1 + 2 * 4 / 12 + 0) / 3
    assert float(dice["cv"]) == pytest.approx(case_mean) and float(dice["ev"]) == pytest.approx(case_mean)


def test_a_complex_valued_label_image_is_refused_naming_its_type(tmp_path, capsys):
    """Seen: a complex-valued reference was read with only numpy's ComplexWarning (its real part counted)."""
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3))
    write_image(tmp_path / "pred" / "c0.nii.gz", reference)
    write_image(tmp_path / "gt" / "c0.nii.gz", reference.astype(np.complex64))
    code = main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "-o", str(tmp_path / "o")])
    assert code == 1 and "complex64 values; a label map holds integers" in capsys.readouterr().err
