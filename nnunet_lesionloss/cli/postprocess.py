"""The post-processing commands: ``remove-small`` (with ``--sweep``: what each minimum size costs) and
``merge-by-volume``; the work is in ``evaluation.postprocess`` and ``evaluation.min_size_sweep`` (its files:
``evaluation.min_size_sweep_report``)."""

from __future__ import annotations

import sys
from pathlib import Path

from nnunet_lesionloss.cli.common import note_ignored_predictions, run_case_command
from nnunet_lesionloss.cli.options import (
    UniqueValues,
    connectivity_option,
    non_negative_int,
    positive_float,
    positive_int,
    refuse_ignored,
)
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.min_size_sweep import DEFAULT_MIN_SIZES, min_size_sweep
from nnunet_lesionloss.evaluation.min_size_sweep_report import SWEEP_FILES, sweep_markdown, write_sweep
from nnunet_lesionloss.evaluation.postprocess import DEFAULT_MIN_VOXELS, merge_by_volume_folders, remove_small_folder
from nnunet_lesionloss.evaluation.settings import PRESETS

__all__ = ["register"]


#: the options of remove-small --sweep alone (dest -> option)
SWEEP_ONLY = {
    "gt": "--gt",
    "min_sizes": "--min-sizes",
    "preset": "--preset",
    "dataset_json": "--dataset-json",
    "num_processes": "--num-processes",
}


def run_remove_small(args) -> int:
    if args.sweep:
        if args.min_voxels is not None:
            refuse_ignored([("--min-voxels", "with --sweep (it tries each of --min-sizes)")])
        return run_sweep_command(args)
    refuse_ignored(
        [(option, "without --sweep") for dest, option in SWEEP_ONLY.items() if getattr(args, dest) is not None]
    )
    min_voxels = DEFAULT_MIN_VOXELS if args.min_voxels is None else args.min_voxels
    done, failed, total = remove_small_folder(
        args.input, args.output, min_voxels, args.connectivity, args.file_ending, args.overwrite
    )
    print(f"{done} of {total} cases -> {args.output}" + (f" ({failed} failed, listed above)" if failed else ""))
    return failed


def run_merge_by_volume(args) -> int:
    done, failed, total = merge_by_volume_folders(
        args.small_model,
        args.large_model,
        args.output,
        args.volume_ml,
        args.connectivity,
        args.file_ending,
        args.overwrite,
    )
    print(f"{done} of {total} cases -> {args.output}" + (f" ({failed} failed, listed above)" if failed else ""))
    return failed


def add_sweep_arguments(parser) -> None:
    """The options ``remove-small`` takes with ``--sweep``."""
    group = parser.add_argument_group(
        "--sweep: evaluate INPUT against --gt at every minimum size, write the table and figure to OUTPUT"
    )
    group.add_argument(
        "--sweep", action="store_true", help="do not write cleaned images: show what each minimum size costs"
    )
    group.add_argument("--gt", help="reference folder (required with --sweep)")
    group.add_argument(
        "--min-sizes",
        type=non_negative_int,
        nargs="+",
        action=UniqueValues,
        metavar="VOXELS",
        help="minimum sizes to try (default 0 1 2 3 5 10 20)",
    )
    group.add_argument(
        "--preset", choices=sorted(PRESETS), help="evaluation preset (lesions, detection; default: default)"
    )
    group.add_argument("--dataset-json", help="labels and file ending (default: GT/../dataset.json if present)")
    group.add_argument("-np", "--num-processes", type=positive_int, help="cases evaluated in parallel (default 1)")


def run_sweep_command(args) -> int:
    """``remove-small INPUT OUTPUT --sweep --gt GT``: prints the table, writes it; returns the failed cases."""
    if not args.gt:
        raise ValueError("--sweep needs --gt (the reference folder the predictions are evaluated against)")
    io.check_output_apart(args.output, {"INPUT": args.input, "--gt": args.gt})
    io.prepare_output_dir(args.output, SWEEP_FILES, args.overwrite, marker=SWEEP_FILES[-1])  # before the work
    sweep = min_size_sweep(
        args.input,
        args.gt,
        DEFAULT_MIN_SIZES if args.min_sizes is None else args.min_sizes,
        args.connectivity,
        preset=args.preset or "default",
        dataset_json=args.dataset_json,
        file_ending=args.file_ending,
        num_processes=args.num_processes or 1,
    )
    write_sweep(args.output, sweep, overwrite=True)
    print(sweep_markdown(sweep))
    print(f"written: {', '.join(str(Path(args.output) / name) for name in SWEEP_FILES)}")
    note_ignored_predictions(sweep["ignored_predictions"], args.input)
    for case, error in sweep["errors"].items():
        print(f"  {case}: {error}", file=sys.stderr)
    return sweep["n_failed"]


def register(subparsers) -> None:
    """Add ``remove-small`` (with ``--sweep``) and ``merge-by-volume``."""
    p = subparsers.add_parser(
        "remove-small",
        help="remove connected components below N voxels (Joshi 2026); --sweep: what each minimum size costs",
    )
    p.add_argument("input", help="folder of label images")
    p.add_argument("output", help="output folder (with --sweep: of the table and figure)")
    p.add_argument(
        "--min-voxels",
        type=positive_int,
        help=f"remove components of fewer voxels (default {DEFAULT_MIN_VOXELS}, Joshi 2026 §4.5; not with --sweep)",
    )
    p.add_argument(
        "--connectivity",
        type=connectivity_option,
        metavar="{full,face,6,18,26,4,8}",
        help="default 18 in 3D (Joshi 2026 §4.5), its restriction to the plane (8) in 2D",
    )
    p.add_argument("--file-ending", default=None)
    p.add_argument("--overwrite", action="store_true")
    add_sweep_arguments(p)
    p.set_defaults(func=run_case_command, postprocess=run_remove_small)

    p = subparsers.add_parser(
        "merge-by-volume", help="small lesions from model A, large ones from model B (Rachmadi et al. 2024)"
    )
    p.add_argument("--small-model", required=True, help="predictions whose lesions below the volume are kept")
    p.add_argument("--large-model", required=True, help="predictions whose lesions at or above the volume are kept")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--volume-ml", type=positive_float, default=0.05, help="default 0.05 mL (Rachmadi et al. 2024 §4.2)")
    p.add_argument(
        "--connectivity",
        type=connectivity_option,
        default="full",
        metavar="{full,face,6,18,26,4,8}",
        help="lesion connectivity (default full: 26 in 3D, 8 in 2D)",
    )
    p.add_argument("--file-ending", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_case_command, postprocess=run_merge_by_volume)
