"""The cases a choice is made on: :func:`plan_inputs` lists the validation probabilities of a results folder
(``fold_*/validation/*.npz``, with their folds) or of a plain folder of ``.npz`` and pairs them with the
references; :func:`assign_folds` deals a plain folder into folds; :func:`read_target_probabilities` is the
one place the operating point reads nnU-Net's probabilities (a ``.npz`` and the channel of each label or
region); :func:`case_counts` is the work on one case (its grid counts for every target), run in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import cv, io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.operating_point.grid import grid_counts
from nnunet_lesionloss.evaluation.probabilities import (
    ProbabilityTarget,
    check_geometry,
    foreground_probability,
    list_probability_files,
    load_probabilities,
    read_properties,
)

__all__ = [
    "ChoiceInputs",
    "assign_folds",
    "case_counts",
    "check_choice_output",
    "dataset_json_places",
    "is_results_folder",
    "find_dataset_json",
    "plan_inputs",
    "read_target_probabilities",
]


@dataclass
class ChoiceInputs:
    """The cases a choice is made on: probabilities, references and folds, and what could not be used."""

    source: Path
    layout: str  # "cross-validation" (fold_*/validation) or "folder"
    gt_dir: Path
    probabilities: dict[str, Path]  # case -> .npz
    references: dict[str, Path]  # case -> reference image
    fold_of: dict[str, int] = field(default_factory=dict)  # cross-validation layout: the fold of each case
    failures: list[dict] = field(default_factory=list)  # {"fold", "case", "reason"}
    unused_references: list[str] = field(default_factory=list)
    dataset: dict | None = None
    dataset_json: str | None = None
    file_ending: str = ".nii.gz"
    splits_file: Path | None = None  # cross-validation layout: the splits_final.json that names each fold's cases


def find_dataset_json(candidates: Sequence[Path]) -> str | None:
    """The first of ``candidates`` that is a file (None: none is)."""
    return next((str(c) for c in candidates if c.is_file()), None)


def is_results_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is an nnU-Net results folder (it has fold_*/validation), not a folder of ``.npz``."""
    return any(p.is_dir() for p in Path(folder).glob(cv.FOLDS_READ))


def dataset_json_places(source: Path, gt_dir: Path) -> list[Path]:
    """Where choose-threshold looks for dataset.json, first found first: the probability folder, its results
    folder (for one fold's validation folder), the reference folder's parent."""
    places = [source / "dataset.json", gt_dir.parent / "dataset.json"]
    if source.name == "validation" and source.parent.name.startswith("fold_"):  # one fold of a results folder
        places.insert(1, source.parent.parent / "dataset.json")
    return places


def check_choice_output(output: str | os.PathLike, inputs: ChoiceInputs) -> None:
    """The file choose-threshold writes (``-o``) is none of the files it reads, now or on its next run: not a
    dataset.json or splits_final.json it reads or would find, not a ``.npz``, ``.pkl`` or image in a folder it
    lists (the probability folder or RESULTS/fold_*/validation, the reference folder). ValueError otherwise."""
    probability_files = (".npz", ".pkl", *io.SUPPORTED_ENDINGS)
    files: dict[str, Path | str | None] = {
        f"dataset.json ({place})": place for place in dataset_json_places(inputs.source, inputs.gt_dir)
    }
    files["--dataset-json"] = inputs.dataset_json
    files["splits_final.json"] = inputs.splits_file
    folders = {"--gt": (inputs.gt_dir, io.SUPPORTED_ENDINGS)}
    if inputs.layout == "cross-validation":
        found_below = {"--probabilities": (inputs.source, [cv.FOLDS_READ], probability_files)}
        io.check_output_file_apart(output, files, folders, found_below)
    else:
        folders["--probabilities"] = (inputs.source, probability_files)
        io.check_output_file_apart(output, files, folders)


