"""``compare``: runs side by side like Table 1 of Luu et al. 2026 (CATMIL), with paired statistics.

Markdown and CSV, plus PNG figures (lesion detection rate per size bin, predicted vs reference
volume per case, and the detection rate against the reference lesion volume from each run's
``lesions.csv``). What the table guarantees:

- each run is named by its trainer (``TRAINER__PLANS__CONFIG`` in its path), never by a folder name
  that every run shares (``lesion_evaluation``); names are made unique;
- each run shows n (cases evaluated) and how many cases failed or are missing; a run with failed or
  missing cases is marked (†) and never shown as best (**bold**), because its means are over other cases;
- runs evaluated with different settings (preset, connectivity, matching, size bins, ...) are refused,
  or with ``allow_different_settings`` compared under a warning that names each difference;
- paired statistics against a reference run (default: the first): over the cases both runs evaluated
  with the metric defined, the mean paired difference (run − reference), its percentile-bootstrap 95 %
  CI (``bootstrap_resamples`` resamples, seeded) and the two-sided Wilcoxon signed-rank p-value
  (scipy.stats.wilcoxon), Holm-corrected per metric across the runs compared (docs/metrics.md).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import format_number, format_p_value, format_with_interval
from nnunet_lesionloss.evaluation.froc.cross_validation import load_froc
from nnunet_lesionloss.evaluation.froc.paired import cases_of, paired_sensitivity_difference, per_case_sensitivity
from nnunet_lesionloss.evaluation.froc.report import plot_froc
from nnunet_lesionloss.evaluation.lesion_table import LESION_FILE, plot_detection_by_volume
from nnunet_lesionloss.evaluation.plotting import pyplot, save_figure
from nnunet_lesionloss.evaluation.settings import current_settings_record
from nnunet_lesionloss.evaluation.statistics import BOOTSTRAP_RESAMPLES, bootstrap_ci, holm, wilcoxon_p

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

#: resamples of the paired bootstrap CI (the CLI default)
TRAINER_FOLDER = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<configuration>.+)$")
INCOMPLETE_MARK = "†"
#: the figure of detection rate against reference lesion volume, drawn from the runs' lesions.csv
DETECTION_BY_VOLUME = "detection_by_volume.png"


@dataclass
class Run:
    name: str
    folder: Path
    kind: str  # "cv-summary" or "evaluate"
    means: dict  # label -> metric -> value
    stds: dict
    pooled: dict  # label -> across-case metrics
    cases_csv: Path | None
    n_cases: int = 0  # cases the run should have evaluated
    n_failed: int = 0  # failed or missing
    settings: dict | None = None
    preset: str | None = None
    identity: str = ""  # the trainer folder (or prediction folder) the run comes from
    reference_folder: str | None = None  # absolute, as recorded (None: an older summary)
    reference_checksums: dict[str, str] = field(default_factory=dict)  # case -> SHA-256 of its reference file
    _per_case: dict | None = field(default=None, repr=False)

    @property
    def n_evaluated(self) -> int:
        return self.n_cases - self.n_failed

    @property
    def complete(self) -> bool:
        return self.n_failed == 0

    def case_values(self, label: str) -> dict[str, dict[str, float]]:
        """metric -> case -> value of the cases evaluated without error (from cases.csv)."""
        if self._per_case is None:
            self._per_case = _read_case_values(self.cases_csv)
        return self._per_case["values"].get(label, {})

    def evaluated_cases(self, label: str) -> set[str]:
        self.case_values(label)
        return self._per_case["cases"].get(label, set())


def _read_case_values(path: Path | None) -> dict:
    out: dict[str, dict[str, dict[str, float]]] = {}
    cases_by_label: dict[str, set[str]] = {}
    if path is None:
        return {"values": out, "cases": cases_by_label}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if row.get("error") or not row.get("label"):
                continue
            cases_by_label.setdefault(row["label"], set()).add(row["case"])
            by_metric = out.setdefault(row["label"], {})
            for metric, text in row.items():
                if metric in ("fold", "case", "label", "error") or text in ("", None):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                cases = by_metric.setdefault(metric, {})
                if row["case"] in cases:
                    raise ValueError(f"{path}: case {row['case']} appears twice for label {row['label']}")
                cases[row["case"]] = value
    return {"values": out, "cases": cases_by_label}


def _trainer_identity(folder: Path, recorded: str | None = None) -> tuple[str, str]:
    """(short name, full identity): the trainer of the first TRAINER__PLANS__CONFIG folder on the
    path, else the prediction folder's name (the parent of ``lesion_evaluation``)."""
    paths = [Path(recorded)] if recorded else []
    paths.append(folder.resolve())
    for path in paths:
        for part in reversed(path.parts):
            match = TRAINER_FOLDER.match(part)
            if match:
                return match.group("trainer"), part
    base = folder.resolve()
    if base.name == "lesion_evaluation":
        base = base.parent
    return base.name, str(base)


