"""The operating-point commands: ``choose-threshold`` (a probability threshold and minimum component size chosen
on validation probabilities, with its nested cross-validation estimate) and ``apply-threshold``; the work is in
``evaluation.operating_point``."""

from __future__ import annotations

import os
import sys

from nnunet_lesionloss.cli.common import run_case_command
from nnunet_lesionloss.cli.options import (
    UniqueValues,
    add_settings_arguments,
    int_at_least,
    non_negative_float,
    non_negative_int,
    positive_int,
    probability_threshold,
    settings_from_args,
)
from nnunet_lesionloss.components import ANY_CONNECTIVITY
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.operating_point import (
    CRITERIA,
    DEFAULT_NESTED_FOLDS,
    apply_operating_point,
    choose_operating_point,
    format_points,
    format_record,
    plan_apply,
)

__all__ = ["register"]


def run_choose(args) -> int:
    settings, preset = settings_from_args(args)
    record = choose_operating_point(
        args.probabilities,
        args.gt,
        criterion=args.criterion,
        max_fp_per_case=args.max_fp_per_case,
        thresholds=args.thresholds,
        min_sizes=args.min_voxels,
        settings=settings,
        preset=preset.name,
        label=args.label,
        channel=args.channel,
        dataset_json=args.dataset_json,
        file_ending=args.file_ending,
        nested_folds=args.nested_folds,
        seed=args.seed,
        num_processes=args.num_processes,
        progress=not args.quiet,
        output=args.output,  # checked and made writable before any case is read
        removal_connectivity=args.connectivity,  # None: Joshi's 18 for the Dice criterion, else the lesions'
        overwrite=args.overwrite,
    )
    if args.output:
        io.write_json(args.output, record, overwrite=args.overwrite)
    print(format_record(record))
    for failure in record["failures"]:
        fold = "" if failure["fold"] is None else f"fold {failure['fold']}, "
        print(f"  {fold}{failure['case']}: {failure['reason']}", file=sys.stderr)
    return record["n_failed"]


def run_apply(args) -> int:
    plan = plan_apply(
        args.probabilities,
        threshold_json=args.threshold_json,
        threshold=args.threshold,
        min_voxels=args.min_voxels,
        connectivity=args.connectivity,
        label=args.label,
        channel=args.channel,
        dataset_json=args.dataset_json,
        file_ending=args.file_ending,
    )
    written, failed = apply_operating_point(
        args.probabilities,
        args.output,
        plan.targets,
        plan.points,
        plan.connectivity,
        args.template_dir,
        plan.file_ending,
        args.overwrite,
    )
    print(f"{format_points(plan)}: {len(written)} cases -> {args.output}")
    return failed


def register(subparsers) -> None:
    """Add ``choose-threshold`` and ``apply-threshold``."""
    label_help = (
        "label or region to threshold: a label value, a label or region name of dataset.json, or a region's "
        "labels (1,2). Default: labels (softmax) 1 - background against every foreground label; regions "
        "(sigmoid) every region, each with its own channel and operating point"
    )
    channel_help = "probability channel (default: from dataset.json, see --label)"
    p = subparsers.add_parser(
        "choose-threshold",
        help="choose the probability threshold and minimum component size on validation probabilities",
        description="Choose an operating point (probability threshold, minimum component size) on nnU-Net's "
        "validation probabilities: by aggregate Dice (Joshi 2026, default), lesion F1, or lesion sensitivity "
        "at <= N false positives per case; reports the nested cross-validation estimate beside the optimistic one. "
        "Lesions are counted as evaluate counts them under --preset and the lesion options below; the Dice "
        "criterion removes small components at 18-connectivity (Joshi 2026) unless --connectivity is given.",
    )
    p.add_argument(
        "--probabilities",
        required=True,
        help="a results folder (TRAINER__PLANS__CONFIG with fold_*/validation/*.npz from --npz) or a folder of .npz",
    )
    p.add_argument("--gt", help="reference folder (default for a results folder: as cv-summary finds it)")
    p.add_argument("--criterion", choices=CRITERIA, default="dice", help="default dice (Joshi 2026 §4.5)")
    p.add_argument(
        "--max-fp-per-case",
        type=non_negative_float,
        help="the false-positive limit of --criterion sensitivity (a finite number >= 0)",
    )
    p.add_argument(
        "--thresholds",
        type=probability_threshold,
        nargs="+",
        action=UniqueValues,
        help="in (0, 1]; default 0.3 ... 0.7 (dice, Joshi 2026), 0.1 ... 0.9 (lesion criteria)",
    )
    p.add_argument(
        "--min-voxels",
        type=non_negative_int,
        nargs="+",
        action=UniqueValues,
        help="minimum component sizes to try (voxels; 0 = none). Default 0 (dice), 0 3 5 10 20 50 (lesion criteria)",
    )
    p.add_argument("--label", help=label_help)
    p.add_argument("--channel", type=non_negative_int, help=channel_help)
    p.add_argument("--dataset-json", help="default: in the probability folder, its results folder, or beside --gt")
    p.add_argument("--file-ending", help="default: dataset.json's, else .nii.gz")
    p.add_argument(
        "--nested-folds",
        type=int_at_least(2),
        help=f"folds (>= 2) of the nested estimate for a plain folder (a results folder has its own); "
        f"default {DEFAULT_NESTED_FOLDS}",
    )
    p.add_argument("--seed", type=non_negative_int, help="seed of those folds (default 0; a plain folder only)")
    p.add_argument("-np", "--num-processes", type=positive_int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", help="write the choice as JSON (apply-threshold --threshold-json reads it)")
    p.add_argument("--overwrite", action="store_true")
    add_settings_arguments(p)
    p.set_defaults(func=run_case_command, postprocess=run_choose)

    p = subparsers.add_parser("apply-threshold", help="label maps from nnU-Net probabilities at an operating point")
    p.add_argument("--probabilities", required=True, help="nnUNetv2_predict --save_probabilities output folder")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threshold-json", help="output of choose-threshold (threshold and minimum size per label/region)")
    p.add_argument(
        "--threshold", type=probability_threshold, help="one threshold in (0, 1] for every label or region instead"
    )
    p.add_argument(
        "--min-voxels", type=non_negative_int, help="with --threshold: remove components below N voxels (default 0)"
    )
    p.add_argument(
        "--connectivity",
        type=int,
        choices=ANY_CONNECTIVITY,
        help="with --threshold: of that removal (default 18 in 3D, Joshi 2026; its restriction to the plane, 8, in 2D)",
    )
    p.add_argument("--template-dir", help="folder with images of the same geometry (default: the probability folder)")
    p.add_argument("--label", help=label_help)
    p.add_argument("--channel", type=non_negative_int, help=channel_help)
    p.add_argument("--dataset-json", help="default: the probability folder's (nnUNetv2_predict writes it)")
    p.add_argument("--file-ending", help="default: dataset.json's, else .nii.gz")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_case_command, postprocess=run_apply)
