"""The files and messages of ``cv-summary`` (what cv.py computed, written): ``cases.csv`` of all folds (the fold
as first column), the merged ``lesions.csv``, ``cv_summary.md`` (per label the fold means and their mean ± std,
every failed or missing case by name, the FROC section) and ``cv_summary.json`` last (its presence means the
others are complete), and the list of failures on stderr."""

from __future__ import annotations

import sys
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.evaluate import CaseResult
from nnunet_lesionloss.evaluation.formatting import format_number, markdown_cell
from nnunet_lesionloss.evaluation.froc.cross_validation import froc_cv_markdown_lines
from nnunet_lesionloss.evaluation.lesion_table import LESION_FILE, merge_fold_lesion_tables
from nnunet_lesionloss.evaluation.settings import EvaluationSettings
from nnunet_lesionloss.evaluation.summary_report import cases_table, headline_metrics

__all__ = ["CV_FILES", "write_cv_outputs", "cv_markdown", "report_failures"]

#: what cv-summary writes into its output folder; cv_summary.json last
CV_FILES = ("cases.csv", LESION_FILE, "cv_summary.md", "cv_summary.json")


def write_cv_outputs(
    output_dir: Path, result: dict, fold_results: dict[int, list[CaseResult]], settings: EvaluationSettings
) -> None:
    """cases.csv (fold as first column; unassigned references with an empty fold), lesions.csv (merged from
    ``<output_dir>/fold_<f>``), cv_summary.md, then cv_summary.json; each atomically, the previous
    cv_summary.json removed first. ``fold_results``: fold -> its case results, in the folds' order."""
    (output_dir / "cv_summary.json").unlink(missing_ok=True)
    groups = [(str(fold), results) for fold, results in fold_results.items()]
    unassigned = [f for f in result["failures"] if f["fold"] is None]
    if unassigned:
        groups.append(("", [CaseResult(f["case"], "", None, error=f["reason"]) for f in unassigned]))
    _write_cases_with_fold(output_dir / "cases.csv", groups)
    missing = merge_fold_lesion_tables(
        output_dir / LESION_FILE, {fold: output_dir / f"fold_{fold}" for fold in fold_results}
    )
    # an evaluation an older version wrote (no lesions.csv) is reused without its lesions: say so
    result["folds_without_lesion_table"] = missing
    io.write_text(output_dir / "cv_summary.md", cv_markdown(result, settings))
    io.write_json(output_dir / "cv_summary.json", result, overwrite=True)


def _write_cases_with_fold(path: Path, groups: list[tuple[str, list[CaseResult]]]) -> None:
    """One cases.csv for all folds, the fold as first column; columns are the union over folds."""
    header: list[str] = []
    tables = []
    for fold, results in groups:
        fold_header, rows = cases_table(results, extra_columns={"fold": fold})
        header += [name for name in fold_header if name not in header]
        tables.append((fold_header, rows))
    merged = []
    for fold_header, rows in tables:
        index = {name: k for k, name in enumerate(fold_header)}
        merged += [[row[index[name]] if name in index else "" for name in header] for row in rows]
    io.write_csv(path, header or ["fold", "case", "label", "error"], merged)


def cv_markdown(result: dict, settings: EvaluationSettings) -> str:
    """cv_summary.md: per label the fold means and their mean ± std, the missing folds, every failed or
    missing case, the FROC section, and the references no fold evaluated."""
    folds = result["folds"]
    failed = result["n_failed"]
    lines = [
        f"# Cross-validation: {result['trainer']}",
        "",
        f"Folds {', '.join(map(str, folds))}; {result['n_cases']} validation cases, {result['n_evaluated']} "
        f"evaluated, {failed} failed or missing. Per-fold means, then the mean ± std over folds (Luu et al. 2026 "
        "report the mean of fold means).",
        "",
    ]
    for missing in result.get("missing_folds", []):
        lines += [f"**Fold {missing['fold']} is missing**: {missing['reason']}.", ""]
    if failed:
        lines += [
            f"**{failed} case(s) failed or are missing: every mean below is over the evaluated cases only.**",
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
                + " | ".join(format_number(v) for v in fold_values)
                + f" | {format_number(means[metric])}"
                + ("" if std is None else f" ± {format_number(std)}")
                + " |"
            )
        lines.append("")
    if result["failures"]:
        lines += ["## Failed or missing cases", "", "| fold | case | reason |", "|---|---|---|"]
        lines += [
            f"| {'–' if f['fold'] is None else f['fold']} | {markdown_cell(f['case'])} | {markdown_cell(f['reason'])} |"
            for f in result["failures"]
        ]
        lines.append("")
    if result.get("froc"):
        lines += froc_cv_markdown_lines(result["froc"])
    if result["not_evaluated"]:
        lines += [
            f"{len(result['not_evaluated'])} reference(s) were not evaluated: no evaluated fold predicted them and no "
            "splits_final.json says which fold they belong to (only some folds were asked for).",
            "",
        ]
    return "\n".join(lines)


def report_failures(result: dict, stream=None) -> None:
    """Every failure on its own line: fold, case, reason (default: on stderr)."""
    stream = stream or sys.stderr
    for missing in result.get("missing_folds", []):
        print(f"  fold {missing['fold']} missing: {missing['reason']}", file=stream)
    for name in result.get("ignored_folders", []):
        print(f"  note: {result['results_dir']}/{name} is no fold_<number> folder: not evaluated", file=stream)
    for fold, names in result.get("ignored_predictions", {}).items():
        print(
            f"  note: fold {fold}: {len(names)} predictions without a reference are ignored: {', '.join(names[:5])}",
            file=stream,
        )
    for failure in result["failures"]:
        fold = "-" if failure["fold"] is None else failure["fold"]
        print(f"  fold {fold}, case {failure['case']}: {failure['reason']}", file=stream)
    for entry in result["not_evaluated"]:
        print(f"  not evaluated: {entry['case']} ({entry['reason']})", file=stream)
    for fold in result.get("folds_without_lesion_table", []):
        print(f"  fold {fold}: no lesions.csv of this fold, so the merged lesions.csv lacks its lesions", file=stream)
