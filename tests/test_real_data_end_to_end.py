"""Real data through the whole chain: crops of the two Open MS Data patients (Lesjak et al. 2017, CC-BY)
-> nnUNetv2_plan_and_preprocess -> one short epoch of nnUNetTrainerSizePenaltyAuto -> nnUNetv2_predict
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

from conftest import SHARED, nnunet_environment, run_cli
from nnunet_lesionloss.cli import main

OPEN_MS = SHARED / "golden" / "open_ms_data"
pytestmark = pytest.mark.skipif(
    not (OPEN_MS / "patient07").is_dir(),
    reason=f"{OPEN_MS} not found: the real-data smoke test needs the project's shared/ folder beside the repository",
)

DATASET_ID = 919
DATASET = f"Dataset{DATASET_ID}_OpenMSCrops"
TRAINER = "nnUNetTrainerSizePenaltyAuto"
#: FLAIR, the contrast MS lesions are segmented on. One channel: nnU-Net's fingerprint draws 10^8 foreground
#: intensity samples per channel whatever the dataset size (the most expensive step of this test)
CHANNELS = ("FLAIR",)
#: 32³ boxes (x, y, z start, ITK order) with many lesions: 8 in patient07, 20 in patient19 (26-connected)
CROPS = {"patient07": (48, 80, 80), "patient19": (96, 120, 88)}
SIZE = 32


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
    for case, (x, y, z) in CROPS.items():
        box = (slice(x, x + SIZE), slice(y, y + SIZE), slice(z, z + SIZE))
        for k, channel in enumerate(CHANNELS):
            image = sitk.ReadImage(str(OPEN_MS / case / f"{channel}.nii.gz"))[box]
            (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(folder / "imagesTr" / f"{case}_{k:04d}.nii.gz"), True)
        mask = sitk.Cast(sitk.ReadImage(str(OPEN_MS / case / "mask.nii.gz"))[box] > 0, sitk.sitkUInt8)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(mask, str(folder / "labelsTr" / f"{case}.nii.gz"), True)
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": dict(enumerate(CHANNELS)),
                "labels": {"background": 0, "lesion": 1},
                "numTraining": len(CROPS),
                "file_ending": ".nii.gz",
                "reference": "Lesjak et al. 2017, Neuroinformatics, doi 10.1007/s12021-017-9348-7 (CC-BY); 32³ crops",
            }
        )
    )


@pytest.mark.slow
def test_open_ms_crops_through_nnunet_and_the_evaluation(tmp_path):
    root = tmp_path
    env = nnunet_environment(root)
    _write_raw_dataset(root / "raw")
    labels = root / "raw" / DATASET / "labelsTr"
    crop = sitk.ReadImage(str(labels / "patient19.nii.gz"))
    assert crop.GetDirection() == (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    assert crop.GetOrigin() == (-90.0 + 96, 126.0 - 120, -72.0 + 88)  # the crop's own origin, non-zero

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
