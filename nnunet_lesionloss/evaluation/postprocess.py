"""Post-processing from the papers, as commands.

- ``remove-small``: drop connected components below N voxels per label (Joshi 2026 §4.5: 5 voxels, 18-connectivity);
- ``choose-threshold`` / ``apply-threshold`` (module ``operating_point``): the probability threshold and
  minimum component size chosen on validation probabilities (Joshi 2026 §4.5: aggregate Dice; or lesion
  criteria, with a nested cross-validation estimate), and applied to ``nnUNetv2_predict`` outputs; the
  probability of each label or region is taken from nnU-Net's ``.npz`` as dataset.json lays it out
  (:func:`nnunet_lesionloss.evaluation.probabilities.probability_targets`);
- ``merge-by-volume``: lesions smaller than V from model A, the others from model B (Rachmadi et al. 2024
  §4.2, V = 0.05 mL).

The commands that write images check the output folder (and that no output exists, without
``--overwrite``) before the first case, write each image atomically with the input's label dtype (a
label of 70000 stays 70000), and go on past a case that fails, listing it and exiting with status 1.
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


def _write_like(array: np.ndarray, template_path: str | Path, output_path: Path, dtype: np.dtype) -> None:
    """Write ``array`` as ``dtype`` with the geometry of the image at ``template_path``, atomically."""
    import SimpleITK as sitk

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


#: remove-small's default: Joshi 2026 §4.5 removes components at 18-connectivity (3D); in a 2D image the
#: 18-neighbourhood restricted to the plane is the full 8-neighbourhood
REMOVAL_CONNECTIVITY = {3: 18, 2: "full"}


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


# --------------------------------------------------------------------------- commands
def _cmd_remove_small(args) -> int:
    if args.sweep:
        from nnunet_lesionloss.evaluation.min_size_sweep import run_sweep_command

        return run_sweep_command(args)
    listing = io.list_images(args.input, args.file_ending)
    # file by file: two files of one case (c1.nii.gz and c1.mha) are two inputs with two outputs, named by file
    images = dict(sorted({**listing, **{p.name: p for ps in listing.ambiguous.values() for p in ps}}.items()))
    if not images:
        raise FileNotFoundError(f"no images in {args.input}")
    output = Path(args.output)
    io.prepare_output_dir(output, [path.name for path in images.values()], args.overwrite)

    def job(path: Path):
        def run():
            image = io.read_label_image(path)
            cleaned = remove_small_labels(io.as_integer_labels(image), args.min_voxels, args.connectivity)
            _write_like(cleaned, path, output / path.name, image.array.dtype)

        return run

    done, failed = run_cases((case, job(path)) for case, path in images.items())
    print(f"{done} of {len(images)} cases -> {args.output}" + (f" ({failed} failed, listed above)" if failed else ""))
    return failed


def _cmd_merge_by_volume(args) -> int:
    small_images = io.list_images(args.small_model, args.file_ending)
    large_images = io.list_images(args.large_model, args.file_ending)
    ambiguous = {**large_images.ambiguous, **small_images.ambiguous}  # case -> its files in one folder
    cases = sorted(set(small_images) | set(large_images) | set(ambiguous))
    if not cases:
        raise FileNotFoundError(f"no images in {args.small_model} or {args.large_model}")
    output = Path(args.output)
    names = {case: (small_images.get(case) or large_images.get(case) or ambiguous[case][0]).name for case in cases}
    io.prepare_output_dir(output, names.values(), args.overwrite)

    def job(case: str):
        def run():
            if case in ambiguous:
                raise CaseError(io.ambiguity_reason(case, ambiguous[case], "image"))
            if case not in small_images or case not in large_images:
                folder = args.large_model if case in small_images else args.small_model
                raise CaseError(f"no image of this case in {folder}")
            a, b = io.read_label_image(small_images[case]), io.read_label_image(large_images[case])
            io.check_same_geometry(a, b)
            merged = merge_by_volume(
                io.as_integer_labels(a),
                io.as_integer_labels(b),
                float(np.prod(a.spacing)),
                args.volume_ml,
                args.connectivity,
            )
            dtype = np.result_type(a.array.dtype, b.array.dtype)
            _write_like(merged, small_images[case], output / names[case], dtype)

        return run

    done, failed = run_cases((case, job(case)) for case in cases)
    print(f"{done} of {len(cases)} cases -> {args.output}" + (f" ({failed} failed, listed above)" if failed else ""))
    return failed


def register(subparsers, runner) -> None:
    """Add the post-processing commands; ``runner(args)`` calls ``args.postprocess`` and reports errors."""
    from nnunet_lesionloss.evaluation.cli import _connectivity, _positive_float, _positive_int

    p = subparsers.add_parser(
        "remove-small",
        help="remove connected components below N voxels (Joshi 2026); --sweep: what each minimum size costs",
    )
    p.add_argument("input", help="folder of label images")
    p.add_argument("output", help="output folder (with --sweep: of the table and figure)")
    p.add_argument(
        "--min-voxels",
        type=_positive_int,
        default=5,
        help="remove components of fewer voxels (default 5, Joshi 2026 §4.5)",
    )
    p.add_argument(
        "--connectivity",
        type=_connectivity,
        metavar="{full,face,6,18,26,4,8}",
        help="default 18 in 3D (Joshi 2026 §4.5), its restriction to the plane (8) in 2D",
    )
    p.add_argument("--file-ending", default=None)
    p.add_argument("--overwrite", action="store_true")
    from nnunet_lesionloss.evaluation.min_size_sweep import add_sweep_arguments

    add_sweep_arguments(p)
    p.set_defaults(func=runner, postprocess=_cmd_remove_small)

    p = subparsers.add_parser(
        "merge-by-volume", help="small lesions from model A, large ones from model B (Rachmadi et al. 2024)"
    )
    p.add_argument("--small-model", required=True, help="predictions whose lesions below the volume are kept")
    p.add_argument("--large-model", required=True, help="predictions whose lesions at or above the volume are kept")
    p.add_argument("-o", "--output", required=True)
    p.add_argument(
        "--volume-ml", type=_positive_float, default=0.05, help="default 0.05 mL (Rachmadi et al. 2024 §4.2)"
    )
    p.add_argument(
        "--connectivity",
        type=_connectivity,
        default="full",
        metavar="{full,face,6,18,26,4,8}",
        help="lesion connectivity (default full: 26 in 3D, 8 in 2D)",
    )
    p.add_argument("--file-ending", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=runner, postprocess=_cmd_merge_by_volume)
