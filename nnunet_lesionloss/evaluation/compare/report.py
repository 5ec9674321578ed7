"""The writers of ``compare``: compare.md (the warnings, the table of values with the best complete run in
bold, the paired differences against the reference run with P(better) and a verdict, the variance of the
differences by source with the power of the design, and the FROC section), compare.csv, compare.json (the
interface scripts rely on, docs/evaluation.md) and the FROC comparison's compare_froc.csv. They write what
table.py and froc.py computed; a run with failed or missing cases is marked (†). Run names and other text
go into Markdown cells through formatting.markdown_cell (a '|' in a name stays in its cell)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.compare.froc import FrocComparison
from nnunet_lesionloss.evaluation.compare.groups import RepeatedRun
from nnunet_lesionloss.evaluation.formatting import (
    format_number,
    format_p_value,
    format_with_interval,
    markdown_cell,
)

__all__ = [
    "INCOMPLETE_MARK",
    "TABLE_FILES",
    "FROC_CSV",
    "VERDICT_TEXT",
    "table_markdown",
    "table_csv",
    "comparison_json",
    "write_table",
    "froc_markdown",
    "write_froc_csv",
]

INCOMPLETE_MARK = "†"
#: compare's table, in Markdown and CSV, and its numbers for scripts
TABLE_FILES = ("compare.md", "compare.csv", "compare.json")
#: the FROC comparison's numbers
FROC_CSV = "compare_froc.csv"
#: the verdicts as compare.md writes them
VERDICT_TEXT = {"better": "better", "worse": "worse", "not separable": "not separable with these repeats"}
#: the columns of compare.csv per run compared with the reference run, and the keys of their statistics
PAIRED_COLUMNS = (
    ("n_paired", "n"),
    ("diff", "mean_difference"),
    ("ci_low", "ci_low"),
    ("ci_high", "ci_high"),
    ("p", "p_wilcoxon"),
    ("p_holm", "p_holm"),
    ("p_better", "p_better"),
    ("verdict", "verdict"),
    ("variance_cases", "variance_cases"),
    ("variance_retraining", "variance_retraining"),
    ("separable_difference", "separable_difference"),
    ("repeats_needed", "repeats_needed"),
)
#: compare.json's statistics of a run against the reference, and their keys in the paired statistics
JSON_PAIRED = (
    ("diff", "mean_difference"),
    ("ci_low", "ci_low"),
    ("ci_high", "ci_high"),
    ("p_better", "p_better"),
    ("verdict", "verdict"),
    ("n_cases", "n"),
    ("covers_retraining", "covers_retraining"),
    ("variance_cases", "variance_cases"),
    ("variance_retraining", "variance_retraining"),
    ("retraining_share", "retraining_share"),
    ("separable_difference", "separable_difference"),
    ("repeats_needed", "repeats_needed"),
    ("limited_by_cases", "limited_by_cases"),
    ("p_bootstrap", "p_bootstrap"),
    ("p_wilcoxon", "p_wilcoxon"),
    ("p_holm", "p_holm"),
)
RETRAINING_LEVEL_TEXT = {
    "student-t": "the retrainings drawn from a Student-t scale mixture around their mean (the default)",
    "resample": "the repeats of each run resampled with replacement (--retraining-level resample; with few "
    "repeats it covers too little, docs/metrics.md)",
}


def _arrow(row: dict) -> str:
    return "↑" if row["direction"] > 0 else "↓"


def _value_cell(row: dict, k: int) -> str:
    text = format_number(row["values"][k])
    sd = row["sd_between_repeats"][k]
    if sd is not None:
        text += f" ± {format_number(sd)}"
    return f"**{text}**" if k in row["best"] else text


def _paired_cell(pair: dict) -> str:
    if not pair["n"]:
        return "– (n = 0)"
    ci = "" if pair["ci_low"] is None else f" [{format_number(pair['ci_low'])}, {format_number(pair['ci_high'])}]"
    p = f", p = {format_p_value(pair['p_holm'])}" if pair.get("one_repeat_each") else ""
    return f"{format_number(pair['mean_difference'])}{ci}{p} (n = {pair['n']})"


def _interval_lines(groups: list[RepeatedRun], reference: int, resamples: int, seed: int, level: str) -> list[str]:
    base = markdown_cell(groups[reference].name)
    others = [k for k in range(len(groups)) if k != reference]
    lines = [
        f"Per metric: run − {base}, the difference of the runs' values over the cases both evaluated with the "
        "metric defined (n), with its 95 % interval from the two-level bootstrap "
        f'({resamples} resamples, seed {seed}; docs/metrics.md, "Training repeats"): the cases resampled paired '
        f"across the runs and, for a run with repeats, {RETRAINING_LEVEL_TEXT[level]}. P(better): the share of "
        "resamples in which the run is better than the reference in the metric's direction (↓: lower is better). "
        "Verdict: *better* or *worse* when the whole interval lies on that side of 0, else *not separable with "
        f"these repeats*; Holm's step-down over the {len(others)} run(s) compared, read from intervals "
        "(docs/metrics.md). p (runs of one repeat each): two-sided Wilcoxon signed-rank test, Holm-corrected.",
        "",
    ]
    if all(g.n_repeats == 1 for g in groups):
        lines += [
            "**These intervals cover case sampling only**: every run is one training (one repeat), and nnU-Net's "
            "training is not deterministic, so a retraining moves every value by an amount these intervals do not "
            "count. Train repeats (`scripts/run_cv.sh --repeats 3`, docs/repeats.md) to count it.",
            "",
        ]
    else:
        single = [markdown_cell(g.name) for g in groups if g.n_repeats == 1]
        if single:
            lines += [
                f"**{', '.join(single)}: one repeat**, so its retraining variance is unknown and not counted: its "
                "intervals cover case sampling (and the other run's retraining) only.",
                "",
            ]
    return lines


def table_markdown(
    rows: list[dict],
    groups: list[RepeatedRun],
    label: str,
    reference: int = 0,
    notes: Sequence[str] = (),
    resamples: int = 10_000,
    seed: int = 0,
    sections: Sequence[str] = (),
    retraining_level: str = "student-t",
    paired_rows: Sequence[dict] = (),
) -> str:
    """compare.md: the warnings, the values (best complete run in bold), the paired differences with their
    verdicts (``rows`` and the FROC ``paired_rows``), the variance by source and the power, ``sections``."""
    shown = [markdown_cell(g.name) + ("" if g.complete else f" {INCOMPLETE_MARK}") for g in groups]
    repeats = any(g.n_repeats > 1 for g in groups)
    lines = [f"# Comparison (label {markdown_cell(label)})", ""]
    if notes:
        lines += [f"> **Warning:** {note}" for note in notes] + [""]
    lines += [
        "Each run's value is its mean over the cases it evaluated, computed from its per-case values (cases.csv) "
        "whatever produced it (evaluate; cv-summary: the validation cases of all folds, whose mean of fold means "
        "is in its own cv_summary.md)"
        + (
            "; a run trained several times: the mean over its repeats ± the standard deviation between repeats"
            if repeats
            else ""
        )
        + f". Best per metric in **bold** (complete runs only); ↑ higher is better, ↓ lower is better. "
        f"{INCOMPLETE_MARK}: the run has failed or missing cases (or repeats), its values are over fewer of them "
        "and it is never marked best.",
        "",
        "| metric | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(groups),
    ]
    if repeats:
        lines.append("| repeats | " + " | ".join(str(g.n_repeats) for g in groups) + " |")
    lines += [
        "| cases evaluated (n) | " + " | ".join(str(g.n_evaluated) for g in groups) + " |",
        "| failed or missing | " + " | ".join(str(g.n_failed) for g in groups) + " |",
    ]
    for row in rows:
        lines.append(
            f"| {row['display']} {_arrow(row)} | " + " | ".join(_value_cell(row, k) for k in range(len(groups))) + " |"
        )
    others = [k for k in range(len(groups)) if k != reference]
    every_row = [*rows, *paired_rows]
    if others and any(row["paired"] for row in every_row):
        lines += ["", f"## Paired differences against {markdown_cell(groups[reference].name)}", ""]
        lines += _interval_lines(groups, reference, resamples, seed, retraining_level)
        header = ["metric"]
        for k in others:
            name = markdown_cell(groups[k].name)
            header += [f"{name}: difference [95 % CI]", f"{name}: P(better)", f"{name}: verdict"]
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---|" * (3 * len(others))]
        for row in every_row:
            cells = []
            for k in others:
                pair = row["paired"].get(k)
                if pair is None:
                    cells += ["–", "–", "–"]
                    continue
                pair = {**pair, "one_repeat_each": groups[k].n_repeats == 1 and groups[reference].n_repeats == 1}
                cells += [_paired_cell(pair), format_number(pair["p_better"], 3), VERDICT_TEXT[pair["verdict"]]]
            lines.append(f"| {row['display']} {_arrow(row)} | " + " | ".join(cells) + " |")
        lines += _budget_lines(every_row, groups, others)
    for section in sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def _budget_lines(rows: list[dict], groups: list[RepeatedRun], others: list[int]) -> list[str]:
    """The variance of each difference by source and the power of the design, for the pairs whose runs both
    have repeats (with one repeat the retraining variance is unknown)."""
    known = [(row, k) for row in rows for k in others if (row["paired"].get(k) or {}).get("covers_retraining")]
    if not known:
        return []
    lines = [
        "",
        "### Where the variance comes from, and what more repeats would separate",
        "",
        "Standard deviation of each difference from the sampling of cases and from retraining (the variance "
        "budget of the two-level bootstrap; retraining share = its share of the difference's variance). Smallest "
        "separable difference: the true difference these repeats and cases separate with 80 % power at the 5 % "
        "level; repeats needed: the repeats per run that would separate the observed difference (*more cases* "
        'when case sampling alone leaves it inseparable). Formula and its limits: docs/metrics.md, "Power".',
        "",
        "| metric | run | SD from cases | SD from retraining | retraining share | smallest separable difference "
        "| repeats for the observed difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, k in known:
        pair = row["paired"][k]
        needed = (
            "more cases"
            if pair["limited_by_cases"]
            else ("–" if pair["mean_difference"] == 0 else "> 100")
            if pair["repeats_needed"] is None
            else str(pair["repeats_needed"])
        )
        share = pair["retraining_share"]
        lines.append(
            f"| {row['display']} {_arrow(row)} | {markdown_cell(groups[k].name)} | "
            f"{format_number(pair['variance_cases'] ** 0.5)} | {format_number(pair['variance_retraining'] ** 0.5)} | "
            f"{'–' if share is None else f'{100 * share:.0f} %'} | {format_number(pair['separable_difference'])} | "
            f"{needed} |"
        )
    return lines


def table_csv(rows: list[dict], groups: list[RepeatedRun], reference: int = 0) -> tuple[list[str], list[list]]:
    """compare.csv's header and rows: the case counts, then per metric the values, stds over cases, best runs,
    the paired statistics of every run against the reference run, and each run's standard deviation between
    repeats and number of repeats."""
    others = [k for k in range(len(groups)) if k != reference]
    header = ["metric", "better"] + [g.name for g in groups] + [f"{g.name}_std" for g in groups] + ["best"]
    for k in others:
        header += [f"{groups[k].name}_{column}" for column, _ in PAIRED_COLUMNS]
    header += [f"{g.name}_sd_between_repeats" for g in groups] + [f"{g.name}_n_repeats" for g in groups]
    padding = [""] * len(groups) + [""] + [""] * len(PAIRED_COLUMNS) * len(others) + [""] * len(groups)
    table = [
        ["n_evaluated", ""] + [g.n_evaluated for g in groups] + padding + [g.n_repeats for g in groups],
        ["n_failed_or_missing", ""] + [g.n_failed for g in groups] + padding + [g.n_repeats for g in groups],
    ]
    for row in rows:
        stds = row.get("stds") or [None] * len(groups)
        line = (
            [row["metric"], "higher" if row["direction"] > 0 else "lower"]
            + ["" if v is None else v for v in row["values"]]
            + ["" if s is None else s for s in stds]
            + [";".join(groups[k].name for k in sorted(row["best"]))]
        )
        for k in others:
            s = row["paired"].get(k, {})
            line += ["" if s.get(key) is None else s[key] for _, key in PAIRED_COLUMNS]
        line += ["" if s is None else s for s in row["sd_between_repeats"]] + row["n_repeats"]
        table.append(line)
    return header, table


def comparison_json(
    rows: list[dict],
    groups: list[RepeatedRun],
    label: str,
    reference: int,
    settings: dict,
    notes: Sequence[str],
) -> dict:
    """compare.json: ``metrics`` -> metric (as in compare.csv) -> run -> ``mean``, ``sd_between_repeats``,
    ``n_repeats``, ``per_repeat``; every run but the reference also ``diff``, ``ci_low``, ``ci_high``,
    ``p_better``, ``verdict`` (better, worse or not separable) and the variance budget and power; runs with
    repeats their variance components. ``runs``: each run's repeats and missing repeats."""
    metrics, directions = {}, {}
    for row in rows:
        directions[row["metric"]] = "higher" if row["direction"] > 0 else "lower"
        by_run = {}
        for k, group in enumerate(groups):
            entry = {
                "mean": row["values"][k],
                "sd_between_repeats": row["sd_between_repeats"][k],
                "n_repeats": row["n_repeats"][k],
                "per_repeat": row["per_repeat"][k],
            }
            components = row["components"][k]
            if components is not None:
                entry["variance_components"] = {
                    "case": components.case,
                    "retraining": components.retraining,
                    "interaction": components.interaction,
                    "n_cases": components.n_cases,
                    "truncated": list(components.truncated),
                }
            if k != reference:
                pair = row["paired"].get(k) or {}
                entry.update({name: pair.get(key) for name, key in JSON_PAIRED})
                entry["verdict"] = pair.get("verdict", "not separable")
            by_run[group.name] = entry
        metrics[row["metric"]] = by_run
    return {
        "label": label,
        "reference": groups[reference].name,
        **settings,
        "runs": {
            g.name: {
                "n_repeats": g.n_repeats,
                "repeats": {name: str(run.folder) for name, run in zip(g.repeat_names, g.repeats, strict=True)},
                "missing_repeats": g.missing,
                "grouped_by": g.source,
                "complete": g.complete,
            }
            for g in groups
        },
        "directions": directions,
        "metrics": metrics,
        "warnings": list(notes),
    }


