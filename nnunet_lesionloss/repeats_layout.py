"""Where a run trained several times (``scripts/run_cv.sh --repeats N``) keeps its repeats, and the manifest
that names them (docs/repeats.md):

    $nnUNet_results/repeats/repeat_<r>/<Dataset>/<trainer>__<plans>__<configuration>/fold_<f>/...
    $nnUNet_results/repeats/<Dataset>/<trainer>__<plans>__<configuration>/repeats.json

Every ``repeat_<r>`` folder is an nnU-Net results root of its own (the layout nnU-Net writes and reads), so
``nnUNet_results=$nnUNet_results/repeats/repeat_<r> nnUNetv2_predict ...`` predicts with repeat r, and the
predictions of several repeats are ensembled by ``nnUNetv2_ensemble``, without renaming a file. The run over
its repeats is the folder beside them that holds ``repeats.json``: the dataset, trainer, plans,
configuration, folds and repeats of the run, and each repeat's results folder relative to it; cv-summary and
compare find the repeats there. Reading and writing the manifest is all this module does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nnunet_lesionloss.evaluation.io import write_text

__all__ = [
    "MANIFEST_KIND",
    "MANIFEST_NAME",
    "REPEATS_FOLDER",
    "ManifestError",
    "RepeatsManifest",
    "read_manifest",
    "record_repeats",
    "repeat_root",
    "repeats_run_folder",
]

#: the folder of nnUNet_results that holds the repeats' results roots and the runs over repeats (not a
#: "Dataset..." folder, so nnU-Net's dataset lookup passes it by)
REPEATS_FOLDER = "repeats"
MANIFEST_NAME = "repeats.json"
MANIFEST_KIND = "nnunet-lesionloss training repeats"
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """A repeats manifest that cannot be read or that another invocation would contradict."""


def repeat_root(results: str | os.PathLike, repeat: int) -> Path:
    """The nnU-Net results root of repeat ``repeat`` (1, 2, ...) under the results folder ``results``."""
    return Path(results) / REPEATS_FOLDER / f"repeat_{repeat}"


def repeats_run_folder(results: str | os.PathLike, dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    """The folder of the run over its repeats (it holds ``repeats.json``)."""
    return Path(results) / REPEATS_FOLDER / dataset / f"{trainer}__{plans}__{configuration}"


def _is_name(text) -> bool:
    return isinstance(text, str) and text not in ("", ".", "..") and "/" not in text and "\\" not in text


@dataclass(frozen=True)
class RepeatsManifest:
    """A run trained ``repeats`` times: repeats 1..repeats, each on ``folds`` (None: every fold of the
    dataset's splits_final.json, as cv-summary without --folds)."""

    dataset: str
    trainer: str
    plans: str
    configuration: str
    repeats: int
    folds: tuple[int, ...] | None

    def __post_init__(self) -> None:
        for field in ("dataset", "trainer", "plans", "configuration"):
            if not _is_name(getattr(self, field)):
                raise ManifestError(f"{field} must be a folder name (no '/'), got {getattr(self, field)!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ManifestError(f"repeats must be an integer >= 1, got {self.repeats!r}")
        if self.folds is not None:
            folds = tuple(self.folds)
            if not folds or any(isinstance(f, bool) or not isinstance(f, int) or f < 0 for f in folds):
                raise ManifestError(f"folds must be fold numbers (integers >= 0) or null, got {self.folds!r}")
            if len(set(folds)) != len(folds):
                raise ManifestError(f"folds lists a fold twice: {list(folds)}")
            object.__setattr__(self, "folds", tuple(sorted(folds)))

    @property
    def identifier(self) -> str:
        """nnU-Net's name of the run's folder: trainer__plans__configuration."""
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    def relative_repeat_folder(self, repeat: int) -> str:
        """Repeat ``repeat``'s results folder relative to the run folder (POSIX separators)."""
        return f"../../repeat_{repeat}/{self.dataset}/{self.identifier}"

    def repeat_folders(self, run_folder: str | os.PathLike) -> dict[int, Path]:
        """Repeat number -> its nnU-Net results folder (``.../repeat_<r>/<Dataset>/<identifier>``); a repeat
        that was never trained has a folder that does not exist (the caller reports it by name)."""
        run_folder = Path(run_folder)
        return {
            r: Path(os.path.normpath(run_folder / self.relative_repeat_folder(r))) for r in range(1, self.repeats + 1)
        }

    def to_dict(self) -> dict:
        return {
            "kind": MANIFEST_KIND,
            "version": MANIFEST_VERSION,
            "dataset": self.dataset,
            "trainer": self.trainer,
            "plans": self.plans,
            "configuration": self.configuration,
            "folds": None if self.folds is None else list(self.folds),
            "repeats": self.repeats,
            "repeat_folders": {str(r): self.relative_repeat_folder(r) for r in range(1, self.repeats + 1)},
        }

    @classmethod
    def from_dict(cls, record: dict, source: str = "manifest") -> RepeatsManifest:
        if not isinstance(record, dict) or record.get("kind") != MANIFEST_KIND:
            raise ManifestError(f"{source} is not a repeats manifest (its 'kind' is not {MANIFEST_KIND!r})")
        if record.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{source}: version {record.get('version')!r} is not {MANIFEST_VERSION}")
        missing = [k for k in ("dataset", "trainer", "plans", "configuration", "folds", "repeats") if k not in record]
        if missing:
            raise ManifestError(f"{source} lacks {', '.join(missing)}")
        try:
            manifest = cls(
                dataset=record["dataset"],
                trainer=record["trainer"],
                plans=record["plans"],
                configuration=record["configuration"],
                repeats=record["repeats"],
                folds=None if record["folds"] is None else tuple(record["folds"]),
            )
        except (ManifestError, TypeError) as error:
            raise ManifestError(f"{source}: {error}") from None
        folders = record.get("repeat_folders")
        expected = manifest.to_dict()["repeat_folders"]
        if folders != expected:  # the layout is fixed: a manifest naming other folders was not written by us
            raise ManifestError(f"{source}: repeat_folders {folders!r} are not the layout's {expected!r}")
        return manifest


def read_manifest(run_folder: str | os.PathLike) -> RepeatsManifest:
    """The manifest of the run over repeats in ``run_folder``; ManifestError naming the file and what is wrong."""
    path = Path(run_folder) / MANIFEST_NAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: {run_folder} is not a run trained with repeats") from None
    except (OSError, ValueError) as error:
        raise ManifestError(f"cannot read {path}: {error}") from None
    manifest = RepeatsManifest.from_dict(record, str(path))
    parts = PurePosixPath(Path(run_folder).resolve().as_posix()).parts
    if parts[-2:] != (manifest.dataset, manifest.identifier):
        raise ManifestError(f"{path} describes {manifest.dataset}/{manifest.identifier}, not the folder it is in")
    return manifest


def record_repeats(
    results: str | os.PathLike,
    dataset: str,
    trainer: str,
    plans: str,
    configuration: str,
    repeats: int,
    folds: tuple[int, ...] | None,
) -> tuple[Path, RepeatsManifest, list[str]]:
    """Write (or update) the manifest of a run about to train repeats: (its path, the manifest, what changed).
    An existing manifest is kept consistent: the repeats are never fewer than recorded (ManifestError: the
    repeats beyond would no longer be part of the run), and the folds are the union of every invocation's
    (None, every fold of the split, absorbs any list)."""
    new = RepeatsManifest(dataset, trainer, plans, configuration, repeats, None if folds is None else tuple(folds))
    folder = repeats_run_folder(results, dataset, trainer, plans, configuration)
    path = folder / MANIFEST_NAME
    notes: list[str] = []
    if path.exists():
        old = read_manifest(folder)
        if new.repeats < old.repeats:
            raise ManifestError(
                f"{path} records {old.repeats} repeats of this run; --repeats {new.repeats} would leave repeats "
                f"{new.repeats + 1}-{old.repeats} out of it. Give --repeats {old.repeats} (and --repeat-ids to "
                "train some of them), or remove the manifest to start the run again"
            )
        folds = None if old.folds is None or new.folds is None else tuple(sorted(set(old.folds) | set(new.folds)))
        merged = RepeatsManifest(dataset, trainer, plans, configuration, new.repeats, folds)
        if merged.repeats != old.repeats:
            notes.append(f"repeats {old.repeats} -> {merged.repeats}")
        if merged.folds != old.folds:
            notes.append(f"folds {_folds_text(old.folds)} -> {_folds_text(merged.folds)}")
        new = merged
    folder.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(new.to_dict(), indent=2) + "\n")  # atomic: never a half-written manifest
    return path, new, notes


def _folds_text(folds: tuple[int, ...] | None) -> str:
    return "all of the split" if folds is None else " ".join(map(str, folds))
