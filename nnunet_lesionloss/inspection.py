"""``nnunet-lesionloss inspect``: how many lesions a dataset has, how small they are, and what
nnU-Net's training does to them, before anything is trained.

Per label (and per region of a region-based dataset): cases, lesions, lesions per case, the lesion
volume distribution in voxels and in mm³, the share of lesions of at most 10, 50 and 100 voxels,
lesions touching the image border, lesions that are one component at full connectivity (26 in 3D)
but several at face connectivity (6), and, for every deep-supervision scale, the share of lesions
that nnU-Net's own target downsampling erases entirely.

Where the images come from decides the spacing (said in every output):

* a planned and preprocessed nnU-Net dataset (id or name): the segmentations nnU-Net trains on
  (``nnUNet_preprocessed/<dataset>/<data identifier>``), at the configuration's training spacing,
  with the plans' deep-supervision scales;
* otherwise the label images (``labelsTr`` of a raw dataset, or any folder of label images) at their
  own spacing, with nnU-Net's usual 3d_fullres scales (halving per axis down to 1/16) as an assumption.

The erased share is measured by running batchgeneratorsv2's ``DownsampleSegForDSTransform`` (what
nnU-Net 2.8's trainer appends to its transforms, nearest-exact) on the lesions' component-id map:
nearest-exact only selects voxels, so the ids that remain at a scale are exactly the lesions that
keep at least one voxel in the downsampled segmentation. nnU-Net applies it to a training patch; a
patch whose corner lies on the network's stride grid samples the same voxels as the whole case does
here (the case is cut on that grid), a patch elsewhere samples a shifted lattice. Over many lesions
at arbitrary positions the share of one lattice estimates the share of a random patch position.

This module computes (inspect.json's content, the τ of ``nnUNetTrainerSizePenaltyAuto``); inspection_report.py
turns it into the hints, ``inspect.md`` and the histograms, and writes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from nnunet_lesionloss.components import VALID_CONNECTIVITY, check_connectivity, component_statistics, label_components
from nnunet_lesionloss.config import load_config, loss_terms
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.postprocess import DEFAULT_MIN_VOXELS
from nnunet_lesionloss.evaluation.probabilities import load_properties
from nnunet_lesionloss.training.dataset_statistics import draw_training_patches, patch_foreground_volumes

__all__ = [
    "SHARE_THRESHOLDS_VOXELS",
    "ASSUMED_POOL_KERNELS",
    "REMOVE_SMALL_DEFAULT_VOXELS",
    "InspectionSource",
    "resolve_source",
    "inspect_labels",
    "inspect_dataset",
    "deep_supervision_erasure",
    "size_penalty_auto_tau",
    "terms_by_scales",
]

#: the voxel counts of ``share_at_most_voxels`` (inspect.json) and of the histogram's marks
SHARE_THRESHOLDS_VOXELS = (10, 50, 100)
#: pooling of nnU-Net's 3d_fullres plans for an isotropic image with a 128³ patch (six stages): the
#: deep-supervision scales assumed when there are no plans (1, 1/2, 1/4, 1/8, 1/16 per axis)
ASSUMED_POOL_KERNELS = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
#: nnUNetTrainer's foreground oversampling (its ``__init__``), which the Size Penalty τ statistic draws with
NNUNET_OVERSAMPLE_FOREGROUND = 0.33


# --------------------------------------------------------------------------- where the labels come from
@dataclass
class InspectionSource:
    """The cases to inspect and how to read them, with the spacing and scales that apply."""

    name: str
    cases: list[str]
    read: Callable[[str], tuple[np.ndarray, tuple[float, ...]]]  # case -> (label array, spacing in array order)
    groups: dict[str, tuple[int, ...]] | None  # label key -> values; None: every value found
    names: dict[str, str] = field(default_factory=dict)
    spacing_source: str = ""
    ds_scales: list[tuple[float, ...]] = field(default_factory=list)
    ds_source: str = ""
    loss_weights: list[float] = field(default_factory=list)
    planned: SimpleNamespace | None = None  # plans_manager, configuration_manager, folder, dataset_json
    #: the values a label map may hold (dataset.json's labels and ignore label; None: no dataset.json): a case
    #: with another value fails, named, as in ``evaluate`` (``io.check_label_values``)
    allowed: set[int] | None = None
    folder: Path | None = None  # the folder the label maps are read from


def deep_supervision_scales(pool_op_kernel_sizes: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
    """The scales nnU-Net 2.8's trainer downsamples the targets to (``_get_deep_supervision_scales``)."""
    # lazy: nnunetv2's trainer imports torch and its whole training stack (the command line imports this module)
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    view = SimpleNamespace(
        enable_deep_supervision=True, configuration_manager=SimpleNamespace(pool_op_kernel_sizes=pool_op_kernel_sizes)
    )
    return [tuple(float(s) for s in scale) for scale in nnUNetTrainer._get_deep_supervision_scales(view)]


