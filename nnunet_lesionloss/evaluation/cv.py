"""``cv-summary``: evaluate the fold_*/validation folders of one nnU-Net trainer and summarise them.

nnU-Net writes the validation predictions of fold f to
``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG/fold_f/validation``. References default to
``nnUNet_preprocessed/DatasetXXX/gt_segmentations`` (what nnU-Net's own validation uses), else
``nnUNet_raw/DatasetXXX/labelsTr``. Luu et al. 2026 (CATMIL) report the mean over folds of the fold
means; we report that, the std over folds, and the metrics pooled over all validation cases.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.evaluate import (
    CaseResult,
    aggregate,
    cases_table,
    format_value,
    headline_metrics,
    write_csv,
)
from nnunet_lesionloss.evaluation.runner import evaluate_folders
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, Preset, get_preset

DATASET_FOLDER = re.compile(r"^Dataset\d{3}_.+")


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


def find_folds(results_dir: Path, folds: Sequence[int] | None) -> list[int]:
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    found = sorted(
        int(p.name.split("_")[1])
        for p in results_dir.glob("fold_*")
        if p.name.split("_")[1].isdigit() and (p / "validation").is_dir()
    )
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


def validation_cases(gt_dir: Path, fold: int, predicted: list[str]) -> list[str]:
    """The fold's validation cases from splits_final.json beside gt_segmentations, else the predicted cases."""
    splits_file = gt_dir.parent / "splits_final.json"
    if splits_file.is_file():
        with open(splits_file) as handle:
            splits = json.load(handle)
        if fold < len(splits):
            return list(splits[fold]["val"])
    return predicted


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
) -> dict:
    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = settings or preset.settings
    results_dir = Path(results_dir)
    fold_ids = find_folds(results_dir, folds)
    gt_dir = Path(gt_dir) if gt_dir else default_gt_dir(results_dir)
    output_dir = Path(output_dir) if output_dir else results_dir / "lesion_evaluation"
    for name in ("cv_summary.json", "cases.csv", "cv_summary.md"):
        io.check_writable(output_dir / name, overwrite)
    if dataset_json is None and (results_dir / "dataset.json").is_file():
        dataset_json = str(results_dir / "dataset.json")
    file_ending = io.read_dataset_json(dataset_json).get("file_ending") if dataset_json else None

    per_fold, all_results, fold_of_case, reused_folds = {}, [], {}, []
    for fold in fold_ids:
        validation = results_dir / f"fold_{fold}" / "validation"
        predicted = list(io.list_images(validation, file_ending))
        cases = validation_cases(gt_dir, fold, predicted)
        reused = fold_evaluation_of_training(validation, gt_dir, cases, settings, preset)
        if reused is not None:  # the trainer evaluated this fold already, with these settings
            summary, results = reused
            _copy_fold_outputs(validation / "lesion_evaluation", output_dir / f"fold_{fold}", overwrite)
            reused_folds.append(fold)
        else:
            summary, results = evaluate_folders(
                gt_dir,
                validation,
                output_dir / f"fold_{fold}",
                settings,
                preset,
                dataset_json=dataset_json,
                file_ending=file_ending,
                cases=cases,
                num_processes=num_processes,
                overwrite=overwrite,
                progress=progress,
                return_results=True,
            )
        per_fold[fold] = summary
        all_results += results
        fold_of_case.update({r.case: fold for r in results})

    labels = list(per_fold[fold_ids[0]]["mean"])
    mean_of_means, std_of_means = {}, {}
    for label in labels:
        names = []
        for s in per_fold.values():
            names += [n for n in s["mean"].get(label, {}) if n not in names]
        mean_of_means[label], std_of_means[label] = {}, {}
        for name in names:
            values = [
                s["mean"][label][name] for s in per_fold.values() if s["mean"].get(label, {}).get(name) is not None
            ]
            mean_of_means[label][name] = float(np.mean(values)) if values else None
            std_of_means[label][name] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    pooled = aggregate(all_results, settings)
    result = {
        "results_dir": str(results_dir),
        "gt_dir": str(gt_dir),
        "output_dir": str(output_dir),
        "trainer": results_dir.name.split("__")[0],
        "folds": fold_ids,
        "per_fold_mean": {str(f): s["mean"] for f, s in per_fold.items()},
        "mean_of_fold_means": mean_of_means,
        "std_of_fold_means": std_of_means,
        "pooled": pooled,
        "label_names": per_fold[fold_ids[0]].get("label_names", {}),
        "n_cases": len(all_results),
        "n_failed": sum(1 for r in all_results if r.error),
        "errors": {r.case: r.error for r in all_results if r.error},
        "settings": settings.to_dict(),
        "preset": preset.name,
        "folds_reused_from_training": reused_folds,
    }
    io.write_json(output_dir / "cv_summary.json", result, overwrite=True)
    # one cases.csv for all folds, with the fold as first column
    rows_by_fold = {f: [r for r in all_results if fold_of_case[r.case] == f] for f in fold_ids}
    _write_cases_with_fold(output_dir / "cases.csv", rows_by_fold)
    (output_dir / "cv_summary.md").write_text(cv_markdown(result, settings))
    return result


