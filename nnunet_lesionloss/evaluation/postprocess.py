"""Post-processing from the papers, as commands.

- ``remove-small``: drop connected components below N voxels per label (Joshi 2026 §4.5: 5 voxels, 18-connectivity);
- ``choose-threshold``: pick the foreground probability threshold in {0.3, ..., 0.7} that maximises the
  aggregate Dice (2·Σ|P∩G| / Σ(|P|+|G|) over all validation cases) from nnU-Net's ``--save_probabilities``
  ``.npz`` files (Joshi 2026 §4.5);
- ``apply-threshold``: binarise probabilities with a chosen threshold (and the same small-component removal);
- ``merge-by-volume``: lesions smaller than V from model A, the others from model B (Rachmadi et al. 2024
  §4.2, V = 0.05 mL).

The commands that write images check the output folder (and that no output exists, without
``--overwrite``) before the first case, write each image atomically with the input's label dtype (a
label of 70000 stays 70000), and go on past a case that fails, listing it and exiting with status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.components import ANY_CONNECTIVITY, label_components
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML, remove_small_components
from nnunet_lesionloss.evaluation.probabilities import (
    foreground_probability,
    list_probability_files,
    load_probabilities,
)

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


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


def remove_small_labels(labels: np.ndarray, min_voxels: int, connectivity: int) -> np.ndarray:
    """Per foreground label, remove components with fewer than ``min_voxels`` voxels."""
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
    connectivity: int = 26,
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


def choose_threshold(
    prob_dir: Path,
    gt_dir: Path,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    channel: int | None = None,
    label: int | None = None,
    min_voxels: int = 0,
    connectivity: int = 18,
    file_ending: str = ".nii.gz",
) -> dict:
    """Aggregate Dice of each threshold over all cases that have both probabilities and a reference."""
    probabilities = list_probability_files(prob_dir)
    references = io.list_images(gt_dir, file_ending)
    cases = sorted(set(probabilities) & set(references))
    if not cases:
        raise FileNotFoundError(f"no case has both probabilities in {prob_dir} and a reference in {gt_dir}")
    intersections = np.zeros(len(thresholds))
    totals = np.zeros(len(thresholds))
    for case in cases:
        reference = io.as_integer_labels(io.read_label_image(references[case]))
        truth = reference > 0 if label is None else reference == label
        foreground = foreground_probability(load_probabilities(probabilities[case]), channel)
        if foreground.shape != truth.shape:
            raise CaseError(f"{case}: probabilities {foreground.shape} vs reference {truth.shape}")
        for k, threshold in enumerate(thresholds):
            predicted = foreground >= threshold
            if min_voxels > 1:
                predicted = remove_small_components(
                    predicted, connectivity, (1.0,) * predicted.ndim, min_voxels=min_voxels
                )
            intersections[k] += np.count_nonzero(predicted & truth)
            totals[k] += np.count_nonzero(predicted) + np.count_nonzero(truth)
    dice = [None if t == 0 else float(2 * i / t) for i, t in zip(intersections, totals)]
    defined = [(d, t) for d, t in zip(dice, thresholds) if d is not None]
    best = max(defined, key=lambda x: x[0])[1] if defined else 0.5
    return {
        "best_threshold": best,
        "thresholds": list(thresholds),
        "aggregate_dice": dice,
        "n_cases": len(cases),
        "cases": cases,
        "min_voxels": min_voxels,
        "connectivity": connectivity,
    }


def apply_threshold(
    prob_dir: Path,
    output_dir: Path,
    threshold: float,
    template_dir: Path | None = None,
    channel: int | None = None,
    min_voxels: int = 0,
    connectivity: int = 18,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> tuple[list[Path], int]:
    """Binary masks (0/1) from probabilities; geometry copied from the segmentation nnU-Net wrote beside them.

    Returns (files written, cases that failed; each failure is reported on stderr)."""
    template_dir = Path(template_dir or prob_dir)
    files = list_probability_files(prob_dir)
    outputs = {case: Path(output_dir) / f"{case}{file_ending}" for case in files}
    io.prepare_output_dir(output_dir, [p.name for p in outputs.values()], overwrite)
    written = []

    def job(case: str, path: Path):
        def run():
            template = template_dir / f"{case}{file_ending}"
            if not template.is_file():
                raise CaseError(f"no image to copy the geometry from: {template}")
            mask = foreground_probability(load_probabilities(path), channel) >= threshold
            if min_voxels > 1:
                mask = remove_small_components(mask, connectivity, (1.0,) * mask.ndim, min_voxels=min_voxels)
            _write_like(mask.astype(np.uint8), template, outputs[case], np.uint8)
            written.append(outputs[case])

        return run

    _, failed = run_cases((case, job(case, path)) for case, path in files.items())
    return written, failed


# --------------------------------------------------------------------------- commands
def _cmd_remove_small(args) -> int:
    images = io.list_images(args.input, args.file_ending)
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


def _cmd_choose_threshold(args) -> int:
    if args.output:  # before the work: the output must be writable
        io.prepare_output_dir(Path(args.output).parent, [Path(args.output).name], args.overwrite)
    result = choose_threshold(
        Path(args.probabilities),
        Path(args.gt),
        tuple(args.thresholds),
        args.channel,
        args.label,
        args.min_voxels,
        args.connectivity,
        args.file_ending,
    )
    if args.output:
        io.write_json(args.output, result, overwrite=args.overwrite)
    for t, d in zip(result["thresholds"], result["aggregate_dice"]):
        print(f"threshold {t:g}: aggregate Dice {'–' if d is None else f'{d:.4f}'}")
    print(f"best threshold: {result['best_threshold']:g} ({result['n_cases']} cases)")
    return 0


def _cmd_apply_threshold(args) -> int:
    threshold = args.threshold
    if threshold is None:
        if not args.threshold_json:
            raise ValueError("give --threshold or --threshold-json (the output of choose-threshold)")
        with open(args.threshold_json) as handle:
            threshold = float(json.load(handle)["best_threshold"])
    written, failed = apply_threshold(
        Path(args.probabilities),
        Path(args.output),
        threshold,
        args.template_dir,
        args.channel,
        args.min_voxels,
        args.connectivity,
        args.file_ending,
        args.overwrite,
    )
    print(f"threshold {threshold:g}: {len(written)} cases -> {args.output}")
    return failed


def _cmd_merge_by_volume(args) -> int:
    small_images = io.list_images(args.small_model, args.file_ending)
    large_images = io.list_images(args.large_model, args.file_ending)
    cases = sorted(set(small_images) | set(large_images))
    if not cases:
        raise FileNotFoundError(f"no images in {args.small_model} or {args.large_model}")
    output = Path(args.output)
    names = {case: (small_images.get(case) or large_images[case]).name for case in cases}
    io.prepare_output_dir(output, names.values(), args.overwrite)

    def job(case: str):
        def run():
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
    p = subparsers.add_parser("remove-small", help="remove connected components below N voxels (Joshi 2026)")
    p.add_argument("input", help="folder of label images")
    p.add_argument("output", help="output folder")
    p.add_argument("--min-voxels", type=int, default=5, help="default 5 (Joshi 2026 §4.5)")
    p.add_argument(
        "--connectivity", type=int, choices=ANY_CONNECTIVITY, default=18, help="default 18 (Joshi 2026 §4.5)"
    )
    p.add_argument("--file-ending", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=runner, postprocess=_cmd_remove_small)

    p = subparsers.add_parser(
        "choose-threshold", help="pick the probability threshold by aggregate validation Dice (Joshi 2026)"
    )
    p.add_argument("--probabilities", required=True, help="folder of nnU-Net .npz probabilities (--save_probabilities)")
    p.add_argument("--gt", required=True, help="reference folder")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    p.add_argument(
        "--channel",
        type=int,
        help="probability channel (default: 1 - channel 0, the softmax background; "
        "give the channel for region-based (sigmoid) models)",
    )
    p.add_argument("--label", type=int, help="reference label (default: any foreground)")
    p.add_argument("--min-voxels", type=int, default=0, help="also remove components below N voxels (Joshi 2026: 5)")
    p.add_argument("--connectivity", type=int, choices=ANY_CONNECTIVITY, default=18)
    p.add_argument("--file-ending", default=".nii.gz")
    p.add_argument("-o", "--output", help="write the result as JSON")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=runner, postprocess=_cmd_choose_threshold)

    p = subparsers.add_parser("apply-threshold", help="binarise nnU-Net probabilities with a threshold")
    p.add_argument("--probabilities", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threshold", type=float)
    p.add_argument("--threshold-json", help="output of choose-threshold")
    p.add_argument("--template-dir", help="folder with images of the same geometry (default: the probability folder)")
    p.add_argument("--channel", type=int, help="as for choose-threshold")
    p.add_argument("--min-voxels", type=int, default=0)
    p.add_argument("--connectivity", type=int, choices=ANY_CONNECTIVITY, default=18)
    p.add_argument("--file-ending", default=".nii.gz")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=runner, postprocess=_cmd_apply_threshold)

    p = subparsers.add_parser(
        "merge-by-volume", help="small lesions from model A, large ones from model B (Rachmadi et al. 2024)"
    )
    p.add_argument("--small-model", required=True, help="predictions whose lesions below the volume are kept")
    p.add_argument("--large-model", required=True, help="predictions whose lesions at or above the volume are kept")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--volume-ml", type=float, default=0.05, help="default 0.05 mL (Rachmadi et al. 2024 §4.2)")
    p.add_argument("--connectivity", type=int, choices=ANY_CONNECTIVITY, default=26)
    p.add_argument("--file-ending", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=runner, postprocess=_cmd_merge_by_volume)
