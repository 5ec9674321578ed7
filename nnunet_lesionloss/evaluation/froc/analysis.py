"""The FROC analysis of cases and folders: one job per case (its reference, its nnU-Net ``.npz``), read and
matched per label or region (:func:`analyse_case_files`), run in parallel (evaluation/parallel.py), summarised
into froc.json's content (:func:`analyse`) and written (report.py); :func:`froc_folders` is the ``froc``
command's analysis of a probability folder against a reference folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.froc.curves import summarise
from nnunet_lesionloss.evaluation.froc.matching import FrocCase, match_probability
from nnunet_lesionloss.evaluation.froc.report import write_froc_outputs
from nnunet_lesionloss.evaluation.froc.settings import FROC_MARKER, FrocSettings, label_files, output_names
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.parallel import run_parallel, unexpected_error_reason
from nnunet_lesionloss.evaluation.probabilities import ProbabilityChannels, read_case_probabilities
from nnunet_lesionloss.evaluation.runner import resolve_labels
from nnunet_lesionloss.evaluation.settings import get_preset


@dataclass
class FrocJob:
    """One case: its reference, its ``.npz`` (None when missing) and the fold it was validated in."""

    case: str
    reference: Path | None
    probabilities: Path | None
    fold: int | None = None
    missing_reason: str | None = None


@dataclass
class FrocInputs:
    """What every case needs besides its files: the labels or regions, the channels and the settings."""

    groups: dict[str, tuple[int, ...]]
    names: dict[str, str]
    channels: ProbabilityChannels
    settings: FrocSettings
    ignore_label: int | None = None
    #: the values a reference may hold (dataset.json's labels, the ignore label; :func:`io.check_label_values`)
    allowed: set[int] | None = None


def analyse_case_files(job: FrocJob, inputs: FrocInputs) -> tuple[dict[str, FrocCase] | None, str | None]:
    """Per label or region key, the case's :class:`FrocCase`; or (None, the reason it could not be analysed)."""
    try:
        if job.reference is None or job.probabilities is None:
            raise CaseError(job.missing_reason or f"missing input for case {job.case}")
        reference = io.read_label_image(job.reference)
        labels = io.as_integer_labels(reference)
        # the one rule: a value dataset.json does not list fails the case (its lesions are never dropped)
        io.check_label_values(io.present_values(labels), inputs.allowed, "reference")
        probabilities = read_case_probabilities(job.probabilities, reference, inputs.channels)
        valid = None if inputs.ignore_label is None else labels != inputs.ignore_label
        out = {}
        for key, values in inputs.groups.items():
            probability = inputs.channels.probability(probabilities, values)
            reference_mask = np.isin(labels, values) if len(values) > 1 else labels == values[0]
            if valid is not None:  # nnU-Net's ignore label: those voxels count for nothing
                reference_mask &= valid
                probability = np.where(valid, probability, 0)
            froc_case = match_probability(probability, reference_mask, inputs.settings, job.case, reference.spacing)
            froc_case.fold = job.fold
            out[key] = froc_case
        return out, None
    except CaseError as error:
        return None, str(error)
    except Exception as error:  # keep the other cases going, but say where it broke
        return None, unexpected_error_reason(error)


def run_jobs(jobs: list[FrocJob], inputs: FrocInputs, num_processes: int = 1, progress: bool = True):
    """[(job, FrocCase per label key or None, error or None)] in the order of ``jobs``; in parallel with
    ``num_processes``."""
    arguments = [(job, inputs) for job in jobs]
    results = run_parallel(analyse_case_files, arguments, num_processes, progress, desc="FROC analysis")
    return [(job, by_key, error) for job, (by_key, error) in zip(jobs, results)]


