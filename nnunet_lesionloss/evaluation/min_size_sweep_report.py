"""The outputs of ``remove-small --sweep``: the table of a sweep (:func:`sweep_markdown`), its figure (a panel
per label, :func:`plot_sweep`) and the files (:func:`write_sweep`: ``min_size_sweep.csv``, ``.md``, ``.png``
and ``.json``, the last written last). The sweep itself is computed by
:func:`nnunet_lesionloss.evaluation.min_size_sweep.min_size_sweep`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import format_number, ignored_predictions_lines, markdown_cell
from nnunet_lesionloss.evaluation.min_size_sweep import SWEEP_METRICS
from nnunet_lesionloss.evaluation.plotting import pyplot, write_figure

__all__ = ["SWEEP_FILES", "plot_sweep", "sweep_markdown", "write_sweep"]

SWEEP_FILES = ("min_size_sweep.csv", "min_size_sweep.md", "min_size_sweep.png", "min_size_sweep.json")


def sweep_markdown(sweep: dict) -> str:
    """The sweep as Markdown: per label, a row per minimum size; the failed or missing cases by name."""
    labels = list(sweep["rows"][0]["mean"]) if sweep["rows"] else []
    n_ok = sweep["n_cases"] - sweep["n_failed"]
    lines = [
        "# What minimum-size removal costs",
        "",
        f"Predictions {sweep['pred_dir']} against {sweep['gt_dir']}: {n_ok} cases evaluated"
        + (
            f", {sweep['n_failed']} failed or missing (listed below; the means are over the others)"
            if sweep["n_failed"]
            else ""
        )
        + f". Components below m voxels removed per label at {sweep['removal_connectivity']}-connectivity (as "
        f"remove-small --min-voxels m), then evaluated with preset {sweep['preset']} "
        f"({sweep['settings']['connectivity']}-connected lesions, detection {sweep['settings']['lesion_rule']}). "
        "Means over cases as in evaluate's summary.json; pooled: over all lesions of all cases.",
        "",
    ]
    for key in labels:
        name = sweep["label_names"].get(key, key)
        lines += [
            f"## Label {name} ({key})" if name != key else f"## Label {key}",
            "",
            "| min voxels | " + " | ".join(SWEEP_METRICS.values()) + " | pooled recall | pooled precision | pooled F1 "
            "| predicted components removed |",
            "|---|" + "---|" * (len(SWEEP_METRICS) + 4),
        ]
        for row in sweep["rows"]:
            means = row["mean"].get(key, {})
            pooled = row["pooled"].get(key, {})
            cells = [format_number(means.get(m)) for m in SWEEP_METRICS]
            cells += [format_number(pooled.get(m)) for m in ("lesion_recall", "lesion_precision", "lesion_f1")]
            lines.append(f"| {row['min_voxels']} | " + " | ".join(cells) + f" | {row['removed_components']} |")
        lines.append("")
    if sweep["errors"]:
        lines += ["## Failed or missing cases", "", "| case | reason |", "|---|---|"]
        lines += [f"| {markdown_cell(c)} | {markdown_cell(e)} |" for c, e in sweep["errors"].items()] + [""]
    lines += ignored_predictions_lines(sweep.get("ignored_predictions"))
    return "\n".join(lines)


def plot_sweep(sweep: dict, path: Path) -> Path:
    """One panel per label: recall, precision, F1 and Dice (left axis) and the FP count (right) per size."""
    plt = pyplot()
    labels = list(sweep["rows"][0]["mean"])
    fig, axes = plt.subplots(1, len(labels), figsize=(7 * len(labels), 4.2), squeeze=False)
    sizes = [row["min_voxels"] for row in sweep["rows"]]
    x = np.arange(len(sizes))
    for ax, label in zip(axes[0], labels):
        for metric in ("lesion_recall", "lesion_precision", "lesion_f1", "Dice"):
            values = [row["mean"].get(label, {}).get(metric) for row in sweep["rows"]]
            ax.plot(x, [np.nan if v is None else v for v in values], marker="o", label=SWEEP_METRICS[metric])
        ax.set_ylim(0, 1.05)
        ax.set_xticks(x, [str(s) for s in sizes])
        ax.set_xlabel(f"minimum component size (voxels, {sweep['removal_connectivity']}-connectivity)")
        ax.set_ylabel("mean over cases")
        ax.legend(loc="lower left", fontsize=8)
        fp_axis = ax.twinx()
        fp = [row["mean"].get(label, {}).get("lesion_fp") for row in sweep["rows"]]
        fp_axis.plot(x, [np.nan if v is None else v for v in fp], "k--", marker="s", label=SWEEP_METRICS["lesion_fp"])
        fp_axis.set_ylabel("FP count per case")
        fp_axis.set_ylim(bottom=0)
        fp_axis.legend(loc="lower right", fontsize=8)
        ax.set_title(f"Minimum-size removal, label {sweep['label_names'].get(label, label)}")
    fig.tight_layout()
    return write_figure(fig, path)


def write_sweep(output_dir, sweep: dict, overwrite: bool = False) -> list[Path]:
    """min_size_sweep.csv (one row per size and label), .md, .png (a panel per label) and .json (last)."""
    output = io.prepare_output_dir(output_dir, SWEEP_FILES, overwrite, marker=SWEEP_FILES[-1])
    header = (
        ["min_voxels", "label"]
        + list(SWEEP_METRICS)
        + [
            "pooled_lesion_recall",
            "pooled_lesion_precision",
            "pooled_lesion_f1",
            "removed_components",
            "n_cases",
            "n_failed",
        ]
    )
    table = []
    for row in sweep["rows"]:
        for key, means in row["mean"].items():
            pooled = row["pooled"][key]
            table.append(
                [row["min_voxels"], key]
                + ["" if means.get(m) is None else means[m] for m in SWEEP_METRICS]
                + [
                    "" if pooled.get(m) is None else pooled[m]
                    for m in ("lesion_recall", "lesion_precision", "lesion_f1")
                ]
                + [row["removed_components"], sweep["n_cases"] - sweep["n_failed"], sweep["n_failed"]]
            )
    written = [io.write_csv(output / SWEEP_FILES[0], header, table)]
    written.append(io.write_text(output / SWEEP_FILES[1], sweep_markdown(sweep)))
    if sweep["rows"] and sweep["rows"][0]["mean"]:
        written.append(plot_sweep(sweep, output / SWEEP_FILES[2]))
    written.append(io.write_json(output / SWEEP_FILES[3], sweep, overwrite=True))
    return written
