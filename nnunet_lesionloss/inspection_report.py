"""What ``nnunet-lesionloss inspect`` shows and writes, from the numbers inspection.py computes: the decision
hints (one line per decision the numbers inform, each with its number), ``inspect.md`` (one column per label),
the lesion-size histograms and ``inspect.json``. :func:`run_inspection` inspects a dataset and writes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import format_number, markdown_cell
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML
from nnunet_lesionloss.evaluation.plotting import pyplot, save_figure
from nnunet_lesionloss.evaluation.settings import PRESETS, EvaluationSettings
from nnunet_lesionloss.inspection import (
    REMOVE_SMALL_DEFAULT_VOXELS,
    SHARE_THRESHOLDS_VOXELS,
    inspect_dataset,
    resolve_source,
    size_penalty_auto_tau,
    terms_by_scales,
)

__all__ = ["decision_hints", "markdown_table", "plot_size_histogram", "histogram_name", "run_inspection"]


def _face_presets(face: int) -> list[str]:
    """The evaluation presets whose lesions are face-connected."""
    return [name for name, preset in PRESETS.items() if preset.settings.connectivity in ("face", face)]


def _scale_text(scale: Sequence[float]) -> str:
    """A deep-supervision scale as a fraction ("1/4", or per axis "1×1/2×1/2")."""
    parts = [f"1/{round(1 / s)}" if s < 1 else "1" for s in scale]
    return parts[0] if len(set(parts)) == 1 else "×".join(parts)


def decision_hints(report: dict) -> list[str]:
    """One line per decision the numbers inform, each with its number."""
    small_lesion_ml = EvaluationSettings().small_lesion_ml
    hints = []
    scales = report["deep_supervision_scales"]
    weights = report["deep_supervision_loss_weights"]
    terms = report.get("terms_by_scales") or {}
    for key, entry in report["labels"].items():
        n = entry["lesions"]
        name = f"label {entry['name']} ({key})" if entry["name"] != key else f"label {key}"
        if not n:
            hints.append(f"{name}: no lesion in {entry['cases']} cases")
            continue
        voxel_volumes = [float(np.prod(s)) for s in entry["spacing"]["mm"]]
        if len(voxel_volumes) == 1:
            small_voxels = small_lesion_ml * MM3_PER_ML / voxel_volumes[0]
            hints.append(
                f"{name}: the evaluation's small lesion (<= {format_number(small_lesion_ml, None)} mL) is <= "
                f"{format_number(small_voxels, 1, whole=True)} voxels at this "
                f"spacing; remove-small's default deletes components below {REMOVE_SMALL_DEFAULT_VOXELS} voxels (Joshi 2026), "
                f"and {_percent(entry[f'share_below_{REMOVE_SMALL_DEFAULT_VOXELS}_voxels'])} of the lesions here are that "
                "small: check with remove-small --sweep before using it"
            )
        lost = [(k, s) for k, s in enumerate(entry["erased_at_scale"]) if s and weights[k] > 0]
        if lost:
            worst_k, worst = max(lost, key=lambda x: x[1])
            line = (
                f"{name}: nnU-Net's deep-supervision targets erase {', '.join(_percent(s) for s in entry['erased_at_scale'])} "
                f"of the lesions at scales {', '.join(_scale_text(s) for s in scales)} (loss weights "
                f"{', '.join(_weight(w) for w in weights)}); {_percent(worst)} at {_scale_text(scales[worst_k])}"
            )
            if terms:
                line += (
                    f": terms at every scale ({', '.join(terms['all'])}) cannot see them there; terms at full "
                    f"resolution only ({', '.join(terms['full'])}) see every lesion"
                )
            hints.append(line)
        if entry["split_at_face_connectivity"]:
            split, parts = entry["split_at_face_connectivity"], entry["face_components_in_split_lesions"]
            hints.append(
                f"{name}: {split} lesions at {report['full_connectivity']}-connectivity consist of {parts} components at "
                f"{report['face_connectivity']}-connectivity: a {report['face_connectivity']}-connected evaluation "
                f"(presets {', '.join(_face_presets(report['face_connectivity']))}) counts {parts - split} more lesions"
            )
        if entry["touching_border"]:
            hints.append(
                f"{name}: {entry['touching_border']} lesions touch the image border (cut by the field of view)"
            )
    tau = report.get("size_penalty_auto")
    if tau and "tau" in tau:
        hints.append(
            f"nnUNetTrainerSizePenaltyAuto would use tau = {format_number(tau['tau'], 1, whole=True)} voxels "
            f"(quantile {format_number(tau['quantile'], None)} of "
            f"{tau['lesion_positive_volumes']} lesion-positive patch volumes V_g of {tau['patches']} patches of fold "
            f"{tau['fold']}'s training cases; the paper's tau is 600)"
        )
    elif tau:
        hints.append(f"nnUNetTrainerSizePenaltyAuto's tau: {tau['skipped']}")
    return hints


def markdown_table(report: dict) -> str:
    """inspect.md: one column per label, the lesion statistics, the erased shares, the hints, the failed cases."""
    keys = list(report["labels"])
    entries = [report["labels"][k] for k in keys]
    scales = report["deep_supervision_scales"]

    def row(title: str, cells: list[str]) -> str:
        return f"| {title} | " + " | ".join(cells) + " |"

    def quartiles(entry: dict, name: str, digits: int = 1) -> str:
        q = entry[name]
        if q is None:
            return "–"
        return " / ".join(format_number(q[k], digits, whole=True) for k in ("min", "q1", "median", "q3", "max"))

    lines = [
        f"# Lesions of {report['dataset']}",
        "",
        f"{report['n_cases']} cases"
        + (f", {report['n_failed']} could not be inspected (listed below)" if report["n_failed"] else "")
        + f"; lesions = {report['connectivity']}-connected components; spacing: {report['spacing']['source']} ("
        + ", ".join("×".join(format_number(s, None) for s in spacing) for spacing in report["spacing"]["mm"])
        + " mm); deep-supervision scales: "
        + ", ".join(_scale_text(s) for s in scales)
        + f" ({report['deep_supervision_source']}).",
        "",
        row("", [markdown_cell(f"{e['name']} ({k})" if e["name"] != k else k) for k, e in zip(keys, entries)]),
        "|---|" + "---|" * len(keys),
        row("cases", [str(e["cases"]) for e in entries]),
        row("lesions", [str(e["lesions"]) for e in entries]),
        row(
            "lesions per case: median [IQR], max",
            [
                "–"
                if e["lesions_per_case"] is None
                else f"{format_number(e['lesions_per_case']['median'], 1, whole=True)} [{format_number(e['lesions_per_case']['q1'], 1, whole=True)}–"
                f"{format_number(e['lesions_per_case']['q3'], 1, whole=True)}], {format_number(e['lesions_per_case']['max'], 1, whole=True)}"
                for e in entries
            ],
        ),
        row("volume (voxels): min / Q1 / median / Q3 / max", [quartiles(e, "volume_voxels") for e in entries]),
        row("volume (mm³): min / Q1 / median / Q3 / max", [quartiles(e, "volume_mm3") for e in entries]),
    ]
    for t in SHARE_THRESHOLDS_VOXELS:
        lines.append(
            row(
                f"share of lesions <= {t} voxels",
                [_percent(e["share_at_most_voxels"][str(t)]) for e in entries],
            )
        )
    lines += [
        row("lesions touching the image border", [str(e["touching_border"]) for e in entries]),
        row(
            f"one lesion at {report['full_connectivity']}-conn., several at {report['face_connectivity']} (their components)",
            [f"{e['split_at_face_connectivity']} ({e['face_components_in_split_lesions']})" for e in entries],
        ),
    ]
    for k, scale in enumerate(scales):
        weight = report["deep_supervision_loss_weights"][k]
        lines.append(
            row(
                f"erased by the DS target at {_scale_text(scale)} (loss weight {_weight(weight)})",
                [
                    f"{_percent(e['erased_at_scale'][k])} ({e['erased_count_at_scale'][k]})" if e["lesions"] else "–"
                    for e in entries
                ],
            )
        )
    hints = decision_hints(report)
    if hints:
        lines += ["", "What it means for training and post-processing:", ""] + [f"- {h}" for h in hints]
    if report["errors"]:
        lines += ["", "Cases that could not be inspected:", "", "| case | reason |", "|---|---|"]
        lines += [f"| {markdown_cell(c)} | {markdown_cell(e)} |" for c, e in report["errors"].items()]
    return "\n".join(lines) + "\n"


def _percent(value) -> str:
    return "–" if value is None else f"{format_number(100 * value, 1)} %"


def _weight(value: float) -> str:
    """A deep-supervision loss weight (8/15 ... 1/15, 0)."""
    return format_number(value, 4, whole=True)


def plot_size_histogram(
    entry: dict,
    voxels: np.ndarray,
    path: Path,
    small_lesion_voxels: float | None,
    small_lesion_ml: float,
    title: str,
) -> Path:
    """Log-scale histogram of lesion sizes (voxels) with the 10/50/100-voxel and small-lesion marks."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if len(voxels):
        top = max(int(voxels.max()), 2)
        edges = np.unique(np.round(np.geomspace(1, top + 1, num=min(40, top + 1))).astype(int))
        edges = np.append(edges, edges[-1] + 1) if edges[-1] <= top else edges
        ax.hist(voxels, bins=edges - 0.5, color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    colours = ("tab:red", "tab:orange", "tab:green")
    for t, colour in zip(SHARE_THRESHOLDS_VOXELS, colours):
        share = entry["share_at_most_voxels"][str(t)]
        ax.axvline(t + 0.5, color=colour, linestyle="--", linewidth=1, label=f"<= {t} voxels: {_percent(share)}")
    if small_lesion_voxels is not None:
        ax.axvline(
            small_lesion_voxels + 0.5,
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"small lesion (<= {format_number(small_lesion_ml, None)} mL = "
            f"{format_number(small_lesion_voxels, 1, whole=True)} voxels)",
        )
    ax.set_xlabel("lesion size (voxels, log scale)")
    ax.set_ylabel("lesions")
    return save_figure(fig, ax, title, path)


def histogram_name(key: str, name: str) -> str:
    """The file name of a label's size histogram (its key and name, made safe for a file name)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (name if name == key else f"{key}_{name}"))
    return f"size_histogram_{safe}.png"


def run_inspection(
    source_text: str,
    output_dir: str | None = None,
    plans: str | None = None,
    configuration: str | None = None,
    connectivity: int | None = None,
    file_ending: str | None = None,
    dataset_json: str | None = None,
    tau: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[dict, str]:
    """Inspect, write ``inspect.json``, ``inspect.md`` and the histograms to ``output_dir`` (if given);
    returns the report and its Markdown."""
    source = resolve_source(source_text, plans, configuration, file_ending, dataset_json)
    if output_dir is not None:  # before the work: the output must be writable, and not where the labels are
        io.check_output_apart(output_dir, {"DATASET": source.folder})
        io.prepare_output_dir(output_dir, ["inspect.md", "inspect.json"], overwrite, marker="inspect.json")
    report, sizes = inspect_dataset(source, connectivity, progress=progress)
    report["terms_by_scales"] = terms_by_scales()
    if source.planned is not None and tau:
        try:
            report["size_penalty_auto"] = size_penalty_auto_tau(source)
        except Exception as error:  # the hint must not cost the inspection
            report["size_penalty_auto"] = {"skipped": f"not computed ({type(error).__name__}: {error})"}
    elif source.planned is None:
        report["size_penalty_auto"] = {"skipped": "needs a planned and preprocessed dataset (its training patches)"}
    text = markdown_table(report)
    if output_dir is not None:
        output = Path(output_dir)
        names = {key: histogram_name(key, entry["name"]) for key, entry in report["labels"].items()}
        for name in names.values():
            io.check_writable(output / name, overwrite)
        small_lesion_ml = EvaluationSettings().small_lesion_ml
        for key, entry in report["labels"].items():
            volumes = [float(np.prod(s)) for s in entry["spacing"]["mm"]]
            small = small_lesion_ml * MM3_PER_ML / volumes[0] if len(volumes) == 1 else None
            title = f"Lesion sizes of {report['dataset']}, label {entry['name']}"
            plot_size_histogram(entry, sizes[key], output / names[key], small, small_lesion_ml, title)
            entry["histogram"] = names[key]
        io.write_text(output / "inspect.md", text)
        io.write_json(output / "inspect.json", report, overwrite=True)
    return report, text
