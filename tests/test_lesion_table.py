"""lesions.csv of evaluate and cv-summary (physical centroids, detection as the evaluation counts it),
compare's detection-by-volume figure, and remove-small --sweep against remove-small + evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_evaluation_cv_compare import PNG_MAGIC, make_results_tree

from conftest import OPEN_MS_DATA
from conftest_evaluation import load_strict_json
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.lesion_table import (
    LESION_COLUMNS,
    detection_by_volume,
    physical_points,
    read_lesion_table,
)

#: the 30 Open MS Data consensus masks in the repository (Lesjak et al. 2017, CC BY 4.0)
MASKS = OPEN_MS_DATA / "masks"
#: a rotation about z (x -> y, y -> -x) and a flipped z axis: every entry of the direction matrix matters
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
ORIGIN = (12.5, -40.0, 7.25)
SPACING_XYZ = (0.5, 1.0, 2.0)


def _write(path: Path, array: np.ndarray, like: sitk.Image | None = None) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    if like is not None:
        image.CopyInformation(like)
    else:
        image.SetSpacing(SPACING_XYZ)
        image.SetOrigin(ORIGIN)
        image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def _itk_lesions(path: Path) -> dict[tuple, tuple]:
    """Independent: ITK's own connected components (26) and their physical centroids and boxes."""
    image = sitk.ReadImage(str(path))
    components = sitk.ConnectedComponent(image > 0, True)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(components)
    out = {}
    for label in statistics.GetLabels():
        box = statistics.GetBoundingBox(label)  # index (i, j, k) then size
        box = tuple(v for d in range(3) for v in (box[d], box[d] + box[3 + d] - 1))
        out[box] = (statistics.GetCentroid(label), statistics.GetNumberOfPixels(label))
    return out


def _lesion_case(seed: int, shape=(20, 24, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = np.zeros(shape, dtype=np.uint8)
    for _ in range(6):
        corner = rng.integers(0, np.array(shape) - 4)
        size = rng.integers(1, 4, size=3)
        reference[tuple(slice(c, c + s) for c, s in zip(corner, size))] = 1
    prediction = np.roll(reference, 1, axis=2)
    prediction[rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(0, shape[2])] = 1
    prediction[:, :, :3] = 0
    return reference, prediction


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesions")
    for k in range(3):
        reference, prediction = _lesion_case(k)
        like = sitk.ReadImage(str(_write(root / "gt" / f"case_{k}.nii.gz", reference)))
        _write(root / "pred" / f"case_{k}.nii.gz", prediction, like)
    assert main(["evaluate", "--gt", str(root / "gt"), "--pred", str(root / "pred"), "-o", str(root / "out")]) == 0
    return root


def test_physical_points_equal_simpleitk_on_a_rotated_grid():
    image = sitk.Image(5, 6, 7, sitk.sitkUInt8)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    rng = np.random.default_rng(0)
    index_zyx = rng.uniform(0, 5, size=(20, 3))
    ours = physical_points(index_zyx, SPACING_XYZ[::-1], ORIGIN, DIRECTION)
    theirs = [image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in p[::-1])) for p in index_zyx]
    assert np.allclose(ours, theirs, atol=1e-12)


def test_lesions_csv_centroids_and_boxes_equal_itk_on_a_flipped_grid_with_origin(evaluated):
    rows = read_lesion_table(evaluated / "out" / "lesions.csv")
    assert list(rows[0]) == LESION_COLUMNS
    for side, folder in (("reference", "gt"), ("prediction", "pred")):
        for k in range(3):
            expected = _itk_lesions(evaluated / folder / f"case_{k}.nii.gz")
            ours = [r for r in rows if r["case"] == f"case_{k}" and r["side"] == side]
            assert len(ours) == len(expected) > 0
            for row in ours:
                box = tuple(int(row[f"bbox_{a}_{m}"]) for a in "ijk" for m in ("min", "max"))
                centroid, voxels = expected[box]
                assert int(row["voxels"]) == voxels
                assert float(row["volume_mm3"]) == pytest.approx(voxels * np.prod(SPACING_XYZ))
                ours_centroid = [float(row[f"centroid_{a}_mm"]) for a in "xyz"]
                assert np.allclose(ours_centroid, centroid, atol=1e-9)


