"""The ``froc`` command: FROC, average precision and sensitivity at fixed false-positive rates from nnU-Net's
probabilities (the work is in ``evaluation.froc``). ``detection``, its name in earlier releases, is answered
with the new name (``cli.RENAMED_COMMANDS``)."""

from __future__ import annotations

import os
import sys

from nnunet_lesionloss.cli.common import USAGE_ERRORS, exit_with, fail, note_ignored_predictions
from nnunet_lesionloss.cli.options import UniqueValues, add_froc_arguments, froc_settings_from_args, positive_int
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.froc.analysis import froc_folders

__all__ = ["register"]


def run_froc(args) -> int:
    try:
        settings = froc_settings_from_args(args)
        analysis = froc_folders(
            args.probabilities,
            args.gt,
            args.output,
            settings,
            dataset_json=args.dataset_json,
            labels=args.labels,
            file_ending=args.file_ending,
            num_processes=args.num_processes,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except USAGE_ERRORS as error:
        return fail(str(error))
    failures = next(iter(analysis.values()))["failed_cases"] if analysis else []
    note_ignored_predictions(
        next(iter(analysis.values()))["ignored_predictions"] if analysis else [], args.probabilities
    )
    for key, entry in analysis.items():
        rates = ", ".join(f"{r}: {format_number(v, 3)}" for r, v in entry["sensitivity_at_fp"].items())
        print(
            f"{entry['name']} ({key}): AP {format_number(entry['ap'], 3)}, CPM {format_number(entry['cpm'], 3)}; sensitivity at FP/case "
            f"{rates} ({entry['n_cases']} cases, {entry['n_lesions']} lesions, {entry['n_candidates']} candidates)"
        )
    print(f"-> {args.output}")
    for failure in failures:
        print(f"  {failure['case']}: {failure['reason']}", file=sys.stderr)
    if failures:
        return exit_with(
            1,
            f"{len(failures)} case(s) could not be analysed (listed above and in froc.json); the curves are "
            "over the others",
        )
    return exit_with(0, "every case analysed")


def register(subparsers) -> None:
    """Add ``froc``."""
    p = subparsers.add_parser(
        "froc",
        help="FROC, average precision and sensitivity at fixed FP rates from nnU-Net's probabilities",
        description="Lesion candidates from nnU-Net's .npz probabilities (--save_probabilities / --npz), matched to "
        "the reference lesions as picai_eval does: FROC per label with its points (CSV, PNG), sensitivity at "
        "0.125-8 FP per case and their mean (CPM), AP, per-size-bin sensitivity, case-bootstrap 95 % CIs.",
    )
    p.add_argument("--probabilities", required=True, help="folder of <case>.npz written by nnU-Net")
    p.add_argument("--gt", required=True, help="folder of reference label images")
    p.add_argument("-o", "--output", required=True, help="output folder (froc.json, froc_<label>.csv/.png, ...)")
    p.add_argument(
        "--dataset-json",
        help="nnU-Net dataset.json: labels or regions (which channel is which), file ending "
        "(default: PROBABILITIES/dataset.json, as nnUNetv2_predict writes it, else GT/../dataset.json)",
    )
    p.add_argument(
        "--labels",
        type=positive_int,
        nargs="+",
        action=UniqueValues,
        help="analyse only these labels (default: every label or region)",
    )
    p.add_argument("--file-ending", help="of the references (default: dataset.json's)")
    p.add_argument("-np", "--num-processes", type=positive_int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_froc_arguments(p)
    p.set_defaults(func=run_froc)
