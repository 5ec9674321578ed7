"""``apply-threshold``'s work: the operating points of a choose-threshold JSON record
(:func:`read_operating_points`; :func:`points_from_record` for a record already read), or one point for every
label or region (:func:`plan_apply` resolves either, with dataset.json's channel mapping), and the label maps
written from nnU-Net's ``.npz`` probabilities at those points (:func:`apply_operating_point`), as nnU-Net
writes a segmentation (:func:`segmentation_from_masks`), with the geometry of the image beside the ``.npz``
(:func:`~nnunet_lesionloss.evaluation.postprocess.write_labels_like`) once it matches nnU-Net's ``.pkl``. A record
may have been edited by hand: every field is checked (:func:`points_from_record`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_lesionloss.components import check_connectivity_value
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.metrics import remove_small_components
from nnunet_lesionloss.evaluation.operating_point.grid import DICE_CONNECTIVITY
from nnunet_lesionloss.evaluation.operating_point.inputs import find_dataset_json, read_target_probabilities
from nnunet_lesionloss.evaluation.postprocess import REMOVAL_CONNECTIVITY, run_cases, write_labels_like
from nnunet_lesionloss.evaluation.probabilities import ProbabilityTarget, list_probability_files, probability_targets

__all__ = [
    "ApplyPlan",
    "OperatingPoint",
    "apply_operating_point",
    "check_operating_points",
    "plan_apply",
    "points_from_record",
    "read_operating_points",
    "segmentation_from_masks",
]


@dataclass
class OperatingPoint:
    """A probability threshold and a minimum component size (voxels)."""

    threshold: float
    min_size_voxels: int


def points_from_record(record: dict, targets: Sequence[ProbabilityTarget], source: str) -> tuple[dict, int | str]:
    """({target key: OperatingPoint}, connectivity) from a choose-threshold JSON (this version or the
    single-threshold one, which holds ``best_threshold``). Every field is checked (a record may be edited by
    hand): a missing or wrong one is a ValueError naming its key and the values it may take."""
    if "targets" not in record:
        if "best_threshold" not in record:
            raise ValueError(f"{source} is not an output of choose-threshold (no 'targets', no 'best_threshold')")
        minimum = record.get("min_voxels")
        point = OperatingPoint(
            _threshold_field(record["best_threshold"], "'best_threshold'", source),
            0 if minimum is None else _size_field(minimum, "'min_voxels'", source),
        )
        connectivity = _connectivity_field(record.get("connectivity", DICE_CONNECTIVITY), source)
        return {t.key: point for t in targets}, connectivity
    chosen = record["targets"]
    if not isinstance(chosen, dict) or not all(isinstance(entry, dict) for entry in chosen.values()):
        raise ValueError(
            f"{source}: 'targets' must map each label or region key to its operating point "
            "({'threshold': ..., 'min_size_voxels': ..., 'channel': ...}), got "
            f"{type(chosen).__name__ if not isinstance(chosen, dict) else 'a value that is no such object'}"
        )
    absent = [t.key for t in targets if t.key not in chosen]
    if absent:
        raise ValueError(
            f"{source} holds operating points for {', '.join(chosen)}, not for {', '.join(absent)} "
            "(the labels or regions these probabilities have)"
        )
    for target in targets:
        if chosen[target.key].get("channel") != target.channel:
            raise ValueError(
                f"{source} was chosen on channel {chosen[target.key].get('channel')} for {target.name}; "
                f"these probabilities have it in channel {target.channel}"
            )
    points = {}
    for target in targets:
        entry, where = chosen[target.key], f"{source}, target {target.key}"
        for key in ("threshold", "min_size_voxels"):
            if key not in entry:
                raise ValueError(f"{where}: no '{key}' (a choose-threshold record holds it for every target)")
        points[target.key] = OperatingPoint(
            _threshold_field(entry["threshold"], "'threshold'", where),
            _size_field(entry["min_size_voxels"], "'min_size_voxels'", where),
        )
    if "connectivity" not in record:
        raise ValueError(f"{source}: no 'connectivity' (of the minimum-size removal; choose-threshold records it)")
    return points, _connectivity_field(record["connectivity"], source)


def _threshold_field(value, key: str, where: str) -> float:
    """A threshold as the JSON holds it: a finite number in (0, 1]."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{where}: {key} must be a number in (0, 1], got {value!r}")
    return float(value)


