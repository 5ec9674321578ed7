"""Helpers for the evaluation tests (imported by tests/test_evaluation*.py; the lead owns conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, array: np.ndarray, spacing_xyz=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> Path:
    """Write a label array (z, y, x) with SimpleITK; spacing in SimpleITK's (x, y, z) order."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def cube(shape, corner, size, value=1, dtype=np.uint8) -> np.ndarray:
    array = np.zeros(shape, dtype=dtype)
    array[tuple(slice(c, c + s) for c, s in zip(corner, size))] = value
    return array


def load_strict_json(path: Path):
    """json.load that fails on NaN / Infinity, which the outputs must never contain."""

    def reject(constant):
        raise AssertionError(f"{path} contains {constant}")

    with open(path) as handle:
        return json.load(handle, parse_constant=reject)


def close(a, b, tol=1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
