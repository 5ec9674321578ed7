"""``cv-summary``: evaluate the fold_*/validation folders of one nnU-Net trainer and summarise them.

nnU-Net writes the validation predictions of fold f to
``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG/fold_f/validation``. References default to
``nnUNet_preprocessed/DatasetXXX/gt_segmentations`` (what nnU-Net's own validation uses), else
``nnUNet_raw/DatasetXXX/labelsTr``. Luu et al. 2026 (CATMIL) report the mean over folds of the fold
means; we report that, the std over folds, and the metrics pooled over all validation cases.

Nothing is dropped in silence: the cases of a fold are the validation cases of ``splits_final.json``
(a case without a prediction is a failure of that fold); without a splits file, the predicted cases,
and every reference that no evaluated fold predicted is reported too. Every failure is listed (fold,
case, reason) in ``cv_summary.json`` and on stderr.

Work is done in steps, each its own function: :func:`plan_cv` (folds, references, expected cases,
output files: everything that can be refused before any evaluation), then per fold either
:func:`load_fold_evaluation` (an existing, complete evaluation of the same files with the same
settings, e.g. of a run that was interrupted) or :func:`evaluate_fold`, then :func:`summarise_folds`;
:func:`cv_summary` runs them and has cv_report.py write the outputs (``cv_summary.json`` last: its
presence means the others are complete).
The trainers of this package write such a folder after nnU-Net's final validation
(``fold_X/validation/lesion_evaluation``, the ``lesion_validation.fold_evaluation`` preset): when
:func:`load_fold_evaluation` accepts it, cv-summary copies it instead of evaluating the fold again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.cv_report import CV_FILES, write_cv_outputs
from nnunet_lesionloss.evaluation.evaluate import CaseResult, aggregate
from nnunet_lesionloss.evaluation.froc.cross_validation import cv_froc_section
from nnunet_lesionloss.evaluation.lesion_table import LESION_FILE
from nnunet_lesionloss.evaluation.runner import evaluate_folders, resolve_labels
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, Preset, current_settings_record, get_preset
from nnunet_lesionloss.evaluation.summary_report import SUMMARY_FILES

DATASET_FOLDER = re.compile(r"^Dataset\d{3}_.+")
#: the source of a fold evaluation the trainer wrote after nnU-Net's final validation
TRAINING_EVALUATION = "reused the trainer's evaluation"


def dataset_name_of(results_dir: Path) -> str | None:
    for part in [results_dir.name, results_dir.parent.name]:
        if DATASET_FOLDER.match(part):
            return part
    return None


def default_gt_dir(results_dir: Path) -> Path:
    dataset = dataset_name_of(results_dir)
    candidates = []
    if dataset is not None:
        for variable, sub in (("nnUNet_preprocessed", "gt_segmentations"), ("nnUNet_raw", "labelsTr")):
            root = os.environ.get(variable)
            if root:
                candidates.append(Path(root) / dataset / sub)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates) or "nothing (set nnUNet_preprocessed or nnUNet_raw, or pass --gt)"
    raise FileNotFoundError(f"cannot find the references of {results_dir}; tried {tried}")


#: the folders below a results folder that cv-summary (and choose-threshold) read: an output there would be read back
FOLDS_READ = "fold_*/validation"
#: nnU-Net's fold folders: fold_<int> exactly (a copy such as fold_4_old is not fold 4)
FOLD_FOLDER = re.compile(r"^fold_(\d+)$")


def fold_folders(results_dir: Path) -> tuple[dict[int, Path], list[str]]:
    """fold number -> its folder (``fold_<int>`` exactly), and the names of other ``fold_*`` folders
    (backups, nnU-Net's ``fold_all``), which are not folds of the cross-validation."""
    folds, ignored = {}, []
    for path in sorted(results_dir.glob("fold_*")):
        if not path.is_dir():
            continue
        match = FOLD_FOLDER.match(path.name)
        if match:
            folds[int(match.group(1))] = path
        else:
            ignored.append(path.name)
    return folds, ignored


def find_folds(results_dir: Path, folds: Sequence[int] | None) -> list[int]:
    """The folds to evaluate: ``folds``, each with a validation folder, or every fold_<int> with one."""
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    found = sorted(f for f, path in fold_folders(results_dir)[0].items() if (path / "validation").is_dir())
    if folds is None:
        if not found:
            raise FileNotFoundError(
                f"no fold_*/validation folder in {results_dir} (train with nnUNetv2_train ... --npz, "
                "or run nnUNetv2_train --val)"
            )
        return found
    missing = [f for f in folds if f not in found]
    if missing:
        raise FileNotFoundError(f"no validation folder for folds {missing} in {results_dir}")
    return list(folds)


def find_splits_file(gt_dir: Path, results_dir: Path) -> Path | None:
    """nnU-Net's splits_final.json: beside gt_segmentations, else in nnUNet_preprocessed/<dataset>."""
    candidates = [gt_dir.parent / "splits_final.json"]
    dataset = dataset_name_of(results_dir)
    if dataset is not None and os.environ.get("nnUNet_preprocessed"):
        candidates.append(Path(os.environ["nnUNet_preprocessed"]) / dataset / "splits_final.json")
    return next((c for c in candidates if c.is_file()), None)


def read_splits(splits_file: Path) -> list[dict]:
    """nnU-Net's splits: one {"train": [...], "val": [...]} per fold; raises ValueError naming the file."""
    try:
        with open(splits_file) as handle:
            splits = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{splits_file} is not valid JSON: {error}") from None
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "val" in s for s in splits):
        raise ValueError(f"{splits_file} is not an nnU-Net splits file (a list of {{'train': [...], 'val': [...]}})")
    return splits


