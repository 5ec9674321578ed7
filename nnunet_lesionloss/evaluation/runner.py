"""Folder-level driver behind ``nnunet-lesionloss evaluate``: pairing, labels, outputs, presets.

Order of work (so that a bad input or output path costs nothing and loses nothing): read the labels
and list the files (an input that cannot work is refused with the reason), check that the output
folder can be created and written, evaluate every case (a bad case is reported, the others go on),
then write the outputs, each atomically, ``summary.json`` last.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.brats import brats_outputs, write_brats_summary_csv
from nnunet_lesionloss.evaluation.evaluate import CaseResult, LabelSpec, build_summary, evaluate_case, evaluate_pairs
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, Preset, get_preset
from nnunet_lesionloss.evaluation.summary_report import SUMMARY_FILES, write_outputs

BRATS_FILES = ("brats_metrics.json", "brats_summary.csv")


def resolve_labels(
    preset: Preset, dataset_json: str | None, gt_dir: Path, labels: Sequence[int] | None
) -> tuple[LabelSpec, dict | None, str | None]:
    """Which labels/regions to evaluate: preset regions, else --labels, else dataset.json, else all found.

    Returns the spec, the dataset.json content (or None) and its path. ``--labels`` naming a label
    that dataset.json does not have, or given with a preset that fixes its regions, is an error.
    """
    dataset = None
    if dataset_json is None and (gt_dir.parent / "dataset.json").is_file():
        dataset_json = str(gt_dir.parent / "dataset.json")
    if dataset_json is not None:
        dataset = io.read_dataset_json(dataset_json)
    if preset.regions is not None:
        if labels:
            raise ValueError(
                f"--labels cannot be combined with --preset {preset.name}: the preset evaluates its own regions "
                f"({', '.join(f'{k}={list(v)}' for k, v in preset.regions.items())})"
            )
        allowed = {0} | {v for values in preset.regions.values() for v in values}
        return LabelSpec.from_regions(preset.regions, allowed), dataset, dataset_json
    if labels:
        not_foreground = sorted({int(v) for v in labels if int(v) < 1})
        if not_foreground:
            raise ValueError(
                f"--labels {' '.join(map(str, not_foreground))}: labels to evaluate are foreground labels >= 1 "
                "(0 is the background; a label map holds no negative label)"
            )
        spec = LabelSpec(groups={str(v): (int(v),) for v in labels}, allowed=None)
        if dataset is not None:
            full = LabelSpec.from_dataset_json(dataset)
            known = {v for values in io.labels_from_dataset_json(dataset).values() for v in values}
            absent = sorted(int(v) for v in labels if int(v) not in known)
            if absent:
                listed = ", ".join(
                    f"{name} {list(v) if len(v) > 1 else v[0]}"
                    for name, v in io.labels_from_dataset_json(dataset).items()
                )
                raise ValueError(
                    f"--labels {' '.join(map(str, absent))}: {dataset_json} has no such label (its labels: {listed})"
                )
            spec.allowed, spec.ignore_label = full.allowed, full.ignore_label
            spec.names = {k: full.names.get(k, k) for k in spec.groups}
        return spec, dataset, dataset_json
    if dataset is not None:
        return LabelSpec.from_dataset_json(dataset), dataset, dataset_json
    return LabelSpec(groups=None), None, None


@dataclass
class PairPlan:
    """What will be evaluated: (case, reference, prediction) triples, cases that fail before reading
    any image (case -> reason), and predictions that no reference claims."""

    pairs: list[tuple[str, Path, Path | None]]
    failed: dict[str, str] = field(default_factory=dict)
    ignored_predictions: list[str] = field(default_factory=list)
    references: dict[str, Path | None] = field(default_factory=dict)  # None: several files (ambiguous)


def plan_pairs(
    gt_dir: Path,
    pred_dir: Path,
    file_ending: str | None,
    pairing: str,
    cases: Sequence[str] | None = None,
    ending_source: str = "dataset.json",
) -> PairPlan:
    """List and pair the files; every case that cannot be evaluated gets its reason here."""
    references = io.list_images(gt_dir, file_ending)
    if not references:
        raise FileNotFoundError(
            f"no reference images in {gt_dir}"
            + (f" ending in {file_ending}" if file_ending else "")
            + io.ending_mismatch_hint(gt_dir, file_ending, ending_source)
        )
    predictions = io.list_images(pred_dir, file_ending)
    pred_hint = io.ending_mismatch_hint(pred_dir, file_ending, ending_source)
    if not predictions and pred_hint:
        raise FileNotFoundError(f"no prediction images in {pred_dir} ending in {file_ending}{pred_hint}")
    failed: dict[str, str] = {}
    ambiguous = {case: io.ambiguity_reason(case, paths, "reference") for case, paths in references.ambiguous.items()}
    selected = references
    if cases is not None:
        selected = {case: references[case] for case in cases if case in references}
        for case in cases:
            if case in ambiguous:
                failed[case] = ambiguous[case]
            elif case not in references:
                failed[case] = f"no reference for case {case} in {gt_dir}" + (
                    f" (no {case}{file_ending})" if file_ending else ""
                )
    else:
        failed.update(ambiguous)
    candidates = predictions
    if pairing == "brats":  # names differ from the references' anyway: every file is a candidate
        candidates = {**predictions, **{str(p): p for paths in predictions.ambiguous.values() for p in paths}}
    pairs = []
    for case, reference, prediction in io.pair_cases(selected, candidates, pairing):
        if isinstance(prediction, io.AmbiguousPrediction):
            failed[case] = str(prediction)
            continue
        if prediction is None and case in predictions.ambiguous:
            failed[case] = io.ambiguity_reason(case, predictions.ambiguous[case], "prediction")
            continue
        if prediction is None:
            if pairing == "brats":
                subject = io.brats_subject_id(reference.name)
                reason = f"missing prediction for case {case}: no file in {pred_dir} ends in {subject}"
                reason += reference.name[len(case) :]
            else:
                reason = f"missing prediction for case {case}: no {reference.name} in {pred_dir}"
            failed[case] = reason + pred_hint
            continue
        pairs.append((case, reference, prediction))
    paired = {str(p) for _, _, p in pairs}
    ignored = sorted(name for name, path in predictions.items() if str(path) not in paired)
    ignored += sorted(case for case in predictions.ambiguous if case not in failed and case not in references)
    order: dict[str, Path | None] = dict(references)
    order.update(dict.fromkeys(references.ambiguous))  # a case without one reference file: no file to record
    return PairPlan(pairs=pairs, failed=failed, ignored_predictions=ignored, references=dict(sorted(order.items())))


def reference_record(gt_dir: Path, results: list[CaseResult]) -> dict:
    """The reference folder (absolute) and the SHA-256 of every reference file read: what ``compare``
    checks to refuse runs evaluated against different references (the same files in another folder,
    e.g. labelsTr and gt_segmentations, are the same references)."""
    checksums = {}
    for r in results:
        if r.reference_file and os.path.isfile(r.reference_file):
            checksums[r.case] = io.file_checksum(r.reference_file)
    return {"reference_folder": str(Path(gt_dir).resolve()), "reference_checksums": checksums}


def input_fingerprints(plan: PairPlan, results: list[CaseResult]) -> dict:
    """Case -> (size, mtime) of its reference and prediction: what a later run compares to decide
    whether these results still describe the files (see ``cv.load_fold_evaluation``)."""
    return {
        r.case: {
            "reference": io.file_fingerprint(r.reference_file) if r.reference_file else None,
            "prediction": io.file_fingerprint(r.prediction_file) if r.prediction_file else None,
        }
        for r in results
    }


def evaluate_folders(
    gt_dir,
    pred_dir,
    output_dir=None,
    settings: EvaluationSettings | None = None,
    preset: Preset | str = "default",
    dataset_json: str | None = None,
    labels: Sequence[int] | None = None,
    file_ending: str | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    write: bool = True,
    cases: Sequence[str] | None = None,
    return_results: bool = False,
    check_panoptica: bool = False,
    pairing: str | None = None,
):
    """Evaluate every reference case of ``gt_dir`` (or only ``cases``) against ``pred_dir``; write outputs.

    Returns the summary, or (summary, case results) with ``return_results``. Cases that cannot be
    evaluated (missing prediction or reference, unreadable file, mismatch) are results with an error.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = settings or preset.settings
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "reference"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    if gt_dir.resolve() == pred_dir.resolve():
        raise ValueError(f"--gt and --pred are the same folder ({gt_dir}): a folder evaluated against itself")
    # nnU-Net writes its own summary.json into validation folders: never share a folder with it by default
    output_dir = Path(output_dir) if output_dir else pred_dir / "lesion_evaluation"
    if write:
        io.check_output_apart(output_dir, {"--gt": gt_dir, "--pred": pred_dir})
    label_spec, dataset, dataset_path = resolve_labels(preset, dataset_json, gt_dir, labels)
    ending_source = "--file-ending"
    if file_ending is None and dataset is not None:
        file_ending = dataset.get("file_ending")
        ending_source = f"dataset.json ({dataset_path})"
    pairing = pairing or ("brats" if preset.brats_outputs else "name")
    plan = plan_pairs(gt_dir, pred_dir, file_ending, pairing, cases, ending_source)
    if write:  # fail before the work, not after it
        names = SUMMARY_FILES + (BRATS_FILES if preset.brats_outputs else ())
        io.prepare_output_dir(output_dir, names, overwrite, marker="summary.json")
    evaluated = evaluate_pairs(
        plan.pairs,
        label_spec,
        settings,
        num_processes,
        keep_lesions=preset.brats_outputs,
        progress=progress,
        check_panoptica=check_panoptica,
        lesion_table=write,
    )
    if label_spec.groups is None:
        evaluated = complete_label_sets(
            evaluated, label_spec, settings, keep_lesions=preset.brats_outputs, lesion_table=write
        )
    results = _in_reference_order(plan, evaluated, cases)
    extra = {
        "ignored_predictions": plan.ignored_predictions,
        "inputs": input_fingerprints(plan, results),
        "gt_dir": str(gt_dir),
        "pred_dir": str(pred_dir),
        "pairing": pairing,
        **reference_record(gt_dir, results),
    }
    if not write:
        summary = build_summary(results, settings, label_spec, preset.name, extra)
    else:
        if preset.brats_outputs:  # summary.json (the marker of a complete output) goes first, comes back last
            (output_dir / "summary.json").unlink(missing_ok=True)
            metrics, (header, rows) = brats_outputs(results, settings, list(preset.regions))
            io.write_json(output_dir / BRATS_FILES[0], metrics, overwrite=True)
            io.atomic_write(output_dir / BRATS_FILES[1], lambda t: write_brats_summary_csv(t, header, rows))
        summary = write_outputs(output_dir, results, settings, label_spec, preset.name, overwrite, extra)
    return (summary, results) if return_results else summary