def deep_supervision_loss_weights(num_scales: int) -> list[float]:
    """nnU-Net's weights of the scales in its loss (``nnUNetTrainer._build_loss``): 1/2^i, the coarsest 0,
    normalised to sum 1."""
    weights = np.array([1 / (2**i) for i in range(num_scales)])
    if num_scales > 1:
        weights[-1] = 0
    return [float(w) for w in weights / weights.sum()]


def _label_groups(dataset: dict | None) -> tuple[dict[str, tuple[int, ...]] | None, dict[str, str]]:
    """Label key -> values of every label and region of dataset.json (the ignore label is none of them)."""
    if dataset is None:
        return None, {}
    groups = io.labels_from_dataset_json(dataset)
    keyed = {io.label_key(values): values for values in groups.values()}
    names = {io.label_key(values): name for name, values in groups.items()}
    return keyed, names


def _folder_source(folder: Path, dataset_json: Path | None, file_ending: str | None, name: str) -> InspectionSource:
    dataset = io.read_dataset_json(dataset_json) if dataset_json is not None else None
    if file_ending is None and dataset is not None:
        file_ending = dataset.get("file_ending")
    files = io.list_images(folder, file_ending)
    if not files:
        raise FileNotFoundError(f"no label images in {folder}" + (f" ending in {file_ending}" if file_ending else ""))
    groups, names = _label_groups(dataset)

    def read(case: str) -> tuple[np.ndarray, tuple[float, ...]]:
        image = io.read_label_image(files[case])
        return io.as_integer_labels(image), image.spacing

    pools = ASSUMED_POOL_KERNELS
    return InspectionSource(
        name=name,
        cases=list(files),
        read=read,
        groups=groups,
        names=names,
        spacing_source="the label images' own spacing (not planned: no training spacing)",
        ds_scales=deep_supervision_scales(pools),
        ds_source="assumed: nnU-Net's 3d_fullres scales for an isotropic 128³ patch (no plans)",
        loss_weights=deep_supervision_loss_weights(len(pools) - 1),
        allowed=None if dataset is None else io.allowed_label_values(dataset),
        folder=folder,
    )