def _size_field(value, key: str, where: str) -> int:
    """A minimum size as the JSON holds it: a whole number of voxels >= 0 (2.7 is refused, never truncated)."""
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )
    if not whole or value < 0:
        raise ValueError(f"{where}: {key} must be a whole number of voxels >= 0, got {value!r}")
    return int(value)


def _connectivity_field(value, where: str) -> int | str:
    """A connectivity as the JSON holds it: 'full' / 'face' (EvaluationSettings' names) or a number."""
    try:
        return check_connectivity_value(value, "'connectivity'")
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def check_operating_points(points: dict[str, OperatingPoint]) -> None:
    """Every threshold in (0, 1] and every minimum size >= 0 voxels (a ValueError naming the target if not)."""
    for key, point in points.items():
        if not 0 < point.threshold <= 1 or point.min_size_voxels < 0:
            raise ValueError(f"threshold {point.threshold} must be in (0, 1] and the minimum size >= 0 ({key})")


def read_operating_points(
    path: str | os.PathLike, dataset: dict | None = None, label: str | None = None, channel: int | None = None
) -> tuple[list[ProbabilityTarget], dict[str, OperatingPoint], int | str]:
    """(targets, {target key: OperatingPoint}, connectivity) from the choose-threshold JSON at ``path``.

    The targets are those of the probabilities (``dataset``: their dataset.json; without one, the labels and
    region order the record was chosen with); ``label`` and ``channel`` default to the record's. A record
    chosen for other labels or regions, or on another channel, is refused (:func:`points_from_record`)."""
    with open(path) as handle:
        try:
            record = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not an output of choose-threshold (not a JSON object)")
    mapping = record.get("probability_mapping") or {}
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: 'probability_mapping' must be an object (label, channel, dataset_labels)")
    if dataset is None and mapping.get("dataset_labels") is not None:
        if not isinstance(mapping["dataset_labels"], dict):
            raise ValueError(f"{path}: 'probability_mapping'.'dataset_labels' must be dataset.json's 'labels' object")
        dataset = {"labels": mapping["dataset_labels"], "regions_class_order": mapping.get("regions_class_order")}
    label = label if label is not None else mapping.get("label")
    channel = channel if channel is not None else mapping.get("channel")
    if not (channel is None or (isinstance(channel, int) and not isinstance(channel, bool) and channel >= 0)):
        raise ValueError(f"{path}: 'probability_mapping'.'channel' must be a channel number >= 0 or null")
    if not (label is None or isinstance(label, (str, int))):
        raise ValueError(f"{path}: 'probability_mapping'.'label' must be a label, a name or null")
    targets = probability_targets(dataset, label, channel)
    points, connectivity = points_from_record(record, targets, str(path))
    return targets, points, connectivity


@dataclass
class ApplyPlan:
    """What ``apply-threshold`` applies: the labels or regions of the probabilities, the operating point of
    each, the connectivity of the size removal (None: ``REMOVAL_CONNECTIVITY`` of each image's dimension) and
    the file ending of the images written."""

    targets: list[ProbabilityTarget]
    points: dict[str, OperatingPoint]
    connectivity: int | str | None
    file_ending: str


def plan_apply(
    probability_dir: str | os.PathLike,
    threshold_json: str | os.PathLike | None = None,
    threshold: float | None = None,
    min_voxels: int | None = None,
    connectivity: int | str | None = None,
    label: str | None = None,
    channel: int | None = None,
    dataset_json: str | None = None,
    file_ending: str | None = None,
) -> ApplyPlan:
    """The operating points to apply to ``probability_dir``: those of a choose-threshold JSON (which fixes the
    threshold, minimum size and connectivity), or ``threshold`` and ``min_voxels`` (default 0) for every label
    or region. dataset.json: ``dataset_json``, else the one ``nnUNetv2_predict`` writes into the probability
    folder; the file ending: ``file_ending``, else dataset.json's, else .nii.gz."""
    dataset_json = dataset_json or find_dataset_json([Path(probability_dir) / "dataset.json"])
    dataset = io.read_dataset_json(dataset_json) if dataset_json else None
    given = {"--threshold": threshold, "--min-voxels": min_voxels, "--connectivity": connectivity}
    if threshold_json is not None:
        ignored = [option for option, value in given.items() if value is not None]
        if ignored:  # the record holds all three
            raise ValueError(
                "; ".join(
                    f"{option} has no effect with --threshold-json, which fixes the threshold, minimum size and "
                    "connectivity: leave it out"
                    for option in ignored
                )
            )
        targets, points, connectivity = read_operating_points(threshold_json, dataset, label, channel)
    elif threshold is not None:
        targets = probability_targets(dataset, label, channel)
        point = OperatingPoint(threshold, min_voxels or 0)
        points = {target.key: point for target in targets}
    else:
        ignored = [option for option, value in given.items() if value is not None]
        if ignored:
            raise ValueError(
                "; ".join(
                    f"{option} has no effect without --threshold (it removes after that threshold)"
                    for option in ignored
                )
                + ": give --threshold, or --threshold-json alone"
            )
        raise ValueError("give --threshold or --threshold-json (the output of choose-threshold)")
    check_operating_points(points)
    file_ending = file_ending or (dataset or {}).get("file_ending") or ".nii.gz"
    return ApplyPlan(targets, points, connectivity, file_ending)