def load_run(path: str | Path, name: str | None = None) -> Run:
    """A run from a cv-summary output (cv_summary.json) or an evaluate output (summary.json), in
    ``path`` or in ``path/lesion_evaluation``."""
    path = Path(path)
    for folder in (path, path / "lesion_evaluation"):
        for file_name, kind in (("cv_summary.json", "cv-summary"), ("summary.json", "evaluate")):
            if (folder / file_name).is_file():
                try:
                    with open(folder / file_name) as handle:
                        data = json.load(handle)
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{folder / file_name} is not valid JSON ({error}); run {kind} again to rewrite it"
                    ) from None
                if not isinstance(data, dict):
                    raise ValueError(f"{folder / file_name} is not a {kind} summary; run {kind} again to rewrite it")
                return _run_from(data, kind, folder, name)
    raise FileNotFoundError(f"{path} holds no cv_summary.json or summary.json (run cv-summary or evaluate first)")


def _run_from(data: dict, kind: str, folder: Path, name: str | None) -> Run:
    if kind == "cv-summary":
        means, stds, pooled = data["mean_of_fold_means"], data["std_of_fold_means"], data["pooled"]["across_cases"]
        short, identity = _trainer_identity(folder, data.get("results_dir"))
        short = data.get("trainer") or short
    else:
        if "aggregates" not in data:
            raise ValueError(f"{folder / 'summary.json'} is not a lesion-wise summary (run nnunet-lesionloss evaluate)")
        means, pooled = data["mean"], data["across_cases"]
        stds = {label: {m: d["std"] for m, d in by.items()} for label, by in data["aggregates"].items()}
        short, identity = _trainer_identity(folder, data.get("pred_dir"))
    return Run(
        name=name or short,
        folder=folder,
        kind=kind,
        means=means,
        stds=stds,
        pooled=pooled,
        cases_csv=folder / "cases.csv" if (folder / "cases.csv").is_file() else None,
        n_cases=int(data.get("n_cases", 0)),
        n_failed=int(data.get("n_failed", 0)),
        settings=current_settings_record(data.get("settings")),
        preset=data.get("preset"),
        identity=identity,
        reference_folder=data.get("reference_folder"),
        reference_checksums=data.get("reference_checksums") or {},
    )


def make_names_unique(runs: list[Run]) -> None:
    """Runs that share a name get their full trainer folder (TRAINER__PLANS__CONFIG), then a number."""
    for _ in range(2):
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.name] = counts.get(run.name, 0) + 1
        for run in runs:
            if counts[run.name] > 1 and run.identity and run.identity != run.name:
                run.name = Path(run.identity).name if "/" in run.identity else run.identity
    seen: dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} #{seen[run.name]}"
        else:
            seen[run.name] = 1


def settings_differences(runs: list[Run]) -> list[str]:
    """One line per evaluation setting (or preset) that differs between runs, naming each run's value."""
    differences = []
    presets = [run.preset for run in runs]
    if len(set(map(str, presets))) > 1:
        differences.append("preset: " + ", ".join(f"{run.name}={run.preset}" for run in runs))
    unknown = [run.name for run in runs if run.settings is None]
    if unknown:
        differences.append(f"settings unknown (an older summary without them): {', '.join(unknown)}")
    known = [run for run in runs if run.settings is not None]
    keys: list[str] = []
    for run in known:
        keys += [k for k in run.settings if k not in keys]
    for key in keys:
        values = [json.dumps(run.settings.get(key)) for run in known]
        if len(set(values)) > 1:
            differences.append(f"{key}: " + ", ".join(f"{run.name}={v}" for run, v in zip(known, values)))
    return differences