def test_lesions_csv_detection_and_matching_agree_with_cases_csv(evaluated):
    rows = read_lesion_table(evaluated / "out" / "lesions.csv")
    with open(evaluated / "out" / "cases.csv") as handle:
        cases = list(csv.DictReader(handle))
    for case in cases:
        mine = [r for r in rows if r["case"] == case["case"]]
        reference = [r for r in mine if r["side"] == "reference"]
        prediction = [r for r in mine if r["side"] == "prediction"]
        assert len(reference) == int(case["n_ref_lesions"]) and len(prediction) == int(case["n_pred_lesions"])
        assert sum(r["detected"] == "1" for r in reference) == int(case["lesion_tp"])
        assert sum(r["detected"] == "1" for r in prediction) == int(case["lesion_tp_pred"])
        matched = [r for r in reference if r["matched_id"]]
        assert {r["matching"] for r in mine} == {"dsc0.5"} and len(matched) == int(case["dsc0.5_tp"])
        partners = {(r["lesion_id"], r["matched_id"]) for r in prediction if r["matched_id"]}
        assert partners == {(r["matched_id"], r["lesion_id"]) for r in matched}
        for r in matched:
            assert float(r["matched_dsc"]) >= 0.5 and float(r["best_dsc"]) >= float(r["matched_dsc"])
            dsc, iou = float(r["matched_dsc"]), float(r["matched_iou"])
            assert iou == pytest.approx(dsc / (2 - dsc))
        small = [r for r in reference if float(r["volume_mm3"]) <= 50]
        assert all(r["small"] == "1" for r in small) and all(r["size_bin"] == "<1mL" for r in reference)


def test_lesions_csv_follows_the_preset_detection_rule(evaluated, tmp_path):
    """A lesion of 5 voxels that the prediction touches with one voxel: detected on any overlap (default),
    not at IoU >= 0.25 (--preset shifts, 6-connected lesions): the column follows the settings."""
    reference = np.zeros((6, 6, 10), dtype=np.uint8)
    reference[2, 2, 2:7] = 1
    prediction = np.zeros_like(reference)
    prediction[2, 2, 6] = 1
    like = sitk.ReadImage(str(_write(tmp_path / "gt" / "touch.nii.gz", reference)))
    _write(tmp_path / "pred" / "touch.nii.gz", prediction, like)
    detected = {}
    for preset in ("default", "shifts"):
        out = tmp_path / preset
        folders = ["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "-o", str(out)]
        assert main(["evaluate", *folders, "--preset", preset]) == 0
        rows = read_lesion_table(out / "lesions.csv")
        detected[preset] = [(r["side"], r["detected"]) for r in rows]
        with open(out / "cases.csv") as handle:
            case = next(csv.DictReader(handle))
        assert sum(d == "1" for s, d in detected[preset] if s == "reference") == int(case["lesion_tp"])
    assert detected == {
        "default": [("reference", "1"), ("prediction", "1")],
        "shifts": [("reference", "0"), ("prediction", "0")],
    }
    # 6-connected lesions under the shifts preset: two corner-touching voxels are two lesions
    out = tmp_path / "six"
    args = ["evaluate", "--gt", str(evaluated / "gt"), "--pred", str(evaluated / "pred"), "-o", str(out)]
    assert main([*args, "--preset", "shifts"]) == 0
    rows = read_lesion_table(out / "lesions.csv")
    for k in range(3):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(evaluated / "gt" / f"case_{k}.nii.gz")))
        reference_rows = [r for r in rows if r["case"] == f"case_{k}" and r["side"] == "reference"]
        assert len(reference_rows) == label_components(array > 0, 6, return_count=True)[1]