def validation_cases(gt_dir: Path, fold: int, predicted: list[str], splits_file: Path | None = None) -> list[str]:
    """The fold's validation cases from splits_final.json (default: beside gt_segmentations), else the predicted cases."""
    splits_file = splits_file or gt_dir.parent / "splits_final.json"
    if splits_file.is_file():
        splits = read_splits(splits_file)
        if fold < len(splits):
            return list(splits[fold]["val"])
    return predicted


def missing_folds(
    results_dir: Path, evaluated: Sequence[int], splits_file: Path | None
) -> dict[int, tuple[str, list[str]]]:
    """Folds of the cross-validation that have no validation folder: fold -> (reason, its validation
    cases). The folds are those of splits_final.json (its length), and every fold_<int> folder."""
    folders, _ = fold_folders(results_dir)
    splits = read_splits(splits_file) if splits_file is not None else []
    out = {}
    for fold in sorted(set(range(len(splits))) | set(folders)):
        if fold in evaluated:
            continue
        if fold in folders:
            reason = (
                f"fold {fold} has no validation folder ({folders[fold] / 'validation'}): its training did not "
                "finish, or nnUNetv2_train --val was not run"
            )
        else:
            reason = f"fold {fold} of the {len(splits)}-fold split ({splits_file}) has no folder {results_dir / f'fold_{fold}'}"
        cases = list(splits[fold]["val"]) if fold < len(splits) else []
        out[fold] = (reason, cases)
    return out


@dataclass
class CVPlan:
    results_dir: Path
    gt_dir: Path
    output_dir: Path
    folds: list[int]
    dataset_json: str | None
    file_ending: str | None
    splits_file: Path | None
    cases: dict[int, list[str]]  # fold -> cases it must evaluate
    references: dict[str, Path] = field(default_factory=dict)  # case -> reference file
    unassigned: list[str] = field(default_factory=list)  # references no evaluated fold predicted (no splits)
    folds_given: bool = False
    missing: dict[int, tuple[str, list[str]]] = field(default_factory=dict)  # fold -> (reason, its cases)
    ignored_folders: list[str] = field(default_factory=list)  # fold_* folders that are no fold (fold_4_old)


@dataclass
class FoldEvaluation:
    """One fold's evaluation: its summary (evaluate's summary.json) and its case results."""

    fold: int
    summary: dict
    results: list[CaseResult]
    source: str  # "evaluated", "reused <folder>", or TRAINING_EVALUATION + " <folder>"