def analyse(results, inputs: FrocInputs, per_fold: bool = False, ignored: Sequence[str] = ()) -> dict:
    """froc.json's content: per label key, the summary, its failed cases, the probabilities no reference claims
    (``ignored``: listed, as evaluate lists its ``ignored_predictions``) and the settings."""
    failures = [{"case": job.case, "fold": job.fold, "reason": error} for job, _, error in results if error is not None]
    settings = inputs.settings
    out = {}
    for key in inputs.groups:
        cases = [by_key[key] for _, by_key, error in results if error is None]
        summary, _ = summarise(cases, settings)
        entry = {"name": inputs.names.get(key, key), **summary}
        if per_fold:
            folds = sorted({c.fold for c in cases if c.fold is not None})
            quick = settings.replace(bootstrap_resamples=0)
            entry["per_fold"] = {}
            for fold in folds:
                fold_summary, _ = summarise([c for c in cases if c.fold == fold], quick)
                entry["per_fold"][str(fold)] = {
                    name: fold_summary[name] for name in ("ap", "cpm", "sensitivity_at_fp", "n_cases", "n_lesions")
                }
        entry["n_failed"] = len(failures)
        entry["failed_cases"] = failures
        entry["ignored_predictions"] = list(ignored)
        entry["settings"] = settings.to_dict()
        entry["files"] = label_files(key)
        out[key] = entry
    return out


def analyse_and_write(
    jobs: list[FrocJob],
    inputs: FrocInputs,
    output_dir: Path,
    num_processes: int = 1,
    progress: bool = True,
    per_fold: bool = False,
    ignored: Sequence[str] = (),
) -> dict:
    """Run the jobs, summarise them (:func:`analyse`) and write every file (froc.json last); returns froc.json's
    content. ``ignored``: the probability files no reference claims (recorded, never analysed)."""
    results = run_jobs(jobs, inputs, num_processes, progress)
    return write_froc_outputs(output_dir, results, analyse(results, inputs, per_fold, ignored), inputs.settings)


def froc_folders(
    prob_dir,
    gt_dir,
    output_dir,
    settings: FrocSettings | None = None,
    dataset_json: str | None = None,
    labels: Sequence[int] | None = None,
    file_ending: str | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """``nnunet-lesionloss froc``: every reference of ``gt_dir`` against ``<case>.npz`` of ``prob_dir``.

    dataset.json (labels or regions, file ending) is ``dataset_json``, else the one nnU-Net writes into
    prediction folders (``prob_dir/dataset.json``), else ``gt_dir/../dataset.json``. A reference without
    probabilities, or one that cannot be read or does not match, is a failed case, listed by name; probabilities
    without a reference are listed under ``ignored_predictions`` of every label (the command notes them too).
    """
    settings = settings or FrocSettings()
    prob_dir, gt_dir = Path(prob_dir), Path(gt_dir)
    for folder, what in ((prob_dir, "probability"), (gt_dir, "reference")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    io.check_output_apart(output_dir, {"--probabilities": prob_dir, "--gt": gt_dir})
    if dataset_json is None:
        for candidate in (prob_dir / "dataset.json", gt_dir.parent / "dataset.json"):
            if candidate.is_file():
                dataset_json = str(candidate)
                break
        else:
            raise FileNotFoundError(
                f"no dataset.json in {prob_dir} or {gt_dir.parent}: pass --dataset-json (its labels or regions say "
                "which probability channel is which)"
            )
    spec, dataset, _ = resolve_labels(get_preset("default"), dataset_json, gt_dir, labels)
    file_ending = file_ending or dataset.get("file_ending")
    references = io.list_references(gt_dir, file_ending, f"dataset.json ({dataset_json})")
    available = {p.name[:-4]: p for p in sorted(prob_dir.glob("*.npz")) if not p.name.startswith(".")}
    if not available:
        raise FileNotFoundError(
            f"no .npz probability files in {prob_dir} (nnUNetv2_predict --save_probabilities, nnUNetv2_train --npz)"
        )
    jobs = [
        FrocJob(case, path, available.get(case), missing_reason=f"no probabilities {case}.npz in {prob_dir}")
        for case, path in references.items()
    ]
    inputs = FrocInputs(
        groups=dict(spec.groups),
        names=dict(spec.names),
        channels=ProbabilityChannels.from_dataset_json(dataset, dataset_json),
        settings=settings,
        ignore_label=spec.ignore_label,
        allowed=spec.allowed,
    )
    inputs.channels.check_groups(inputs.groups)
    io.prepare_output_dir(output_dir, output_names(list(inputs.groups)), overwrite, marker=FROC_MARKER)
    ignored = sorted(set(available) - set(references))
    return analyse_and_write(jobs, inputs, Path(output_dir), num_processes, progress, ignored=ignored)
