"""What the FROC analysis writes: the FROC points per label (CSV) and figure (PNG, with the bootstrap band;
evaluation/plotting.py), froc_cases.json (per case: matched confidences, lesion sizes, false positives),
froc_cases.csv (per case: counts and the sensitivity at the operating point), froc.md (the tables, every failed
case by name) and froc.json last. Computation is in curves.py and analysis.py; this module only writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import (
    format_number,
    format_with_interval,
    ignored_predictions_lines,
    markdown_cell,
)
from nnunet_lesionloss.evaluation.froc.curves import FrocPool, case_sensitivity_at, operating_threshold
from nnunet_lesionloss.evaluation.froc.settings import FROC_CASES, FROC_MARKER, FrocSettings, rate_key
from nnunet_lesionloss.evaluation.plotting import pyplot, save_figure


def write_froc_outputs(output_dir: Path, results, analysis: dict, settings: FrocSettings) -> dict:
    """FROC CSV + PNG per label, froc_cases.json / .csv, froc.md, then froc.json (``analysis``, as
    :func:`~.analysis.analyse` computes it from ``results``); returns ``analysis``."""
    output_dir = Path(output_dir)
    (output_dir / FROC_MARKER).unlink(missing_ok=True)
    evaluated = [(job, by_key) for job, by_key, error in results if error is None]
    for key, entry in analysis.items():
        curve = FrocPool([by_key[key] for _, by_key in evaluated]).froc()
        rows = [list(point) for point in curve.finite_points()]
        io.write_csv(
            output_dir / entry["files"]["froc_csv"],
            ["threshold", "fp_per_case", "sensitivity", "true_positives", "false_positives"],
            rows,
        )
        plot_froc([(entry["name"], entry)], output_dir / entry["files"]["froc_png"], f"FROC, {entry['name']} ({key})")
    raw = {
        "failures": [
            {"case": job.case, "fold": job.fold, "reason": error} for job, _, error in results if error is not None
        ],
        "labels": {key: {job.case: by_key[key].to_json() for job, by_key in evaluated} for key in analysis},
    }
    io.write_json(output_dir / FROC_CASES, raw, overwrite=True)
    header, rows = case_rows(results, list(analysis), settings.size_fp_rate)
    io.write_csv(output_dir / "froc_cases.csv", header, rows)
    io.write_text(output_dir / "froc.md", froc_markdown(analysis))
    io.write_json(output_dir / FROC_MARKER, analysis, overwrite=True)
    return analysis


def case_rows(results, keys: Sequence[str], size_fp_rate: float) -> tuple[list[str], list[list]]:
    """One row per case and label: counts, and the case's sensitivity and false positives at the label's
    operating threshold (the lowest with <= ``size_fp_rate`` FP per case over all cases). ``results``:
    [(job, FrocCase per label key or None, error or None)] as :func:`~.analysis.run_jobs` returns them."""
    rate = rate_key(size_fp_rate)
    header = [
        "fold",
        "case",
        "label",
        "n_ref_lesions",
        "n_candidates",
        "n_false_positive_candidates",
        f"sensitivity_at_{rate}fp",
        f"false_positives_at_{rate}fp",
        "error",
    ]
    rows = []
    evaluated = [by_key for _, by_key, error in results if error is None]
    for key in keys:
        pool = FrocPool([by_key[key] for by_key in evaluated])
        tp, fp, _ = pool.counts()
        threshold = operating_threshold(tp, fp, pool.thresholds, pool.n_cases, size_fp_rate) if pool.n_cases else None
        for job, by_key, error in results:
            fold = "" if job.fold is None else job.fold
            if error is not None:
                rows.append([fold, job.case, key, "", "", "", "", "", error])
                continue
            case = by_key[key]
            sensitivity, false_positives = case_sensitivity_at(case, threshold)
            rows.append(
                [
                    fold,
                    job.case,
                    key,
                    case.n_lesions,
                    case.n_candidates,
                    len(case.false_positive_confidence),
                    "" if sensitivity is None else sensitivity,
                    false_positives,
                    "",
                ]
            )
    return header, rows


def froc_markdown(analysis: dict, heading: str = "#") -> str:
    """A table per label: AP, CPM and the sensitivity at each FP rate with their bootstrap CIs, counts,
    the per-size-bin sensitivities and every failed case."""
    lines = [f"{heading} FROC analysis", ""]
    for key, entry in analysis.items():
        s = entry["settings"]
        ci = entry["ci"]
        method = (
            f"static candidates (p >= {format_number(s['threshold'], None)})"
            if s["candidates"] == "static"
            else f"dynamic candidates (peak / {format_number(s['dynamic_threshold_factor'], None)})"
        )
        rule = (
            "any overlap"
            if s["matching"] == "any"
            else f"{s['matching'].upper()} >= {format_number(s['min_overlap'], None)}"
        )
        lines += [
            f"{heading}# {entry['name']} ({key})",
            "",
            f"{entry['n_cases']} cases, {entry['n_lesions']} reference lesions, {entry['n_candidates']} candidates "
            f"({method}, {s['connectivity']} connectivity; matched one-to-one at {rule}; a second candidate on a lesion "
            f"is {'ignored' if s['allow_unmatched_candidates_with_minimal_overlap'] else 'a false positive'}). "
            f"95 % CIs: case bootstrap, {ci['resamples']} resamples.",
            "",
            "| statistic | value [95 % CI] |",
            "|---|---|",
            f"| AP | {format_with_interval(entry['ap'], ci['ap'])} |",
            f"| CPM (mean sensitivity at {', '.join(entry['sensitivity_at_fp'])} FP/case) | "
            f"{format_with_interval(entry['cpm'], ci['cpm'])} |",
        ]
        for rate, value in entry["sensitivity_at_fp"].items():
            lines.append(
                f"| sensitivity at {rate} FP/case | {format_with_interval(value, ci['sensitivity_at_fp'][rate])} |"
            )
        point = entry["operating_point"]
        lines += [
            "",
            f"At {format_number(point['fp_per_case'], None)} FP/case (threshold {format_number(point['threshold'], 4)}, "
            f"{format_number(point['mean_fp_per_case'], 2)} FP/case), sensitivity by reference lesion volume:",
            "",
            "| lesion volume | lesions | sensitivity |",
            "|---|---|---|",
        ]
        lines += [
            f"| {markdown_cell(name)} | {b['n_lesions']} | {format_number(b['sensitivity'])} |"
            for name, b in entry["sensitivity_by_size"].items()
        ]
        lines.append("")
        if entry["failed_cases"]:
            lines += [
                f"**{entry['n_failed']} case(s) could not be analysed; every number above is over the others:**",
                "",
                "| fold | case | reason |",
                "|---|---|---|",
            ]
            lines += [
                f"| {'–' if f['fold'] is None else f['fold']} | {markdown_cell(f['case'])} | "
                f"{markdown_cell(f['reason'])} |"
                for f in entry["failed_cases"]
            ]
            lines.append("")
        lines += ignored_predictions_lines(entry.get("ignored_predictions"))
    return "\n".join(lines)


def plot_froc(curves: list[tuple[str, dict]], path: Path, title: str) -> Path:
    """FROC curves (log FP axis, 1/8 to 8 FP per case as LUNA16 and PI-CAI plot them) with their
    bootstrap bands, from froc.json entries."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    largest = 8.0
    for k, (name, entry) in enumerate(curves):
        color = f"C{k}"
        points = entry.get("froc") or []
        if points:
            fp_rates = [p[0] for p in points]
            sensitivity = [p[1] for p in points]
            largest = max(largest, fp_rates[-1])
            # a step curve that stays at the last sensitivity beyond the last point (picai_eval's ∞ point)
            ax.step(
                fp_rates + [largest * 2],
                sensitivity + [sensitivity[-1]],
                where="post",
                color=color,
                label=f"{name} (AP {format_number(entry.get('ap'))}, CPM {format_number(entry.get('cpm'))})",
            )
        band = entry.get("froc_band") or {}
        low, high = band.get("low") or [], band.get("high") or []
        if low and all(v is not None for v in low + high):
            ax.fill_between(band["fp_per_case"], low, high, step="post", color=color, alpha=0.2, linewidth=0)
        rates = [float(r) for r in entry.get("sensitivity_at_fp", {})]
        values = list(entry.get("sensitivity_at_fp", {}).values())
        if rates and all(v is not None for v in values):
            ax.plot(rates, values, "o", color=color, markersize=3)
    ax.set_xscale("log")
    ax.set_xlim(1 / 16, largest * 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per case")
    ax.set_ylabel("lesion sensitivity")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, ax, title, Path(path))