def plan_cv(
    results_dir,
    gt_dir=None,
    output_dir=None,
    folds: Sequence[int] | None = None,
    dataset_json: str | None = None,
    overwrite: bool = False,
) -> CVPlan:
    """Everything that can be checked before evaluating: folds, references, splits, output folder."""
    results_dir = Path(results_dir)
    fold_ids = find_folds(results_dir, folds)
    gt_dir = Path(gt_dir) if gt_dir else default_gt_dir(results_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"reference folder not found: {gt_dir}")
    output_dir = Path(output_dir) if output_dir else results_dir / "lesion_evaluation"
    io.check_output_apart(output_dir, {"RESULTS_DIR": results_dir, "--gt": gt_dir}, {"RESULTS_DIR": [FOLDS_READ]})
    if dataset_json is None and (results_dir / "dataset.json").is_file():
        dataset_json = str(results_dir / "dataset.json")
    file_ending = io.read_dataset_json(dataset_json).get("file_ending") if dataset_json else None
    splits_file = find_splits_file(gt_dir, results_dir)
    references = io.list_images(gt_dir, file_ending)
    if not references:
        raise FileNotFoundError(
            f"no reference images in {gt_dir}"
            + (f" ending in {file_ending}" if file_ending else "")
            + io.ending_mismatch_hint(gt_dir, file_ending, f"dataset.json ({dataset_json})")
        )
    cases = {}
    predicted_anywhere: set[str] = set()
    for fold in fold_ids:
        predicted = list(io.list_images(results_dir / f"fold_{fold}" / "validation", file_ending))
        predicted_anywhere.update(predicted)
        cases[fold] = validation_cases(gt_dir, fold, predicted, splits_file) if splits_file else predicted
    unassigned = sorted(set(references) - predicted_anywhere) if splits_file is None else []
    missing = {} if folds is not None else missing_folds(results_dir, fold_ids, splits_file)
    io.prepare_output_dir(output_dir, CV_FILES, overwrite, marker="cv_summary.json")
    return CVPlan(
        results_dir=results_dir,
        gt_dir=gt_dir,
        output_dir=output_dir,
        folds=fold_ids,
        dataset_json=dataset_json,
        file_ending=file_ending,
        splits_file=splits_file,
        cases=cases,
        references=references,
        unassigned=unassigned,
        folds_given=folds is not None,
        missing=missing,
        ignored_folders=fold_folders(results_dir)[1],
    )


def current_fingerprints(plan: CVPlan, fold: int) -> dict:
    """Case -> fingerprints of the files a fresh evaluation of ``fold`` would read, in the layout of
    summary.json's ``inputs`` (None for a file that is absent or not read)."""
    predictions = io.list_images(plan.results_dir / f"fold_{fold}" / "validation", plan.file_ending)
    out = {}
    for case in plan.cases[fold]:
        reference = plan.references.get(case)
        prediction = predictions.get(case) if reference is not None else None
        out[case] = {
            "reference": None if reference is None else io.file_fingerprint(reference),
            "prediction": None if prediction is None else io.file_fingerprint(prediction),
        }
    return out


def fold_summary_difference(
    path: Path, *, settings: EvaluationSettings, preset: Preset, label_groups: dict | None, fingerprints: dict
) -> tuple[dict | None, str | None]:
    """(the summary at ``path``, None) when it is a complete evaluation of the same files with the same
    settings, preset and labels; else (the summary or None, why it is not: unreadable, or what differs)."""
    try:
        with open(path) as handle:
            summary = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        return None, f"cannot be read ({error})"
    if not isinstance(summary, dict):
        return None, "cannot be read (not a summary.json of nnunet-lesionloss evaluate)"
    differences = []
    recorded, current = current_settings_record(summary.get("settings")) or {}, settings.to_dict()
    changed = [key for key in {**recorded, **current} if recorded.get(key) != current.get(key)]
    if changed:
        differences.append(
            "settings "
            + ", ".join(f"{key} {json.dumps(recorded.get(key))} -> {json.dumps(current.get(key))}" for key in changed)
        )
    if summary.get("preset") != preset.name:
        differences.append(f"preset {summary.get('preset')} -> {preset.name}")
    if summary.get("label_groups") != label_groups:
        differences.append(f"labels {json.dumps(summary.get('label_groups'))} -> {json.dumps(label_groups)}")
    recorded_inputs = summary.get("inputs") or {}
    if recorded_inputs != fingerprints:
        cases = sorted(
            c for c in set(recorded_inputs) | set(fingerprints) if recorded_inputs.get(c) != fingerprints.get(c)
        )
        differences.append(
            f"files of {len(cases)} case(s) changed, added or removed since (e.g. {', '.join(cases[:3])})"
        )
    return summary, "; ".join(differences) or None


def load_fold_evaluation(
    folder: Path,
    fold: int,
    *,
    settings: EvaluationSettings,
    preset: Preset,
    label_groups: dict | None,
    fingerprints: dict,
) -> FoldEvaluation | None:
    """An existing evaluation of a fold (``summary.json`` as :func:`evaluate_folders` writes it), or None.

    It is used only when it is complete (summary.json is written last and atomically), made with the
    same settings, preset and labels, of the same cases, from files of the same size and modification
    time (:func:`fold_summary_difference`); anything else is evaluated again.
    """
    path = Path(folder) / "summary.json"
    if not path.is_file() or not (Path(folder) / LESION_FILE).is_file():  # no lesions.csv: an older version's
        return None
    summary, difference = fold_summary_difference(
        path, settings=settings, preset=preset, label_groups=label_groups, fingerprints=fingerprints
    )
    if difference is not None:
        return None
    results = [
        CaseResult(
            case=entry["case"],
            reference_file=entry.get("reference_file") or "",
            prediction_file=entry.get("prediction_file"),
            metrics=entry.get("metrics") or {},
            undefined={key: dict(entry.get("undefined", {}).get(key, {})) for key in entry.get("metrics") or {}},
            error=entry.get("error"),
        )
        for entry in summary.get("metric_per_case", [])
    ]
    return FoldEvaluation(fold, summary, results, f"reused {folder}")