def _preprocessed_source(dataset_name: str, base: Path, plans: str, configuration: str) -> InspectionSource | None:
    """The preprocessed segmentations of a planned dataset, or None when that configuration has no data."""
    # nnunetv2 (and the torch it imports) only where a planned dataset is read: every command's start imports this
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = base / f"{plans}.json"
    if not plans_file.is_file():
        return None
    plans_manager = PlansManager(str(plans_file))
    if configuration not in plans_manager.available_configurations:
        raise ValueError(
            f"{plans_file} has no configuration {configuration!r} (it has {', '.join(plans_manager.available_configurations)})"
        )
    configuration_manager = plans_manager.get_configuration(configuration)
    folder = base / configuration_manager.data_identifier
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    dataset_class = infer_dataset_class(str(folder))
    cases = sorted(dataset_class.get_identifiers(str(folder)))
    dataset_json = io.read_dataset_json(base / "dataset.json")
    groups, names = _label_groups(dataset_json)
    dataset = dataset_class(str(folder), cases)
    spacing = tuple(float(s) for s in configuration_manager.spacing)

    def read(case: str) -> tuple[np.ndarray, tuple[float, ...]]:
        with properties_read_restricted():
            segmentation = np.array(dataset.load_case(case)[1][:])[0]
        segmentation[segmentation == -1] = 0  # nnU-Net's mark of the background outside its nonzero crop
        return segmentation, spacing

    pools = configuration_manager.pool_op_kernel_sizes
    scales = deep_supervision_scales(pools)
    if len(scales[0]) < 3:  # a 2D configuration: the slices of the 3D volume are downsampled in-plane
        scales = [(1.0, *s) for s in scales]
    return InspectionSource(
        name=dataset_name,
        cases=cases,
        read=read,
        groups=groups,
        names=names,
        spacing_source=f"the training spacing of {plans} {configuration} (nnU-Net's preprocessed segmentations, "
        "axes as nnU-Net stores them)",
        ds_scales=scales,
        ds_source=f"{plans} {configuration} (pool_op_kernel_sizes)",
        loss_weights=deep_supervision_loss_weights(len(scales)),
        planned=SimpleNamespace(
            plans_manager=plans_manager,
            configuration_manager=configuration_manager,
            folder=folder,
            base=base,
            dataset_json=dataset_json,
            dataset_class=dataset_class,
        ),
        allowed=io.allowed_label_values(dataset_json),
        folder=folder,
    )


#: the plans and configuration a dataset id or name is inspected with unless others are given
DEFAULT_PLANS, DEFAULT_CONFIGURATION = "nnUNetPlans", "3d_fullres"


def resolve_source(
    source: str,
    plans: str | None = None,
    configuration: str | None = None,
    file_ending: str | None = None,
    dataset_json: str | None = None,
) -> InspectionSource:
    """A folder of label images, a raw dataset folder (with ``labelsTr``), or an nnU-Net dataset id or name.

    A dataset id or name is inspected in its preprocessed form when ``nnUNet_preprocessed`` holds the
    configuration's data (``plans`` and ``configuration``, default nnUNetPlans 3d_fullres), else from
    ``nnUNet_raw/<dataset>/labelsTr``; plans or a configuration given explicitly are never replaced by the raw
    labels in silence (an error when their data is missing), and given for a folder they are an error too.
    """
    path = Path(source)
    chosen = [name for name, value in (("--plans", plans), ("--configuration", configuration)) if value is not None]
    if path.is_dir() and chosen:
        raise ValueError(
            "; ".join(
                f"{option} has no effect on a folder of label images (only a dataset id or name is read as nnU-Net "
                "preprocessed it): leave it out"
                for option in chosen
            )
        )
    plans, configuration = plans or DEFAULT_PLANS, configuration or DEFAULT_CONFIGURATION
    if path.is_dir():
        if (path / "labelsTr").is_dir():
            return _folder_source(
                path / "labelsTr", Path(dataset_json or path / "dataset.json"), file_ending, path.name
            )
        candidates = [Path(dataset_json)] if dataset_json else [path / "dataset.json", path.parent / "dataset.json"]
        found = next((c for c in candidates if c.is_file()), None)
        return _folder_source(path, found, file_ending, str(path))
    if not (source.isdigit() or source.startswith("Dataset")):
        raise FileNotFoundError(f"{source} is neither a folder nor an nnU-Net dataset id or name (DatasetXXX_Name)")
    # lazy: nnunetv2 is needed only for a dataset id or name (the command line imports this module)
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(int(source) if source.isdigit() else source)
    except RuntimeError as error:
        raise FileNotFoundError(str(error)) from None
    preprocessed = os.environ.get("nnUNet_preprocessed")
    if preprocessed and (Path(preprocessed) / name).is_dir():
        planned = _preprocessed_source(name, Path(preprocessed) / name, plans, configuration)
        if planned is not None:
            return planned
    if chosen:
        raise FileNotFoundError(
            f"{name}: no preprocessed {configuration} data ({plans}) in nnUNet_preprocessed, which "
            f"{' and '.join(chosen)} ask for (without them, nnUNet_raw/{name}/labelsTr is inspected)"
        )
    raw = os.environ.get("nnUNet_raw")
    if not raw or not (Path(raw) / name / "labelsTr").is_dir():
        raise FileNotFoundError(
            f"{name}: no preprocessed {configuration} data ({plans}) in nnUNet_preprocessed and no labelsTr in "
            "nnUNet_raw (set the nnU-Net folders, or pass a folder of label images)"
        )
    folder = Path(raw) / name
    return _folder_source(folder / "labelsTr", Path(dataset_json or folder / "dataset.json"), file_ending, name)


