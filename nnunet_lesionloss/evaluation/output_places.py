"""Where a command's output may go: never where the command reads. An output folder that is one of its input
folders, or one of the folders it finds below an input by name (cv-summary's RESULTS_DIR/fold_*/validation), is
refused before any work, and so is an output file that is one of the files it reads or lies in a folder it lists
with a name that listing reads: what the command writes would replace its inputs (nnU-Net's segmentations, which
are also the geometry template of apply-threshold) or be read as input by its next run (a figure is a .png, an
image). Every folder is listed without its sub-folders, so any other folder inside an input folder is allowed
(evaluate's default PRED/lesion_evaluation). :mod:`nnunet_lesionloss.evaluation.io` names both checks too."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["check_output_apart", "check_output_file_apart"]


def check_output_apart(
    output: str | os.PathLike,
    inputs: dict[str, str | os.PathLike | None],
    found_below: dict[str, Sequence[str]] | None = None,
) -> None:
    """An output folder never lies where its command reads: refuse (ValueError naming both options) an output
    folder that is

    - one of the command's input folders (``inputs``: option -> folder; symbolic links resolved): what it
      writes there would replace what it reads (nnU-Net's segmentations, which are also the geometry template,
      a model's predictions) or be read as input by its next run (a figure is a .png image);
    - of the form of the folders the command finds *below* an input by name (``found_below``: option -> glob
      patterns relative to that input's folder, e.g. cv-summary's ``RESULTS_DIR`` -> ``fold_*/validation``),
      even before it exists: the next run would list it as one of them.

    Any other folder inside an input folder is allowed: every folder is listed without its sub-folders (evaluate
    writes to PRED/lesion_evaluation by default, cv-summary to RESULTS_DIR/lesion_evaluation)."""
    target = Path(output).resolve()
    for option, folder in inputs.items():
        if folder is not None and Path(folder).resolve() == target:
            raise ValueError(
                f"the output folder {output} is the folder of {option}: its files would be replaced by the output "
                "or read back as input; write to another folder"
            )
    for option, patterns in (found_below or {}).items():
        if inputs.get(option) is None:
            continue
        base = Path(inputs[option]).resolve()
        for pattern in patterns:
            if _below_as(target, base, pattern):
                raise ValueError(
                    f"the output folder {output} is a {pattern} folder of {option}, which the command reads: the "
                    "next run would read the output as input; write to another folder"
                )


def _below_as(path: Path, base: Path, pattern: str) -> bool:
    """Whether ``path`` is ``base``/<something matching the relative glob ``pattern``, part by part>."""
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        return False
    wanted = Path(pattern).parts
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted))


def check_output_file_apart(
    output: str | os.PathLike,
    files: dict[str, str | os.PathLike | None],
    folders: dict[str, tuple[str | os.PathLike | None, Sequence[str]]],
    found_below: dict[str, tuple[str | os.PathLike | None, Sequence[str], Sequence[str]]] | None = None,
) -> None:
    """An output *file* is none of the files its command reads, now or on its next run: refuse (ValueError
    naming the option) an output that is one of ``files`` (option -> file, e.g. the dataset.json it reads), or
    that lies in a folder it lists with a name that listing reads (``folders``: option -> (folder, the endings
    it reads)), or in a folder it finds below an input by name (``found_below``: option -> (folder, glob
    patterns, endings))."""
    target = Path(output).resolve()
    for option, path in files.items():
        if path is not None and Path(path).resolve() == target:
            raise ValueError(
                f"the output {output} is the file of {option}, which the command reads; write another file"
            )
    listed = [(option, folder, (), endings) for option, (folder, endings) in folders.items()]
    listed += [
        (option, folder, patterns, endings) for option, (folder, patterns, endings) in (found_below or {}).items()
    ]
    for option, folder, patterns, endings in listed:
        if folder is None or not target.name.lower().endswith(tuple(e.lower() for e in endings)):
            continue
        base = Path(folder).resolve()
        inside = target.parent == base if not patterns else any(_below_as(target.parent, base, p) for p in patterns)
        if inside:
            where = f"a {' or '.join(patterns)} folder of {option}" if patterns else f"the folder of {option}"
            raise ValueError(
                f"the output {output} lies in {where} with a name the command reads there "
                f"({', '.join(endings)}): it would replace an input or be read as one; write it elsewhere"
            )