def complete_label_sets(
    results: list[CaseResult], labels: LabelSpec, settings: EvaluationSettings, **options
) -> list[CaseResult]:
    """Without a list of labels (no dataset.json, no --labels) each case was evaluated on the labels found in it;
    every label found in any case is a label of every case (a case without it has no lesion of it: no miss, no
    false positive, and it counts in that label's means). Cases lacking a label are evaluated again on the
    missing labels only; a case that found nothing evaluated label 1 as a stand-in, which is dropped when label
    1 is found nowhere."""
    found = {key for r in results if not r.error and r.found_labels for key in r.found_labels}
    if not found:
        return results
    completed = []
    for result in results:
        if result.error:
            completed.append(result)
            continue
        for key in [k for k in result.metrics if k not in found]:  # the stand-in of an empty case
            result.metrics.pop(key)
            result.undefined.pop(key, None)
            result.reference_lesions.pop(key, None)
            result.lesion_rows = [row for row in result.lesion_rows if str(row[1]) != key]
        missing = sorted(found - set(result.metrics), key=int)
        if missing:
            spec = LabelSpec(groups={key: (int(key),) for key in missing}, allowed=labels.allowed)
            extra = evaluate_case(result.case, result.reference_file, result.prediction_file, spec, settings, **options)
            if extra.error:
                result.error = extra.error
            result.metrics.update(extra.metrics)
            result.undefined.update(extra.undefined)
            result.reference_lesions.update(extra.reference_lesions)
            result.lesion_rows += extra.lesion_rows
            result.metrics = {key: result.metrics[key] for key in sorted(result.metrics, key=int)}
        completed.append(result)
    return completed


def _in_reference_order(plan: PairPlan, evaluated: list[CaseResult], cases: Sequence[str] | None) -> list[CaseResult]:
    by_case = {r.case: r for r in evaluated}
    for case, reason in plan.failed.items():
        reference = plan.references.get(case)
        by_case[case] = CaseResult(case, "" if reference is None else str(reference), None, error=reason)
    order = list(cases) if cases is not None else list(plan.references)
    return [by_case[case] for case in order if case in by_case]