def reuse_training_evaluation(
    plan: CVPlan, fold: int, settings: EvaluationSettings, preset: Preset, label_groups: dict | None, overwrite: bool
) -> FoldEvaluation | None:
    """The evaluation the trainer wrote into ``fold_<f>/validation/lesion_evaluation`` after nnU-Net's
    final validation, copied into ``<output>/fold_<f>``, when :func:`load_fold_evaluation` accepts it
    (same settings, preset, labels and input files); else None."""
    source = plan.results_dir / f"fold_{fold}" / "validation" / "lesion_evaluation"
    fingerprints = current_fingerprints(plan, fold)
    reused = load_fold_evaluation(
        source, fold, settings=settings, preset=preset, label_groups=label_groups, fingerprints=fingerprints
    )
    if reused is None:
        return None
    target = plan.output_dir / f"fold_{fold}"
    files = [name for name in SUMMARY_FILES if (source / name).is_file()]
    for name in files:
        io.check_writable(target / name, overwrite)
    target.mkdir(parents=True, exist_ok=True)
    for name in files:  # atomically, summary.json last, as evaluate_folders writes them
        io.atomic_write(target / name, lambda temporary, name=name: shutil.copyfile(source / name, temporary))
    return FoldEvaluation(fold, reused.summary, reused.results, f"{TRAINING_EVALUATION} {source}")


def evaluate_fold(
    plan: CVPlan, fold: int, settings: EvaluationSettings, preset: Preset, num_processes: int, progress: bool
) -> FoldEvaluation:
    """Evaluate the fold's validation predictions into ``<output>/fold_<f>`` (replacing what is there)."""
    summary, results = evaluate_folders(
        plan.gt_dir,
        plan.results_dir / f"fold_{fold}" / "validation",
        plan.output_dir / f"fold_{fold}",
        settings,
        preset,
        dataset_json=plan.dataset_json,
        file_ending=plan.file_ending,
        cases=plan.cases[fold],
        num_processes=num_processes,
        overwrite=True,
        progress=progress,
        return_results=True,
        pairing="name",  # nnU-Net names each validation prediction as its reference
    )
    return FoldEvaluation(fold, summary, results, "evaluated")


