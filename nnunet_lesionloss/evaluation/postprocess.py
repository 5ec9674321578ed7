"""Post-processing from the papers, as commands.

- ``remove-small``: drop connected components below N voxels per label (Joshi 2026 §4.5: 5 voxels, 18-connectivity);
- ``choose-threshold`` / ``apply-threshold`` (module ``operating_point``): the probability threshold and
  minimum component size chosen on validation probabilities (Joshi 2026 §4.5: aggregate Dice; or lesion
  criteria, with a nested cross-validation estimate), and applied to ``nnUNetv2_predict`` outputs; the
  probability of each label or region is taken from nnU-Net's ``.npz`` as dataset.json lays it out
  (:func:`probability_targets`);
- ``merge-by-volume``: lesions smaller than V from model A, the others from model B (Rachmadi et al. 2024
  §4.2, V = 0.05 mL).

The commands that write images check the output folder (and that no output exists, without
``--overwrite``) before the first case, write each image atomically with the input's label dtype (a
label of 70000 stays 70000), and go on past a case that fails, listing it and exiting with status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProbabilityTarget:
    """One foreground whose probability is thresholded: a label (softmax) or a region (sigmoid), or, for a
    softmax, any foreground label (1 - background).

    nnU-Net's channels (``LabelManager``): a label-based model writes the softmax over all labels of
    dataset.json, in increasing label order (channel k = the k-th smallest label, 0 = background); a
    region-based model (a label of dataset.json that lists several values) writes one sigmoid per
    foreground region, in the order of dataset.json, and segments by writing ``regions_class_order[i]``
    where channel i exceeds 0.5, region after region.
    """

    key: str  # the evaluation's summary key ("1", "(1, 2)"), or "foreground" for any foreground label
    name: str
    channel: int | None  # None: 1 - channel 0 (softmax background)
    kind: str  # "softmax", "sigmoid", or "unknown" (a --channel without dataset.json)
    reference_values: tuple[int, ...] | None  # reference labels of this foreground; None: every label > 0
    output_label: int | None  # label written where it is predicted; None: the most probable foreground label
    channel_labels: tuple[int, ...] | None = None  # softmax: the label of each channel (when known)
    n_channels: int | None = None  # channels the model writes (None: no dataset.json to tell)

    def describe(self) -> str:
        if self.channel is None:
            return "softmax: 1 - channel 0 (background), any foreground label"
        what = {"softmax": "label", "sigmoid": "region"}.get(self.kind, "reference")
        return f"{self.kind} channel {self.channel} ({what} {self.name})"


def _parse_label(text: str | int) -> int | tuple[int, ...] | str:
    """An --label value: an integer label, a region given by its labels ('1,2' or '(1, 2)'), or a name."""
    text = str(text).strip()
    try:
        return int(text)
    except ValueError:
        pass
    inner = text.strip("()[] ")
    parts = [part.strip() for part in inner.split(",") if part.strip()]
    if len(parts) > 1 and all(part.lstrip("-").isdigit() for part in parts):
        return tuple(sorted(int(part) for part in parts))
    return text


def probability_targets(
    dataset: dict | None, label: str | int | None = None, channel: int | None = None
) -> list[ProbabilityTarget]:
    """What ``choose-threshold`` / ``apply-threshold`` threshold, from dataset.json (nnU-Net's channel layout,
    see :class:`ProbabilityTarget`), ``--label`` and ``--channel``; a call that does not say which channel is
    meant is refused (ValueError) with the choices.

    - labels (softmax): any foreground (1 - background) by default, or the channel of ``label``;
    - regions (sigmoid): every region, each its own channel, by default, or the region ``label`` names;
    - no dataset.json: the softmax is assumed (checked when read: the channels must sum to 1), channel k =
      label k (nnU-Net requires consecutive labels), unless ``channel`` says otherwise.
    """
    wanted = None if label is None else _parse_label(label)
    if channel is not None and channel < 0:
        raise ValueError(f"--channel must be >= 0, got {channel}")
    if dataset is None:
        if isinstance(wanted, (str, tuple)):
            raise ValueError(
                f"--label {label}: without a dataset.json only integer labels can be named (pass --dataset-json)"
            )
        if wanted == 0:
            raise ValueError("--label 0 is the background")
        if channel is not None:
            values = None if wanted is None else (wanted,)
            key = io.label_key(values) if values else "foreground"
            return [ProbabilityTarget(key, key, channel, "unknown", values, wanted or 1)]
        if wanted is None:
            return [ProbabilityTarget("foreground", "foreground", None, "softmax", None, None)]
        return [ProbabilityTarget(str(wanted), str(wanted), wanted, "softmax", (wanted,), wanted)]

    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ValueError("dataset.json has no 'labels' dictionary")
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    if not has_regions:
        return [_softmax_target(labels, wanted, channel, label)]
    return _region_targets(labels, dataset.get("regions_class_order"), wanted, channel, label)


def _softmax_target(labels: dict, wanted, channel: int | None, label_text) -> ProbabilityTarget:
    values = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        value = value[0] if isinstance(value, (list, tuple)) else value
        values[int(value)] = name
    channel_labels = tuple(sorted(values))
    n_channels = len(channel_labels)
    described = ", ".join(f"{values[v]} {v}" for v in channel_labels)
    if channel is not None:
        if channel >= n_channels:
            raise ValueError(
                f"--channel {channel}: dataset.json's labels give {n_channels} softmax channels ({described})"
            )
        if channel_labels[channel] == 0:
            raise ValueError(
                "--channel 0 is the softmax background; give a label's channel, or neither (1 - background)"
            )
    if wanted is None and channel is None:
        return ProbabilityTarget("foreground", "foreground", None, "softmax", None, None, channel_labels, n_channels)
    if wanted is not None:
        matches = [v for v, name in values.items() if wanted in (v, name)]
        if not matches or matches == [0]:
            raise ValueError(
                f"--label {label_text}: dataset.json has no such foreground label (its labels: {described})"
            )
        value = matches[0]
        if channel is not None and channel_labels[channel] != value:
            raise ValueError(
                f"--label {label_text} is softmax channel {channel_labels.index(value)}, not --channel {channel}"
            )
    else:
        value = channel_labels[channel]
    return ProbabilityTarget(
        io.label_key((value,)),
        values[value],
        channel_labels.index(value),
        "softmax",
        (value,),
        value,
        channel_labels,
        n_channels,
    )


def _region_targets(labels: dict, class_order, wanted, channel: int | None, label_text) -> list[ProbabilityTarget]:
    regions = []  # nnU-Net's LabelManager order: dataset.json order, background and ignore left out
    for name, value in labels.items():
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if name == "ignore" or set(values) == {0}:
            continue
        regions.append((name, values))
    if class_order is not None and len(class_order) != len(regions):
        raise ValueError(
            f"dataset.json's regions_class_order has {len(class_order)} entries for {len(regions)} regions"
        )
    targets = [
        ProbabilityTarget(
            io.label_key(values),
            name,
            index,
            "sigmoid",
            values,
            None if class_order is None else int(class_order[index]),
            None,
            len(regions),
        )
        for index, (name, values) in enumerate(regions)
    ]
    described = "; ".join(f"channel {t.channel}: {t.name} = labels {list(t.reference_values)}" for t in targets)
    if channel is not None and channel >= len(targets):
        raise ValueError(f"--channel {channel}: dataset.json declares {len(targets)} sigmoid regions ({described})")
    if wanted is None:
        return targets if channel is None else [targets[channel]]
    matches = [
        t
        for t in targets
        if wanted == t.name
        or (isinstance(wanted, int) and t.reference_values == (wanted,))
        or (isinstance(wanted, tuple) and tuple(sorted(t.reference_values)) == wanted)
    ]
    if not matches:
        raise ValueError(
            f"--label {label_text} names no region of dataset.json, which declares sigmoid regions ({described}); "
            "give a region's name or its labels (e.g. --label 1,2) or --channel"
        )
    if channel is not None and matches[0].channel != channel:
        raise ValueError(f"--label {label_text} is region channel {matches[0].channel}, not --channel {channel}")
    return matches[:1]


#: largest deviation from 1 of the channel sum that still counts as a softmax (float32 rounding)
SOFTMAX_TOLERANCE = 1e-3


def foreground_probability(probabilities: np.ndarray, target: ProbabilityTarget) -> np.ndarray:
    """The probability of ``target`` from nnU-Net's (C, ...) probabilities (see :func:`probability_targets`);
    raises CaseError when the array does not fit the model dataset.json describes."""
    if probabilities.ndim < 3:
        raise CaseError(f"probabilities of shape {probabilities.shape}: expected (channels, *spatial)")
    n_channels = probabilities.shape[0]
    if target.n_channels is not None and n_channels != target.n_channels:
        kind = "sigmoid regions" if target.kind == "sigmoid" else "softmax labels"
        raise CaseError(f"{n_channels} probability channels, but dataset.json declares {target.n_channels} {kind}")
    if target.channel is not None and target.channel >= n_channels:
        raise CaseError(f"channel {target.channel} out of range for {n_channels} channels")
    if target.kind == "softmax":  # declared by dataset.json, or assumed without one: refuse what is not a softmax
        deviation = float(np.abs(probabilities.sum(axis=0, dtype=np.float64) - 1.0).max())
        if deviation > SOFTMAX_TOLERANCE:
            raise CaseError(
                f"the {n_channels} probability channels do not sum to 1 (by up to {deviation:.3g}) as a softmax "
                "does: sigmoid (region) probabilities? Pass the model's dataset.json (--dataset-json) or --channel"
            )
    probability = 1.0 - probabilities[0] if target.channel is None else probabilities[target.channel]
    low, high = float(probability.min()), float(probability.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-6 or high > 1 + 1e-6:
        raise CaseError(f"probabilities outside [0, 1] (from {low:g} to {high:g}): logits instead of probabilities?")
    return probability


def load_probabilities(path: Path) -> np.ndarray:
    try:
        with np.load(path) as data:
            if "probabilities" not in data:
                raise CaseError(f"{path} has no 'probabilities' array (keys: {list(data.keys())})")
            return data["probabilities"]
    except (OSError, ValueError) as error:
        raise CaseError(f"cannot read {path}: {error}") from None


def list_probability_files(folder: Path) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    files = {p.name[:-4]: p for p in sorted(folder.glob("*.npz"))}
    if not files:
        raise FileNotFoundError(
            f"no .npz probability files in {folder} (run nnUNetv2_predict with --save_probabilities)"
        )
    return files


# --------------------------------------------------------------------------- commands
def _cmd_remove_small(args) -> int:
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

    p = subparsers.add_parser("remove-small", help="remove connected components below N voxels (Joshi 2026)")
    p.add_argument("input", help="folder of label images")
    p.add_argument("output", help="output folder")
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
