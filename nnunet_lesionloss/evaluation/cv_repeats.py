"""``cv-summary`` of a run trained several times (training repeats, docs/repeats.md).

A run with repeats is either the folder of a run trained with ``scripts/run_cv.sh --repeats`` (it holds
``repeats.json``; repeats_layout.py) or several trainer folders given together as the repeats of one run
(:func:`find_repeats`). Each repeat's cross-validation is summarised by cv.py into ``<output>/repeat_<r>``
(a fold evaluation that the trainer, or an earlier cv-summary of the repeat's own folder, wrote with the same
settings and files is copied, not evaluated again); then, over the repeats, :func:`summarise_repeat_results`
gives each repeat's aggregate (its mean over the validation cases of all its folds, its pooled metrics, its
FROC analysis's AP, CPM and sensitivities), their mean and the standard deviation between repeats
(repeat_statistics.summarise_repeats), and per case the mean over the repeats that evaluated it. A repeat that
was never trained, or whose summary failed, is named with the reason and never averaged away silently.
cv_report.py writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.cv import cv_summary
from nnunet_lesionloss.evaluation.cv_report import REPEATS_FILES, write_repeats_outputs
from nnunet_lesionloss.evaluation.froc.cross_validation import froc_section
from nnunet_lesionloss.evaluation.repeat_statistics import summarise_repeats
from nnunet_lesionloss.evaluation.settings import get_preset
from nnunet_lesionloss.repeats_layout import MANIFEST_NAME, read_manifest

__all__ = ["REPEATS_KIND", "RepeatSource", "RepeatsPlan", "find_repeats", "cv_summary_repeats"]

#: cv_summary.json's ``kind`` for a run with repeats (compare recognises it by this)
REPEATS_KIND = "cv-summary of training repeats"
#: the FROC statistics summarised over repeats (froc.json's names)
FROC_STATISTICS = ("ap", "cpm")


@dataclass(frozen=True)
class RepeatSource:
    """One repeat: its name (``1``, ``2``, ...), its trainer folder, and why it is missing (None: it is there)."""

    name: str
    folder: Path
    missing: str | None = None


@dataclass(frozen=True)
class RepeatsPlan:
    """The repeats of a run, where they come from, and where their summary goes."""

    sources: tuple[RepeatSource, ...]
    results_dir: str  # the run folder (repeats.json), or the folders given
    trainer: str
    output_dir: Path
    folds: tuple[int, ...] | None  # from --folds, else the manifest's folds


def find_repeats(
    results_dirs: Sequence[str], output_dir=None, folds: Sequence[int] | None = None
) -> RepeatsPlan | None:
    """The run with repeats that ``results_dirs`` names, or None for a single run (one folder without
    ``repeats.json``). One folder with ``repeats.json``: its repeats (a repeat folder that does not exist is
    a missing repeat); output default ``<run folder>/lesion_evaluation``, folds default the manifest's.
    Several folders: the repeats of one run, in the order given (repeats 1, 2, ...); ``output_dir`` is
    required. Raises ValueError or FileNotFoundError naming what is wrong."""
    paths = [Path(p) for p in results_dirs]
    if len(paths) == 1:
        run_folder = paths[0]
        if not (run_folder / MANIFEST_NAME).is_file():
            return None
        manifest = read_manifest(run_folder)
        sources = tuple(
            RepeatSource(
                str(repeat),
                folder,
                None if folder.is_dir() else f"repeat {repeat} was never trained (or was moved): no folder {folder}",
            )
            for repeat, folder in manifest.repeat_folders(run_folder).items()
        )
        return RepeatsPlan(
            sources=sources,
            results_dir=str(run_folder),
            trainer=manifest.trainer,
            output_dir=Path(output_dir) if output_dir else run_folder / "lesion_evaluation",
            folds=tuple(folds) if folds is not None else manifest.folds,
        )
    with_manifest = [str(p) for p in paths if (p / MANIFEST_NAME).is_file()]
    if with_manifest:
        raise ValueError(
            f"{', '.join(with_manifest)} is a run with repeats ({MANIFEST_NAME}): give it alone, not among other "
            "folders (several folders are the repeats of one run)"
        )
    absent = [str(p) for p in paths if not p.is_dir()]
    if absent:
        raise FileNotFoundError(f"results folder not found: {', '.join(absent)}")
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p in paths if resolved.count(p.resolve()) > 1})
    if twice:
        raise ValueError(f"a folder is given twice as a repeat of the run: {', '.join(twice)}")
    if output_dir is None:
        raise ValueError(
            f"{len(paths)} results folders are summarised as the repeats of one run: give the output folder "
            "(-o OUTPUT); each repeat's summary goes into OUTPUT/repeat_<r>"
        )
    trainers = sorted({p.resolve().name.split("__")[0] for p in paths})
    return RepeatsPlan(
        sources=tuple(RepeatSource(str(k + 1), p) for k, p in enumerate(paths)),
        results_dir=", ".join(str(p) for p in paths),
        trainer=" / ".join(trainers),
        output_dir=Path(output_dir),
        folds=None if folds is None else tuple(folds),
    )


def cv_summary_repeats(plan: RepeatsPlan, overwrite: bool = False, **options) -> dict:
    """Summarise every repeat (cv.py's :func:`~nnunet_lesionloss.evaluation.cv.cv_summary` with ``options``:
    gt_dir, settings, preset, dataset_json, num_processes, progress, froc; into ``<output>/repeat_<r>``),
    then the repeats together; writes ``cases.csv`` (per case the mean over repeats), ``cv_summary.md`` and
    ``cv_summary.json`` (last). ValueError when no repeat could be summarised (each reason named)."""
    preset = options.get("preset") or "default"
    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = options.get("settings") or preset.settings
    output = plan.output_dir
    interrupted = not (output / "cv_summary.json").exists() and (output / io.WRITING_RECORD).is_file()
    io.prepare_output_dir(output, REPEATS_FILES, overwrite, marker="cv_summary.json")
    summarised, records = [], []
    for source in plan.sources:
        record = {"repeat": source.name, "folder": str(source.folder), "output": f"repeat_{source.name}"}
        if source.missing is not None:
            records.append({**record, "status": "missing", "reason": source.missing})
            continue
        fold_results: dict = {}
        try:
            result = cv_summary(
                source.folder,
                output_dir=output / record["output"],
                folds=plan.folds,
                # an interrupted summary of the repeats replaces its own repeat folders
                overwrite=overwrite or interrupted,
                reuse_from=[source.folder / "lesion_evaluation"],
                case_results=fold_results,
                **options,
            )
        except (OSError, ValueError) as error:
            records.append({**record, "status": "failed", "reason": f"its cv-summary failed: {error}"})
            continue
        records.append(
            {
                **record,
                "status": "summarised",
                "reason": None,
                "folds": result["folds"],
                "n_cases": result["n_cases"],
                "n_evaluated": result["n_evaluated"],
                "n_failed": result["n_failed"],
                "missing_folds": [m["fold"] for m in result["missing_folds"]],
            }
        )
        summarised.append((source.name, result, fold_results))
    if not summarised:
        raise ValueError(
            "no repeat of the run could be summarised: "
            + "; ".join(f"repeat {r['repeat']}: {r['reason']}" for r in records)
        )
    out = summarise_repeat_results(summarised, records)
    out.update(results_dir=plan.results_dir, trainer=plan.trainer, output_dir=str(output))
    out["folds"] = None if plan.folds is None else list(plan.folds)
    write_repeats_outputs(output, out, case_means(summarised), settings)
    return out


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _over_repeats(values: dict[str, float | None]) -> dict:
    """repeat name -> aggregate (None: undefined) as cv_summary.json holds it: per repeat, mean, sd between
    repeats (n - 1), and the number of repeats that define it."""
    summary = summarise_repeats([None if v is None else float(v) for v in values.values()])
    return {
        "per_repeat": dict(zip(values, summary.per_repeat, strict=True)),
        "mean": summary.mean,
        "sd_between_repeats": summary.sd_between_repeats,
        "n_repeats": summary.n_repeats,
    }


def _summarise_table(tables: dict[str, dict]) -> dict:
    """repeat -> label -> name -> number, summarised over the repeats per label and name (first-seen order)."""
    labels: list[str] = []
    for table in tables.values():
        labels += [label for label in table if label not in labels]
    out = {}
    for label in labels:
        names: list[str] = []
        for table in tables.values():
            names += [n for n, v in (table.get(label) or {}).items() if n not in names and _is_number(v)]
        out[label] = {
            name: _over_repeats(
                {r: v if _is_number(v := (table.get(label) or {}).get(name)) else None for r, table in tables.items()}
            )
            for name in names
        }
    return out


def _froc_over_repeats(summarised: list) -> tuple[dict, list[dict]]:
    """Per label: AP, CPM and the sensitivity at every FP rate over the repeats with a FROC analysis; and the
    repeats without one (with the reason)."""
    analyses, without = {}, []
    for name, result, _ in summarised:
        section = froc_section(result)
        if not section or "skipped" in section or "error" in section:
            reason = (section or {}).get("skipped") or (section or {}).get("error") or "no FROC analysis"
            without.append({"repeat": name, "reason": reason, "error": "error" in (section or {})})
        else:
            analyses[name] = section
    if not analyses:  # no repeat has probabilities (or --no-froc): no analysis, as for a single run
        return {}, [entry for entry in without if entry["error"]]
    out = {}
    for label in next(iter(analyses.values())):
        entries = {r: a.get(label) or {} for r, a in analyses.items()}
        rates: list[str] = []
        for entry in entries.values():
            rates += [rate for rate in entry.get("sensitivity_at_fp", {}) if rate not in rates]
        out[label] = {
            statistic: _over_repeats({r: e.get(statistic) for r, e in entries.items()}) for statistic in FROC_STATISTICS
        }
        out[label]["sensitivity_at_fp"] = {
            rate: _over_repeats({r: e.get("sensitivity_at_fp", {}).get(rate) for r, e in entries.items()})
            for rate in rates
        }
        out[label]["n_failed"] = {r: e.get("n_failed", 0) for r, e in entries.items()}
    return out, without


def summarise_repeat_results(summarised: list, records: list[dict]) -> dict:
    """cv_summary.json's content over the repeats: ``summarised`` is [(repeat, its cv-summary result, its case
    results per fold)], ``records`` every repeat's status (summarised, missing, failed, with the reason)."""
    first = summarised[0][1]
    metrics = _summarise_table({name: result["pooled"]["mean"] for name, result, _ in summarised})
    across = _summarise_table({name: result["pooled"]["across_cases"] for name, result, _ in summarised})
    froc, without_froc = _froc_over_repeats(summarised)
    failures = [{"repeat": name, **f} for name, result, _ in summarised for f in result["failures"]]
    label_names = {}
    for _, result, _ in summarised:
        label_names.update(result.get("label_names", {}))
    cases = {r.case for _, _, folds in summarised for results in folds.values() for r in results}
    return {
        "kind": REPEATS_KIND,
        "n_repeats": len(records),
        "n_repeats_summarised": len(summarised),
        "repeats": records,
        "missing_repeats": [
            {"repeat": r["repeat"], "folder": r["folder"], "reason": r["reason"]}
            for r in records
            if r["status"] != "summarised"
        ],
        "metrics": metrics,
        "across_cases": across,
        "froc": froc,
        "froc_missing": without_froc,
        "per_repeat_mean_of_fold_means": {name: result["mean_of_fold_means"] for name, result, _ in summarised},
        "label_names": label_names,
        "n_cases": len(cases),
        "n_failed": len(failures),
        "failures": failures,
        "settings": first["settings"],
        "preset": first["preset"],
        "reference_folder": first["reference_folder"],
        "reference_checksums": first["reference_checksums"],
    }


def case_means(summarised: list) -> list[dict]:
    """Per case (in the order of folds, then of the first repeat's cases): its fold, how many repeats evaluated
    it, where it failed, and per label the mean over those repeats of every numeric metric (over the
    repeats that define it)."""
    cases: dict[str, dict] = {}
    for name, _, fold_results in summarised:
        for fold, results in fold_results.items():
            for result in results:
                entry = cases.setdefault(
                    result.case, {"case": result.case, "fold": fold, "n": 0, "failed": [], "values": {}}
                )
                if result.error:
                    entry["failed"].append(f"repeat {name}: {result.error}")
                    continue
                entry["n"] += 1
                for label, values in result.metrics.items():
                    by_metric = entry["values"].setdefault(label, {})
                    for metric, value in values.items():
                        if _is_number(value):
                            by_metric.setdefault(metric, []).append(float(value))
    for entry in cases.values():
        entry["means"] = {
            label: {metric: sum(v) / len(v) for metric, v in by_metric.items()}
            for label, by_metric in entry.pop("values").items()
        }
    return sorted(cases.values(), key=lambda e: (e["fold"] is None, e["fold"] or 0))
