"""The runs of ``compare``: loading a run (cv-summary's cv_summary.json or evaluate's summary.json, and its
cases.csv), naming it (its trainer, never a folder name every run shares), choosing the label and the reference
run, and what makes runs incomparable (other evaluation settings or other references) or their means
incomplete (failed or missing cases). Nothing here writes a file."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_lesionloss.evaluation.settings import current_settings_record

__all__ = [
    "TRAINER_FOLDER",
    "Run",
    "load_run",
    "load_runs",
    "make_names_unique",
    "choose_label",
    "resolve_reference",
    "settings_differences",
    "reference_differences",
    "completeness_notes",
]

#: nnU-Net's trainer folder, TRAINER__PLANS__CONFIG
TRAINER_FOLDER = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<configuration>.+)$")


@dataclass
class Run:
    """One run's summary: its means and stds per label and metric, its across-case metrics, and its cases."""

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


def load_runs(paths: Sequence[str], names: Sequence[str] | None = None) -> list[Run]:
    """The runs of ``paths``, named by ``names`` (one per run, unique) or by their trainers (made unique)."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} runs")
    if names is not None and len(set(names)) != len(names):
        raise ValueError(f"--names must be unique, got {list(names)}")
    runs = [load_run(p, None if names is None else names[k]) for k, p in enumerate(paths)]
    if names is None:
        make_names_unique(runs)
    return runs


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


def choose_label(runs: list[Run], label: str | None) -> str:
    """``label`` (default: the first label of the first run with an evaluated case), checked to be in every
    run that has one (a run whose cases all failed has no label at all)."""
    evaluated = [run for run in runs if run.means]
    if label is None:
        if not evaluated:
            raise ValueError(f"no run has an evaluated case: {', '.join(str(run.folder) for run in runs)}")
        label = next(iter(evaluated[0].means))
    for run in evaluated:
        if label not in run.means:
            raise ValueError(f"label {label} not in {run.folder} (has {', '.join(run.means) or 'none'})")
    return label


def resolve_reference(runs: list[Run], reference: str | int | None) -> int:
    """The index of the reference run: a display name or a 1-based position (default: the first run)."""
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


def completeness_notes(runs: list[Run], label: str) -> list[str]:
    """A warning per run whose means are over fewer cases (failed or missing ones, or none evaluated), and
    one when the runs evaluated different cases."""
    notes = []
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
    return notes
