"""Real data through the whole chain: 32³ crops of two Open MS Data patients (Lesjak et al. 2017, CC BY 4.0;
stored in tests/data/open_ms_data/crops with the patients' geometry) -> nnUNetv2_plan_and_preprocess -> one short epoch of nnUNetTrainerSizePenaltyAuto -> nnUNetv2_predict
-> evaluate with lesions.csv, inspect and cv-summary. The MNI grid's flipped y axis and its origin must
survive nnU-Net's round trip: the evaluation's lesion centroids equal ITK's, computed independently."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import OPEN_MS_DATA, nnunet_environment, run_cli
from nnunet_lesionloss.cli import main

DATASET_ID = 919
DATASET = f"Dataset{DATASET_ID}_OpenMSCrops"
TRAINER = "nnUNetTrainerSizePenaltyAuto"
#: FLAIR, the contrast MS lesions are segmented on. One channel: nnU-Net's fingerprint draws 10^8 foreground
#: intensity samples per channel whatever the dataset size (the most expensive step of this test)
CHANNELS = ("FLAIR",)
#: 32³ boxes of the patients' 182×218×182 MNI images with many lesions: 8 in patient07, 20 in patient19
#: (26-connected); each box's start (x, y, z, ITK's index order), cut by SimpleITK's slicing, which keeps the
#: spacing and direction and moves the origin to the box (tests/data/open_ms_data/README.md)
CROPS = {"patient07": (48, 80, 80), "patient19": (96, 120, 88)}
SIZE = 32
#: the MNI grid of Open MS Data: origin (mm) and direction (its y axis flipped)
MNI_ORIGIN = (-90.0, 126.0, -72.0)
MNI_DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _itk_centroids(path: Path) -> list[tuple[float, ...]]:
    """ITK's own 26-connected components and their physical centroids (independent of this package)."""
    components = sitk.ConnectedComponent(sitk.ReadImage(str(path)) > 0, True)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(components)
    return sorted(statistics.GetCentroid(label) for label in statistics.GetLabels())


def _our_centroids(rows: list[dict], case: str, side: str) -> list[tuple[float, ...]]:
    return sorted(
        tuple(float(r[f"centroid_{a}_mm"]) for a in "xyz") for r in rows if r["case"] == case and r["side"] == side
    )


def _write_raw_dataset(raw: Path) -> None:
    folder = raw / DATASET
    for case in CROPS:
        crop = OPEN_MS_DATA / "crops" / case
        for k, channel in enumerate(CHANNELS):
            image = sitk.ReadImage(str(crop / f"{channel}.nii.gz"))
            (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(folder / "imagesTr" / f"{case}_{k:04d}.nii.gz"), True)
        mask = sitk.Cast(sitk.ReadImage(str(crop / "mask.nii.gz")) > 0, sitk.sitkUInt8)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(mask, str(folder / "labelsTr" / f"{case}.nii.gz"), True)
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": dict(enumerate(CHANNELS)),
                "labels": {"background": 0, "lesion": 1},
                "numTraining": len(CROPS),
                "file_ending": ".nii.gz",
                "reference": "Lesjak et al. 2017, Neuroinformatics, doi 10.1007/s12021-017-9348-7 (CC BY 4.0); 32³ crops",
            }
        )
    )


