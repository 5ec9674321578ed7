"""``remove-small --sweep``: what minimum-size post-processing costs, before anything is deleted.

For each minimum size m (default 0, 1, 2, 3, 5, 10, 20 voxels) the predictions are cleaned exactly as
``remove-small --min-voxels m`` cleans them (:func:`~nnunet_lesionloss.evaluation.postprocess.remove_small_labels`,
same connectivity) and evaluated exactly as ``evaluate`` evaluates them
(:func:`~nnunet_lesionloss.evaluation.evaluate.evaluate_arrays` and
:func:`~nnunet_lesionloss.evaluation.evaluate.aggregate`, same preset), in memory: each case is read
once. The table gives, per m, the means over cases of lesion recall, precision, F1, FP count and
Dice (the numbers ``summary.json`` of ``remove-small`` followed by ``evaluate`` would hold), the
pooled lesion recall/precision/F1 and how many predicted components the removal deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.evaluate import CaseResult, LabelSpec, aggregate, evaluate_arrays
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.parallel import run_parallel, unexpected_error_reason
from nnunet_lesionloss.evaluation.plotting import pyplot
from nnunet_lesionloss.evaluation.postprocess import REMOVAL_CONNECTIVITY, remove_small_labels
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, Preset, get_preset

__all__ = [
    "DEFAULT_MIN_SIZES",
    "SWEEP_METRICS",
    "SWEEP_FILES",
    "sweep_case",
    "min_size_sweep",
    "write_sweep",
]

#: minimum sizes (voxels) of the sweep: 0 and 1 keep everything (the reference point)
DEFAULT_MIN_SIZES = (0, 1, 2, 3, 5, 10, 20)
#: metric key -> column title (means over cases, as evaluate's summary.json)
SWEEP_METRICS = {
    "lesion_recall": "lesion recall",
    "lesion_precision": "lesion precision",
    "lesion_f1": "lesion F1",
    "lesion_fp": "FP count per case",
    "Dice": "Dice",
}
#: how the outputs name remove-small's default connectivity
REMOVAL_DEFAULT_TEXT = f"{REMOVAL_CONNECTIVITY[3]} (2D: {REMOVAL_CONNECTIVITY[2]})"
SWEEP_FILES = ("min_size_sweep.csv", "min_size_sweep.md", "min_size_sweep.png", "min_size_sweep.json")


def sweep_case(
    case: str,
    reference_file: Path,
    prediction_file: Path,
    labels: LabelSpec,
    settings: EvaluationSettings,
    min_sizes: Sequence[int],
    connectivity: int | str | None,
) -> tuple[list[CaseResult], list[int]]:
    """One case at every minimum size: its results (as ``evaluate_case`` makes them) and, per size, the
    number of predicted foreground components the removal deleted."""

    results, removed = [], []
    try:
        reference = io.read_label_image(reference_file)
        prediction = io.read_label_image(prediction_file)
        io.check_same_geometry(reference, prediction)
        reference_labels = io.as_integer_labels(reference)
        predicted_labels = io.as_integer_labels(prediction)
        if connectivity is None:  # remove-small's default for the image's dimension
            connectivity = REMOVAL_CONNECTIVITY.get(predicted_labels.ndim, "full")
        components = _component_count(predicted_labels, connectivity)
        for size in min_sizes:
            cleaned = remove_small_labels(predicted_labels, size, connectivity)
            result = CaseResult(case, str(reference_file), str(prediction_file))
            for key, evaluation in evaluate_arrays(
                reference_labels, cleaned, reference.spacing, labels, settings
            ).items():
                result.metrics[key] = evaluation.values
                result.undefined[key] = evaluation.undefined
            results.append(result)
            removed.append(components - _component_count(cleaned, connectivity))
    except io.CaseError as error:
        results = [CaseResult(case, str(reference_file), str(prediction_file), error=str(error)) for _ in min_sizes]
        removed = [0] * len(min_sizes)
    except Exception as error:  # keep the other cases going, but say where it broke
        message = unexpected_error_reason(error)
        results = [CaseResult(case, str(reference_file), str(prediction_file), error=message) for _ in min_sizes]
        removed = [0] * len(min_sizes)
    return results, removed


def _component_count(labels: np.ndarray, connectivity: int | str) -> int:
    from nnunet_lesionloss.components import label_components

    return sum(
        label_components(labels == value, connectivity, return_count=True)[1]
        for value in np.unique(labels)
        if value != 0
    )


def min_size_sweep(
    pred_dir,
    gt_dir,
    min_sizes: Sequence[int] = DEFAULT_MIN_SIZES,
    connectivity: int | str | None = None,
    settings: EvaluationSettings | None = None,
    preset: Preset | str = "default",
    dataset_json: str | None = None,
    labels: Sequence[int] | None = None,
    file_ending: str | None = None,
    num_processes: int = 1,
) -> dict:
    """The sweep over a prediction folder: per minimum size, per label, the aggregate of ``evaluate``."""
    from nnunet_lesionloss.evaluation.runner import plan_pairs, resolve_labels

    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = settings or preset.settings
    min_sizes = sorted({int(m) for m in min_sizes})
    if not min_sizes or min_sizes[0] < 0:
        raise ValueError(f"minimum sizes must be >= 0 voxels, got {min_sizes}")
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "reference"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    label_spec, dataset, _ = resolve_labels(preset, dataset_json, gt_dir, labels)
    if file_ending is None and dataset is not None:
        file_ending = dataset.get("file_ending")
    plan = plan_pairs(gt_dir, pred_dir, file_ending, "brats" if preset.brats_outputs else "name")
    jobs = [(case, ref, pred, label_spec, settings, min_sizes, connectivity) for case, ref, pred in plan.pairs]
    outputs = run_parallel(sweep_case, jobs, num_processes, progress=False)
    failed = {case: reason for case, reason in plan.failed.items()}
    for (case, _, _), (results, _) in zip(plan.pairs, outputs):
        if results and results[0].error:
            failed[case] = results[0].error
    rows = []
    for k, size in enumerate(min_sizes):
        results = [r[k] for r, _ in outputs]
        aggregated = aggregate(results, settings)
        rows.append(
            {
                "min_voxels": size,
                "removed_components": int(sum(removed[k] for _, removed in outputs)),
                "mean": {key: {m: means.get(m) for m in SWEEP_METRICS} for key, means in aggregated["mean"].items()},
                "n": {
                    key: {m: aggregated["aggregates"][key].get(m, {}).get("n", 0) for m in SWEEP_METRICS}
                    for key in aggregated["mean"]
                },
                "pooled": {
                    key: {
                        m: across.get(f"pooled_{m}")
                        for m in ("lesion_recall", "lesion_precision", "lesion_f1", "dice", "n_pred_lesions")
                    }
                    for key, across in aggregated["across_cases"].items()
                },
            }
        )
    return {
        "gt_dir": str(gt_dir),
        "pred_dir": str(pred_dir),
        "min_sizes": min_sizes,
        "removal_connectivity": connectivity if connectivity is not None else REMOVAL_DEFAULT_TEXT,
        "settings": settings.to_dict(),
        "preset": preset.name,
        "label_names": label_spec.names,
        "n_cases": len(plan.pairs) + len(plan.failed),
        "n_failed": len(failed),
        "errors": failed,
        "rows": rows,
    }


def sweep_markdown(sweep: dict) -> str:
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
        lines += ["## Failed or missing cases", ""] + [f"- {c}: {e}" for c, e in sweep["errors"].items()] + [""]
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
    io.atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=120, format="png"))
    plt.close(fig)
    return path


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


# --------------------------------------------------------------------------- command line (remove-small --sweep)
