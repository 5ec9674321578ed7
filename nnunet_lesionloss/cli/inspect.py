"""The ``inspect`` command: lesion counts, sizes and what nnU-Net's deep supervision erases, per label
(the work: ``nnunet_lesionloss.inspection``; its report and files: ``nnunet_lesionloss.inspection_report``)."""

from __future__ import annotations

import sys
from pathlib import Path

from nnunet_lesionloss.components import ANY_CONNECTIVITY
from nnunet_lesionloss.inspection_report import run_inspection

__all__ = ["register"]


def run_inspect(args) -> int:
    try:
        report, text = run_inspection(
            args.dataset,
            args.output,
            plans=args.plans,
            configuration=args.configuration,
            connectivity=args.connectivity,
            file_ending=args.file_ending,
            dataset_json=args.dataset_json,
            tau=not args.no_tau,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.output:
        print(f"written: {Path(args.output) / 'inspect.json'}, inspect.md and the size histograms")
    if report["n_failed"]:
        print(f"{report['n_failed']} case(s) could not be inspected (listed above)", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="lesion counts, sizes and what nnU-Net's deep supervision erases, per label, before training",
        description="Inspect the lesions of an nnU-Net dataset (id or name: its preprocessed segmentations at the "
        "training spacing when planned, else nnUNet_raw/<dataset>/labelsTr) or of a folder of label images.",
    )
    p.add_argument(
        "dataset", help="dataset id (501), name (Dataset501_X), raw dataset folder, or folder of label images"
    )
    p.add_argument("-o", "--output", help="write inspect.json, inspect.md and size_histogram_*.png here")
    p.add_argument("-p", "--plans", help="plans identifier of a dataset id or name (default nnUNetPlans)")
    p.add_argument("-c", "--configuration", help="configuration of a dataset id or name (default 3d_fullres)")
    p.add_argument(
        "--connectivity",
        type=int,
        choices=ANY_CONNECTIVITY,
        help="lesion connectivity (default: full, 26 in 3D, as the evaluation)",
    )
    p.add_argument("--file-ending", help="label image ending (default: dataset.json's, else every readable one)")
    p.add_argument("--dataset-json", help="dataset.json for the labels and regions (default: found beside the labels)")
    p.add_argument("--no-tau", action="store_true", help="skip the Size Penalty tau (draws training patches)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run_inspect)