@contextlib.contextmanager
def properties_read_restricted():
    """Within this block nnU-Net's dataset classes read each case's ``.pkl`` (its preprocessed properties) with
    the restricted unpickler of :func:`~nnunet_lesionloss.evaluation.probabilities.load_properties` instead of
    their plain ``pickle.load`` (``load_pickle``), which would call whatever a file names: inspecting a dataset
    never runs code from its folder."""
    # lazy: nnunetv2's loader imports torch (the command line imports this module)
    from nnunetv2.training.dataloading import nnunet_dataset

    original = nnunet_dataset.load_pickle
    nnunet_dataset.load_pickle = load_properties
    try:
        yield
    finally:
        nnunet_dataset.load_pickle = original


# --------------------------------------------------------------------------- one case
@dataclass
class CaseLesions:
    """The lesions of one label in one case."""

    voxels: np.ndarray  # int64, one per lesion
    voxel_volume_mm3: float
    touching_border: int
    split_at_face: int  # lesions (full connectivity) that are several components at face connectivity
    face_components_in_split: int  # the face components those lesions consist of
    erased: list[int]  # lesions erased entirely, per deep-supervision scale

    @classmethod
    def none(cls, voxel_volume_mm3: float, num_scales: int) -> CaseLesions:
        return cls(np.zeros(0, np.int64), voxel_volume_mm3, 0, 0, 0, [0] * num_scales)


def _strides(scales: Sequence[Sequence[float]]) -> tuple[int, ...]:
    """Per axis, the largest downsampling factor among the scales (1/scale), as an integer."""
    strides = []
    for axis in range(len(scales[0])):
        factors = [Fraction(1 / s[axis]).limit_denominator(1000) for s in scales]
        if any(f.denominator != 1 for f in factors):
            raise ValueError(f"deep-supervision scales {scales} are not 1/integer per axis")
        strides.append(int(max(factors)))
    return tuple(strides)


def _scales_for(scales: Sequence[Sequence[float]], ndim: int) -> list[tuple[float, ...]]:
    """The scales of a 3D network for 2D label images: the in-plane factors (the assumed scales are 3D)."""
    if len(scales[0]) == ndim:
        return [tuple(s) for s in scales]
    if ndim == 2 and len(scales[0]) == 3:
        return [tuple(s[1:]) for s in scales]
    raise ValueError(f"deep-supervision scales {scales} do not fit an image of {ndim} dimensions")


