"""One real ISLES 2022 case (Hernandez Petzsche et al. 2022): known lesion counts, and a dataset made of its
copies. The case may not be redistributed: ``pytest --data=DIR`` with DIR/isles22_case0009/ (dwi, adc, mask);
without it these tests are skipped."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_lesionloss.cli import main
from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.training.transforms import ComponentMapsTransform


def _mask(case) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(case / "mask.nii.gz"))) > 0


def test_isles_lesion_counts_at_both_connectivities(isles22_case):
    mask = _mask(isles22_case)
    assert label_components(mask, 26).max() == 18  # the case's lesions: 18 at 26-connectivity, 21 at 6
    assert label_components(mask, 6).max() == 21
    ids = label_components(mask, 26)
    assert (np.bincount(ids.ravel())[1:] == 2).any(), "the case has lesions of 2 voxels"


def test_transform_on_the_real_mask_in_the_loader_layout(isles22_case):
    seg = torch.from_numpy(_mask(isles22_case).astype(np.int16))[None]
    out = ComponentMapsTransform(label_groups=[(1,)], connectivity=6, with_cells=True)(segmentation=seg)["segmentation"]
    assert int(out[1].max()) == 21
    assert int(out[2].min()) >= 1 and set(torch.unique(out[2]).tolist()) == set(range(1, 22))


def test_synth_from_isles_writes_mirrored_copies(tmp_path, isles22_case):
    arguments = ["synth", "--raw", str(tmp_path), "--dataset-id", "902", "--cases", "3"]
    assert main([*arguments, "--from-isles", str(isles22_case)]) == 0
    folder = tmp_path / "Dataset902_ISLES22Copies"
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "DWI", "1": "ADC"} and dataset["numTraining"] == 3
    original = sitk.ReadImage(str(isles22_case / "mask.nii.gz"))
    for copy in range(3):
        label = sitk.ReadImage(str(folder / "labelsTr" / f"case_{copy:03d}.nii.gz"))
        assert label.GetSize() == original.GetSize() and np.allclose(label.GetSpacing(), original.GetSpacing())
        assert label_components(sitk.GetArrayFromImage(label) > 0, 26).max() == 18
        assert (folder / "imagesTr" / f"case_{copy:03d}_0001.nii.gz").is_file()
    flipped = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case_001.nii.gz")))
    # copy 1: mirrored along the first array axis
    assert np.array_equal(flipped, _mask(isles22_case)[::-1].astype(np.uint8))
