"""Sub-commands of ``nnunet-lesionloss`` for evaluation, cross-validation, comparison and post-processing."""

from __future__ import annotations

import argparse
import math
import os
import sys

from nnunet_lesionloss.components import ANY_CONNECTIVITY
from nnunet_lesionloss.evaluation.settings import (
    DETECTION_RULES,
    NAMED_CONNECTIVITY,
    PRESETS,
    EvaluationSettings,
    MatchingSpec,
    get_preset,
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """A finite number > 0 (a distance, a volume)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _connectivity(text: str) -> int | str:
    """'full', 'face' or a number of ANY_CONNECTIVITY."""
    if text in NAMED_CONNECTIVITY:
        return text
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in ANY_CONNECTIVITY:
        raise argparse.ArgumentTypeError(
            f"must be 'full' (26 in 3D, 8 in 2D), 'face' (6 / 4) or one of {', '.join(map(str, ANY_CONNECTIVITY))}, "
            f"got {text}"
        )
    return value


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "lesion definition and matching (defaults: --preset, then the papers of docs/references.md)"
    )
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="challenge definition of a lesion and its metrics (docs/metrics.md lists the sources)",
    )
    group.add_argument(
        "--connectivity",
        type=_connectivity,
        metavar="{full,face,6,18,26,4,8}",
        help="lesion connectivity: 'full' (26 in 3D, 8 in 2D; default), 'face' (6 / 4), or a number valid for the "
        "images' dimension (6, 18, 26 in 3D, 4, 8 in 2D)",
    )
    group.add_argument(
        "--detection",
        choices=DETECTION_RULES,
        help="when a lesion counts as detected: one_to_one_dsc (default: the one-to-one matching at DSC >= "
        "--detection-threshold, 0.1), one_to_one_iou, any_overlap (the papers' rule: Luu et al. 2026, Kofler et al. "
        "2023, WMH, ISLES), iou (Shifts), overlap_fraction (MSSEG); docs/metrics.md",
    )
    group.add_argument(
        "--detection-threshold",
        type=_non_negative_float,
        metavar="T",
        help="the DSC / IoU a one-to-one pair needs (default 0.1), or the threshold of iou / overlap_fraction",
    )
    group.add_argument(
        "--min-lesion-voxels",
        type=_positive_int,
        help="remove components with fewer voxels from both masks first (Joshi 2026: 5 with 18-connectivity)",
    )
    group.add_argument(
        "--min-lesion-volume",
        type=_non_negative_float,
        metavar="MM3",
        help="remove components of at most this volume (mm³) first (MSSEG/Anima: 3)",
    )
    group.add_argument(
        "--small-lesion-ml",
        type=_non_negative_float,
        help="small lesion: volume <= this (mL; default 0.05, Rachmadi et al. 2024)",
    )
    group.add_argument(
        "--size-bins",
        type=_positive_float,
        nargs="+",
        metavar="ML",
        help="lesion volume bin edges in mL (default 1 5: <1, 1-5, >=5 mL, Joshi 2026)",
    )
    group.add_argument(
        "--matching",
        nargs="+",
        metavar="SPEC",
        help="one-to-one matchings for PQ/SQ/RQ, e.g. dsc0.1 dsc0.5 iou0.5 (default)",
    )
    group.add_argument(
        "--matching-algorithm", choices=("hungarian", "greedy"), help="default hungarian (Kundu et al. 2026)"
    )
    group.add_argument(
        "--hd95",
        choices=("max_directed", "pooled"),
        help="HD95 definition: max of the two directed 95th percentiles "
        "(Luu et al. 2026 eq. 3.3, default) or the 95th percentile of the pooled distances "
        "(panoptica, BraTS)",
    )
    group.add_argument(
        "--nsd-tolerance", type=_positive_float, metavar="MM", help="NSD tolerance in mm (default: smallest spacing)"
    )


#: command-line option (argparse dest) -> EvaluationSettings field it sets as given
_OPTION_TO_SETTING = {
    "connectivity": "connectivity",
    "detection": "detection",
    "detection_threshold": "detection_threshold",
    "min_lesion_voxels": "min_lesion_voxels",
    "min_lesion_volume": "min_lesion_volume_mm3",
    "small_lesion_ml": "small_lesion_ml",
    "matching_algorithm": "matching_algorithm",
    "hd95": "hd95",
    "nsd_tolerance": "nsd_tolerance_mm",
}


def settings_from_args(args) -> tuple[EvaluationSettings, object]:
    preset = get_preset(args.preset)
    # options given on the command line override the preset's setting of the same meaning
    changes = {
        setting: getattr(args, option)
        for option, setting in _OPTION_TO_SETTING.items()
        if getattr(args, option) is not None
    }
    if args.size_bins is not None:
        changes["size_bins_ml"] = tuple(args.size_bins)
    if args.matching:
        specs = tuple(MatchingSpec.parse(s) for s in args.matching)
        changes["matchings"] = specs
        names = [s.name for s in specs]
        if preset.settings.size_bin_matching not in names:
            changes["size_bin_matching"] = names[-1]
        if preset.settings.reference_lesion_spec not in names:
            changes["reference_lesion_spec"] = names[-1]
    return preset.settings.replace(**changes), preset


def add_detection_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Options of the detection analysis (docs/metrics.md, "Detection analysis"); ``prefix`` 'froc-' for cv-summary,
    whose --matching and --connectivity are the lesion evaluation's."""
    from nnunet_lesionloss.evaluation.detection import CANDIDATE_METHODS, MATCHINGS

    group = parser.add_argument_group(
        "detection analysis (FROC, AP) from nnU-Net's .npz probabilities (defaults: picai_eval's)"
    )
    group.add_argument(
        f"--{prefix}candidates",
        choices=CANDIDATE_METHODS,
        help=f"static: components of p >= --{prefix}threshold, confidence max p (default); dynamic: "
        "report_guided_annotation's "
        "peak-wise extraction, which splits touching lesions",
    )
    group.add_argument(f"--{prefix}threshold", type=float, metavar="T", help="static candidates: p >= T (default 0.1)")
    group.add_argument(
        f"--{prefix}matching",
        choices=MATCHINGS,
        help=f"a candidate matches a lesion at IoU >= --{prefix}min-overlap (default, picai_eval), DSC >= it, "
        "or on any shared voxel",
    )
    group.add_argument(f"--{prefix}min-overlap", type=float, metavar="X", help="default 0.1 (picai_eval)")
    group.add_argument(
        f"--{prefix}unmatched-overlapping-candidates",
        choices=("ignore", "false-positive"),
        help="a second candidate overlapping an already matched lesion enough: ignored (default, picai_eval's "
        "allow_unmatched_candidates_with_minimal_overlap=True) or a false positive",
    )
    group.add_argument(
        f"--{prefix}min-candidate-voxels",
        type=int,
        metavar="N",
        help="drop candidates of N voxels or fewer (default 0; report_guided_annotation: 10)",
    )
    group.add_argument(
        f"--{prefix}max-candidates",
        type=_positive_int,
        metavar="N",
        help="dynamic: at most N per case (default: all; report_guided_annotation: 5)",
    )
    group.add_argument(
        f"--{prefix}dynamic-threshold-factor", type=float, metavar="F", help="dynamic: p >= peak / F (default 2.5)"
    )
    group.add_argument(
        f"--{prefix}fp-rates",
        type=float,
        nargs="+",
        metavar="F",
        help="FP per case at which the sensitivity is reported; their mean is the CPM (default LUNA16's 0.125 ... 8)",
    )
    group.add_argument(
        f"--{prefix}size-fp-rate",
        type=float,
        metavar="F",
        help="FP per case of the per-size-bin and per-case sensitivities (default 1)",
    )
    group.add_argument(
        f"--{prefix}bootstrap-resamples",
        type=int,
        metavar="B",
        help="case-bootstrap resamples of the 95 %% CIs (default 1000, picai_eval's; 0: none)",
    )
    if not prefix:
        group.add_argument(
            "--connectivity",
            type=_connectivity,
            metavar="{full,face,6,18,26,4,8}",
            help="of candidates and reference lesions: 'full' (default: 26 in 3D as picai_eval, 8 in 2D), 'face' "
            "(6 / 4), or a number valid for the images' dimension",
        )
        group.add_argument(
            "--size-bins", type=float, nargs="+", metavar="ML", help="lesion volume bin edges in mL (default 1 5)"
        )
        group.add_argument("--seed", type=int, help="seed of the bootstrap (default 0)")


#: detection option (without prefix, argparse form) -> DetectionSettings field
_DETECTION_OPTIONS = {
    "candidates": "candidates",
    "threshold": "threshold",
    "matching": "matching",
    "min_overlap": "min_overlap",
    "min_candidate_voxels": "min_candidate_voxels",
    "max_candidates": "max_candidates",
    "dynamic_threshold_factor": "dynamic_threshold_factor",
    "size_fp_rate": "size_fp_rate",
    "bootstrap_resamples": "bootstrap_resamples",
    "connectivity": "connectivity",
    "seed": "seed",
}


def detection_settings_from_args(args, prefix: str = "", base=None):
    """DetectionSettings from the options given (``prefix`` as in :func:`add_detection_arguments`)."""
    from nnunet_lesionloss.evaluation.detection import DetectionSettings

    dest = prefix.replace("-", "_")
    changes = {
        field: getattr(args, dest + option)
        for option, field in _DETECTION_OPTIONS.items()
        if getattr(args, dest + option, None) is not None
    }
    fp_rates = getattr(args, dest + "fp_rates", None)
    if fp_rates is not None:
        changes["fp_rates"] = tuple(fp_rates)
    size_bins = getattr(args, "size_bins", None) if not prefix else None
    if size_bins is not None:
        changes["size_bins_ml"] = tuple(size_bins)
    unmatched = getattr(args, dest + "unmatched_overlapping_candidates", None)
    if unmatched is not None:
        changes["allow_unmatched_candidates_with_minimal_overlap"] = unmatched == "ignore"
    return (base or DetectionSettings()).replace(**changes)


#: errors a command reports with exit status 2, before (or instead of) evaluating anything
USAGE_ERRORS = (OSError, ValueError)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return _exit(2, "stopped before any result was written (the error above)")


def _exit(code: int, reason: str) -> int:
    """The exit status, explained in one line on stderr."""
    print(f"exit status {code}: {reason}", file=sys.stderr)
    return code


def _note_ignored_predictions(ignored: list[str], folder: str) -> None:
    """Predictions no reference claims: not an error, but never hidden (not even by --quiet)."""
    if ignored:
        print(
            f"note: {len(ignored)} predictions in {folder} without a reference are ignored: "
            + ", ".join(ignored[:5])
            + (" ..." if len(ignored) > 5 else ""),
            file=sys.stderr,
        )


def run_evaluate(args) -> int:
    from nnunet_lesionloss.evaluation.runner import evaluate_folders

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
        return _fail(str(error))
    check = summary.get("panoptica_check")
    if check is not None:
        print(f"panoptica check: largest difference of PQ/SQ/RQ and per-pair metrics {check['max_abs_difference']}")
    output = args.output or os.path.join(args.pred, "lesion_evaluation")
    print(f"evaluated {summary['n_cases']} cases ({summary['n_failed']} failed) -> {output}")
    _note_ignored_predictions(summary.get("ignored_predictions", []), args.pred)
    for case, error in summary["errors"].items():
        print(f"  {case}: {error}", file=sys.stderr)
    if summary["n_failed"]:
        return _exit(
            1,
            f"{summary['n_failed']} of {summary['n_cases']} cases failed or are missing (listed above and under "
            "'errors' in summary.json); the means are over the other cases",
        )
    return _exit(0, f"all {summary['n_cases']} cases evaluated")


def run_cv_summary(args) -> int:
    from nnunet_lesionloss.evaluation.cv import cv_summary, report_failures
    from nnunet_lesionloss.evaluation.detection import detection_failures

    try:
        settings, preset = settings_from_args(args)
        detection = False if args.no_froc else detection_settings_from_args(args, "froc-")
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
            detection=detection,
        )
    except USAGE_ERRORS as error:
        return _fail(str(error))
    print(f"cross-validation summary of folds {result['folds']} -> {result['output_dir']}")
    report_failures(result)
    section = result.get("detection") or {}
    if "skipped" in section or "error" in section:
        print(f"detection analysis: {section.get('skipped') or section.get('error')}", file=sys.stderr)
    for key, entry in section.items() if "skipped" not in section and "error" not in section else ():
        print(f"detection {entry['name']} ({key}): AP {_rounded(entry['ap'])}, CPM {_rounded(entry['cpm'])}")
    detection_failed = detection_failures(section)
    for failure in detection_failed:
        print(f"  detection, fold {failure['fold']}, case {failure['case']}: {failure['reason']}", file=sys.stderr)
    folds = ", ".join(map(str, result["folds"]))
    missing = [m["fold"] for m in result["missing_folds"]]
    if result["n_failed"] or missing:
        not_evaluated = (
            f"fold{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of the cross-validation "
            "not evaluated (no validation folder, listed above); "
            if missing
            else ""
        )
        return _exit(
            1,
            f"{not_evaluated}{result['n_failed']} of {result['n_cases']} validation cases of folds {folds}"
            + (f" and {', '.join(map(str, missing))}" if missing else "")
            + " failed or are missing (fold, case and reason listed above and under 'failures' in cv_summary.json); "
            f"the means are over the {result['n_evaluated']} others",
        )
    if detection_failed or "error" in section:
        return _exit(
            1,
            f"every validation case evaluated, but the detection analysis lacks {len(detection_failed)} case(s) "
            "(listed above and in detection.json)"
            if detection_failed
            else "every validation case evaluated, but the detection analysis failed (above)",
        )
    note = (
        f"; {len(result['not_evaluated'])} references of other folds not evaluated" if result["not_evaluated"] else ""
    )
    return _exit(0, f"all {result['n_cases']} validation cases of folds {folds} evaluated{note}")