def fold_evaluation_of_training(
    validation: Path, gt_dir: Path, cases: Sequence[str], settings: EvaluationSettings, preset: Preset
) -> tuple[dict, list[CaseResult]] | None:
    """The lesion-wise evaluation the trainers of this package write after nnU-Net's final validation
    (``fold_X/validation/lesion_evaluation/summary.json``), as (summary, case results), when it holds
    exactly what evaluating the folder now would: same settings and preset, the same cases against
    references in ``gt_dir``, and no prediction newer than it. Otherwise None (evaluate again)."""
    path = validation / "lesion_evaluation" / "summary.json"
    if preset.brats_outputs or not path.is_file():  # the BraTS outputs need per-lesion details it lacks
        return None
    try:
        with open(path) as handle:
            summary = json.load(handle)
        per_case = summary["metric_per_case"]
        if summary.get("settings") != settings.to_dict() or summary.get("preset") != preset.name:
            return None
        if sorted(entry["case"] for entry in per_case) != sorted(cases):
            return None
        written = path.stat().st_mtime
        for entry in per_case:
            if Path(entry["reference_file"]).resolve().parent != gt_dir.resolve():
                return None
            prediction = entry["prediction_file"]
            if prediction is None or not Path(prediction).is_file() or Path(prediction).stat().st_mtime > written:
                return None
        results = [
            CaseResult(
                case=entry["case"],
                reference_file=entry["reference_file"],
                prediction_file=entry["prediction_file"],
                metrics=entry["metrics"],
                undefined=entry.get("undefined", {}),
                error=entry.get("error"),
            )
            for entry in per_case
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary, results


def _copy_fold_outputs(source: Path, target: Path, overwrite: bool) -> None:
    """cv-summary's per-fold outputs, copied from the trainer's fold evaluation."""
    import shutil

    files = [name for name in ("summary.json", "cases.csv", "summary.md") if (source / name).is_file()]
    for name in files:
        io.check_writable(target / name, overwrite)
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(source / name, target / name)


def _write_cases_with_fold(path: Path, rows_by_fold: dict) -> None:
    """One cases.csv for all folds, the fold as first column; columns are the union over folds."""
    header: list[str] = []
    tables = []
    for fold, results in rows_by_fold.items():
        fold_header, rows = cases_table(results, extra_columns={"fold": str(fold)})
        header += [name for name in fold_header if name not in header]
        tables.append((fold_header, rows))
    merged = []
    for fold_header, rows in tables:
        index = {name: k for k, name in enumerate(fold_header)}
        merged += [[row[index[name]] if name in index else "" for name in header] for row in rows]
    write_csv(path, header, merged)


def cv_markdown(result: dict, settings: EvaluationSettings) -> str:
    folds = result["folds"]
    lines = [
        f"# Cross-validation: {result['trainer']}",
        "",
        f"Folds {', '.join(map(str, folds))}; {result['n_cases']} validation cases ({result['n_failed']} failed). "
        "Per-fold means, then the mean ± std over folds (Luu et al. 2026 report the mean of fold means).",
        "",
    ]
    for label, means in result["mean_of_fold_means"].items():
        name = result["label_names"].get(label, label)
        lines += [
            f"## Label {name} ({label})",
            "",
            "| metric | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± std |",
            "|---|" + "---|" * (len(folds) + 1),
        ]
        for metric in headline_metrics(settings):
            if metric not in means:
                continue
            fold_values = [result["per_fold_mean"][str(f)].get(label, {}).get(metric) for f in folds]
            std = result["std_of_fold_means"][label].get(metric)
            lines.append(
                f"| {metric} | "
                + " | ".join(format_value(v) for v in fold_values)
                + f" | {format_value(means[metric])}"
                + ("" if std is None else f" ± {format_value(std)}")
                + " |"
            )
        lines.append("")
    return "\n".join(lines)