def write_table(output: Path, markdown: str, csv_table: tuple[list[str], list[list]], data: dict) -> tuple[Path, ...]:
    """compare.md, compare.csv and compare.json in ``output``, each atomically."""
    md, csv_path, json_path = (output / name for name in TABLE_FILES)
    io.write_text(md, markdown)
    io.write_csv(csv_path, *csv_table)
    io.write_json(json_path, data, overwrite=True)
    return md, csv_path, json_path


def _interval(statistics: dict) -> list[float] | None:
    return None if statistics.get("ci_low") is None else [statistics["ci_low"], statistics["ci_high"]]


def froc_markdown(comparison: FrocComparison, groups: list[RepeatedRun]) -> str:
    """compare.md's FROC section: each run's AP, CPM and sensitivities, then the paired differences."""
    label, rate = markdown_cell(comparison.label), f"{comparison.fp_rate:g}"
    lines = [f"## FROC analysis (label {label}; froc.png)", ""]
    if comparison.missing_label:
        names = ", ".join(markdown_cell(n) for n in comparison.missing_label)
        lines += [f"No FROC analysis of label {label} in (every repeat of): {names}.", ""]
    if comparison.absent:
        lines += [f"No FROC analysis (no probabilities): {', '.join(markdown_cell(n) for n in comparison.absent)}.", ""]
    if not comparison.entries:
        return "\n".join(lines)
    rates = comparison.rates

    def cell(entry, name, interval):
        value = entry.get(name) if name in ("ap", "cpm") else entry["sensitivity_at_fp"].get(name)
        spread = entry.get("sd_between_repeats")
        sd = (
            None
            if spread is None
            else (spread.get(name) if name in ("ap", "cpm") else spread["sensitivity_at_fp"].get(name))
        )
        return format_with_interval(value, interval, digits=4, spread=sd)

    repeats = any(e.get("n_repeats", 1) > 1 for e in comparison.entries.values())
    lines += [
        "Pooled over each run's cases; [95 % CI]: case bootstrap of the run's FROC analysis"
        + (
            "; a run with repeats: the mean over its repeats ± the standard deviation between them, its interval "
            "and the band of froc.png from the two-level bootstrap (cases and retraining), candidates the mean "
            "over its repeats"
            if repeats
            else ""
        )
        + ". Candidates and matching: froc.json's settings (the same for every run).",
        "",
        "| run | cases (failed) | lesions | candidates | AP | CPM | "
        + " | ".join(f"sens. at {r} FP/case" for r in rates)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(rates),
    ]
    for k, entry in comparison.entries.items():
        ci = entry["ci"]
        lines.append(
            f"| {markdown_cell(groups[k].name)} | {entry['n_cases']} ({entry['n_failed']}) | {entry['n_lesions']} | "
            f"{format_number(entry['n_candidates'], 1)} | {cell(entry, 'ap', ci['ap'])} | "
            f"{cell(entry, 'cpm', ci['cpm'])} | "
            + " | ".join(cell(entry, r, ci["sensitivity_at_fp"].get(r)) for r in rates)
            + " |"
        )
    reference = comparison.reference
    if not comparison.paired:
        lines += [
            "",
            f"No paired differences: the reference run {markdown_cell(groups[reference].name)} has no FROC analysis.",
            "",
        ]
        return "\n".join(lines)
    base = markdown_cell(groups[reference].name)
    lines += [
        "",
        f"### Sensitivity at {rate} FP/case against {base}",
        "",
        f"Pooled: the difference of the pooled sensitivities at {rate} FP/case over the cases both runs analysed, "
        f"with its 95 % interval from the paired bootstrap ({comparison.resamples} resamples; each resample "
        "recomputes the runs' curves on the same cases; with repeats, the two-level bootstrap: P(better) and the "
        f"verdict are in the paired differences above). Per case (runs of one repeat each): the sensitivity of a "
        f"case's lesions at its run's threshold for {rate} FP/case (over all the run's cases), run − {base}, over "
        "the cases with reference lesions: mean [bootstrap CI], two-sided Wilcoxon signed-rank p, Holm-corrected "
        "over the runs compared (docs/metrics.md).",
        "",
        "| run | threshold | pooled difference [95 % CI] | mean per-case difference [95 % CI], p (n) |",
        "|---|---|---|---|",
    ]
    for k in comparison.pooled:
        d, p = comparison.pooled[k], comparison.per_case.get(k)
        pooled_text = "–" if d["difference"] is None else format_with_interval(d["difference"], _interval(d), digits=4)
        if p is None:
            case_text = "– (repeats: see the pooled difference)"
        elif not p["n"]:
            case_text = "– (n = 0)"
        else:
            case_text = (
                f"{format_with_interval(p['mean_difference'], _interval(p), digits=4)}, "
                f"p = {format_p_value(p['p_holm'])} (n = {p['n']})"
            )
        threshold = format_number(comparison.thresholds.get(k))
        lines.append(f"| {markdown_cell(groups[k].name)} | {threshold} | {pooled_text} | {case_text} |")
    if reference in comparison.thresholds:
        lines.append(f"\n{base}'s threshold for {rate} FP/case: {format_number(comparison.thresholds[reference])}.")
    return "\n".join(lines)


def write_froc_csv(comparison: FrocComparison, groups: list[RepeatedRun], path: Path) -> Path:
    """compare_froc.csv: per run with an analysis, its counts, AP, CPM and sensitivities (with repeats: their
    means), and its paired differences against the reference run (empty for the reference run, or without
    one; the per-case ones only for runs of one repeat each)."""
    rate = f"{comparison.fp_rate:g}"
    header = ["run", "n_repeats", "n_cases", "n_failed", "n_lesions", "n_candidates", "ap", "cpm"]
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
        row = [groups[k].name, groups[k].n_repeats, e["n_cases"], e["n_failed"], e["n_lesions"], e["n_candidates"]]
        row += [e["ap"], e["cpm"]] + [e["sensitivity_at_fp"].get(r) for r in comparison.rates]
        if k in comparison.pooled:
            d, p = comparison.pooled[k], comparison.per_case.get(k) or {}
            row += [d["difference"], d["ci_low"], d["ci_high"], p.get("n", d["n"])]
            row += [p.get(key) for key in ("mean_difference", "ci_low", "ci_high", "p_wilcoxon", "p_holm")]
        else:
            row += [""] * 9
        table.append(["" if v is None else v for v in row])
    return io.write_csv(path, header, table)
