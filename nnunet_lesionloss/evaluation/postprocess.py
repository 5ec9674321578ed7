"""Post-processing of label maps from the papers: the arrays, and the folders of the commands that write them.

- ``remove-small``: drop connected components below N voxels per label (Joshi 2026 §4.5: 5 voxels,
  18-connectivity): :func:`remove_small_labels` on an array, :func:`remove_small_folder` on a folder;
- ``merge-by-volume``: lesions smaller than V from model A, the others from model B (Rachmadi et al. 2024
  §4.2, V = 0.05 mL): :func:`merge_by_volume`, :func:`merge_by_volume_folders`.

:func:`write_labels_like` is the one writer of a label image with a template's geometry (``apply-threshold``
writes with it too, :mod:`nnunet_lesionloss.evaluation.operating_point`), and :func:`run_cases` the loop of
the commands that write images case by case. Those commands check the output folder (and that no output
exists, without ``--overwrite``) before the first case, write each image atomically with the input's label
dtype (a label of 70000 stays 70000), and go on past a case that fails, listing it and exiting with status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML, remove_small_components

__all__ = [
    "DEFAULT_MIN_VOXELS",
    "REMOVAL_CONNECTIVITY",
    "merge_by_volume",
    "merge_by_volume_folders",
    "remove_small_folder",
    "remove_small_labels",
    "run_cases",
    "write_labels_like",
]


#: remove-small's default: Joshi 2026 §4.5 removes components at 18-connectivity (3D); in a 2D image the
#: 18-neighbourhood restricted to the plane is the full 8-neighbourhood
REMOVAL_CONNECTIVITY = {3: 18, 2: "full"}
#: remove-small's default minimum size: Joshi 2026 §4.5 removes components below 5 voxels
DEFAULT_MIN_VOXELS = 5


def remove_small_labels(labels: np.ndarray, min_voxels: int, connectivity: int | str | None = None) -> np.ndarray:
    """Per foreground label, remove components with fewer than ``min_voxels`` voxels (connectivity None:
    :data:`REMOVAL_CONNECTIVITY` of the image's dimension)."""
    if connectivity is None:
        connectivity = REMOVAL_CONNECTIVITY.get(labels.ndim, "full")
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        kept = remove_small_components(mask, connectivity, (1.0,) * labels.ndim, min_voxels=min_voxels)
        out[mask & ~kept] = 0
    return out


def merge_by_volume(
    small_model: np.ndarray,
    large_model: np.ndarray,
    voxel_volume_mm3: float,
    volume_ml: float = 0.05,
    connectivity: int | str = "full",
) -> np.ndarray:
    """Lesions (components of the foreground) of ``small_model`` below ``volume_ml``, the rest from ``large_model``.

    Rachmadi et al. 2024 §4.2: model A keeps instances smaller than 0.05 mL, model B keeps instances of 0.05 mL or more;
    the two refined results are combined (where both mark a voxel, model B's label wins).
    """
    if small_model.shape != large_model.shape:
        raise CaseError(f"shape mismatch between the two models: {small_model.shape} vs {large_model.shape}")
    limit_voxels = volume_ml * MM3_PER_ML / voxel_volume_mm3

    def keep(labels: np.ndarray, small: bool) -> np.ndarray:
        components, count = label_components(labels > 0, connectivity, return_count=True)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        selected = sizes < limit_voxels if small else sizes >= limit_voxels
        selected[0] = False
        return np.where(selected[components], labels, 0)

    # the wider of the two label types: a label of one model must survive in the other's array
    merged = keep(small_model, small=True).astype(np.result_type(small_model.dtype, large_model.dtype))
    from_large = keep(large_model, small=False)
    merged[from_large > 0] = from_large[from_large > 0]
    return merged


# --------------------------------------------------------------------------- writing: images and folders
def write_labels_like(array: np.ndarray, template_path: str | Path, output_path: Path, dtype: np.dtype) -> None:
    """Write ``array`` as ``dtype`` with the geometry of the image at ``template_path``, atomically."""
    import SimpleITK as sitk  # lazy, as in io: a heavy import the array functions above do not need

    dtype = np.dtype(np.uint8 if np.dtype(dtype) == bool else dtype)
    converted = array.astype(dtype)
    if not np.array_equal(converted, array):
        raise CaseError(f"labels of {output_path.name} do not fit the input's type {dtype}")
    template = sitk.ReadImage(str(template_path))
    image = sitk.GetImageFromArray(converted)
    image.CopyInformation(template)
    io.atomic_write(output_path, lambda temporary: sitk.WriteImage(image, str(temporary), True))


def run_cases(items: Iterable[tuple[str, Callable[[], None]]]) -> tuple[int, int]:
    """Run every (case, job); a failing case is reported on stderr and the others go on.
    Returns (cases done, cases failed)."""
    done = failed = 0
    for case, job in items:
        try:
            job()
            done += 1
        except (CaseError, OSError, ValueError, RuntimeError) as error:
            failed += 1
            print(f"  {case}: {error}", file=sys.stderr)
    return done, failed


def remove_small_folder(
    input_dir,
    output_dir,
    min_voxels: int,
    connectivity: int | str | None = None,
    file_ending: str | None = None,
    overwrite: bool = False,
) -> tuple[int, int, int]:
    """``remove-small``: every image of ``input_dir`` without its components below ``min_voxels`` voxels, per
    label, written to ``output_dir`` with the same name, dtype and geometry. Returns (done, failed, images)."""
    io.check_output_apart(output_dir, {"INPUT": input_dir})
    listing = io.list_images(input_dir, file_ending)
    # file by file: two files of one case (c1.nii.gz and c1.mha) are two inputs with two outputs, named by file
    images = dict(sorted({**listing, **{p.name: p for ps in listing.ambiguous.values() for p in ps}}.items()))
    if not images:
        raise FileNotFoundError(f"no images in {input_dir}")
    output = Path(output_dir)
    io.prepare_output_dir(output, [path.name for path in images.values()], overwrite)

    def job(path: Path):
        def run():
            image = io.read_label_image(path)
            cleaned = remove_small_labels(io.as_integer_labels(image), min_voxels, connectivity)
            write_labels_like(cleaned, path, output / path.name, image.array.dtype)

        return run

    done, failed = run_cases((case, job(path)) for case, path in images.items())
    return done, failed, len(images)


def merge_by_volume_folders(
    small_model,
    large_model,
    output_dir,
    volume_ml: float = 0.05,
    connectivity: int | str = "full",
    file_ending: str | None = None,
    overwrite: bool = False,
) -> tuple[int, int, int]:
    """``merge-by-volume``: per case, the lesions below ``volume_ml`` from ``small_model``'s image and the others
    from ``large_model``'s (:func:`merge_by_volume`), written to ``output_dir``. Returns (done, failed, cases)."""
    io.check_output_apart(output_dir, {"--small-model": small_model, "--large-model": large_model})
    small_images = io.list_images(small_model, file_ending)
    large_images = io.list_images(large_model, file_ending)
    ambiguous = {**large_images.ambiguous, **small_images.ambiguous}  # case -> its files in one folder
    cases = sorted(set(small_images) | set(large_images) | set(ambiguous))
    if not cases:
        raise FileNotFoundError(f"no images in {small_model} or {large_model}")
    output = Path(output_dir)
    names = {case: (small_images.get(case) or large_images.get(case) or ambiguous[case][0]).name for case in cases}
    io.prepare_output_dir(output, names.values(), overwrite)

    def job(case: str):
        def run():
            if case in ambiguous:
                raise CaseError(io.ambiguity_reason(case, ambiguous[case], "image"))
            if case not in small_images or case not in large_images:
                folder = large_model if case in small_images else small_model
                raise CaseError(f"no image of this case in {folder}")
            a, b = io.read_label_image(small_images[case]), io.read_label_image(large_images[case])
            io.check_same_geometry(a, b)
            merged = merge_by_volume(
                io.as_integer_labels(a),
                io.as_integer_labels(b),
                float(np.prod(a.spacing)),
                volume_ml,
                connectivity,
            )
            dtype = np.result_type(a.array.dtype, b.array.dtype)
            write_labels_like(merged, small_images[case], output / names[case], dtype)

        return run

    done, failed = run_cases((case, job(case)) for case in cases)
    return done, failed, len(cases)
