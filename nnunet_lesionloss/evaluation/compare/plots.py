"""The figures of ``compare`` (PNG, drawn with evaluation/plotting.py): the lesion detection rate per size
bin, predicted against reference volume per case, the detection rate against the reference lesion volume
(from each run's lesions.csv) and the runs' FROC curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation.compare.froc import FrocComparison
from nnunet_lesionloss.evaluation.compare.runs import Run
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.froc.report import plot_froc
from nnunet_lesionloss.evaluation.lesion_table import plot_detection_by_volume
from nnunet_lesionloss.evaluation.plotting import pyplot, save_figure

__all__ = [
    "FIGURES",
    "DETECTION_BY_VOLUME",
    "FROC_FIGURE",
    "plot_detection_by_size",
    "plot_volume_agreement",
    "plot_detection_by_lesion_volume",
    "plot_froc_comparison",
]

#: the figures every comparison has
FIGURES = ("detection_by_size.png", "volume_agreement.png")
#: the figure of detection rate against reference lesion volume, drawn from the runs' lesions.csv
DETECTION_BY_VOLUME = "detection_by_volume.png"
#: the runs' FROC curves
FROC_FIGURE = "froc.png"


def _case_volumes(run: Run, label: str) -> tuple[list[float], list[float]]:
    """Reference and predicted volumes (mL) of the cases that have both."""
    values = run.case_values(label)
    refs, preds = values.get("ref_volume_ml", {}), values.get("pred_volume_ml", {})
    cases = sorted(set(refs) & set(preds))
    return [refs[c] for c in cases], [preds[c] for c in cases]


def plot_detection_by_size(runs: list[Run], label: str, path: Path) -> Path:
    """Pooled lesion recall per reference lesion volume bin, one bar per run."""
    plt = pyplot()

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
    return save_figure(fig, ax, f"Detection by lesion size, label {label}", path)


def plot_volume_agreement(runs: list[Run], label: str, path: Path) -> Path:
    """Predicted against reference volume per case, one colour per run (with its volume CCC)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    largest = 0.0
    for run in runs:
        refs, preds = _case_volumes(run, label)
        ccc = run.pooled.get(label, {}).get("volume_ccc")
        ax.scatter(refs, preds, s=14, alpha=0.7, label=f"{run.name} (CCC {format_number(ccc, 3)})")
        largest = max([largest] + refs + preds)
    largest = largest or 1.0
    ax.plot([0, largest], [0, largest], "k--", linewidth=1, label="identity")
    ax.set_xlabel("reference volume (mL)")
    ax.set_ylabel("predicted volume (mL)")
    return save_figure(fig, ax, f"Volume agreement, label {label}", path)


def plot_detection_by_lesion_volume(lesion_tables: dict[str, Path], runs: list[Run], label: str, path: Path) -> Path:
    """The detection rate against the reference lesion volume from the runs' lesions.csv (``lesion_tables``:
    run name -> file), with the first run's small-lesion volume marked."""
    small = (runs[0].settings or {}).get("small_lesion_ml")
    return plot_detection_by_volume(lesion_tables, label, path, small)


def plot_froc_comparison(comparison: FrocComparison, runs: list[Run], path: Path) -> Path:
    """The FROC curves of the runs with an analysis of the label, in one figure."""
    curves = [(runs[k].name, entry) for k, entry in comparison.entries.items()]
    return plot_froc(curves, path, f"FROC, label {comparison.label}")
