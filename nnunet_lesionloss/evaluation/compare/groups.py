"""The runs of ``compare`` with their training repeats: a run is one or more trainings of the same thing
(:class:`RepeatedRun`), each repeat a :class:`~.runs.Run` (an evaluate or cv-summary output). Where the repeats
come from (docs/repeats.md): a cv-summary of a run with repeats (its ``cv_summary.json`` of kind
``cv-summary of training repeats``, which names each repeat's own summary; a run folder holding
``repeats.json`` is read through it), or folders given the same display name in ``--names`` (``compare A1 A2 B1
B2 --names A A B B``: two runs of two repeats each, whatever produced the folders). Any other folder is a run
of one repeat. Nothing here computes a statistic or writes a file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_lesionloss.evaluation.compare.runs import Run, load_run, make_names_unique
from nnunet_lesionloss.evaluation.cv_repeats import REPEATS_KIND
from nnunet_lesionloss.repeats_layout import MANIFEST_NAME

__all__ = ["RepeatedRun", "load_groups", "repeated_run_notes"]


@dataclass
class RepeatedRun:
    """A run trained ``n_repeats`` times: its evaluated repeats (``repeats``, named ``repeat_names``), the
    repeats it lacks (``missing``: repeat name and reason), and where the grouping comes from (``source``)."""

    name: str
    repeats: list[Run]
    repeat_names: list[str]
    missing: list[dict] = field(default_factory=list)
    source: str = "one training"
    identity: str = ""

    @property
    def n_repeats(self) -> int:
        return len(self.repeats)

    @property
    def complete(self) -> bool:
        """Every repeat there and every case of every repeat evaluated."""
        return not self.missing and all(run.complete for run in self.repeats)

    @property
    def n_evaluated(self) -> int:
        """The cases evaluated (the fewest of any repeat)."""
        return min(run.n_evaluated for run in self.repeats)

    @property
    def n_failed(self) -> int:
        """The failed or missing cases (the most of any repeat)."""
        return max(run.n_failed for run in self.repeats)

    def name_repeats(self) -> None:
        """Each repeat's name in messages: the run's name, with the repeat's when there are several."""
        for run, repeat in zip(self.repeats, self.repeat_names, strict=True):
            run.name = self.name if self.n_repeats == 1 else f"{self.name} (repeat {repeat})"


def _summary_file(path: Path) -> Path | None:
    for folder in (path, path / "lesion_evaluation"):
        if (folder / "cv_summary.json").is_file():
            return folder / "cv_summary.json"
    return None


def _repeats_summary(path: Path) -> dict | None:
    """The cv-summary of a run with repeats in ``path`` (or ``path/lesion_evaluation``), or None when
    ``path`` holds another summary. A run folder with repeats.json but no such summary is refused."""
    file = _summary_file(path)
    data = None
    if file is not None:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            data = None  # load_run names the unreadable file
    if isinstance(data, dict) and data.get("kind") == REPEATS_KIND:
        return {**data, "folder": str(file.parent)}
    if (path / MANIFEST_NAME).is_file():
        raise ValueError(
            f"{path} is a run with training repeats ({MANIFEST_NAME}) without their summary: run "
            f"nnunet-lesionloss cv-summary {path} first"
        )
    return None


def _load_repeated(path: Path, summary: dict, name: str | None) -> RepeatedRun:
    folder = Path(summary["folder"])
    repeats, names = [], []
    for record in summary["repeats"]:
        if record["status"] != "summarised":
            continue
        repeats.append(load_run(folder / record["output"]))
        names.append(str(record["repeat"]))
    if not repeats:
        raise ValueError(f"{folder / 'cv_summary.json'} holds no summarised repeat")
    missing = [{"repeat": str(m["repeat"]), "reason": m["reason"]} for m in summary.get("missing_repeats", [])]
    group = RepeatedRun(
        name=name or repeats[0].name,
        repeats=repeats,
        repeat_names=names,
        missing=missing,
        source=f"cv-summary of repeats ({folder})",
        identity=repeats[0].identity,
    )
    return group


def load_groups(paths: Sequence[str], names: Sequence[str] | None = None) -> list[RepeatedRun]:
    """The runs of ``paths`` in the order of their first folder: folders sharing a display name in ``names``
    are the repeats of one run; a cv-summary of repeats is a run of its repeats; any other folder is a run of
    one repeat. Default names: the trainers, made unique."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} runs")
    entries = []
    for k, path in enumerate(paths):
        name = None if names is None else names[k]
        summary = _repeats_summary(Path(path))
        entries.append(_load_repeated(Path(path), summary, name) if summary else load_run(path, name))
    groups: list[RepeatedRun] = []
    if names is None:
        for entry in entries:
            groups.append(
                entry
                if isinstance(entry, RepeatedRun)
                else RepeatedRun(entry.name, [entry], ["1"], identity=entry.identity)
            )
        make_names_unique(groups)
    else:
        order = list(dict.fromkeys(names))
        for name in order:
            members = [(paths[k], entries[k]) for k in range(len(paths)) if names[k] == name]
            if len(members) == 1:
                entry = members[0][1]
                groups.append(
                    entry
                    if isinstance(entry, RepeatedRun)
                    else RepeatedRun(name, [entry], ["1"], identity=entry.identity)
                )
                continue
            with_repeats = [str(p) for p, e in members if isinstance(e, RepeatedRun)]
            if with_repeats:
                raise ValueError(
                    f"--names gives {name!r} to {len(members)} folders, and {', '.join(with_repeats)} is a run with "
                    "repeats of its own: give a run with repeats its own name (or list its repeats' folders instead)"
                )
            folders = [Path(e.folder).resolve() for _, e in members]
            if len(set(folders)) < len(folders):
                raise ValueError(f"--names {name!r}: the same folder is given twice as a repeat of the run")
            groups.append(
                RepeatedRun(
                    name,
                    [e for _, e in members],
                    [str(k + 1) for k in range(len(members))],
                    source="folders given the same name (--names)",
                    identity=members[0][1].identity,
                )
            )
    for group in groups:
        group.name_repeats()
    return groups


def repeated_run_notes(groups: list[RepeatedRun]) -> list[str]:
    """Warnings: a run's repeats that are missing (its statistics are over the others)."""
    return [
        f"{group.name}: repeat {m['repeat']} is missing ({m['reason']}); its values are over its "
        f"{group.n_repeats} other repeat(s)"
        for group in groups
        for m in group.missing
    ]