def reference_differences(runs: list[Run]) -> list[str]:
    """One line per run evaluated against other references than the first run: another reference file
    for a case both evaluated (by SHA-256), or, for summaries without checksums, another folder. The
    same files in another folder (labelsTr and gt_segmentations) are the same references."""
    first = runs[0]
    differences = []
    for run in runs[1:]:
        shared = sorted(set(first.reference_checksums) & set(run.reference_checksums))
        differing = [c for c in shared if first.reference_checksums[c] != run.reference_checksums[c]]
        folders = f"{first.name} used {first.reference_folder or 'an unrecorded folder'}, {run.name} used " + (
            run.reference_folder or "an unrecorded folder"
        )
        if differing:
            differences.append(
                f"references: {len(differing)} of the {len(shared)} cases both runs evaluated have other reference "
                f"files (e.g. {', '.join(differing[:3])}); {folders}"
            )
        elif not shared and first.reference_folder != run.reference_folder:
            differences.append(
                f"reference folder: {folders} (no checksums recorded to tell whether the files are equal)"
            )
    return differences


def best_indices(values: list, direction: int, eligible: Sequence[bool] | None = None) -> set[int]:
    """Runs with the best value; only ``eligible`` runs (complete ones) can be best."""
    eligible = eligible or [True] * len(values)
    defined = [(v, k) for k, v in enumerate(values) if v is not None and math.isfinite(v) and eligible[k]]
    if not defined or direction == 0:
        return set()
    target = max(v for v, _ in defined) if direction > 0 else min(v for v, _ in defined)
    return {k for v, k in defined if v == target}


# --------------------------------------------------------------------------- paired statistics


def paired_difference(
    reference: dict[str, float], other: dict[str, float], resamples: int, seed: int
) -> dict[str, float | int | None]:
    """Mean of other − reference over the cases both define, bootstrap CI, Wilcoxon p."""
    common = sorted(set(reference) & set(other))
    differences = np.array([other[c] - reference[c] for c in common], dtype=np.float64)
    ci = bootstrap_ci(differences, resamples, seed)
    return {
        "n": len(common),
        "mean_difference": float(differences.mean()) if len(common) else None,
        "ci_low": None if ci is None else ci[0],
        "ci_high": None if ci is None else ci[1],
        "p_wilcoxon": wilcoxon_p(differences),
    }


def comparison_table(
    runs: list[Run],
    label: str,
    reference: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    paired: bool = True,
) -> list[dict]:
    eligible = [run.complete for run in runs]
    rows = []
    for key, display, direction in TABLE_METRICS:
        values = [run.means.get(label, {}).get(key) for run in runs]
        if all(v is None for v in values):
            continue
        row = {
            "metric": key,
            "display": display,
            "direction": direction,
            "values": values,
            "stds": [run.stds.get(label, {}).get(key) for run in runs],
            "best": best_indices(values, direction, eligible),
            "paired": {},
        }
        if paired:
            base = runs[reference].case_values(label).get(key, {})
            for k, run in enumerate(runs):
                if k != reference:
                    row["paired"][k] = paired_difference(base, run.case_values(label).get(key, {}), resamples, seed)
            adjusted = holm([row["paired"][k]["p_wilcoxon"] for k in row["paired"]])
            for k, p in zip(row["paired"], adjusted):
                row["paired"][k]["p_holm"] = p
        rows.append(row)
    return rows


