"""The writers of ``compare``: compare.md (the warnings, the table of means with the best complete run in
bold, the paired differences against the reference run, and the FROC section) and compare.csv, and the FROC
comparison's compare_froc.csv. They write what table.py and froc.py computed; a run with failed or missing
cases is marked (†)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.compare.froc import FrocComparison
from nnunet_lesionloss.evaluation.compare.runs import Run
from nnunet_lesionloss.evaluation.formatting import format_number, format_p_value, format_with_interval
from nnunet_lesionloss.evaluation.statistics import BOOTSTRAP_RESAMPLES

__all__ = [
    "INCOMPLETE_MARK",
    "TABLE_FILES",
    "FROC_CSV",
    "table_markdown",
    "table_csv",
    "write_table",
    "froc_markdown",
    "write_froc_csv",
]

INCOMPLETE_MARK = "†"
#: compare's table, in Markdown and in CSV
TABLE_FILES = ("compare.md", "compare.csv")
#: the FROC comparison's numbers
FROC_CSV = "compare_froc.csv"
#: the columns of compare.csv per run compared with the reference run, and the keys of their statistics
PAIRED_COLUMNS = (
    ("n_paired", "n"),
    ("diff", "mean_difference"),
    ("ci_low", "ci_low"),
    ("ci_high", "ci_high"),
    ("p", "p_wilcoxon"),
    ("p_holm", "p_holm"),
)


def _arrow(row: dict) -> str:
    return "↑" if row["direction"] > 0 else "↓"


def table_markdown(
    rows: list[dict],
    runs: list[Run],
    label: str,
    reference: int = 0,
    notes: Sequence[str] = (),
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    sections: Sequence[str] = (),
) -> str:
    """compare.md: the warnings, the means (best complete run in bold), the paired differences, ``sections``."""
    shown = [run.name + ("" if run.complete else f" {INCOMPLETE_MARK}") for run in runs]
    lines = [f"# Comparison (label {label})", ""]
    if notes:
        lines += [f"> **Warning:** {note}" for note in notes] + [""]
    lines += [
        "Mean over folds of the fold means (cv-summary) or over cases (evaluate); best per metric in **bold** "
        f"(complete runs only); ↑ higher is better, ↓ lower is better. {INCOMPLETE_MARK}: the run has failed or "
        "missing cases, its means are over fewer cases and it is never marked best.",
        "",
        "| metric | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(runs),
        "| cases evaluated (n) | " + " | ".join(str(run.n_evaluated) for run in runs) + " |",
        "| failed or missing | " + " | ".join(str(run.n_failed) for run in runs) + " |",
    ]
    for row in rows:
        cells = []
        for k, value in enumerate(row["values"]):
            text = format_number(value)
            cells.append(f"**{text}**" if k in row["best"] else text)
        lines.append(f"| {row['display']} {_arrow(row)} | " + " | ".join(cells) + " |")
    others = [k for k in range(len(runs)) if k != reference]
    if others and any(row["paired"] for row in rows):
        lines += [
            "",
            f"## Paired differences against {runs[reference].name}",
            "",
            f"Per case: run − {runs[reference].name}, over the cases both evaluated with the metric defined (n). "
            f"Mean difference [percentile-bootstrap 95 % CI, {resamples} resamples, seed {seed}]; p: two-sided "
            f"Wilcoxon signed-rank test, Holm-corrected over the {len(others)} run(s) compared (docs/metrics.md).",
            "",
            "| metric | " + " | ".join(runs[k].name for k in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for row in rows:
            cells = []
            for k in others:
                s = row["paired"][k]
                if not s["n"]:
                    cells.append("– (n = 0)")
                    continue
                ci = "" if s["ci_low"] is None else f" [{format_number(s['ci_low'])}, {format_number(s['ci_high'])}]"
                cells.append(
                    f"{format_number(s['mean_difference'])}{ci}, p = {format_p_value(s['p_holm'])} (n = {s['n']})"
                )
            lines.append(f"| {row['display']} {_arrow(row)} | " + " | ".join(cells) + " |")
    for section in sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict], runs: list[Run], reference: int = 0) -> tuple[list[str], list[list]]:
    """compare.csv's header and rows: the case counts, then per metric the values, stds, best runs and the
    paired statistics of every run against the reference run."""
    others = [k for k in range(len(runs)) if k != reference]
    header = ["metric", "better"] + [run.name for run in runs] + [f"{run.name}_std" for run in runs] + ["best"]
    for k in others:
        header += [f"{runs[k].name}_{column}" for column, _ in PAIRED_COLUMNS]
    padding = [""] * len(runs) + [""] + [""] * len(PAIRED_COLUMNS) * len(others)
    table = [
        ["n_evaluated", ""] + [run.n_evaluated for run in runs] + padding,
        ["n_failed_or_missing", ""] + [run.n_failed for run in runs] + padding,
    ]
    for row in rows:
        line = (
            [row["metric"], "higher" if row["direction"] > 0 else "lower"]
            + ["" if v is None else v for v in row["values"]]
            + ["" if s is None else s for s in row["stds"]]
            + [";".join(runs[k].name for k in sorted(row["best"]))]
        )
        for k in others:
            s = row["paired"].get(k, {})
            line += ["" if s.get(key) is None else s[key] for _, key in PAIRED_COLUMNS]
        table.append(line)
    return header, table


def write_table(output: Path, markdown: str, csv_table: tuple[list[str], list[list]]) -> tuple[Path, Path]:
    """compare.md (``markdown``, :func:`table_markdown`) and compare.csv (``csv_table``, :func:`table_csv`) in
    ``output``, each atomically."""
    md, csv_path = (output / name for name in TABLE_FILES)
    io.write_text(md, markdown)
    io.write_csv(csv_path, *csv_table)
    return md, csv_path


def _interval(statistics: dict) -> list[float] | None:
    return None if statistics.get("ci_low") is None else [statistics["ci_low"], statistics["ci_high"]]


def froc_markdown(comparison: FrocComparison, runs: list[Run]) -> str:
    """compare.md's FROC section: each run's AP, CPM and sensitivities, then the paired differences."""
    label, rate = comparison.label, f"{comparison.fp_rate:g}"
    lines = [f"## FROC analysis (label {label}; froc.png)", ""]
    if comparison.missing_label:
        lines += [f"No FROC analysis of label {label} in: {', '.join(comparison.missing_label)}.", ""]
    if comparison.absent:
        lines += [f"No FROC analysis (no probabilities): {', '.join(comparison.absent)}.", ""]
    if not comparison.entries:
        return "\n".join(lines)
    rates = comparison.rates

    def cell(entry, name, interval):
        return format_with_interval(
            entry.get(name) if name in ("ap", "cpm") else entry["sensitivity_at_fp"].get(name), interval, digits=4
        )

    lines += [
        "Pooled over each run's cases; [95 % CI]: case bootstrap of the run's FROC analysis. "
        "Candidates and matching: froc.json's settings (the same for every run).",
        "",
        "| run | cases (failed) | lesions | candidates | AP | CPM | "
        + " | ".join(f"sens. at {r} FP/case" for r in rates)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(rates),
    ]
    for k, entry in comparison.entries.items():
        ci = entry["ci"]
        lines.append(
            f"| {runs[k].name} | {entry['n_cases']} ({entry['n_failed']}) | {entry['n_lesions']} | "
            f"{entry['n_candidates']} | {cell(entry, 'ap', ci['ap'])} | {cell(entry, 'cpm', ci['cpm'])} | "
            + " | ".join(cell(entry, r, ci["sensitivity_at_fp"].get(r)) for r in rates)
            + " |"
        )
    reference = comparison.reference
    if not comparison.paired:
        lines += ["", f"No paired differences: the reference run {runs[reference].name} has no FROC analysis.", ""]
        return "\n".join(lines)
    base = runs[reference].name
    lines += [
        "",
        f"### Sensitivity at {rate} FP/case against {base}",
        "",
        f"Pooled: the difference of the pooled sensitivities at {rate} FP/case over the cases both runs analysed, "
        f"with a paired case-bootstrap 95 % CI ({comparison.resamples} resamples; each resample recomputes both "
        f"runs' curves on the same cases). Per case: the sensitivity of a case's lesions at its run's threshold for "
        f"{rate} FP/case (over all the run's cases), run − {base}, over the cases with reference lesions: mean "
        "[bootstrap CI], two-sided Wilcoxon signed-rank p, Holm-corrected over the runs compared (docs/metrics.md).",
        "",
        "| run | threshold | pooled difference [95 % CI] | mean per-case difference [95 % CI], p (n) |",
        "|---|---|---|---|",
    ]
    for k in comparison.per_case:
        d, p = comparison.pooled[k], comparison.per_case[k]
        pooled_text = "–" if d["difference"] is None else format_with_interval(d["difference"], _interval(d), digits=4)
        case_text = (
            "– (n = 0)"
            if not p["n"]
            else f"{format_with_interval(p['mean_difference'], _interval(p), digits=4)}, "
            f"p = {format_p_value(p['p_holm'])} (n = {p['n']})"
        )
        lines.append(f"| {runs[k].name} | {format_number(comparison.thresholds[k])} | {pooled_text} | {case_text} |")
    lines.append(f"\n{base}'s threshold for {rate} FP/case: {format_number(comparison.thresholds[reference])}.")
    return "\n".join(lines)


def write_froc_csv(comparison: FrocComparison, runs: list[Run], path: Path) -> Path:
    """compare_froc.csv: per run with an analysis, its counts, AP, CPM and sensitivities, and its paired
    differences against the reference run (empty for the reference run, or without one)."""
    rate = f"{comparison.fp_rate:g}"
    header = ["run", "n_cases", "n_failed", "n_lesions", "n_candidates", "ap", "cpm"]
    header += [f"sensitivity_at_{r}fp" for r in comparison.rates]
    header += [
        f"pooled_difference_at_{rate}fp",
        "pooled_ci_low",
        "pooled_ci_high",
        "n_paired",
        f"mean_case_difference_at_{rate}fp",
        "case_ci_low",
        "case_ci_high",
        "p_wilcoxon",
        "p_holm",
    ]
    table = []
    for k, e in comparison.entries.items():
        row = [runs[k].name, e["n_cases"], e["n_failed"], e["n_lesions"], e["n_candidates"], e["ap"], e["cpm"]]
        row += [e["sensitivity_at_fp"].get(r) for r in comparison.rates]
        if k in comparison.pooled:
            d, p = comparison.pooled[k], comparison.per_case[k]
            row += [d["difference"], d["ci_low"], d["ci_high"], p["n"], p["mean_difference"], p["ci_low"]]
            row += [p["ci_high"], p["p_wilcoxon"], p["p_holm"]]
        else:
            row += [""] * 9
        table.append(["" if v is None else v for v in row])
    return io.write_csv(path, header, table)
