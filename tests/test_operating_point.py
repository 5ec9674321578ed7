"""choose-threshold / apply-threshold: probability channels from dataset.json, lesion criteria, nested CV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main

SHAPE = (12, 12, 12)


def read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_probabilities(folder: Path, case: str, probabilities: np.ndarray, segmentation: np.ndarray) -> None:
    """What nnUNetv2_predict --save_probabilities writes: CASE.npz (channels first) beside CASE.nii.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{case}.npz", probabilities=probabilities.astype(np.float32))
    write_image(folder / f"{case}.nii.gz", segmentation.astype(np.uint8))


# --------------------------------------------------------------------------- regions (sigmoid channels)
REGIONS_DATASET = {
    "labels": {"background": 0, "whole": [1, 2], "core": 2},
    "regions_class_order": [1, 2],
    "file_ending": ".nii.gz",
}


def region_case(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """Reference labels 1 (4³ cube) with label 2 inside (2³); sigmoid channels: whole 0.65 inside, 0.45 on a
    one-voxel shell; core 0.8 inside, 0.1 elsewhere."""
    reference = cube(SHAPE, (3, 3, 3), (4, 4, 4))
    reference[4:6, 4:6, 4:6] = 2
    whole = reference > 0
    shell = cube(SHAPE, (2, 2, 2), (6, 6, 6)).astype(bool) & ~whole
    p_whole = np.where(whole, 0.65, np.where(shell, 0.45, 0.0))
    p_core = np.where(reference == 2, 0.8, 0.1)
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    write_image(gt / "c0.nii.gz", reference)
    write_probabilities(probs, "c0", np.stack([p_whole, p_core]), reference)
    (probs / "dataset.json").write_text(json.dumps(REGIONS_DATASET))
    return gt, probs, reference


def test_apply_threshold_on_region_probabilities_follows_dataset_json(tmp_path):
    gt, probs, reference = region_case(tmp_path)
    assert (
        main(["apply-threshold", "--probabilities", str(probs), "--threshold", "0.5", "-o", str(tmp_path / "seg")]) == 0
    )
    # nnU-Net's region conversion: each region's sigmoid channel, written in regions_class_order
    assert np.array_equal(read(tmp_path / "seg" / "c0.nii.gz"), reference)


def test_choose_threshold_on_region_probabilities_follows_dataset_json(tmp_path):
    gt, probs, _ = region_case(tmp_path)
    # one region (labels 1 and 2 together): its sigmoid channel is the only channel
    (probs / "dataset.json").write_text(
        json.dumps(
            {"labels": {"background": 0, "lesion": [1, 2]}, "regions_class_order": [1], "file_ending": ".nii.gz"}
        )
    )
    with np.load(probs / "c0.npz") as data:
        np.savez_compressed(probs / "c0.npz", probabilities=data["probabilities"][:1])
    out = tmp_path / "choice.json"
    assert main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out)]) == 0
    result = load_strict_json(out)
    # 0.3 and 0.4 add the shell; 0.5 and 0.6 are exact (the first is kept); 0.7 predicts nothing
    assert result["best_threshold"] == 0.5
