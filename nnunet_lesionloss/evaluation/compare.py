"""``compare``: runs side by side like Table 1 of Luu et al. 2026 (CATMIL): best per metric in bold,
arrows for the better direction; as Markdown and CSV, plus two PNG figures: lesion detection rate
per size bin per run, and predicted vs reference volume per case.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.evaluate import format_value

# (metric key, display name, +1 if higher is better, -1 if lower is better)
TABLE_METRICS = (
    ("Dice", "Dice", +1),
    ("hd95", "HD95 (mm)", -1),
    ("assd", "ASSD (mm)", -1),
    ("lesion_f1", "Lesion F1", +1),
    ("lesion_precision", "Lesion precision (PPV)", +1),
    ("lesion_recall", "Lesion recall (SEN)", +1),
    ("small_lesion_recall", "Small lesion recall", +1),
    ("lesion_fn", "FN count", -1),
    ("lesion_fp", "FP count", -1),
    ("fn_volume_fraction", "FN volume fraction", -1),
    ("fp_volume_mm3", "FP volume (mm³)", -1),
    ("rve", "RVE", -1),
    ("abs_volume_error_ml", "Abs. volume error (mL)", -1),
    ("dsc0.1_pq_dsc", "PQ (DSC>=0.1)", +1),
    ("dsc0.5_pq_dsc", "PQ (DSC>=0.5)", +1),
    ("dsc0.5_sq_dsc", "SQ (DSC>=0.5)", +1),
    ("dsc0.5_rq", "RQ (DSC>=0.5)", +1),
    ("iou0.5_pq", "PQ (IoU>=0.5)", +1),
)


@dataclass
class Run:
    name: str
    folder: Path
    means: dict  # label -> metric -> value
    stds: dict
    pooled: dict  # label -> across-case metrics
    cases_csv: Path | None


def load_run(path: str | Path, name: str | None = None) -> Run:
    path = Path(path)
    for folder in (path, path / "lesion_evaluation"):
        if (folder / "cv_summary.json").is_file():
            with open(folder / "cv_summary.json") as handle:
                data = json.load(handle)
            return Run(
                name or data.get("trainer") or folder.name,
                folder,
                data["mean_of_fold_means"],
                data["std_of_fold_means"],
                data["pooled"]["across_cases"],
                folder / "cases.csv" if (folder / "cases.csv").is_file() else None,
            )
        if (folder / "summary.json").is_file():
            with open(folder / "summary.json") as handle:
                data = json.load(handle)
            if "aggregates" not in data:
                raise ValueError(
                    f"{folder / 'summary.json'} is not a lesion-wise summary (run nnunet-lesionloss evaluate)"
                )
            stds = {label: {m: d["std"] for m, d in by.items()} for label, by in data["aggregates"].items()}
            return Run(
                name or folder.name,
                folder,
                data["mean"],
                stds,
                data["across_cases"],
                folder / "cases.csv" if (folder / "cases.csv").is_file() else None,
            )
    raise FileNotFoundError(f"{path} holds no cv_summary.json or summary.json (run cv-summary or evaluate first)")


def best_indices(values: list, direction: int) -> set[int]:
    defined = [(v, k) for k, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not defined or direction == 0:
        return set()
    target = max(v for v, _ in defined) if direction > 0 else min(v for v, _ in defined)
    return {k for v, k in defined if v == target}


def comparison_table(runs: list[Run], label: str) -> list[dict]:
    rows = []
    for key, display, direction in TABLE_METRICS:
        values = [run.means.get(label, {}).get(key) for run in runs]
        if all(v is None for v in values):
            continue
        stds = [run.stds.get(label, {}).get(key) for run in runs]
        rows.append(
            {
                "metric": key,
                "display": display,
                "direction": direction,
                "values": values,
                "stds": stds,
                "best": best_indices(values, direction),
            }
        )
    return rows


def write_table(rows: list[dict], runs: list[Run], output: Path, label: str) -> tuple[Path, Path]:
    md, csv_path = output / "compare.md", output / "compare.csv"
    lines = [
        f"# Comparison (label {label})",
        "",
        "Mean over folds of the fold means (cv-summary) or over cases (evaluate); best per metric in **bold**; "
        "↑ higher is better, ↓ lower is better.",
        "",
        "| metric | " + " | ".join(run.name for run in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for row in rows:
        cells = []
        for k, value in enumerate(row["values"]):
            text = format_value(value)
            cells.append(f"**{text}**" if k in row["best"] else text)
        arrow = "↑" if row["direction"] > 0 else "↓"
        lines.append(f"| {row['display']} {arrow} | " + " | ".join(cells) + " |")
    md.write_text("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["metric", "better"] + [run.name for run in runs] + [f"{run.name}_std" for run in runs] + ["best"]
        )
        for row in rows:
            writer.writerow(
                [row["metric"], "higher" if row["direction"] > 0 else "lower"]
                + ["" if v is None else v for v in row["values"]]
                + ["" if s is None else s for s in row["stds"]]
                + [";".join(runs[k].name for k in sorted(row["best"]))]
            )
    return md, csv_path


def _read_volumes(run: Run, label: str) -> tuple[list[float], list[float]]:
    if run.cases_csv is None:
        return [], []
    refs, preds = [], []
    with open(run.cases_csv) as handle:
        for row in csv.DictReader(handle):
            if row.get("label") == label and row.get("ref_volume_ml") and row.get("pred_volume_ml"):
                refs.append(float(row["ref_volume_ml"]))
                preds.append(float(row["pred_volume_ml"]))
    return refs, preds


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training servers or CI
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, title: str, path: Path) -> Path:
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_detection_by_size(runs: list[Run], label: str, path: Path) -> Path:
    import numpy as np

    plt = _pyplot()

    bins = [
        k[len("pooled_bin") : -len("_lesion_recall")]
        for k in runs[0].pooled.get(label, {})
        if k.startswith("pooled_bin") and k.endswith("_lesion_recall")
    ]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * max(len(bins), 1), 4))
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(bins))
    for k, run in enumerate(runs):
        values = [run.pooled.get(label, {}).get(f"pooled_bin{b}_lesion_recall") for b in bins]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (k - (len(runs) - 1) / 2) * width, heights, width, label=run.name)
    counts = [runs[0].pooled.get(label, {}).get(f"pooled_bin{b}_n_ref_lesions", 0) for b in bins]
    ax.set_xticks(x, [f"{b}\n(n={c})" for b, c in zip(bins, counts)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("lesion detection rate (recall)")
    ax.set_xlabel("reference lesion volume")
    return _finish(fig, ax, f"Detection by lesion size, label {label}", path)


def plot_volume_agreement(runs: list[Run], label: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    largest = 0.0
    for run in runs:
        refs, preds = _read_volumes(run, label)
        ccc = run.pooled.get(label, {}).get("volume_ccc")
        ax.scatter(refs, preds, s=14, alpha=0.7, label=f"{run.name} (CCC {format_value(ccc, 3)})")
        largest = max([largest] + refs + preds)
    largest = largest or 1.0
    ax.plot([0, largest], [0, largest], "k--", linewidth=1, label="identity")
    ax.set_xlabel("reference volume (mL)")
    ax.set_ylabel("predicted volume (mL)")
    return _finish(fig, ax, f"Volume agreement, label {label}", path)


def compare_runs(
    paths: Sequence[str],
    output_dir: str,
    names: Sequence[str] | None = None,
    label: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} runs")
    runs = [load_run(p, None if names is None else names[k]) for k, p in enumerate(paths)]
    labels = list(runs[0].means)
    if label is None:
        if not labels:
            raise ValueError(f"{runs[0].folder} has no evaluated label")
        label = labels[0]
    for run in runs:
        if label not in run.means:
            raise ValueError(f"label {label} not in {run.folder} (has {', '.join(run.means) or 'none'})")
    output = Path(output_dir)
    targets = [output / n for n in ("compare.md", "compare.csv", "detection_by_size.png", "volume_agreement.png")]
    for target in targets:
        io.check_writable(target, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    rows = comparison_table(runs, label)
    md, csv_path = write_table(rows, runs, output, label)
    return [
        md,
        csv_path,
        plot_detection_by_size(runs, label, targets[2]),
        plot_volume_agreement(runs, label, targets[3]),
    ]
