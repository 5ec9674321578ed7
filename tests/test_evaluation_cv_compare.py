"""cv-summary on a hand-made 5-fold nnU-Net results tree, compare, and the post-processing commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest_evaluation import close, cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (12, 12, 12)
DATASET = "Dataset999_Fake"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def reference_case(k: int) -> np.ndarray:
    """One large lesion (27 voxels) and k % 3 + 1 one-voxel lesions."""
    ref = cube(SHAPE, (1, 1, 1), (3, 3, 3))
    for j in range(k % 3 + 1):
        ref[8, 2 + 3 * j, 9] = 1
    return ref


def make_results_tree(root: Path) -> dict:
    """nnU-Net folders: gt_segmentations + splits_final.json, two trainers with 5 validation folds each."""
    gt = root / "preprocessed" / DATASET / "gt_segmentations"
    cases = [f"case_{k:02d}" for k in range(10)]
    for k, case in enumerate(cases):
        write_image(gt / f"{case}.nii.gz", reference_case(k))
    splits = [
        {"train": [c for c in cases if c not in cases[2 * f : 2 * f + 2]], "val": cases[2 * f : 2 * f + 2]}
        for f in range(5)
    ]
    (gt.parent / "splits_final.json").write_text(json.dumps(splits))
    runs = {}
    for trainer, perfect in (("nnUNetTrainerPerfect", True), ("nnUNetTrainerMissesSmall", False)):
        run = root / "results" / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
        (run).mkdir(parents=True)
        (run / "dataset.json").write_text(
            json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"})
        )
        for f, split in enumerate(splits):
            for case in split["val"]:
                k = cases.index(case)
                pred = reference_case(k) if perfect else cube(SHAPE, (1, 1, 1), (3, 3, 3))
                write_image(run / f"fold_{f}" / "validation" / f"{case}.nii.gz", pred)
        runs[trainer] = run
    return runs


@pytest.fixture(scope="module")
def cv_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    runs = make_results_tree(root)
    mp = pytest.MonkeyPatch()
    mp.setenv("nnUNet_preprocessed", str(root / "preprocessed"))
    try:
        for run in runs.values():
            assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 0
    finally:
        mp.undo()
    return runs


def test_cv_summary_reports_each_fold_and_the_mean_of_fold_means(cv_runs):
    perfect = load_strict_json(cv_runs["nnUNetTrainerPerfect"] / "lesion_evaluation" / "cv_summary.json")
    assert perfect["folds"] == [0, 1, 2, 3, 4] and perfect["n_cases"] == 10 and perfect["n_failed"] == 0
    assert perfect["gt_dir"].endswith("gt_segmentations")
    assert perfect["mean_of_fold_means"]["1"]["Dice"] == 1.0 and perfect["mean_of_fold_means"]["1"]["lesion_f1"] == 1.0
    misses = load_strict_json(cv_runs["nnUNetTrainerMissesSmall"] / "lesion_evaluation" / "cv_summary.json")
    fold_recalls = []
    for f in range(5):
        fold_summary = load_strict_json(
            cv_runs["nnUNetTrainerMissesSmall"] / "lesion_evaluation" / f"fold_{f}" / "summary.json"
        )
        assert fold_summary["n_cases"] == 2
        fold_recalls.append(fold_summary["mean"]["1"]["lesion_recall"])
        assert misses["per_fold_mean"][str(f)]["1"]["lesion_recall"] == fold_recalls[-1]
    # by hand: case k has 1 + (k % 3 + 1) lesions, only the large one is found -> recall 1 / (k % 3 + 2)
    expected_folds = [np.mean([1 / (k % 3 + 2) for k in (2 * f, 2 * f + 1)]) for f in range(5)]
    assert np.allclose(fold_recalls, expected_folds)
    assert close(misses["mean_of_fold_means"]["1"]["lesion_recall"], float(np.mean(expected_folds)))
    assert close(misses["std_of_fold_means"]["1"]["lesion_recall"], float(np.std(expected_folds, ddof=1)))
    # all lesions (1 and 27 mm³) are <= 0.05 mL, so small-lesion recall equals lesion recall here
    assert close(misses["mean_of_fold_means"]["1"]["small_lesion_recall"], float(np.mean(expected_folds)))
    with open(cv_runs["nnUNetTrainerMissesSmall"] / "lesion_evaluation" / "cases.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({r["fold"] for r in rows}) == ["0", "1", "2", "3", "4"] and len(rows) == 10
    assert "| lesion_recall |" in (cv_runs["nnUNetTrainerPerfect"] / "lesion_evaluation" / "cv_summary.md").read_text()


def test_cv_summary_without_references_says_where_it_looked(tmp_path, monkeypatch, capsys):
    run = tmp_path / DATASET / "T__P__C"
    (run / "fold_0" / "validation").mkdir(parents=True)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert main(["cv-summary", str(run), "--quiet"]) == 2
    assert "pass --gt" in capsys.readouterr().err


def test_compare_writes_table_with_best_marked_and_real_pngs(cv_runs, tmp_path):
    out = tmp_path / "compare"
    assert (
        main(
            ["compare", str(cv_runs["nnUNetTrainerPerfect"]), str(cv_runs["nnUNetTrainerMissesSmall"]), "-o", str(out)]
        )
        == 0
    )
    table = (out / "compare.md").read_text()
    assert "| nnUNetTrainerPerfect | nnUNetTrainerMissesSmall |" in table
    assert "| Lesion recall (SEN) ↑ | **1.0000** |" in table
    assert "| FN count ↓ | **0.0000** |" in table
    with open(out / "compare.csv") as handle:
        rows = {r["metric"]: r for r in csv.DictReader(handle)}
    assert rows["lesion_recall"]["best"] == "nnUNetTrainerPerfect" and rows["lesion_fn"]["better"] == "lower"
    assert (
        rows["Dice"]["best"] == "nnUNetTrainerPerfect;nnUNetTrainerMissesSmall"
        or float(rows["Dice"]["nnUNetTrainerMissesSmall"]) < 1
    )
    for name in ("detection_by_size.png", "volume_agreement.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert main(["compare", str(cv_runs["nnUNetTrainerPerfect"]), "-o", str(out)]) == 2  # no --overwrite


# --------------------------------------------------------------------------- post-processing
def read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_remove_small_keeps_components_of_at_least_n_voxels_with_18_connectivity(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 1, 1:5] = 1  # 4 voxels: removed
    labels[5, 5, 1:6] = 1  # 5 voxels: kept
    labels[9, 9, 9] = labels[10, 10, 9] = labels[9, 9, 10] = labels[8, 9, 10] = labels[8, 8, 10] = 2  # 18-connected, 5
    write_image(tmp_path / "in" / "c.nii.gz", labels, spacing_xyz=(0.7, 0.8, 0.9))
    assert main(["remove-small", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    out = read(tmp_path / "out" / "c.nii.gz")
    expected = labels.copy()
    expected[1, 1, 1:5] = 0
    assert np.array_equal(out, expected)
    assert main(["remove-small", str(tmp_path / "in"), str(tmp_path / "out"), "--connectivity", "6"]) == 2  # exists
    assert (
        main(["remove-small", str(tmp_path / "in"), str(tmp_path / "out"), "--connectivity", "6", "--overwrite"]) == 0
    )
    assert read(tmp_path / "out" / "c.nii.gz")[9, 9, 9] == 0  # 6-connected pieces are smaller than 5


def test_merge_by_volume_takes_small_lesions_from_a_and_large_from_b(tmp_path):
    a = cube(SHAPE, (0, 0, 0), (1, 1, 1)) | cube(SHAPE, (4, 4, 4), (4, 4, 4))  # 1 voxel + 64 voxels
    b = cube(SHAPE, (11, 11, 11), (1, 1, 1)) | cube(SHAPE, (5, 5, 5), (3, 3, 3))  # 1 voxel + 27 voxels
    write_image(tmp_path / "a" / "c.nii.gz", a)
    write_image(tmp_path / "b" / "c.nii.gz", b)
    assert (
        main(
            [
                "merge-by-volume",
                "--small-model",
                str(tmp_path / "a"),
                "--large-model",
                str(tmp_path / "b"),
                "-o",
                str(tmp_path / "m"),
                "--volume-ml",
                "0.01",
            ]
        )
        == 0
    )  # 10 voxels of 1 mm³
    expected = cube(SHAPE, (0, 0, 0), (1, 1, 1)) | cube(SHAPE, (5, 5, 5), (3, 3, 3))
    assert np.array_equal(read(tmp_path / "m" / "c.nii.gz"), expected)


def test_choose_and_apply_threshold_from_nnunet_probabilities(tmp_path):
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    for k in range(2):
        ref = cube(SHAPE, (2 + k, 2, 2), (4, 4, 4))
        write_image(gt / f"c{k}.nii.gz", ref)
        shell = cube(SHAPE, (1 + k, 1, 1), (6, 6, 6)) & ~ref.astype(bool)
        foreground = np.where(ref > 0, 0.45, np.where(shell, 0.35, 0.0)).astype(np.float32)
        probs.mkdir(exist_ok=True)
        np.savez_compressed(probs / f"c{k}.npz", probabilities=np.stack([1 - foreground, foreground]))
        write_image(probs / f"c{k}.nii.gz", (foreground >= 0.5).astype(np.uint8), spacing_xyz=(1.0, 1.0, 2.0))
    result_file = tmp_path / "threshold.json"
    assert main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "-o", str(result_file)]) == 0
    result = load_strict_json(result_file)
    # 0.3 adds the 152-voxel shell: Dice 2·64 / (216 + 64) per case; 0.4 is exact; 0.5+ predicts nothing
    assert result["best_threshold"] == 0.4
    dice = [row[0] for row in result["targets"]["foreground"]["grid"]["dice"]]  # thresholds x min sizes (0 only)
    assert close(dice[0], 2 * 128 / (432 + 128)) and dice[1] == 1.0
    assert dice[2:] == [0.0, 0.0, 0.0]
    assert (
        main(
            [
                "apply-threshold",
                "--probabilities",
                str(probs),
                "--threshold-json",
                str(result_file),
                "-o",
                str(tmp_path / "seg"),
            ]
        )
        == 0
    )
    import SimpleITK as sitk

    written = sitk.ReadImage(str(tmp_path / "seg" / "c1.nii.gz"))
    assert written.GetSpacing() == (1.0, 1.0, 2.0)  # geometry from nnU-Net's segmentation beside the .npz
    assert np.array_equal(sitk.GetArrayFromImage(written), cube(SHAPE, (3, 2, 2), (4, 4, 4)))


FAKE_TRAIN = '''#!/usr/bin/env python3
"""Stands in for nnUNetv2_train: writes perfect validation predictions of the fold and logs its call."""
import json, os, shutil, sys
from pathlib import Path
dataset, config, fold = sys.argv[1:4]
trainer = sys.argv[sys.argv.index("-tr") + 1]
plans = sys.argv[sys.argv.index("-p") + 1]
gt = Path(os.environ["nnUNet_preprocessed"]) / "{dataset}" / "gt_segmentations"
splits = json.loads((gt.parent / "splits_final.json").read_text())
out = Path(os.environ["nnUNet_results"]) / "{dataset}" / f"{{trainer}}__{{plans}}__{{config}}" / f"fold_{{fold}}" / "validation"
out.mkdir(parents=True, exist_ok=True)
for case in splits[int(fold)]["val"]:
    shutil.copy(gt / f"{{case}}.nii.gz", out / f"{{case}}.nii.gz")
with open(os.environ["FAKE_TRAIN_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + f" gpu={{os.environ.get('CUDA_VISIBLE_DEVICES', '')}}\\n")
'''


def test_compare_accepts_evaluate_outputs_and_display_names(tmp_path):
    gt = tmp_path / "gt"
    for k in range(3):
        write_image(gt / f"c{k}.nii.gz", reference_case(k))
        write_image(tmp_path / "good" / f"c{k}.nii.gz", reference_case(k))
        write_image(tmp_path / "bad" / f"c{k}.nii.gz", np.zeros(SHAPE, np.uint8))
    for name in ("good", "bad"):
        assert main(["evaluate", "--gt", str(gt), "--pred", str(tmp_path / name), "--quiet", "-np", "1"]) == 0
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(tmp_path / "good" / "lesion_evaluation"),
                str(tmp_path / "bad" / "lesion_evaluation"),
                "--names",
                "A",
                "B",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    table = (out / "compare.md").read_text()
    assert "| metric | A | B |" in table and "| Lesion recall (SEN) ↑ | **1.0000** | 0.0000 |" in table
    assert (out / "volume_agreement.png").read_bytes().startswith(PNG_MAGIC)
