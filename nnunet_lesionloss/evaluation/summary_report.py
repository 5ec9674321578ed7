"""The files of one evaluation (``evaluate``, and each fold of ``cv-summary``): ``summary.json`` (the content
evaluate.py's :func:`~nnunet_lesionloss.evaluation.evaluate.build_summary` computes), ``cases.csv`` (one row per
case and label), ``lesions.csv`` (one row per reference and per predicted lesion, lesion_table.py) and
``summary.md`` (the headline metrics per label and the size-bin tables), each written atomically,
``summary.json`` last."""

from __future__ import annotations

from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.evaluate import CaseResult, LabelSpec, build_summary, label_keys, metric_names
from nnunet_lesionloss.evaluation.formatting import format_number, ignored_predictions_lines, markdown_cell
from nnunet_lesionloss.evaluation.lesion_table import LESION_FILE, write_lesion_table
from nnunet_lesionloss.evaluation.metrics import size_bin_labels
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

__all__ = [
    "HEADLINE_METRICS",
    "SUMMARY_FILES",
    "headline_metrics",
    "cases_table",
    "write_cases_csv",
    "summary_markdown",
    "size_bin_markdown",
    "write_outputs",
]

#: the metrics of the Markdown tables (summary.md, cv_summary.md), before the panoptic ones of each matching
HEADLINE_METRICS = (
    "Dice",
    "hd95",
    "assd",
    "rve",
    "abs_volume_error_ml",
    "lesion_f1",
    "lesion_precision",
    "lesion_recall",
    "small_lesion_recall",
    "lesion_fn",
    "lesion_fp",
    "fp_volume_mm3",
    "fn_volume_fraction",
)


def headline_metrics(settings: EvaluationSettings) -> list[str]:
    """The metrics of the Markdown tables: HEADLINE_METRICS, then PQ-DSC, SQ-DSC and RQ of each matching."""
    names = list(HEADLINE_METRICS)
    for spec in settings.matchings:
        names += [f"{spec.name}_pq_dsc", f"{spec.name}_sq_dsc", f"{spec.name}_rq"]
    return names


def cases_table(results: list[CaseResult], extra_columns: dict[str, str] | None = None) -> tuple[list[str], list[list]]:
    """Header and rows of cases.csv: one row per case and label (one row with the error for failed cases)."""
    keys = label_keys([r for r in results if r.error is None])
    names: list[str] = []
    for key in keys:
        names += [n for n in metric_names(results, key) if n not in names]
    extra_columns = extra_columns or {}
    header = list(extra_columns) + ["case", "label", "error"] + names
    rows = []
    for r in results:
        if r.error:
            rows.append(list(extra_columns.values()) + [r.case, "", r.error] + [""] * len(names))
            continue
        for key, metrics in r.metrics.items():
            rows.append(
                list(extra_columns.values())
                + [r.case, key, ""]
                + ["" if metrics.get(n) is None else metrics[n] for n in names]
            )
    return header, rows


def write_cases_csv(path: Path, results: list[CaseResult]) -> None:
    """cases.csv (atomically)."""
    io.write_csv(path, *cases_table(results))


