"""Set-up sub-commands: ``env`` (the export line for nnUNet_extTrainer), ``doctor`` (checks the
installation end to end), ``config`` (the config a trainer would train with, checked as the trainer
checks it at start, and the folds a cross-validation would train), ``record-repeats`` (the manifest of a run
trained several times, written by scripts/run_cv.sh --repeats) and ``synth`` (writes the synthetic dataset).
The checks live in ``nnunet_lesionloss.installation``, the repeats' layout in
``nnunet_lesionloss.repeats_layout``, the dataset writers in ``nnunet_lesionloss.synthetic``."""

from __future__ import annotations

import json
import os
import sys

from nnunet_lesionloss.cli.options import (
    IncreasingPair,
    UniqueValues,
    finite_float,
    int_in_range,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from nnunet_lesionloss.installation import (
    DISTRIBUTION,
    NotALesionLossTrainer,
    check_folds,
    dataset_configuration,
    doctor_report,
    effective_config,
    export_line,
)
from nnunet_lesionloss.repeats_layout import ManifestError, record_repeats
from nnunet_lesionloss.synthetic import write_dataset_from_case, write_synthetic_dataset

__all__ = ["register"]


def _run_env(args) -> int:
    print(export_line(os.environ.get("nnUNet_extTrainer")))
    return 0


def _run_doctor(args) -> int:
    checks = doctor_report()
    for ok, message in checks:
        print(f"[{'ok' if ok else 'PROBLEM'}] {message}")
    problems = sum(not ok for ok, _ in checks)
    print(f"{problems} problem(s)" if problems else "all checks passed")
    return 1 if problems else 0


def _run_config(args) -> int:
    from nnunet_lesionloss.config import CONFIG_ENV, ConfigError
    from nnunet_lesionloss.evaluation.settings import PRESETS

    override = os.environ.get(CONFIG_ENV)
    print(f"{CONFIG_ENV}={override}" if override else f"{CONFIG_ENV} is not set: the trainer's defaults apply")
    if (args.dataset is None) != (args.configuration is None):
        print("error: give both DATASET and CONFIGURATION (or neither)", file=sys.stderr)
        return 2
    if args.preset is not None:
        if args.preset not in PRESETS:
            print(
                f"error: unknown evaluation preset {args.preset!r}; choose from {', '.join(PRESETS)}", file=sys.stderr
            )
            return 2
        print(f"evaluation preset: {args.preset}")
    if args.folds is not None and args.dataset is None:
        print("error: --folds needs DATASET and CONFIGURATION (the folds of its split)", file=sys.stderr)
        return 2
    try:
        if args.dataset is not None:  # for every trainer, nnU-Net's own too: planned, and the folds of its split
            name, _, _ = dataset_configuration(args.dataset, args.configuration, args.plans)
            if args.folds is not None:
                print(check_folds(name, args.folds))
        config = effective_config(args.trainer, None, args.dataset, args.configuration, args.plans)
    except NotALesionLossTrainer:
        note = f"{args.trainer} is not a trainer of {DISTRIBUTION}: it reads no lesion-loss config"
        if override:
            note += f", so {CONFIG_ENV} (including its trainer: settings) does not apply to it"
        print(f"note: {note}")
        return 0
    except (ConfigError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"checked as {args.trainer} checks it at start, for {config.pop('checked_for')}")
    print(json.dumps(config, indent=2))
    return 0


def _run_record_repeats(args) -> int:
    results = os.environ.get("nnUNet_results")
    if not results:
        print("error: nnUNet_results is not set (the repeats are kept under it)", file=sys.stderr)
        return 2
    try:
        path, manifest, notes = record_repeats(
            results, args.dataset, args.trainer, args.plans, args.configuration, args.repeats, args.folds
        )
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folds = "every fold of the split" if manifest.folds is None else "folds " + " ".join(map(str, manifest.folds))
    print(
        f"repeats of this run: {path} ({manifest.repeats} repeats, {folds})"
        + (f"; {', '.join(notes)}" if notes else "")
    )
    return 0


def _run_synth(args) -> int:
    try:
        folder = _write_synth(args)
    except (OSError, ValueError) as error:  # an existing dataset, an unwritable folder: nothing was replaced
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(folder)
    return 0


def _write_synth(args) -> str:
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise ValueError("give --raw or set nnUNet_raw")
    if args.from_isles:
        files = {name: os.path.join(args.from_isles, f"{name.lower()}.nii.gz") for name in ("DWI", "ADC")}
        missing = [
            path for path in [*files.values(), os.path.join(args.from_isles, "mask.nii.gz")] if not os.path.isfile(path)
        ]
        if missing:
            raise FileNotFoundError(f"--from-isles needs dwi.nii.gz, adc.nii.gz and mask.nii.gz; missing {missing}")
        return write_dataset_from_case(
            raw,
            args.dataset_id,
            files,
            os.path.join(args.from_isles, "mask.nii.gz"),
            name="ISLES22Copies",
            num_cases=min(args.cases, 8),
            overwrite=args.overwrite,
        )
    return write_synthetic_dataset(
        raw,
        args.dataset_id,
        name=args.name,
        num_cases=args.cases,
        shape=tuple(args.shape),
        lesions_per_case=tuple(args.lesions),
        num_classes=args.classes,
        two_channels=args.two_channels,
        contrast=args.contrast,
        noise=args.noise,
        seed=args.seed,
        overwrite=args.overwrite,
    )


def register(subparsers) -> None:
    env = subparsers.add_parser("env", help="print the export line that lets nnU-Net find this package's trainers")
    env.set_defaults(func=_run_env)
    doctor = subparsers.add_parser("doctor", help="check versions, nnU-Net paths and that nnU-Net finds every trainer")
    doctor.set_defaults(func=_run_doctor)
    config = subparsers.add_parser(
        "config",
        help="show the effective loss config of a trainer, with NNUNET_LESIONLOSS_CONFIG applied, and what set each key",
    )
    config.add_argument("trainer", help="trainer class name, e.g. nnUNetTrainerCATMIL (or a subclass of yours)")
    config.add_argument(
        "dataset", nargs="?", help="dataset id or name: check against its preprocessed plans (patch dimension, labels)"
    )
    config.add_argument("configuration", nargs="?", help="nnU-Net configuration of DATASET, e.g. 3d_fullres")
    config.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    config.add_argument("--preset", help="also check that this evaluation preset exists (cv-summary --preset)")
    config.add_argument(
        "--folds",
        type=non_negative_int,
        nargs="+",
        action=UniqueValues,
        metavar="FOLD",
        help="also check that these are folds of DATASET's cross-validation (its splits_final.json, else nnU-Net's 5)",
    )
    config.set_defaults(func=_run_config)
    repeats = subparsers.add_parser(
        "record-repeats",
        help="write the manifest of a run trained several times ($nnUNet_results/repeats/DATASET/TRAINER__PLANS__CONFIG"
        "/repeats.json; scripts/run_cv.sh --repeats calls it)",
    )
    repeats.add_argument("dataset", help="dataset name as nnU-Net names its folder, e.g. Dataset501_MSLesSeg")
    repeats.add_argument("configuration", help="nnU-Net configuration, e.g. 3d_fullres")
    repeats.add_argument("trainer", help="trainer class name")
    repeats.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    repeats.add_argument("--repeats", type=positive_int, required=True, help="the run's number of repeats (1, 2, ...)")
    repeats.add_argument(
        "--folds",
        type=non_negative_int,
        nargs="+",
        action=UniqueValues,
        metavar="FOLD",
        help="the folds trained (default: every fold)",
    )
    repeats.set_defaults(func=_run_record_repeats)
    synth = subparsers.add_parser("synth", help="write the synthetic MS-like lesion dataset in nnU-Net raw format")
    synth.add_argument("--dataset-id", type=int_in_range(1, 999), default=901, help="nnU-Net dataset id, 1..999")
    synth.add_argument("--name", default="SyntheticLesions")
    synth.add_argument("--raw", help="nnU-Net raw folder (default: $nnUNet_raw)")
    synth.add_argument(
        "--cases", type=int_in_range(2, 100_000), default=8, help="number of cases (>= 2, nnU-Net's minimum)"
    )
    synth.add_argument("--shape", type=positive_int, nargs=3, default=(48, 48, 48), metavar=("Z", "Y", "X"))
    synth.add_argument(
        "--lesions",
        type=non_negative_int,
        nargs=2,
        action=IncreasingPair,
        default=(6, 20),
        metavar=("MIN", "MAX"),
        help="lesions per case, drawn from MIN..MAX",
    )
    synth.add_argument("--classes", type=positive_int, default=1, help="number of lesion classes (labels 1..n)")
    synth.add_argument("--two-channels", action="store_true", help="add a second (T1-like) channel")
    synth.add_argument(
        "--contrast",
        type=finite_float,
        default=1.5,
        help="brightness added to lesion voxels (plus 0.3 per label value); lower: harder small lesions",
    )
    synth.add_argument("--noise", type=non_negative_float, default=0.5, help="std of the Gaussian noise of the image")
    synth.add_argument("--seed", type=non_negative_int, default=0)
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset of this id that synth wrote earlier (a dataset synth did not write is never replaced)",
    )
    synth.add_argument(
        "--from-isles",
        metavar="DIR",
        help="instead of synthetic data: mirrored copies (up to 8) of one real ISLES 2022 case "
        "(DIR with dwi.nii.gz, adc.nii.gz, mask.nii.gz, e.g. one case of the ISLES 2022 dataset)",
    )
    synth.set_defaults(func=_run_synth)
