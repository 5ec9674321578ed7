"""The ``compare`` command: several runs side by side, with paired differences against a reference run (the
work is in ``evaluation.compare``)."""

from __future__ import annotations

import sys

from nnunet_lesionloss.cli.common import USAGE_ERRORS, exit_with, fail
from nnunet_lesionloss.cli.options import bootstrap_resamples, non_negative_int, positive_float
from nnunet_lesionloss.evaluation.compare import compare_runs

__all__ = ["register"]


def run_compare(args) -> int:
    try:
        written, warnings = compare_runs(
            args.runs,
            args.output,
            names=args.names,
            label=args.label,
            overwrite=args.overwrite,
            reference=args.reference,
            allow_different_settings=args.allow_different_settings,
            bootstrap_resamples=args.bootstrap_resamples,
            seed=args.seed,
            fp_rate=args.fp_rate,
        )
    except USAGE_ERRORS as error:
        return fail(str(error))
    for path in written:
        print(path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if warnings:
        return exit_with(1, f"comparison written with {len(warnings)} warning(s) above (also in compare.md)")
    return exit_with(0, "comparison written")


def register(subparsers) -> None:
    """Add ``compare``."""
    p = subparsers.add_parser(
        "compare",
        help="side-by-side table and figures of several runs",
        description="Compare runs (cv-summary or evaluate output folders, or trainer folders).",
    )
    p.add_argument("runs", nargs="+", help="folders with cv_summary.json or summary.json (or a trainer folder)")
    p.add_argument("-o", "--output", required=True, help="output folder for compare.md, compare.csv and PNGs")
    p.add_argument("--names", nargs="+", help="display names, one per run (default: trainer names)")
    p.add_argument("--label", help="label key to compare (default: the first label)")
    p.add_argument(
        "--reference",
        help="run the paired differences are taken against: a display name or a 1-based position "
        "(default: the first run, e.g. nnU-Net's baseline)",
    )
    p.add_argument(
        "--allow-different-settings",
        action="store_true",
        help="compare runs evaluated with different settings (preset, connectivity, matching, size bins, ...); "
        "the table then names the differences",
    )
    p.add_argument(
        "--bootstrap-resamples",
        type=bootstrap_resamples(),
        default=10000,
        help="resamples of the paired bootstrap CI (default 10000)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument(
        "--fp-rate",
        type=positive_float,
        default=1.0,
        help="FP per case of the paired sensitivity difference of the FROC analysis (default 1)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_compare)