def summary_markdown(summary: dict, settings: EvaluationSettings, title: str = "Lesion-wise evaluation") -> str:
    """summary.md: per label the headline metrics (mean ± std, median, n), the across-case metrics, the
    size-bin tables, and the cases with errors."""
    metrics = headline_metrics(settings)
    lines = [
        f"# {title}",
        "",
        f"{summary['n_cases']} cases, {summary['n_failed']} failed. "
        "Mean ± sample std over cases (n = cases where the metric is defined).",
        "",
    ]
    for key, by_metric in summary["aggregates"].items():
        name = summary.get("label_names", {}).get(key, key)
        lines += [f"## Label {name} ({key})", "", "| metric | mean ± std | median | n |", "|---|---|---|---|"]
        for metric in metrics:
            if metric in by_metric:
                d = by_metric[metric]
                std = "" if d["std"] is None else f" ± {format_number(d['std'])}"
                lines.append(
                    f"| {metric} | {format_number(d['mean'])}{std} | {format_number(d['median'])} | {d['n']} |"
                )
        across = summary["across_cases"].get(key, {})
        lines += ["", "| across cases | value |", "|---|---|"]
        for metric, value in across.items():
            if not isinstance(value, dict) and not metric.startswith("pooled_bin"):
                lines.append(f"| {metric} | {format_number(value)} |")
        lines += [""] + size_bin_markdown(by_metric, across, settings) + [""]
    if summary["errors"]:
        lines += ["## Cases with errors", "", "| case | reason |", "|---|---|"]
        lines += [f"| {markdown_cell(case)} | {markdown_cell(error)} |" for case, error in summary["errors"].items()]
        lines.append("")
    lines += ignored_predictions_lines(summary.get("ignored_predictions"))
    return "\n".join(lines)


def size_bin_markdown(by_metric: dict, across: dict, settings: EvaluationSettings) -> list[str]:
    """Two tables: per reference-lesion volume bin (Kundu et al. 2026 Table 2) and per case-volume bin.

    The case-volume table follows Joshi 2026 Table 5.4.
    """
    spec = settings.size_bin_matching
    lines = [
        f"By reference lesion volume (mean over cases; PQ/SQ/RQ at {spec}; pooled recall over all lesions):",
        "",
        "| lesion volume | lesions | pooled recall | recall | PQ-DSC | SQ-DSC | RQ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in size_bin_labels(settings.size_bins_ml):

        def mean(metric: str, name: str = name) -> str:
            return format_number(by_metric.get(f"bin{name}_{metric}", {}).get("mean"))

        lines.append(
            f"| {name} | {across.get(f'pooled_bin{name}_n_ref_lesions', 0)} | "
            f"{format_number(across.get(f'pooled_bin{name}_lesion_recall'))} | {mean('lesion_recall')} | "
            f"{mean('pq_dsc')} | {mean('sq_dsc')} | {mean('rq')} |"
        )
    by_case = across.get("by_case_reference_volume", {})
    if by_case:
        columns = ["Dice", "rve", "lesion_fp", "lesion_fn", f"{spec}_pq_dsc", f"{spec}_sq_dsc", f"{spec}_rq", "assd"]
        lines += [
            "",
            "By total reference volume of the case (means over the cases of each bin):",
            "",
            "| case volume | n | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for name, entry in by_case.items():
            lines.append(
                f"| {name} | {entry['n']} | " + " | ".join(format_number(entry.get(c)) for c in columns) + " |"
            )
    return lines


#: what ``write_outputs`` writes; summary.json last: its presence means the others are complete
SUMMARY_FILES = ("cases.csv", LESION_FILE, "summary.md", "summary.json")


def write_outputs(
    output_dir: Path,
    results: list[CaseResult],
    settings: EvaluationSettings,
    labels: LabelSpec,
    preset: str | None,
    overwrite: bool,
    extra: dict | None = None,
) -> dict:
    """cases.csv, summary.md, then summary.json, each written atomically. When replacing a previous
    evaluation, its summary.json is removed first, so a run interrupted while writing leaves no
    summary.json beside files of another run."""
    output_dir = io.prepare_output_dir(output_dir, SUMMARY_FILES, overwrite, marker="summary.json")
    summary = build_summary(results, settings, labels, preset, extra)
    (output_dir / "summary.json").unlink(missing_ok=True)
    write_cases_csv(output_dir / "cases.csv", results)
    write_lesion_table(output_dir / LESION_FILE, [row for r in results for row in r.lesion_rows])
    io.write_text(output_dir / "summary.md", summary_markdown(summary, settings))
    io.write_json(output_dir / "summary.json", summary, overwrite=True)
    return summary