def _aligned_box(foreground: np.ndarray, strides: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Start and size of the foreground's bounding box, widened to multiples of ``strides`` from
    index 0 (the size may reach beyond the image: that part is padded with background)."""
    starts, sizes = [], []
    for axis, stride in enumerate(strides):
        others = tuple(a for a in range(foreground.ndim) if a != axis)
        hits = np.flatnonzero(foreground.any(axis=others))
        start = int(hits[0]) // stride * stride
        stop = -(-(int(hits[-1]) + 1) // stride) * stride
        starts.append(start)
        sizes.append(stop - start)
    return tuple(starts), tuple(sizes)


def deep_supervision_erasure(component_ids: np.ndarray, counts: Sequence[int], scales) -> list[list[int]]:
    """Per channel of ``component_ids`` [C, *spatial] (ids 1..counts[c]), per scale: how many ids are
    gone after nnU-Net's ``DownsampleSegForDSTransform`` (run here, nearest-exact)."""
    # lazy: torch only when lesions are inspected (the command line imports this module)
    import torch
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    if component_ids.size and int(component_ids.max()) > 2**24:
        raise ValueError("more than 2^24 lesions in one image: the transform's float32 copy cannot hold their ids")
    downsampled = DownsampleSegForDSTransform(ds_scales=[list(s) for s in scales])(
        segmentation=torch.from_numpy(np.ascontiguousarray(component_ids, dtype=np.int32))
    )["segmentation"]
    erased = []
    for channel, count in enumerate(counts):
        erased.append([count - int(np.count_nonzero(np.unique(level[channel].numpy()))) for level in downsampled])
    return erased


def inspect_labels(
    labels: np.ndarray,
    spacing: Sequence[float],
    groups: dict[str, tuple[int, ...]],
    connectivity: int,
    scales: Sequence[Sequence[float]],
) -> dict[str, CaseLesions]:
    """The lesions of every label group (label or region) of one label map."""
    ndim = labels.ndim
    full, face = VALID_CONNECTIVITY[ndim][-1], VALID_CONNECTIVITY[ndim][0]
    if len(scales[0]) != ndim:
        raise ValueError(f"deep-supervision scales {scales} do not fit an image of {ndim} dimensions")
    voxel_volume = float(np.prod(spacing))
    values = sorted({v for group in groups.values() for v in group})
    foreground = np.isin(labels, values)
    if not foreground.any():
        return {key: CaseLesions.none(voxel_volume, len(scales)) for key in groups}
    strides = _strides(scales)
    start, size = _aligned_box(foreground, strides)
    inside = tuple(slice(s, min(s + n, dim)) for s, n, dim in zip(start, size, labels.shape))
    crop = np.zeros(size, dtype=labels.dtype)
    crop[tuple(slice(0, sl.stop - sl.start) for sl in inside)] = labels[inside]
    ids_per_group, counts, out = [], [], {}
    for key, group in groups.items():
        mask = np.isin(crop, group)
        ids, count = label_components(mask, connectivity, return_count=True)
        voxels, _, lower, upper = component_statistics(ids[None], count + 1)
        lower, upper = lower[1:] + np.array(start), upper[1:] + np.array(start)
        touching = int(np.count_nonzero((lower == 0).any(axis=1) | (upper == np.array(labels.shape) - 1).any(axis=1)))
        ids_full = ids if connectivity == full else label_components(mask, full)
        ids_face, count_face = label_components(mask, face, return_count=True)
        # every face component lies in one full component: count the face components of each
        parent = np.zeros(count_face + 1, dtype=np.int64)
        parent[ids_face[mask]] = ids_full[mask]
        per_full = np.bincount(parent[1:], minlength=int(ids_full.max()) + 1)[1:]
        out[key] = CaseLesions(
            voxels=voxels[1:].astype(np.int64),
            voxel_volume_mm3=voxel_volume,
            touching_border=touching,
            split_at_face=int(np.count_nonzero(per_full > 1)),
            face_components_in_split=int(per_full[per_full > 1].sum()),
            erased=[],
        )
        ids_per_group.append(ids)
        counts.append(count)
    erased = deep_supervision_erasure(np.stack(ids_per_group), counts, scales)
    for key, per_scale in zip(groups, erased):
        out[key].erased = per_scale
    return out


# --------------------------------------------------------------------------- the dataset
def _quartiles(values: np.ndarray) -> dict | None:
    if len(values) == 0:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "min": float(values.min()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


#: remove-small's default minimum size (Joshi 2026 §4.5), for the hint of what it would delete
REMOVE_SMALL_DEFAULT_VOXELS = DEFAULT_MIN_VOXELS


def summarise_label(per_case: list[CaseLesions], scales: Sequence[Sequence[float]]) -> dict:
    """inspect.json's entry of one label from the lesions of its cases (the spacing is added by the caller)."""
    voxels = np.concatenate([c.voxels for c in per_case]) if per_case else np.zeros(0, np.int64)
    volumes = np.concatenate([c.voxels * c.voxel_volume_mm3 for c in per_case]) if per_case else np.zeros(0)
    n = len(voxels)
    erased = [int(sum(c.erased[k] for c in per_case)) for k in range(len(scales))]
    return {
        "cases": len(per_case),
        "lesions": n,
        "lesions_per_case": _quartiles(np.array([len(c.voxels) for c in per_case], dtype=np.float64)),
        "volume_voxels": _quartiles(voxels.astype(np.float64)),
        "volume_mm3": _quartiles(volumes),
        "share_at_most_voxels": {
            str(t): (float(np.count_nonzero(voxels <= t) / n) if n else None) for t in SHARE_THRESHOLDS_VOXELS
        },
        f"share_below_{REMOVE_SMALL_DEFAULT_VOXELS}_voxels": (
            float(np.count_nonzero(voxels < REMOVE_SMALL_DEFAULT_VOXELS) / n) if n else None
        ),
        "touching_border": int(sum(c.touching_border for c in per_case)),
        "split_at_face_connectivity": int(sum(c.split_at_face for c in per_case)),
        "face_components_in_split_lesions": int(sum(c.face_components_in_split for c in per_case)),
        "erased_at_scale": [(e / n if n else None) for e in erased],
        "erased_count_at_scale": erased,
    }


def inspect_dataset(
    source: InspectionSource, connectivity: int | None = None, progress: bool = False
) -> tuple[dict, dict[str, np.ndarray]]:
    """inspect.json's content (per label the lesion statistics, the scales, the failed cases by name)
    and, per label, the sizes in voxels of all its lesions."""
    results: list[tuple[dict[str, CaseLesions], float]] = []
    spacings: dict[str, tuple[float, ...]] = {}
    errors: dict[str, str] = {}
    ndim = None
    for k, case in enumerate(source.cases):
        if progress:
            print(f"\r{k + 1}/{len(source.cases)} {case}", end="", file=sys.stderr, flush=True)
        try:
            labels, spacing = source.read(case)
            io.check_label_values(io.present_values(labels), source.allowed, "label image")
            ndim = labels.ndim
            groups = source.groups
            if groups is None:
                groups = {str(v): (v,) for v in sorted(int(v) for v in np.unique(labels) if v > 0)}
            scales = _scales_for(source.ds_scales, ndim)
            lesions = inspect_labels(labels, spacing, groups, check_connectivity(connectivity, ndim), scales)
        except Exception as error:  # one bad case must not hide the others; it is reported by name
            errors[case] = f"{type(error).__name__}: {error}"
            continue
        spacings[case] = tuple(float(s) for s in spacing)
        results.append((lesions, float(np.prod(spacing))))
    if progress:
        print(file=sys.stderr)
    keys = list(source.groups) if source.groups is not None else sorted({k for r, _ in results for k in r}, key=int)
    spacing_entry = {
        "source": source.spacing_source,
        "mm": [list(s) for s in sorted({tuple(round(x, 6) for x in s) for s in spacings.values()})],
    }
    labels_out, sizes = {}, {}
    for key in keys:
        # a case without this label (no such value in it) has no lesion of it
        per_case = [r.get(key) or CaseLesions.none(volume, len(source.ds_scales)) for r, volume in results]
        labels_out[key] = {"name": source.names.get(key, key), **summarise_label(per_case, source.ds_scales)}
        labels_out[key]["spacing"] = spacing_entry
        sizes[key] = np.concatenate([c.voxels for c in per_case]) if per_case else np.zeros(0, np.int64)
    connectivity = check_connectivity(connectivity, ndim or 3)
    report = {
        "dataset": source.name,
        "n_cases": len(source.cases),
        "n_failed": len(errors),
        "errors": errors,
        "connectivity": connectivity,
        "full_connectivity": VALID_CONNECTIVITY[ndim or 3][-1],
        "face_connectivity": VALID_CONNECTIVITY[ndim or 3][0],
        "spacing": spacing_entry,
        "deep_supervision_scales": [list(s) for s in source.ds_scales],
        "deep_supervision_source": source.ds_source,
        "deep_supervision_loss_weights": source.loss_weights,
        "labels": labels_out,
    }
    return report, sizes


# --------------------------------------------------------------------------- what the hints are computed from
def size_penalty_auto_tau(source: InspectionSource, fold: int = 0) -> dict:
    """τ that ``nnUNetTrainerSizePenaltyAuto`` would use on this planned dataset (fold ``fold``).

    The same steps as the trainer's ``prepare_terms``: its config (``NNUNET_LESIONLOSS_CONFIG``
    applied), patches drawn by :func:`~nnunet_lesionloss.training.dataset_statistics.draw_training_patches`
    from the fold's training cases with nnU-Net's batch size, initial patch size and foreground
    oversampling, V_g per patch and loss channel, then
    :func:`~nnunet_lesionloss.losses.size_penalty.estimate_size_penalty_tau`. Nothing is written (a
    missing ``splits_final.json`` is computed as nnU-Net would create it).
    """
    # lazy: nnunetv2's trainer, the losses and the training set-up import torch and nnU-Net's training stack
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    from nnunet_lesionloss.losses.size_penalty import estimate_size_penalty_tau
    from nnunet_lesionloss.training.setup import resolve_setup
    from nnunet_lesionloss.training.variants import nnUNetTrainerSizePenaltyAuto

    planned = source.planned
    trainer = nnUNetTrainerSizePenaltyAuto
    config = load_config(trainer.config_name, trainer.config_overrides, trainer=trainer.__name__)
    settings = config["auto_tau"]
    splits_file = planned.base / "splits_final.json"
    if splits_file.is_file():
        splits = json.loads(splits_file.read_text())
        split_source = str(splits_file)
    else:
        splits = generate_crossval_split(sorted(source.cases), seed=12345, n_splits=5)
        split_source = "nnU-Net's default 5-fold split (no splits_final.json yet)"
    train_cases = splits[fold]["train"]
    label_manager = planned.plans_manager.get_label_manager(planned.dataset_json)
    # the trainer's own start checks and methods on a view with the attributes they read (an instance
    # would write a training log into nnUNet_results)
    configuration = planned.configuration_manager
    setup = resolve_setup(
        config, spatial_dims=len(configuration.patch_size), spacing=configuration.spacing, label_manager=label_manager
    )
    view = SimpleNamespace(
        configuration_manager=configuration,
        label_manager=label_manager,
        label_groups=setup.label_groups,
        region_channels=setup.region_channels,
        print_to_log_file=lambda *args, **kwargs: None,
    )
    initial_patch_size = nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(view)[2]
    with properties_read_restricted():  # the loader reads each case's properties (its class locations)
        patches = draw_training_patches(
            planned.dataset_class(str(planned.folder), train_cases),
            label_manager,
            batch_size=planned.configuration_manager.batch_size,
            initial_patch_size=initial_patch_size,
            patch_size=planned.configuration_manager.patch_size,
            oversample_foreground_percent=NNUNET_OVERSAMPLE_FOREGROUND,
            num_patches=settings["patches"],
        )
    volumes = patch_foreground_volumes(patches, lambda label_map: trainer._loss_channel_masks(view, label_map))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tau = estimate_size_penalty_tau(volumes, quantile=settings["quantile"])
    return {
        "tau": tau,
        "quantile": settings["quantile"],
        "patches": len(patches),
        "lesion_positive_volumes": int(np.count_nonzero(volumes)),
        "fold": fold,
        "splits": split_source,
        "warnings": [str(w.message) for w in caught],
    }


def terms_by_scales() -> dict[str, list[str]]:
    """Loss terms of the shipped trainer configs, by the deep-supervision outputs they see."""
    by_scales: dict[str, set[str]] = {"all": set(), "full": set()}
    for entry in resources.files("nnunet_lesionloss.configs").iterdir():
        if entry.name.endswith(".yaml"):
            config = load_config(entry.name[: -len(".yaml")], env={})
            for name, term in loss_terms(config).items():
                by_scales[term.get("scales", "all")].add(name)
    return {key: sorted(names) for key, names in by_scales.items()}