def cv_summary(
    results_dir,
    gt_dir=None,
    output_dir=None,
    folds: Sequence[int] | None = None,
    settings: EvaluationSettings | None = None,
    preset: Preset | str = "default",
    dataset_json: str | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    froc=None,
) -> dict:
    """Evaluate (or reuse) every fold, summarise, write ``cases.csv``, ``cv_summary.md``, ``cv_summary.json``.

    ``froc``: the FrocSettings of the FROC analysis of the folds' ``.npz`` probabilities
    (None: the defaults; False: none); its files go into the output folder before ``cv_summary.json``.

    Without ``overwrite``, an existing complete fold evaluation of the same files and settings in
    ``<output>/fold_<f>`` is reused (a run that was interrupted continues where it stopped); one of
    other files or settings is refused before any work. With ``overwrite`` every fold is evaluated again.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = settings or preset.settings
    plan = plan_cv(results_dir, gt_dir, output_dir, folds, dataset_json, overwrite)
    label_spec, _, _ = resolve_labels(preset, plan.dataset_json, plan.gt_dir, None)
    label_groups = None if label_spec.groups is None else {k: list(v) for k, v in label_spec.groups.items()}
    todo, evaluations = [], {}
    for fold in plan.folds:
        folder = plan.output_dir / f"fold_{fold}"
        reused = None
        if not overwrite:
            identity = dict(settings=settings, preset=preset, label_groups=label_groups)
            fingerprints = current_fingerprints(plan, fold)
            reused = load_fold_evaluation(folder, fold, **identity, fingerprints=fingerprints)
            if reused is None and (folder / "summary.json").exists():
                summary, difference = fold_summary_difference(
                    folder / "summary.json", **identity, fingerprints=fingerprints
                )
                if summary is not None:
                    difference = f"holds an evaluation of other files or settings ({difference})"
                raise FileExistsError(
                    f"{folder / 'summary.json'} {difference}; pass --overwrite to evaluate every fold again"
                )
        if reused is None:
            reused = reuse_training_evaluation(plan, fold, settings, preset, label_groups, overwrite)
        if reused is not None:
            evaluations[fold] = reused
        else:
            todo.append(fold)
    for fold in todo:
        evaluations[fold] = evaluate_fold(plan, fold, settings, preset, num_processes, progress)
    result = summarise_folds(plan, [evaluations[f] for f in plan.folds], settings, preset)
    if froc is not False:
        result["froc"] = cv_froc_section(plan, label_spec, settings, froc, num_processes, progress)
    write_cv_outputs(plan.output_dir, result, {f: evaluations[f].results for f in plan.folds}, settings)
    return result


def summarise_folds(
    plan: CVPlan, evaluations: list[FoldEvaluation], settings: EvaluationSettings, preset: Preset
) -> dict:
    """Per-fold means, the mean and std over folds of the fold means, pooled metrics, and every failure."""
    per_fold = {e.fold: e.summary for e in evaluations}
    all_results = [r for e in evaluations for r in e.results]
    labels: list[str] = []  # from every fold, in order of appearance: a fold without results adds none
    for summary in per_fold.values():
        labels += [label for label in summary["mean"] if label not in labels]
    mean_of_means, std_of_means, n_folds = {}, {}, {}
    for label in labels:
        names: list[str] = []
        for s in per_fold.values():
            names += [n for n in s["mean"].get(label, {}) if n not in names]
        mean_of_means[label], std_of_means[label], n_folds[label] = {}, {}, {}
        for name in names:
            values = [
                s["mean"][label][name] for s in per_fold.values() if s["mean"].get(label, {}).get(name) is not None
            ]
            mean_of_means[label][name] = float(np.mean(values)) if values else None
            std_of_means[label][name] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            n_folds[label][name] = len(values)
    failures = [{"fold": e.fold, "case": r.case, "reason": r.error} for e in evaluations for r in e.results if r.error]
    for fold, (reason, cases) in plan.missing.items():  # folds of the split that were never evaluated
        failures += [{"fold": fold, "case": case, "reason": reason} for case in cases]
    not_evaluated = []
    if plan.unassigned:
        reason = (
            f"no prediction in the validation folder of any evaluated fold ({', '.join(map(str, plan.folds))}); "
            "no splits_final.json was found to say which fold it belongs to"
        )
        entries = [{"fold": None, "case": case, "reason": reason} for case in plan.unassigned]
        if plan.folds_given:  # the user chose a subset of folds: the others' cases are expected to be absent
            not_evaluated = entries
        else:
            failures += entries
    label_names = {}
    for summary in per_fold.values():
        label_names.update(summary.get("label_names", {}))
    n_evaluated = sum(1 for r in all_results if not r.error)
    return {
        "results_dir": str(plan.results_dir),
        "gt_dir": str(plan.gt_dir),
        "output_dir": str(plan.output_dir),
        "trainer": plan.results_dir.name.split("__")[0],
        "folds": plan.folds,
        "splits_file": None if plan.splits_file is None else str(plan.splits_file),
        "per_fold_mean": {str(f): s["mean"] for f, s in per_fold.items()},
        "per_fold_cases": {
            str(e.fold): {
                "n_cases": len(e.results),
                "n_failed": sum(1 for r in e.results if r.error),
                "source": e.source,
            }
            for e in evaluations
        },
        "folds_reused_from_training": [e.fold for e in evaluations if e.source.startswith(TRAINING_EVALUATION)],
        "mean_of_fold_means": mean_of_means,
        "std_of_fold_means": std_of_means,
        "n_folds_of_fold_means": n_folds,
        "pooled": aggregate(all_results, settings),
        "label_names": label_names,
        "n_cases": n_evaluated + len(failures),
        "n_evaluated": n_evaluated,
        "n_failed": len(failures),
        "failures": failures,
        "not_evaluated": not_evaluated,
        "errors": {f["case"]: f["reason"] for f in failures},
        "ignored_predictions": {
            str(f): s.get("ignored_predictions", []) for f, s in per_fold.items() if s.get("ignored_predictions")
        },
        "missing_folds": [
            {"fold": fold, "reason": reason, "cases": cases} for fold, (reason, cases) in plan.missing.items()
        ],
        "ignored_folders": plan.ignored_folders,
        "settings": settings.to_dict(),
        "preset": preset.name,
        "reference_folder": str(plan.gt_dir.resolve()),
        "reference_checksums": {
            case: checksum
            for summary in per_fold.values()
            for case, checksum in (summary.get("reference_checksums") or {}).items()
        },
    }
