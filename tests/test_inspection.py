"""``nnunet-lesionloss inspect``: lesion statistics against an independent cc3d + numpy computation on the
30 real MS masks, deep-supervision erasure on hand-built masks with known answers, planned datasets."""

from __future__ import annotations

import json
from pathlib import Path

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from test_evaluation_cv_compare import PNG_MAGIC

from conftest import OPEN_MS_DATA, REPO
from conftest_evaluation import load_strict_json, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.inspection import ASSUMED_POOL_KERNELS, deep_supervision_scales, inspect_labels
from nnunet_lesionloss.inspection_report import run_inspection

MASKS = OPEN_MS_DATA / "masks"  # the 30 consensus masks of Open MS Data, in the repository (CC BY 4.0)
ISOTROPIC = deep_supervision_scales(ASSUMED_POOL_KERNELS)


# --------------------------------------------------------------------------- the 30 real masks
@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect_ms")
    report, text = run_inspection(str(MASKS), str(out))
    return report, text, out


def _independent(files) -> dict:
    """cc3d + numpy, written from the definitions: sizes, 6-vs-26 splits, border lesions, and the
    lesions left on nnU-Net's nearest-exact lattice (voxel f·i + f/2 per axis at factor f)."""
    sizes, per_case, split, in_split, border, kept = [], [], 0, 0, 0, {2: 0, 4: 0, 8: 0, 16: 0}
    for path in files:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
        ids26, n26 = cc3d.connected_components(mask, connectivity=26, return_N=True)
        ids6 = cc3d.connected_components(mask, connectivity=6)
        counts = np.bincount(ids26.ravel())[1:]
        sizes += counts.tolist()
        per_case.append(n26)
        pairs = np.unique(np.stack([ids26[mask], ids6[mask]]), axis=1)
        parts = np.bincount(pairs[0], minlength=n26 + 1)[1:]
        split += int((parts > 1).sum())
        in_split += int(parts[parts > 1].sum())
        faces = np.concatenate([np.moveaxis(ids26, a, 0)[[0, -1]].ravel() for a in range(3)])
        border += len(set(faces.tolist()) - {0})
        for f in kept:
            kept[f] += len(set(np.unique(ids26[f // 2 :: f, f // 2 :: f, f // 2 :: f]).tolist()) - {0})
    return {
        "sizes": np.array(sizes),
        "per_case": np.array(per_case),
        "split": split,
        "in_split": in_split,
        "border": border,
        "kept": kept,
    }


def test_real_masks_counts_sizes_and_shares_equal_an_independent_computation(real_report):
    report, _, _ = real_report
    entry = report["labels"]["1"]
    truth = _independent(sorted(MASKS.glob("*.nii.gz")))
    n = len(truth["sizes"])
    assert report["n_cases"] == entry["cases"] == 30 and report["n_failed"] == 0
    assert entry["lesions"] == n == 3115  # tests/data/open_ms_data/README.md
    q = np.percentile(truth["sizes"], [25, 50, 75])
    assert entry["volume_voxels"] == pytest.approx(
        {
            "min": truth["sizes"].min(),
            "q1": q[0],
            "median": q[1],
            "q3": q[2],
            "max": truth["sizes"].max(),
            "mean": truth["sizes"].mean(),
        }
    )
    assert entry["volume_voxels"]["median"] == 17
    assert entry["volume_mm3"] == entry["volume_voxels"]  # 1 mm isotropic
    per_case = np.percentile(truth["per_case"], [25, 50, 75])
    assert [entry["lesions_per_case"][k] for k in ("q1", "median", "q3", "max")] == pytest.approx(
        [*per_case, truth["per_case"].max()]
    )
    for t in (10, 50, 100):
        assert entry["share_at_most_voxels"][str(t)] == pytest.approx(np.mean(truth["sizes"] <= t))
    assert [round(100 * entry["share_at_most_voxels"][t]) for t in ("10", "50", "100")] == [37, 77, 88]
    assert entry["split_at_face_connectivity"] == truth["split"]
    assert entry["face_components_in_split_lesions"] == truth["in_split"]
    assert entry["touching_border"] == truth["border"]
    erased = [n - truth["kept"][f] for f in (2, 4, 8, 16)]
    assert entry["erased_count_at_scale"] == [0, *erased]
    assert entry["erased_at_scale"] == pytest.approx([0, *(e / n for e in erased)])


def test_real_masks_outputs(real_report):
    report, text, out = real_report
    written = load_strict_json(out / "inspect.json")
    entry = written["labels"]["1"]
    for key in ("cases", "lesions", "lesions_per_case", "volume_voxels", "share_at_most_voxels", "erased_at_scale"):
        assert key in entry
    assert set(entry["share_at_most_voxels"]) == {"10", "50", "100"}
    assert len(entry["erased_at_scale"]) == len(written["deep_supervision_scales"]) == 5
    assert entry["spacing"]["mm"] == [[1.0, 1.0, 1.0]] and "own spacing" in entry["spacing"]["source"]
    assert (out / entry["histogram"]).read_bytes().startswith(PNG_MAGIC)
    assert "| lesions | 3115 |" in text and "| share of lesions <= 10 voxels | 37.0 % |" in text
    assert "remove-small" in text and "deep-supervision targets erase" in text
    assert "needs a planned" in written["size_penalty_auto"]["skipped"]


def test_the_output_docs_evaluation_md_quotes_is_what_inspect_prints_on_the_repository_masks(real_report):
    """docs/evaluation.md shows `inspect tests/data/open_ms_data/masks`: every line it quotes, as printed today."""
    _, text, _ = real_report
    doc = (REPO / "docs" / "evaluation.md").read_text()
    quoted = doc[doc.index("30 cases; lesions = 26-connected") : doc.index("A fifth of these lesions")]
    lines = [line for line in quoted.splitlines() if line.strip()]
    assert len(lines) > 20 and [line for line in lines if line not in text.splitlines()] == []


# --------------------------------------------------------------------------- hand-built masks
def test_erasure_on_hand_built_masks_known_from_nearest_exact():
    """At factor f nearest-exact keeps the voxels f·i + f/2 (per axis) of a grid that starts at 0."""
    labels = np.zeros((45, 47, 50), dtype=np.uint8)  # not a multiple of 16: the far border is padded
    labels[1, 1, 1] = 1  # kept at 1/2 only
    labels[10, 10, 10] = 1  # kept at 1/4 only (10 = 4·2 + 2)
    labels[24, 24, 24] = 1  # kept at 1/16 only (24 = 16 + 8)
    labels[30:32, 30:32, 30:32] = 1  # kept at 1/2 (31) and 1/4 (30)
    labels[44, 46, 49] = 1  # at the far corner: erased everywhere, touches the border
    labels[0, 20, 20] = 1  # erased everywhere, touches the border
    result = inspect_labels(labels, (1.0, 1.0, 1.0), {"1": (1,)}, 26, ISOTROPIC)["1"]
    assert sorted(result.voxels) == [1, 1, 1, 1, 1, 8]
    assert result.erased == [0, 4, 4, 6, 5]
    assert result.touching_border == 2
    # alone in the image (the foreground box starts far from 0): the same lattice, the same answer
    for position, erased in (((10, 10, 10), [0, 1, 0, 1, 1]), ((24, 24, 24), [0, 1, 1, 1, 0])):
        alone = np.zeros_like(labels)
        alone[position] = 1
        assert inspect_labels(alone, (1.0, 1.0, 1.0), {"1": (1,)}, 26, ISOTROPIC)["1"].erased == erased


def test_erasure_with_anisotropic_pooling_of_the_plans():
    pools = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    scales = deep_supervision_scales(pools)
    assert scales == [(1.0, 1.0, 1.0), (1.0, 0.5, 0.5), (0.5, 0.25, 0.25)]
    labels = np.zeros((8, 16, 16), dtype=np.uint8)
    labels[0, 1, 1] = 1  # in-plane odd: kept at (1, 1/2, 1/2); axis 0 needs index 1 at 1/2: erased
    labels[3, 6, 6] = 1  # kept at (1/2, 1/4, 1/4) (3 = 2·1 + 1, 6 = 4·1 + 2), erased at 1/2 in-plane
    assert inspect_labels(labels, (3.0, 1.0, 1.0), {"1": (1,)}, 26, scales)["1"].erased == [0, 1, 1]


def test_face_and_full_connectivity_splits_and_merges():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = labels[3, 3, 3] = 1  # one lesion at 26, three at 6
    labels[6, 6, 6] = labels[6, 6, 7] = 1  # one lesion at both
    labels[9, 9, 9] = labels[10, 10, 9] = 1  # one at 26 (edge contact), two at 6
    result = inspect_labels(labels, (1.0, 1.0, 1.0), {"1": (1,)}, 26, ISOTROPIC)["1"]
    assert len(result.voxels) == 3 and result.split_at_face == 2 and result.face_components_in_split == 5
    at_six = inspect_labels(labels, (1.0, 1.0, 1.0), {"1": (1,)}, 6, ISOTROPIC)["1"]
    assert len(at_six.voxels) == 6 and at_six.split_at_face == 2  # the split count does not depend on it


def test_regions_and_labels_from_dataset_json_and_a_bad_case_by_name(tmp_path):
    labels = np.zeros((16, 16, 16), dtype=np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    labels[3, 3, 3] = 2  # inside the label-1 lesion: one region lesion, one label-2 lesion
    labels[10, 10, 10] = 2
    folder = tmp_path / "labelsTr"
    write_image(folder / "a.nii.gz", labels, spacing_xyz=(0.5, 0.5, 2.0))
    write_image(folder / "b.nii.gz", np.zeros_like(labels), spacing_xyz=(0.5, 0.5, 2.0))
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "labels": {"background": 0, "whole": [1, 2], "enhancing": [2]},
                "regions_class_order": [1, 2],
                "file_ending": ".nii.gz",
            }
        )
    )
    out = tmp_path / "out"
    assert main(["inspect", str(tmp_path), "-o", str(out), "--quiet"]) == 1  # broken.nii.gz is reported
    report = load_strict_json(out / "inspect.json")
    assert list(report["errors"]) == ["broken"] and report["n_failed"] == 1
    whole, enhancing = report["labels"]["(1, 2)"], report["labels"]["2"]
    assert whole["name"] == "whole" and enhancing["name"] == "enhancing"
    assert whole["cases"] == enhancing["cases"] == 2
    assert whole["lesions"] == 2 and whole["volume_voxels"]["max"] == 27
    assert enhancing["lesions"] == 2 and enhancing["volume_mm3"]["max"] == pytest.approx(0.5)
    assert whole["lesions_per_case"]["max"] == 2 and whole["lesions_per_case"]["min"] == 0
    assert main(["inspect", str(tmp_path), "-o", str(out), "--quiet"]) == 2  # exists, no --overwrite


# --------------------------------------------------------------------------- a planned dataset
def test_planned_dataset_uses_the_training_spacing_and_the_plans_scales(preprocessed_dataset, tmp_path, monkeypatch):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    env = preprocessed_dataset["env"]
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, env[name])
    config = tmp_path / "tau.yaml"
    config.write_text("auto_tau: {patches: 12}\n")
    monkeypatch.setenv("NNUNET_LESIONLOSS_CONFIG", str(config))
    report, text = run_inspection(str(preprocessed_dataset["dataset_id"]), str(tmp_path / "out"))
    base = Path(env["nnUNet_preprocessed"]) / preprocessed_dataset["dataset"]
    plans = PlansManager(str(base / "nnUNetPlans.json"))
    configuration = plans.get_configuration("3d_fullres")
    expected = 1 / np.cumprod(np.vstack(configuration.pool_op_kernel_sizes), axis=0)[:-1]
    assert report["deep_supervision_scales"] == expected.tolist()
    assert "training spacing" in report["spacing"]["source"]
    assert report["spacing"]["mm"] == [list(configuration.spacing)]
    folder = base / configuration.data_identifier
    dataset = infer_dataset_class(str(folder))(str(folder))
    counts = [
        cc3d.connected_components(np.asarray(dataset.load_case(c)[1][:])[0] > 0, connectivity=26, return_N=True)[1]
        for c in sorted(dataset.identifiers)
    ]
    assert report["labels"]["1"]["lesions"] == sum(counts) and report["labels"]["1"]["cases"] == len(counts)
    tau = report["size_penalty_auto"]
    assert tau["patches"] == 12 and tau["tau"] > 0 and tau["fold"] == 0
    assert f"tau = {format_number(tau['tau'], 1, whole=True)} voxels" in text