def test_lesions_csv_on_real_masks_matches_itk(tmp_path):
    """The real MNI grid: direction diag(1, -1, 1), origin (-90, 126, -72)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    source = MASKS / "patient05.nii.gz"
    image = sitk.ReadImage(str(source))
    assert image.GetDirection()[4] == -1 and any(image.GetOrigin())
    (gt / source.name).write_bytes(source.read_bytes())
    _write(pred / source.name, np.roll(sitk.GetArrayFromImage(image), 2, axis=1), image)
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    rows = [r for r in read_lesion_table(tmp_path / "out" / "lesions.csv") if r["side"] == "reference"]
    expected = _itk_lesions(gt / source.name)
    assert len(rows) == len(expected)
    for row in rows:
        centroid, voxels = expected[tuple(int(row[f"bbox_{a}_{m}"]) for a in "ijk" for m in ("min", "max"))]
        assert int(row["voxels"]) == voxels
        assert np.allclose([float(row[f"centroid_{a}_mm"]) for a in "xyz"], centroid, atol=1e-9)


def test_cv_summary_merges_the_folds_lesion_tables(tmp_path, monkeypatch):
    runs = make_results_tree(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    run = runs["nnUNetTrainerMissesSmall"]
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 0
    out = run / "lesion_evaluation"
    merged = read_lesion_table(out / "lesions.csv")
    assert (
        list(merged[0])[0] == "fold" and load_strict_json(out / "cv_summary.json")["folds_without_lesion_table"] == []
    )
    for fold in range(5):
        own = read_lesion_table(out / f"fold_{fold}" / "lesions.csv")
        assert [{k: v for k, v in r.items() if k != "fold"} for r in merged if r["fold"] == str(fold)] == own
    # a second run reuses the folds (same files and settings) and writes the same merged table
    before = (out / "lesions.csv").read_text()
    assert main(["cv-summary", str(run), "--quiet", "-np", "1", "--overwrite"]) == 0
    assert (out / "lesions.csv").read_text() == before


def test_compare_draws_detection_against_volume_from_lesion_tables(evaluated, tmp_path):
    other = tmp_path / "empty_pred"
    for k in range(3):
        like = sitk.ReadImage(str(evaluated / "gt" / f"case_{k}.nii.gz"))
        _write(other / f"case_{k}.nii.gz", np.zeros(sitk.GetArrayFromImage(like).shape), like)
    assert main(["evaluate", "--gt", str(evaluated / "gt"), "--pred", str(other), "-o", str(tmp_path / "e")]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(evaluated / "out"), str(tmp_path / "e"), "--names", "a", "b", "-o", str(out)]) == 0
    assert (out / "detection_by_volume.png").read_bytes().startswith(PNG_MAGIC)
    rows = read_lesion_table(evaluated / "out" / "lesions.csv")
    bins = detection_by_volume(rows, "1", np.array([0.5, 4, 1000]))
    reference = [r for r in rows if r["side"] == "reference"]
    small = [r for r in reference if float(r["volume_mm3"]) < 4]
    assert bins[0]["n"] == len(small) and bins[0]["detected"] == sum(r["detected"] == "1" for r in small)
    assert bins[0]["n"] + bins[1]["n"] == len(reference)
    assert bins[1]["ci_low"] <= bins[1]["rate"] <= bins[1]["ci_high"]
    empty = detection_by_volume(read_lesion_table(tmp_path / "e" / "lesions.csv"), "1", np.array([0.5, 1000]))
    assert empty[0]["rate"] == 0.0


# --------------------------------------------------------------------------- remove-small --sweep
def _sweep_inputs(root: Path, real: bool) -> tuple[Path, Path]:
    """References and predictions with small false positives: crops of two real masks, or synthetic."""
    rng = np.random.default_rng(5)
    for k in range(2):
        if real:
            image = sitk.ReadImage(str(MASKS / f"patient0{k + 1}.nii.gz"))[40:110, 60:140, 50:110]
            reference = sitk.GetArrayFromImage(image)
        else:
            reference, _ = _lesion_case(k + 10, shape=(24, 24, 24))
            image = None
        prediction = np.roll(reference, 1, axis=0).copy()
        for _ in range(12):  # specks of 1-4 voxels: what a minimum size removes
            z, y, x = (rng.integers(0, s - 2) for s in reference.shape)
            prediction[z : z + rng.integers(1, 3), y, x : x + rng.integers(1, 3)] = 1
        like = sitk.ReadImage(str(_write(root / "gt" / f"case_{k}.nii.gz", reference, image)))
        _write(root / "pred" / f"case_{k}.nii.gz", prediction, like)
    return root / "gt", root / "pred"


@pytest.mark.parametrize("real", [True, False], ids=["real_ms_masks", "synthetic"])
def test_sweep_equals_remove_small_then_evaluate(tmp_path, real):
    gt, pred = _sweep_inputs(tmp_path, real)
    sizes = [0, 2, 5]
    assert (
        main(
            ["remove-small", str(pred), str(tmp_path / "sweep"), "--sweep", "--gt", str(gt), "--min-sizes"]
            + [str(s) for s in sizes]
        )
        == 0
    )
    sweep = load_strict_json(tmp_path / "sweep" / "min_size_sweep.json")
    assert (tmp_path / "sweep" / "min_size_sweep.png").read_bytes().startswith(PNG_MAGIC)
    assert [row["min_voxels"] for row in sweep["rows"]] == sizes
    for row in sweep["rows"]:
        cleaned = tmp_path / f"cleaned_{row['min_voxels']}"
        if row["min_voxels"] == 0:  # nothing removed: the predictions as they are (remove-small takes sizes >= 1)
            cleaned = pred
        else:
            assert main(["remove-small", str(pred), str(cleaned), "--min-voxels", str(row["min_voxels"])]) == 0
        out = tmp_path / f"eval_{row['min_voxels']}"
        assert main(["evaluate", "--gt", str(gt), "--pred", str(cleaned), "-o", str(out), "--quiet"]) == 0
        summary = load_strict_json(out / "summary.json")
        for metric in ("lesion_recall", "lesion_precision", "lesion_f1", "lesion_fp", "Dice"):
            assert row["mean"]["1"][metric] == summary["mean"]["1"][metric], (row["min_voxels"], metric)
        for metric in ("lesion_recall", "lesion_precision", "lesion_f1"):
            assert row["pooled"]["1"][metric] == summary["across_cases"]["1"][f"pooled_{metric}"]
    fp = [row["mean"]["1"]["lesion_fp"] for row in sweep["rows"]]
    assert fp[0] > fp[-1] and sweep["rows"][0]["removed_components"] == 0 < sweep["rows"][-1]["removed_components"]
    with open(tmp_path / "sweep" / "min_size_sweep.csv") as handle:
        assert [int(r["min_voxels"]) for r in csv.DictReader(handle)] == sizes


def test_sweep_reports_a_missing_prediction_and_needs_gt(tmp_path):
    gt, pred = _sweep_inputs(tmp_path, real=False)
    (pred / "case_1.nii.gz").unlink()
    assert main(["remove-small", str(pred), str(tmp_path / "s"), "--sweep", "--gt", str(gt)]) == 1
    sweep = json.loads((tmp_path / "s" / "min_size_sweep.json").read_text())
    assert list(sweep["errors"]) == ["case_1"] and "case_1" in (tmp_path / "s" / "min_size_sweep.md").read_text()
    assert main(["remove-small", str(pred), str(tmp_path / "t"), "--sweep"]) == 2


def test_benchmark_script_prints_both_tables(tmp_path):
    """scripts/benchmark_lesion_tools.py at a tiny size (docs/benchmarks.md's timings come from it; no timing asserted)."""
    import subprocess
    import sys

    for k in range(2):
        reference, _ = _lesion_case(k, shape=(16, 20, 24))
        _write(tmp_path / "masks" / f"case_{k}.nii.gz", reference)
    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_lesion_tools.py"
    result = subprocess.run(
        [sys.executable, str(script), "--folder", str(tmp_path / "masks"), "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| inspect (counts, sizes" in result.stdout and "| files read + all metrics |" in result.stdout
    assert "| writing lesions.csv |" in result.stdout