@pytest.mark.slow
def test_open_ms_crops_through_nnunet_and_the_evaluation(tmp_path):
    root = tmp_path
    env = nnunet_environment(root)
    _write_raw_dataset(root / "raw")
    labels = root / "raw" / DATASET / "labelsTr"
    for case, start in CROPS.items():
        crop = sitk.ReadImage(str(labels / f"{case}.nii.gz"))
        assert crop.GetSize() == (SIZE,) * 3 and crop.GetSpacing() == (1.0, 1.0, 1.0)
        assert crop.GetDirection() == MNI_DIRECTION
        # the box's own origin, non-zero: the MNI origin moved by the start index along the flipped y axis
        assert crop.GetOrigin() == tuple(o + d * i for o, d, i in zip(MNI_ORIGIN, MNI_DIRECTION[::4], start))

    run_cli(
        ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
        dict(env, nnUNet_n_proc_DA="1"),
    )
    preprocessed = root / "preprocessed" / DATASET
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": ["patient07"], "val": ["patient19"]}]))
    config = root / "short.yaml"
    config.write_text(
        "trainer: {num_epochs: 1, num_iterations_per_epoch: 2, num_val_iterations_per_epoch: 1}\n"
        "auto_tau: {patches: 8}\n"
    )
    env = dict(env, NNUNET_LESIONLOSS_CONFIG=str(config))
    run_cli(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env)
    run = root / "results" / DATASET / f"{TRAINER}__nnUNetPlans__3d_fullres"
    effective = json.loads((run / "fold_0" / "lesionloss_config.json").read_text())

    # inspect the planned dataset: training spacing, the plans' scales, and the trainer's own tau
    inspected = root / "inspect"
    result = run_cli(["nnunet-lesionloss", "inspect", str(DATASET_ID), "-o", str(inspected), "--quiet"], env)
    report = json.loads((inspected / "inspect.json").read_text())
    counts = {case: len(_itk_centroids(labels / f"{case}.nii.gz")) for case in CROPS}
    assert counts == {"patient07": 8, "patient19": 20}
    assert (
        report["labels"]["1"]["lesions"] == sum(counts.values()) and "training spacing" in report["spacing"]["source"]
    )
    assert report["size_penalty_auto"]["tau"] == effective["terms"]["size_penalty"]["params"]["tau"]
    assert "nnUNetTrainerSizePenaltyAuto would use tau" in result.stdout

    images = root / "images"
    images.mkdir()
    for path in (root / "raw" / DATASET / "imagesTr").iterdir():
        shutil.copy(path, images / path.name)
    predictions = root / "predictions"
    run_cli(
        ["nnUNetv2_predict", "-i", str(images), "-o", str(predictions), "-d", str(DATASET_ID), "-c", "3d_fullres"]
        + ["-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
        env,
    )
    evaluation = root / "evaluation"
    assert main(["evaluate", "--gt", str(labels), "--pred", str(predictions), "-o", str(evaluation), "--quiet"]) == 0
    with open(evaluation / "lesions.csv") as handle:
        rows = list(csv.DictReader(handle))
    for case in CROPS:
        reference = sitk.ReadImage(str(labels / f"{case}.nii.gz"))
        predicted = sitk.ReadImage(str(predictions / f"{case}.nii.gz"))
        assert predicted.GetDirection() == reference.GetDirection()
        assert np.allclose(predicted.GetOrigin(), reference.GetOrigin()) and predicted.GetSize() == reference.GetSize()
        ours, theirs = _our_centroids(rows, case, "reference"), _itk_centroids(labels / f"{case}.nii.gz")
        assert len(ours) == len(theirs) == counts[case]
        assert np.allclose(ours, theirs, atol=1e-9)
        ours, theirs = _our_centroids(rows, case, "prediction"), _itk_centroids(predictions / f"{case}.nii.gz")
        assert len(ours) == len(theirs) and (not ours or np.allclose(ours, theirs, atol=1e-9))

    # cv-summary takes the trainer's own evaluation of fold 0 (with its lesions.csv) and merges it
    assert main(["cv-summary", str(run), "--gt", str(preprocessed / "gt_segmentations"), "--quiet"]) == 0
    with open(run / "lesion_evaluation" / "lesions.csv") as handle:
        merged = list(csv.DictReader(handle))
    assert {r["fold"] for r in merged} == {"0"} and {r["case"] for r in merged} == {"patient19"}
    assert _our_centroids(merged, "patient19", "reference") == _our_centroids(rows, "patient19", "reference")