def plan_inputs(
    probabilities: str | os.PathLike,
    gt_dir: str | os.PathLike | None = None,
    dataset_json: str | None = None,
    file_ending: str | None = None,
) -> ChoiceInputs:
    """List the cases of a cross-validation folder (``fold_*/validation/*.npz``) or of a plain folder of
    ``.npz``, pair them with the references, and find dataset.json; every case that cannot be used is a
    failure with its reason."""
    source = Path(probabilities)
    if not source.is_dir():
        raise FileNotFoundError(f"folder not found: {source}")
    is_cv = is_results_folder(source)
    if gt_dir is None:
        if not is_cv:
            raise ValueError("--gt is required for a folder of probabilities (it is found for a results folder)")
        gt_dir = cv.default_gt_dir(source)
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"reference folder not found: {gt_dir}")
    if dataset_json is None:
        dataset_json = find_dataset_json(dataset_json_places(source, gt_dir))
    dataset = io.read_dataset_json(dataset_json) if dataset_json else None
    file_ending = file_ending or (dataset or {}).get("file_ending") or ".nii.gz"
    references = io.list_images(gt_dir, file_ending)
    if not references:
        raise FileNotFoundError(f"no reference images ending in {file_ending} in {gt_dir}")
    inputs = ChoiceInputs(
        source,
        "cross-validation" if is_cv else "folder",
        gt_dir,
        {},
        {},
        dataset=dataset,
        dataset_json=dataset_json,
        file_ending=file_ending,
    )
    if is_cv:
        splits_file = inputs.splits_file = cv.find_splits_file(gt_dir, source)
        for fold in cv.find_folds(source, None):
            validation = source / f"fold_{fold}" / "validation"
            npz = {p.name[:-4]: p for p in sorted(validation.glob("*.npz")) if not p.name.startswith(".")}
            present = sorted(set(npz) | set(io.list_images(validation, file_ending)))
            expected = cv.validation_cases(gt_dir, fold, present, splits_file) if splits_file else present
            for case in expected:
                if case not in npz:
                    reason = f"no {case}.npz in {validation} (train with --npz, or run nnUNetv2_train ... --val --npz)"
                elif case in inputs.fold_of:
                    reason = f"probabilities in fold {inputs.fold_of[case]} too (a case belongs to one fold)"
                else:
                    inputs.probabilities[case] = npz[case]
                    inputs.fold_of[case] = fold
                    continue
                inputs.failures.append({"fold": fold, "case": case, "reason": reason})
            for case in sorted(set(npz) - set(expected)):
                inputs.failures.append(
                    {"fold": fold, "case": case, "reason": f"not a validation case of fold {fold} in {splits_file}"}
                )
    else:
        inputs.probabilities = list_probability_files(source)
    for case in sorted(inputs.probabilities):
        if case in references:
            inputs.references[case] = references[case]
        else:
            inputs.failures.append(
                {
                    "fold": inputs.fold_of.get(case),
                    "case": case,
                    "reason": f"no reference {case}{file_ending} in {gt_dir}",
                }
            )
    inputs.unused_references = sorted(set(references) - set(inputs.probabilities))
    return inputs


def assign_folds(cases: Sequence[str], n_folds: int, seed: int) -> dict[str, int]:
    """Cases of a plain folder in ``n_folds`` folds: a permutation seeded with ``seed``, dealt round-robin."""
    order = np.random.default_rng(seed).permutation(len(cases))
    return {cases[index]: position % n_folds for position, index in enumerate(order)}


def read_target_probabilities(
    path: Path,
    targets: Sequence[ProbabilityTarget],
    reference: io.LabelImage | None = None,
    what: str = "the reference",
) -> tuple[np.ndarray, dict]:
    """(all channels, {target key: probability map}) of one ``.npz``; with the ``reference`` (or the template of
    apply-threshold: ``what`` names it), its geometry is checked first (shape, and the spacing, origin and
    direction of nnU-Net's ``.pkl``: ``check_geometry``)."""
    probabilities = load_probabilities(path)
    if reference is not None:
        probabilities = check_geometry(probabilities, reference, Path(path), read_properties(Path(path)), what)
    return probabilities, {target.key: foreground_probability(probabilities, target) for target in targets}


def case_counts(job: tuple) -> tuple[str, dict[str, np.ndarray] | str]:
    """Counts of one case for every target, or the reason it failed: (case, {target key: grid counts} or reason).

    ``job``: (case, .npz, reference file, targets, ignore label, allowed label values, settings, removal
    connectivity, thresholds, minimum sizes), one tuple so that :func:`~nnunet_lesionloss.evaluation.parallel.run_parallel` can send it to
    a process. A reference value outside ``allowed`` (dataset.json's) fails the case (:func:`io.check_label_values`),
    as it fails it in ``evaluate``: its lesions are never counted as missed."""
    case, npz, reference_file, targets, ignore_label, allowed, settings, removal, thresholds, min_sizes = job
    try:
        reference = io.read_label_image(reference_file)
        labels = io.as_integer_labels(reference)
        io.check_label_values(io.present_values(labels), allowed, "reference")
        _, maps = read_target_probabilities(npz, targets, reference)
        valid = None if ignore_label is None else labels != ignore_label
        out = {}
        for target in targets:
            probability = maps[target.key]
            if probability.shape != labels.shape:
                raise CaseError(
                    f"probabilities of shape {probability.shape} vs reference {labels.shape} ({reference_file})"
                )
            truth = labels > 0 if target.reference_values is None else np.isin(labels, target.reference_values)
            if valid is not None:  # nnU-Net's ignore label: those voxels count for nothing
                truth &= valid
                probability = np.where(valid, probability, 0)
            out[target.key] = grid_counts(
                probability, truth, reference.spacing, settings, thresholds, min_sizes, removal
            )
        return case, out
    except (CaseError, OSError, ValueError) as error:
        return case, str(error)