def segmentation_from_masks(
    probabilities: np.ndarray, targets: Sequence[ProbabilityTarget], masks: dict[str, np.ndarray]
) -> np.ndarray:
    """A label map from the thresholded masks, as nnU-Net writes its segmentation: regions in
    ``regions_class_order`` (a later region overwrites an earlier one); a softmax's "any foreground" mask gets
    the most probable foreground label of each voxel; a single label its own value."""
    shape = probabilities.shape[1:]
    if len(targets) == 1 and targets[0].output_label is None:
        target = targets[0]
        channel_labels = np.asarray(target.channel_labels or range(probabilities.shape[0]))
        most_probable = channel_labels[1 + np.argmax(probabilities[1:], axis=0)]
        segmentation = np.where(masks[target.key], most_probable, 0)
    else:
        segmentation = np.zeros(shape, dtype=np.int64)
        for target in sorted(targets, key=lambda t: t.channel):
            segmentation[masks[target.key]] = target.output_label
    top = int(segmentation.max()) if segmentation.size else 0
    return segmentation.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)


def apply_operating_point(
    probability_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    targets: Sequence[ProbabilityTarget],
    points: dict[str, OperatingPoint],
    connectivity: int | str | None,
    template_dir: str | os.PathLike | None = None,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> tuple[list[Path], int]:
    """Label maps from nnU-Net's ``.npz`` probabilities at each target's operating point; the geometry is
    copied from the segmentation nnU-Net wrote beside them (or from ``template_dir``'s image of each case), after
    checking it against the shape and the spacing, origin and direction nnU-Net's ``.pkl`` records (a case
    whose template differs fails, named).
    ``connectivity`` None: :data:`~nnunet_lesionloss.evaluation.postprocess.REMOVAL_CONNECTIVITY` of each
    image's dimension. Returns (files written, cases failed)."""
    check_operating_points(points)
    probability_dir = Path(probability_dir)
    io.check_output_apart(output_dir, {"--probabilities": probability_dir, "--template-dir": template_dir})
    template_dir = Path(template_dir or probability_dir)
    missing = [t.name for t in targets if t.output_label is None and (len(targets) > 1 or t.kind == "sigmoid")]
    if missing:
        raise ValueError(
            f"dataset.json has no regions_class_order: the label to write for {', '.join(missing)} is unknown"
        )
    files = list_probability_files(probability_dir)
    outputs = {case: Path(output_dir) / f"{case}{file_ending}" for case in files}
    io.prepare_output_dir(output_dir, [p.name for p in outputs.values()], overwrite)
    written = []

    def job(case: str, path: Path):
        def run():
            template = template_dir / f"{case}{file_ending}"
            if not template.is_file():
                raise CaseError(f"no image to copy the geometry from: {template}")
            # the geometry written is the template's: it must be the one nnU-Net's .pkl records for the
            # probabilities (shape, spacing, origin, direction), or the mask lands in the wrong place
            probabilities, maps = read_target_probabilities(
                path, targets, io.read_label_image(template), what="the template"
            )
            masks = {}
            for target in targets:
                point = points[target.key]
                mask = maps[target.key] >= point.threshold
                masks[target.key] = remove_small_components(
                    mask,
                    REMOVAL_CONNECTIVITY.get(mask.ndim, "full") if connectivity is None else connectivity,
                    (1.0,) * mask.ndim,
                    min_voxels=point.min_size_voxels,
                )
            segmentation = segmentation_from_masks(probabilities, targets, masks)
            write_labels_like(segmentation, template, outputs[case], segmentation.dtype)
            written.append(outputs[case])

        return run

    _, failed = run_cases((case, job(case, path)) for case, path in files.items())
    return written, failed
