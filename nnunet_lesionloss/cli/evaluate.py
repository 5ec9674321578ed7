"""The ``evaluate`` (one prediction folder) and ``cv-summary`` (the folds of an nnU-Net trainer) commands; the
work is in ``evaluation.runner`` and ``evaluation.cv`` (its files and messages: ``evaluation.cv_report``)."""

from __future__ import annotations

import os
import sys

from nnunet_lesionloss.cli.common import USAGE_ERRORS, exit_with, fail, note_ignored_predictions
from nnunet_lesionloss.cli.options import (
    UniqueValues,
    add_froc_arguments,
    add_settings_arguments,
    froc_settings_from_args,
    non_negative_int,
    positive_int,
    settings_from_args,
)
from nnunet_lesionloss.evaluation.cv import cv_summary
from nnunet_lesionloss.evaluation.cv_report import report_failures
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.froc.cross_validation import froc_failures, froc_section
from nnunet_lesionloss.evaluation.runner import evaluate_folders

__all__ = ["register"]


def run_evaluate(args) -> int:
    try:
        settings, preset = settings_from_args(args)
        summary = evaluate_folders(
            gt_dir=args.gt,
            pred_dir=args.pred,
            output_dir=args.output,
            settings=settings,
            preset=preset,
            dataset_json=args.dataset_json,
            labels=args.labels,
            file_ending=args.file_ending,
            num_processes=args.num_processes,
            overwrite=args.overwrite,
            progress=not args.quiet,
            check_panoptica=args.panoptica_check,
            pairing=args.pairing,
        )
    except USAGE_ERRORS as error:
        return fail(str(error))
    check = summary.get("panoptica_check")
    if check is not None:
        print(f"panoptica check: largest difference of PQ/SQ/RQ and per-pair metrics {check['max_abs_difference']}")
    output = args.output or os.path.join(args.pred, "lesion_evaluation")
    print(f"evaluated {summary['n_cases']} cases ({summary['n_failed']} failed) -> {output}")
    note_ignored_predictions(summary.get("ignored_predictions", []), args.pred)
    for case, error in summary["errors"].items():
        print(f"  {case}: {error}", file=sys.stderr)
    if summary["n_failed"]:
        return exit_with(
            1,
            f"{summary['n_failed']} of {summary['n_cases']} cases failed or are missing (listed above and under "
            "'errors' in summary.json); the means are over the other cases",
        )
    return exit_with(0, f"all {summary['n_cases']} cases evaluated")


def run_cv_summary(args) -> int:
    try:
        settings, preset = settings_from_args(args)
        froc = False if args.no_froc else froc_settings_from_args(args, "froc-")
        result = cv_summary(
            args.results_dir,
            gt_dir=args.gt,
            output_dir=args.output,
            folds=args.folds,
            settings=settings,
            preset=preset,
            dataset_json=args.dataset_json,
            num_processes=args.num_processes,
            overwrite=args.overwrite,
            progress=not args.quiet,
            froc=froc,
        )
    except USAGE_ERRORS as error:
        return fail(str(error))
    print(f"cross-validation summary of folds {result['folds']} -> {result['output_dir']}")
    report_failures(result)
    section = froc_section(result) or {}
    if "skipped" in section or "error" in section:
        print(f"FROC analysis: {section.get('skipped') or section.get('error')}", file=sys.stderr)
    for key, entry in section.items() if "skipped" not in section and "error" not in section else ():
        print(f"FROC {entry['name']} ({key}): AP {format_number(entry['ap'], 3)}, CPM {format_number(entry['cpm'], 3)}")
    froc_failed = froc_failures(section)
    for failure in froc_failed:
        print(f"  FROC analysis, fold {failure['fold']}, case {failure['case']}: {failure['reason']}", file=sys.stderr)
    folds = ", ".join(map(str, result["folds"]))
    missing = [m["fold"] for m in result["missing_folds"]]
    if result["n_failed"] or missing:
        not_evaluated = (
            f"fold{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of the cross-validation "
            "not evaluated (no validation folder, listed above); "
            if missing
            else ""
        )
        return exit_with(
            1,
            f"{not_evaluated}{result['n_failed']} of {result['n_cases']} validation cases of folds {folds}"
            + (f" and {', '.join(map(str, missing))}" if missing else "")
            + " failed or are missing (fold, case and reason listed above and under 'failures' in cv_summary.json); "
            f"the means are over the {result['n_evaluated']} others",
        )
    if froc_failed or "error" in section:
        return exit_with(
            1,
            f"every validation case evaluated, but the FROC analysis lacks {len(froc_failed)} case(s) "
            "(listed above and in froc.json)"
            if froc_failed
            else "every validation case evaluated, but the FROC analysis failed (above)",
        )
    note = (
        f"; {len(result['not_evaluated'])} references of other folds not evaluated" if result["not_evaluated"] else ""
    )
    return exit_with(0, f"all {result['n_cases']} validation cases of folds {folds} evaluated{note}")


def register(subparsers) -> None:
    """Add ``evaluate`` and ``cv-summary``."""
    p = subparsers.add_parser(
        "evaluate",
        help="lesion-wise evaluation of a prediction folder",
        description="Evaluate nnU-Net-style prediction folders: voxel, lesion and instance (PQ) metrics.",
    )
    p.add_argument("--gt", required=True, help="folder of reference label images")
    p.add_argument("--pred", required=True, help="folder of predicted label images")
    p.add_argument("-o", "--output", help="output folder (default: PRED/lesion_evaluation)")
    p.add_argument(
        "--dataset-json",
        help="nnU-Net dataset.json: labels, regions, file ending (default: GT/../dataset.json if present)",
    )
    p.add_argument(
        "--labels",
        type=positive_int,
        nargs="+",
        action=UniqueValues,
        help="evaluate only these labels (default: dataset.json or all found)",
    )
    p.add_argument("--file-ending", help="e.g. .nii.gz (default: dataset.json, else every readable ending)")
    p.add_argument("-np", "--num-processes", type=positive_int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--pairing",
        choices=("name", "brats"),
        help="match predictions to references by identical case name (nnU-Net, default) or by the "
        "NNNNN-NNN case number (BraTS; default of --preset brats-mets)",
    )
    p.add_argument(
        "--panoptica-check",
        action="store_true",
        help="also run panoptica on every case and report the largest difference to our PQ/SQ/RQ (slower)",
    )
    add_settings_arguments(p)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "cv-summary",
        help="evaluate the 5 folds of an nnU-Net trainer and summarise",
        description="Evaluate RESULTS_DIR/fold_*/validation and report per fold and the mean of fold means.",
    )
    p.add_argument("results_dir", help="nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG")
    p.add_argument(
        "--gt",
        help="reference folder (default: nnUNet_preprocessed/DatasetXXX/gt_segmentations, "
        "else nnUNet_raw/DatasetXXX/labelsTr)",
    )
    p.add_argument("-o", "--output", help="output folder (default: RESULTS_DIR/lesion_evaluation)")
    p.add_argument(
        "--folds",
        type=non_negative_int,
        nargs="+",
        action=UniqueValues,
        help="default: every fold_* folder with a validation folder",
    )
    p.add_argument("--dataset-json", help="default: RESULTS_DIR/dataset.json")
    p.add_argument("-np", "--num-processes", type=positive_int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_settings_arguments(p)
    p.add_argument(
        "--no-froc",
        action="store_true",
        help="skip the FROC analysis of the folds' .npz probabilities (done when nnUNetv2_train ran with --npz)",
    )
    add_froc_arguments(p, "froc-")
    p.set_defaults(func=run_cv_summary)
