"""``choose-threshold``'s work: :func:`choose_operating_point` counts every case of a results folder or a
plain folder on the grid (in parallel), chooses the point of each label or region by the criterion, estimates
that choice by nested cross-validation, and returns the JSON record (:data:`FORMAT`) that ``apply-threshold``
reads (:func:`~nnunet_lesionloss.evaluation.operating_point.apply.read_operating_points`) and
:func:`~nnunet_lesionloss.evaluation.operating_point.report.format_record` shows. Nothing is written here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.operating_point.grid import (
    DICE_THRESHOLDS,
    LESION_MIN_SIZES,
    LESION_THRESHOLDS,
    check_grid,
)
from nnunet_lesionloss.evaluation.operating_point.inputs import (
    assign_folds,
    case_counts,
    check_choice_output,
    is_results_folder,
    plan_inputs,
)
from nnunet_lesionloss.evaluation.operating_point.selection import (
    CRITERIA,
    DEFINITIONS,
    measure,
    metrics_at,
    nested_estimate,
    select,
)
from nnunet_lesionloss.evaluation.parallel import run_parallel
from nnunet_lesionloss.evaluation.postprocess import REMOVAL_CONNECTIVITY
from nnunet_lesionloss.evaluation.probabilities import ProbabilityTarget, probability_targets
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

__all__ = ["DEFAULT_NESTED_FOLDS", "FORMAT", "check_criterion", "choose_operating_point"]

DEFAULT_NESTED_FOLDS = 5
FORMAT = "nnunet-lesionloss operating point 1"


def choose_operating_point(
    probabilities: str | os.PathLike,
    gt_dir: str | os.PathLike | None = None,
    criterion: str = "dice",
    max_fp_per_case: float | None = None,
    thresholds: Sequence[float] | None = None,
    min_sizes: Sequence[int] | None = None,
    settings: EvaluationSettings | None = None,
    preset: str = "default",
    label: str | None = None,
    channel: int | None = None,
    dataset_json: str | None = None,
    file_ending: str | None = None,
    nested_folds: int | None = None,
    seed: int | None = None,
    num_processes: int = 1,
    progress: bool = False,
    output: str | os.PathLike | None = None,
    removal_connectivity: int | str | None = None,
    overwrite: bool = False,
) -> dict:
    """Choose (threshold, minimum size) per label or region by ``criterion`` (see the package docstring);
    returns the JSON record: per target the point, its optimistic and nested estimates and the whole grid.
    ``output``: the file the caller writes the record to; before any case is read it is checked to be none of
    the files the choice reads (:func:`~.inputs.check_choice_output`) and its folder made and checked writable
    (an existing file only with ``overwrite``). ``nested_folds`` (default 5) and ``seed`` (default 0) deal a
    plain folder into folds; a results folder has nnU-Net's folds, and either given with one is refused.

    Lesions are counted as ``evaluate`` counts them under ``settings`` (default: the default preset's); the
    minimum-size removal is at ``removal_connectivity``, by default Joshi's 18 (its plane restriction in 2D) for
    the Dice criterion and the settings' connectivity for the lesion criteria. The record holds both: its
    ``settings`` (evaluate's, to count the lesions of the masks apply-threshold writes) and its ``connectivity``
    (of the removal, which apply-threshold repeats)."""
    check_criterion(criterion, max_fp_per_case)
    if nested_folds is not None and nested_folds < 2:
        raise ValueError(f"--nested-folds must be >= 2, got {nested_folds}")
    settings = settings or EvaluationSettings()
    # Joshi's 18-connectivity is the dice criterion's default removal in 3D; a 2D dataset gets its plane restriction
    joshi_connectivity = criterion == "dice" and removal_connectivity is None
    removal = settings.connectivity if removal_connectivity is None else removal_connectivity
    if thresholds is None:
        thresholds = DICE_THRESHOLDS if criterion == "dice" else LESION_THRESHOLDS
    if min_sizes is None:
        min_sizes = (0,) if criterion == "dice" else LESION_MIN_SIZES
    thresholds, min_sizes = check_grid(thresholds, min_sizes)

    if is_results_folder(probabilities):
        ignored = [
            option for option, value in (("--nested-folds", nested_folds), ("--seed", seed)) if value is not None
        ]
        if ignored:
            raise ValueError(
                "; ".join(
                    f"{option} has no effect on a results folder (its folds are nnU-Net's fold_*/validation): "
                    "leave it out"
                    for option in ignored
                )
            )
    nested_folds = DEFAULT_NESTED_FOLDS if nested_folds is None else nested_folds
    seed = 0 if seed is None else seed
    inputs = plan_inputs(probabilities, gt_dir, dataset_json, file_ending)
    if output is not None:
        check_choice_output(output, inputs)
        io.prepare_output_dir(Path(output).parent, [Path(output).name], overwrite)
    targets = probability_targets(inputs.dataset, label, channel)
    ignore = (inputs.dataset or {}).get("labels", {}).get("ignore")
    allowed = None if inputs.dataset is None else io.allowed_label_values(inputs.dataset)
    if joshi_connectivity and inputs.references:
        first_reference = inputs.references[min(inputs.references)]
        ndim = io.read_label_image(first_reference).array.ndim
        removal = REMOVAL_CONNECTIVITY.get(ndim, "full")
    jobs = [
        (
            case,
            inputs.probabilities[case],
            inputs.references[case],
            targets,
            ignore,
            allowed,
            settings,
            removal,
            thresholds,
            min_sizes,
        )
        for case in sorted(inputs.references)
    ]
    if not jobs:
        raise FileNotFoundError(
            f"no case has both probabilities in {inputs.source} and a reference in {inputs.gt_dir}"
            + "".join(f"\n  {f['case']}: {f['reason']}" for f in inputs.failures[:10])
        )
    results = run_parallel(case_counts, [(job,) for job in jobs], num_processes, progress)
    failures = list(inputs.failures)
    cases, per_target = [], {t.key: [] for t in targets}
    for case, result in results:
        if isinstance(result, str):
            failures.append({"fold": inputs.fold_of.get(case), "case": case, "reason": result})
            continue
        cases.append(case)
        for key, counts in result.items():
            per_target[key].append(counts)
    if not cases:
        raise CaseError(
            f"no case could be used ({len(failures)} failed): "
            + "; ".join(f"{f['case']}: {f['reason']}" for f in failures[:3])
        )

    if inputs.layout == "cross-validation":
        fold_of = {case: inputs.fold_of[case] for case in cases}
        fold_source = f"the fold_*/validation folders of {inputs.source}"
    else:
        k = min(nested_folds, len(cases))
        fold_of = assign_folds(cases, k, seed)
        fold_source = f"{k} folds of the cases drawn with seed {seed} (a folder has no folds of its own)"
    fold_names = sorted(set(fold_of.values()))
    folds = [np.array([i for i, case in enumerate(cases) if fold_of[case] == f]) for f in fold_names]

    record_targets = {}
    for target in targets:
        counts = np.stack(per_target[target.key])
        record_targets[target.key] = _target_record(
            target, counts, folds, fold_names, criterion, thresholds, min_sizes, max_fp_per_case, settings
        )
    record = {
        "format": FORMAT,
        "criterion": criterion,
        "max_fp_per_case": max_fp_per_case,
        "definitions": DEFINITIONS,
        "selection": "the best value of the criterion; ties (to 12 digits) go to fewer false positives per case "
        "(lesion criteria), then to the lowest threshold, then to the smallest minimum size",
        "thresholds": list(thresholds),
        "min_sizes_voxels": list(min_sizes),
        "connectivity": removal,  # of the minimum-size removal (apply-threshold repeats it)
        "preset": preset,
        "settings": settings.to_dict(),
        "probability_mapping": {
            "label": None if label is None else str(label),
            "channel": channel,
            "dataset_labels": None if inputs.dataset is None else inputs.dataset.get("labels"),
            "regions_class_order": None if inputs.dataset is None else inputs.dataset.get("regions_class_order"),
        },
        "targets": record_targets,
        "n_cases": len(cases),
        "cases": cases,
        "folds": {str(f): [case for case in cases if fold_of[case] == f] for f in fold_names},
        "fold_source": fold_source,
        "n_failed": len(failures),
        "failures": failures,
        "unused_references": inputs.unused_references,
        "inputs": {
            "probabilities": str(inputs.source.resolve()),
            "layout": inputs.layout,
            "gt": str(inputs.gt_dir.resolve()),
            "dataset_json": None if inputs.dataset_json is None else str(Path(inputs.dataset_json).resolve()),
            "file_ending": inputs.file_ending,
        },
    }
    if len(targets) == 1:  # the keys of the single-threshold version of this command, for scripts that read them
        only = next(iter(record_targets.values()))
        record["best_threshold"] = only["threshold"]
        record["min_voxels"] = only["min_size_voxels"]
    return record


def check_criterion(criterion: str, max_fp_per_case: float | None) -> None:
    """The criterion is one of :data:`CRITERIA`; the false-positive limit is given with the sensitivity
    criterion (a finite number >= 0) and only with it. ValueError naming the options otherwise."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    if criterion == "sensitivity":
        if max_fp_per_case is None or not max_fp_per_case >= 0 or max_fp_per_case == float("inf"):
            raise ValueError("--criterion sensitivity needs --max-fp-per-case N (a finite number N >= 0)")
    elif max_fp_per_case is not None:
        raise ValueError(
            f"--max-fp-per-case has no effect with --criterion {criterion} (it limits the sensitivity criterion): "
            "leave it out"
        )


def _target_record(
    target: ProbabilityTarget,
    counts: np.ndarray,
    folds: list[np.ndarray],
    fold_names: list,
    criterion: str,
    thresholds: tuple[float, ...],
    min_sizes: tuple[int, ...],
    max_fp_per_case: float | None,
    settings: EvaluationSettings,
) -> dict:
    """The record of one label or region: its chosen point, both estimates and every criterion's grid."""
    grid = measure(counts, settings.f1_both_empty)
    choice = select(grid, criterion, max_fp_per_case)
    if choice is None:
        raise CaseError(
            f"{criterion} is undefined at every grid point for {target.name} on these {counts.shape[0]} cases "
            "(e.g. no reference lesion for a sensitivity)"
        )
    ti, mi = choice.threshold_index, choice.size_index
    record = {
        "name": target.name,
        "probability": target.describe(),
        "channel": target.channel,
        "reference_labels": None if target.reference_values is None else list(target.reference_values),
        "output_label": target.output_label,
        "threshold": float(thresholds[ti]),
        "min_size_voxels": int(min_sizes[mi]),
        "optimistic": metrics_at(grid, (ti, mi)),
    }
    if choice.constraint_met is not None:
        record["constraint_met"] = choice.constraint_met
    record["nested"] = (
        nested_estimate(
            counts, folds, fold_names, criterion, thresholds, min_sizes, max_fp_per_case, settings.f1_both_empty
        )
        if len(folds) > 1
        else None
    )
    record["grid"] = {
        name: np.asarray(grid[name]).tolist()
        for name in ("dice", "lesion_f1", "sensitivity", "precision", "fp_per_case")
    }
    return record