def write_table(
    rows: list[dict],
    runs: list[Run],
    output: Path,
    label: str,
    reference: int = 0,
    notes: Sequence[str] = (),
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    sections: Sequence[str] = (),
) -> tuple[Path, Path]:
    md, csv_path = output / "compare.md", output / "compare.csv"
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
        arrow = "↑" if row["direction"] > 0 else "↓"
        lines.append(f"| {row['display']} {arrow} | " + " | ".join(cells) + " |")
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
            arrow = "↑" if row["direction"] > 0 else "↓"
            lines.append(f"| {row['display']} {arrow} | " + " | ".join(cells) + " |")
    for section in sections:
        lines += ["", section]
    io.write_text(md, "\n".join(lines) + "\n")

    header = ["metric", "better"] + [run.name for run in runs] + [f"{run.name}_std" for run in runs] + ["best"]
    for k in others:
        name = runs[k].name
        header += [
            f"{name}_n_paired",
            f"{name}_diff",
            f"{name}_ci_low",
            f"{name}_ci_high",
            f"{name}_p",
            f"{name}_p_holm",
        ]
    table = [
        ["n_evaluated", ""] + [run.n_evaluated for run in runs] + [""] * len(runs) + [""] + [""] * 6 * len(others),
        ["n_failed_or_missing", ""] + [run.n_failed for run in runs] + [""] * len(runs) + [""] + [""] * 6 * len(others),
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
            line += [
                "" if s.get(key) is None else s[key]
                for key in ("n", "mean_difference", "ci_low", "ci_high", "p_wilcoxon", "p_holm")
            ]
        table.append(line)
    io.write_csv(csv_path, header, table)
    return md, csv_path


def _read_volumes(run: Run, label: str) -> tuple[list[float], list[float]]:
    values = run.case_values(label)
    refs, preds = values.get("ref_volume_ml", {}), values.get("pred_volume_ml", {})
    cases = sorted(set(refs) & set(preds))
    return [refs[c] for c in cases], [preds[c] for c in cases]


def plot_detection_by_size(runs: list[Run], label: str, path: Path) -> Path:
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    largest = 0.0
    for run in runs:
        refs, preds = _read_volumes(run, label)
        ccc = run.pooled.get(label, {}).get("volume_ccc")
        ax.scatter(refs, preds, s=14, alpha=0.7, label=f"{run.name} (CCC {format_number(ccc, 3)})")
        largest = max([largest] + refs + preds)
    largest = largest or 1.0
    ax.plot([0, largest], [0, largest], "k--", linewidth=1, label="identity")
    ax.set_xlabel("reference volume (mL)")
    ax.set_ylabel("predicted volume (mL)")
    return save_figure(fig, ax, f"Volume agreement, label {label}", path)


def _reference_index(runs: list[Run], reference: str | int | None) -> int:
    if reference is None:
        return 0
    if isinstance(reference, int) or str(reference).isdigit():
        index = int(reference) - 1
        if not 0 <= index < len(runs):
            raise ValueError(f"--reference {reference}: there are {len(runs)} runs (1 to {len(runs)})")
        return index
    names = [run.name for run in runs]
    if reference not in names:
        raise ValueError(f"--reference {reference!r} is none of the runs: {', '.join(names)}")
    return names.index(reference)


def compare_runs(
    paths: Sequence[str],
    output_dir: str,
    names: Sequence[str] | None = None,
    label: str | None = None,
    overwrite: bool = False,
    reference: str | int | None = None,
    allow_different_settings: bool = False,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    fp_rate: float = 1.0,
) -> tuple[list[Path], list[str]]:
    """Write compare.md, compare.csv and the two figures (and, when the runs have a detection analysis,
    froc.png and compare_froc.csv); returns (files written, warnings)."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} runs")
    if names is not None and len(set(names)) != len(names):
        raise ValueError(f"--names must be unique, got {list(names)}")
    runs = [load_run(p, None if names is None else names[k]) for k, p in enumerate(paths)]
    if names is None:
        make_names_unique(runs)
    evaluated = [run for run in runs if run.means]  # a run whose cases all failed has no label at all
    if label is None:
        if not evaluated:
            raise ValueError(f"no run has an evaluated case: {', '.join(str(run.folder) for run in runs)}")
        label = next(iter(evaluated[0].means))
    for run in evaluated:
        if label not in run.means:
            raise ValueError(f"label {label} not in {run.folder} (has {', '.join(run.means) or 'none'})")
    detections = [load_froc(run.folder) for run in runs]
    differences = (
        settings_differences(runs) + reference_differences(runs) + froc_settings_differences(runs, detections, label)
    )
    if differences and not allow_different_settings:
        raise ValueError(
            "the runs were evaluated with different settings or references, so their numbers are not comparable: "
            + "; ".join(differences)
            + ". Evaluate them again with the same settings and references, or pass --allow-different-settings"
        )
    reference_index = _reference_index(runs, reference)
    notes = [f"evaluated with different settings: {d}" for d in differences]
    for run in runs:
        if not run.means:
            notes.append(
                f"{run.name} has no evaluated case (all {run.n_cases} failed or are missing): its column is empty"
            )
        elif not run.complete:
            notes.append(
                f"{run.name} has {run.n_failed} failed or missing case(s) of {run.n_cases}: its means are over "
                f"{run.n_evaluated} cases; it is not marked best"
            )
    case_sets = {run.name: run.evaluated_cases(label) for run in runs}
    if len({frozenset(s) for s in case_sets.values()}) > 1:
        common = set.intersection(*case_sets.values())
        notes.append(
            "the runs evaluated different cases ("
            + ", ".join(f"{name}: {len(s)}" for name, s in case_sets.items())
            + f"); {len(common)} are common to all, and the paired statistics use the cases each pair shares"
        )
    with_froc = [k for k, d in enumerate(detections) if d is not None]
    for k in with_froc:
        failed = detections[k][0].get(label, {}).get("n_failed", 0)
        if failed:
            notes.append(
                f"{runs[k].name}'s detection analysis lacks {failed} case(s) (listed in its detection.json): its "
                "curve is over the others"
            )
    if with_froc:
        notes += [
            f"{run.name} has no detection analysis (no detection.json in {run.folder}; cv-summary writes it when "
            "the folds were validated with nnUNetv2_train --npz): it is missing from the FROC comparison"
            for k, run in enumerate(runs)
            if detections[k] is None
        ]
    output = Path(output_dir)
    targets = [output / n for n in ("compare.md", "compare.csv", "detection_by_size.png", "volume_agreement.png")]
    lesion_tables = {run.name: run.folder / LESION_FILE for run in runs}
    without_table = [name for name, path in lesion_tables.items() if not path.is_file()]
    if without_table:  # a missing figure, not a problem of the numbers: a note, not a warning
        print(
            f"note: no {LESION_FILE} in the evaluation of {', '.join(without_table)} (evaluate again with this "
            f"version): {DETECTION_BY_VOLUME} is not drawn",
            file=sys.stderr,
        )
    detection_targets = [output / "froc.png", output / "compare_froc.csv"] if with_froc else []
    names = [t.name for t in targets + detection_targets] + [DETECTION_BY_VOLUME]
    io.prepare_output_dir(output, names, overwrite)
    rows = comparison_table(runs, label, reference_index, bootstrap_resamples, seed)
    sections, written_froc = [], []
    if with_froc:
        section, written_froc = compare_froc(
            runs, detections, label, reference_index, output, fp_rate, bootstrap_resamples, seed
        )
        sections.append(section)
    md, csv_path = write_table(
        rows, runs, output, label, reference_index, notes, bootstrap_resamples, seed, sections=sections
    )
    written = [
        md,
        csv_path,
        plot_detection_by_size(runs, label, targets[2]),
        plot_volume_agreement(runs, label, targets[3]),
        *written_froc,
    ]
    if not without_table:
        small = (runs[0].settings or {}).get("small_lesion_ml")
        written.append(plot_detection_by_volume(lesion_tables, label, output / DETECTION_BY_VOLUME, small))
    return written, notes


# --------------------------------------------------------------------------- detection (FROC)
def froc_settings_differences(runs: list[Run], detections: list, label: str) -> list[str]:
    """Differences between the detection settings of the runs that have a detection analysis of ``label``."""
    recorded = [
        (run.name, detection[0][label]["settings"])
        for run, detection in zip(runs, detections)
        if detection is not None and label in detection[0]
    ]
    differences = []
    keys: list[str] = []
    for _, settings in recorded:
        keys += [k for k in settings if k not in keys]
    for key in keys:
        if key in ("bootstrap_resamples", "seed"):  # the precision of the CIs, not what is measured
            continue
        values = [json.dumps(settings.get(key)) for _, settings in recorded]
        if len(set(values)) > 1:
            differences.append(f"detection {key}: " + ", ".join(f"{n}={v}" for (n, _), v in zip(recorded, values)))
    return differences


def compare_froc(
    runs: list[Run],
    detections: list,
    label: str,
    reference: int,
    output: Path,
    fp_rate: float,
    resamples: int,
    seed: int,
) -> tuple[str, list[Path]]:
    """FROC curves of the runs in one figure, their AP / CPM / sensitivities, and the paired difference of
    the sensitivity at ``fp_rate`` FP per case against the reference run (docs/metrics.md)."""
    entries = {k: d[0].get(label) for k, d in enumerate(detections) if d is not None}
    missing_label = [runs[k].name for k, e in entries.items() if e is None]
    entries = {k: e for k, e in entries.items() if e is not None}
    rate = f"{fp_rate:g}"
    lines = [f"## Detection (FROC, label {label}; froc.png)", ""]
    if missing_label:
        lines += [f"No detection analysis of label {label} in: {', '.join(missing_label)}.", ""]
    absent = [run.name for k, run in enumerate(runs) if detections[k] is None]
    if absent:
        lines += [f"No detection analysis (no probabilities): {', '.join(absent)}.", ""]
    written = []
    if not entries:
        return "\n".join(lines), written
    written.append(
        plot_froc([(runs[k].name, e) for k, e in entries.items()], output / "froc.png", f"FROC, label {label}")
    )
    first = next(iter(entries.values()))
    rates = list(first["sensitivity_at_fp"])

    def cell(entry, name, interval):
        return format_with_interval(
            entry.get(name) if name in ("ap", "cpm") else entry["sensitivity_at_fp"].get(name), interval, digits=4
        )

    lines += [
        "Pooled over each run's cases; [95 % CI]: case bootstrap of the run's detection analysis. "
        "Candidates and matching: detection.json's settings (the same for every run).",
        "",
        "| run | cases (failed) | lesions | candidates | AP | CPM | "
        + " | ".join(f"sens. at {r} FP/case" for r in rates)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(rates),
    ]
    for k, entry in entries.items():
        ci = entry["ci"]
        lines.append(
            f"| {runs[k].name} | {entry['n_cases']} ({entry['n_failed']}) | {entry['n_lesions']} | "
            f"{entry['n_candidates']} | {cell(entry, 'ap', ci['ap'])} | {cell(entry, 'cpm', ci['cpm'])} | "
            + " | ".join(cell(entry, r, ci["sensitivity_at_fp"].get(r)) for r in rates)
            + " |"
        )
    header = ["run", "n_cases", "n_failed", "n_lesions", "n_candidates", "ap", "cpm"]
    header += [f"sensitivity_at_{r}fp" for r in rates]
    table = [
        [runs[k].name, e["n_cases"], e["n_failed"], e["n_lesions"], e["n_candidates"], e["ap"], e["cpm"]]
        + [e["sensitivity_at_fp"].get(r) for r in rates]
        for k, e in entries.items()
    ]
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
    if reference not in entries:
        lines += ["", f"No paired differences: the reference run {runs[reference].name} has no detection analysis.", ""]
        io.write_csv(output / "compare_froc.csv", header, [row + [""] * 9 for row in table])
        return "\n".join(lines), written + [output / "compare_froc.csv"]
    cases = {k: cases_of(detections[k][1], label) for k in entries}
    per_case = {k: per_case_sensitivity(cases[k], fp_rate) for k in entries}
    others = [k for k in entries if k != reference]
    paired = {k: paired_difference(per_case[reference][0], per_case[k][0], resamples, seed) for k in others}
    for k, p in zip(others, holm([paired[k]["p_wilcoxon"] for k in others])):
        paired[k]["p_holm"] = p
    pooled = {k: paired_sensitivity_difference(cases[reference], cases[k], fp_rate, resamples, seed) for k in others}
    base = runs[reference].name
    lines += [
        "",
        f"### Sensitivity at {rate} FP/case against {base}",
        "",
        f"Pooled: the difference of the pooled sensitivities at {rate} FP/case over the cases both runs analysed, "
        f"with a paired case-bootstrap 95 % CI ({resamples} resamples; each resample recomputes both runs' curves "
        f"on the same cases). Per case: the sensitivity of a case's lesions at its run's threshold for {rate} FP/case "
        f"(over all the run's cases), run − {base}, over the cases with reference lesions: mean [bootstrap CI], "
        "two-sided Wilcoxon signed-rank p, Holm-corrected over the runs compared (docs/metrics.md).",
        "",
        "| run | threshold | pooled difference [95 % CI] | mean per-case difference [95 % CI], p (n) |",
        "|---|---|---|---|",
    ]
    for k in others:
        d, p = pooled[k], paired[k]
        pooled_text = "–" if d["difference"] is None else format_with_interval(d["difference"], _interval(d), digits=4)
        case_text = (
            "– (n = 0)"
            if not p["n"]
            else f"{format_with_interval(p['mean_difference'], _interval(p), digits=4)}, p = {format_p_value(p['p_holm'])} (n = {p['n']})"
        )
        lines.append(f"| {runs[k].name} | {format_number(per_case[k][1])} | {pooled_text} | {case_text} |")
    lines.append(f"\n{base}'s threshold for {rate} FP/case: {format_number(per_case[reference][1])}.")
    for row, (k, _) in zip(table, entries.items()):
        if k in pooled:
            d, p = pooled[k], paired[k]
            row += [d["difference"], d["ci_low"], d["ci_high"], p["n"], p["mean_difference"], p["ci_low"]]
            row += [p["ci_high"], p["p_wilcoxon"], p["p_holm"]]
        else:
            row += [""] * 9
    io.write_csv(output / "compare_froc.csv", header, [["" if v is None else v for v in r] for r in table])
    return "\n".join(lines), written + [output / "compare_froc.csv"]


def _interval(statistics: dict) -> list[float] | None:
    return None if statistics.get("ci_low") is None else [statistics["ci_low"], statistics["ci_high"]]