def run_compare(args) -> int:
    from nnunet_lesionloss.evaluation.compare import compare_runs

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
        return _fail(str(error))
    for path in written:
        print(path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if warnings:
        return _exit(1, f"comparison written with {len(warnings)} warning(s) above (also in compare.md)")
    return _exit(0, "comparison written")


def run_detection(args) -> int:
    from nnunet_lesionloss.evaluation.detection import detection_folders

    try:
        settings = detection_settings_from_args(args)
        analysis = detection_folders(
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
        return _fail(str(error))
    failures = next(iter(analysis.values()))["failed_cases"] if analysis else []
    for key, entry in analysis.items():
        rates = ", ".join(f"{r}: {_rounded(v)}" for r, v in entry["sensitivity_at_fp"].items())
        print(
            f"{entry['name']} ({key}): AP {_rounded(entry['ap'])}, CPM {_rounded(entry['cpm'])}; sensitivity at FP/case "
            f"{rates} ({entry['n_cases']} cases, {entry['n_lesions']} lesions, {entry['n_candidates']} candidates)"
        )
    print(f"-> {args.output}")
    for failure in failures:
        print(f"  {failure['case']}: {failure['reason']}", file=sys.stderr)
    if failures:
        return _exit(
            1,
            f"{len(failures)} case(s) could not be analysed (listed above and in detection.json); the curves are "
            "over the others",
        )
    return _exit(0, "every case analysed")


def _rounded(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def run_postprocess(args) -> int:
    from nnunet_lesionloss.evaluation import postprocess

    try:
        failed = int(args.postprocess(args) or 0)
    except (*USAGE_ERRORS, postprocess.CaseError) as error:
        return _fail(str(error))
    if failed:
        return _exit(1, f"{failed} case(s) failed (listed above); the other cases were written")
    return _exit(0, "done")


def register(subparsers) -> None:
    """Add evaluate, cv-summary, compare and the post-processing commands to ``subparsers``."""
    from nnunet_lesionloss.evaluation import operating_point, postprocess

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
        "--labels", type=int, nargs="+", help="evaluate only these labels (default: dataset.json or all found)"
    )
    p.add_argument("--file-ending", help="e.g. .nii.gz (default: dataset.json, else every readable ending)")
    p.add_argument("-np", "--num-processes", type=_positive_int, default=max(1, min(4, os.cpu_count() or 1)))
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
    p.add_argument("--folds", type=int, nargs="+", help="default: every fold_* folder with a validation folder")
    p.add_argument("--dataset-json", help="default: RESULTS_DIR/dataset.json")
    p.add_argument("-np", "--num-processes", type=_positive_int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_settings_arguments(p)
    p.add_argument(
        "--no-froc",
        action="store_true",
        help="skip the detection analysis of the folds' .npz probabilities (done when nnUNetv2_train ran with --npz)",
    )
    add_detection_arguments(p, "froc-")
    p.set_defaults(func=run_cv_summary)

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
        type=_positive_int,
        default=10000,
        help="resamples of the paired bootstrap CI (default 10000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument(
        "--fp-rate",
        type=float,
        default=1.0,
        help="FP per case of the paired sensitivity difference of the detection analysis (default 1)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_compare)

    p = subparsers.add_parser(
        "detection",
        help="FROC, average precision and sensitivity at fixed FP rates from nnU-Net's probabilities",
        description="Lesion candidates from nnU-Net's .npz probabilities (--save_probabilities / --npz), matched to "
        "the reference lesions as picai_eval does: FROC per label with its points (CSV, PNG), sensitivity at "
        "0.125-8 FP per case and their mean (CPM), AP, per-size-bin sensitivity, case-bootstrap 95 % CIs.",
    )
    p.add_argument("--probabilities", required=True, help="folder of <case>.npz written by nnU-Net")
    p.add_argument("--gt", required=True, help="folder of reference label images")
    p.add_argument("-o", "--output", required=True, help="output folder (detection.json, froc_<label>.csv/.png, ...)")
    p.add_argument(
        "--dataset-json",
        help="nnU-Net dataset.json: labels or regions (which channel is which), file ending "
        "(default: PROBABILITIES/dataset.json, as nnUNetv2_predict writes it, else GT/../dataset.json)",
    )
    p.add_argument("--labels", type=int, nargs="+", help="analyse only these labels (default: every label or region)")
    p.add_argument("--file-ending", help="of the references (default: dataset.json's)")
    p.add_argument("-np", "--num-processes", type=_positive_int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_detection_arguments(p)
    p.set_defaults(func=run_detection)

    postprocess.register(subparsers, run_postprocess)
    operating_point.register(subparsers, run_postprocess)
