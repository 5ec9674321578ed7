"""Reading label images (SimpleITK), pairing prediction and reference files, writing JSON safely.

Arrays are returned in SimpleITK's (z, y, x) order together with the spacing *in the same order*
(``GetSpacing()[::-1]``): panoptica 2.1.7 pairs a SimpleITK array with ``GetSpacing()`` (x, y, z),
which puts distances on the wrong axes, so we never hand it SimpleITK images.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the file endings nnU-Net's SimpleITK / NIfTI readers accept, longest first
SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gipl", ".tif", ".tiff", ".png", ".bmp")


class CaseError(Exception):
    """A problem with one case (missing file, mismatch, bad labels); the other cases go on."""


@dataclass
class LabelImage:
    array: np.ndarray
    spacing: tuple[float, ...]  # array-axis order, mm
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    path: str


def read_label_image(path: str | os.PathLike) -> LabelImage:
    """Read a label image; raises CaseError naming the path when it cannot be read."""
    import SimpleITK as sitk

    path = str(path)
    if not os.path.isfile(path):
        raise CaseError(f"file not found: {path}")
    try:
        image = sitk.ReadImage(path)
    except Exception as error:  # SimpleITK raises RuntimeError with a long message
        raise CaseError(
            f"cannot read {path}: {str(error).strip().splitlines()[-1] if str(error).strip() else error}"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a label map has one")
    array = sitk.GetArrayFromImage(image)
    return LabelImage(
        array=array,
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
        origin=tuple(image.GetOrigin()),
        direction=tuple(image.GetDirection()),
        path=path,
    )


def as_integer_labels(image: LabelImage) -> np.ndarray:
    """The label array as integers; raises CaseError for non-integer values (e.g. probabilities)."""
    array = image.array
    if np.issubdtype(array.dtype, np.integer):
        return array  # keep the stored width: a 512x512x176 int64 copy alone costs 370 MB
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise CaseError(f"{image.path} contains non-integer values; expected a label map")
    return array.astype(np.int32)


def check_same_geometry(reference: LabelImage, prediction: LabelImage, tolerance: float = 1e-3) -> None:
    """Raise CaseError when shape, spacing, origin or orientation differ."""
    if reference.array.shape != prediction.array.shape:
        raise CaseError(
            f"shape mismatch: reference {reference.array.shape} vs prediction {prediction.array.shape} "
            f"({prediction.path})"
        )
    if not np.allclose(reference.spacing, prediction.spacing, rtol=tolerance, atol=tolerance):
        raise CaseError(
            f"spacing mismatch: reference {reference.spacing} vs prediction {prediction.spacing} ({prediction.path})"
        )
    if not np.allclose(reference.direction, prediction.direction, atol=tolerance):
        raise CaseError(
            f"orientation mismatch: reference direction {reference.direction} vs prediction "
            f"{prediction.direction} ({prediction.path})"
        )
    if not np.allclose(reference.origin, prediction.origin, atol=max(tolerance, 1e-2 * min(reference.spacing))):
        raise CaseError(
            f"origin mismatch: reference {reference.origin} vs prediction {prediction.origin} ({prediction.path})"
        )


def strip_ending(name: str, endings: Iterable[str] = SUPPORTED_ENDINGS) -> str | None:
    for ending in endings:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return None


def list_images(folder: str | os.PathLike, file_ending: str | None = None) -> dict[str, Path]:
    """Case identifier -> path of every label image in ``folder`` (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    endings = (file_ending,) if file_ending else SUPPORTED_ENDINGS
    cases = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            case = strip_ending(path.name, endings)
            if case is not None:
                cases[case] = path
    return cases


BRATS_CASE_NUMBER = re.compile(r"(\d{5})[-_](\d{3})")


def pair_cases(
    reference: dict[str, Path], prediction: dict[str, Path], pairing: str = "name"
) -> list[tuple[str, Path, Path | None]]:
    """(case, reference path, prediction path or None) for every reference case.

    ``name``: identical case identifiers (nnU-Net). ``brats``: the NNNNN-NNN number in the names
    (BraTS predictions are named differently from the references).
    """
    if pairing == "name":
        return [(case, path, prediction.get(case)) for case, path in reference.items()]
    if pairing != "brats":
        raise ValueError(f"unknown pairing {pairing!r}")

    def key(name: str) -> str | None:
        match = BRATS_CASE_NUMBER.search(name)
        return f"{match.group(1)}-{match.group(2)}" if match else None

    by_number: dict[str, Path] = {}
    for name, path in prediction.items():
        number = key(name)
        if number is not None:
            by_number[number] = path
    return [(case, path, by_number.get(key(case) or "")) for case, path in reference.items()]


def read_dataset_json(path: str | os.PathLike) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset.json not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def labels_from_dataset_json(dataset: dict) -> dict[str, tuple[int, ...]]:
    """Evaluated label or region name -> label values, from nnU-Net's ``labels`` (regions: lists)."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ValueError("dataset.json has no 'labels' dictionary")
    result = {}
    for name, value in labels.items():
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if values == (0,) or name == "background":
            continue
        if name == "ignore":
            continue
        result[name] = values
    return result


def label_key(values: tuple[int, ...]) -> str:
    """nnU-Net's summary key: '1' for a label, '(1, 2)' for a region."""
    return str(values[0]) if len(values) == 1 else str(tuple(values))


def json_ready(value):
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data, overwrite: bool) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(json_ready(data), handle, indent=2, allow_nan=False)


def check_writable(path: str | os.PathLike, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
