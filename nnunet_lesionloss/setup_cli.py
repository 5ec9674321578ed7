"""Set-up sub-commands: ``env`` (the export line for nnUNet_extTrainer), ``doctor`` (checks the
installation end to end) and ``synth`` (writes the synthetic dataset)."""

from __future__ import annotations

import os
import sys
from importlib import metadata

from packaging.requirements import Requirement

__all__ = ["register", "trainer_folder", "shipped_trainer_names", "doctor_report", "declared_requirements"]

#: the distribution whose declared requirements doctor checks the installation against
DISTRIBUTION = "nnunet-lesionloss"


def trainer_folder() -> str:
    """The folder to put in nnUNet_extTrainer (works for editable and regular installs)."""
    import nnunet_lesionloss.trainers

    return os.path.dirname(os.path.abspath(nnunet_lesionloss.trainers.__file__))


def shipped_trainer_names() -> list[str]:
    from nnunet_lesionloss.training.variants import __all__ as names

    return list(names)


def export_line(current: str | None = None) -> str:
    folder = trainer_folder()
    paths = [p for p in (current or "").split(os.pathsep) if p]
    if folder not in paths:
        paths.append(folder)
    return f"export nnUNet_extTrainer={os.pathsep.join(paths)}"


def declared_requirements() -> list[Requirement]:
    """The runtime requirements of this package as its installed metadata declares them
    (pyproject.toml's ``dependencies``), extras left out: the one list of supported versions."""
    requirements = [Requirement(text) for text in metadata.requires(DISTRIBUTION) or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def _version_checks() -> list[tuple[bool, str]]:
    checks = []
    for requirement in declared_requirements():
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            checks.append((False, f"{requirement.name} is not installed: pip install {DISTRIBUTION} pulls it in"))
            continue
        ok = requirement.specifier.contains(version, prereleases=True)
        wanted = f" (this package declares {requirement.specifier})" if not ok else ""
        checks.append((ok, f"{requirement.name} {version}{wanted}"))
    return checks


def doctor_report(environ=None) -> list[tuple[bool, str]]:
    """(ok, message) for every check: versions, nnU-Net paths, trainer discovery."""
    environ = os.environ if environ is None else environ
    checks = _version_checks()
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = environ.get(variable)
        if not value:
            checks.append((False, f"{variable} is not set: export it to a folder (see nnU-Net's setting_up_paths.md)"))
        elif not os.path.isdir(value):
            checks.append((False, f"{variable}={value} does not exist: mkdir -p {value}"))
        else:
            checks.append((True, f"{variable}={value}"))
    folder = trainer_folder()
    ext = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder in [os.path.abspath(p) for p in ext]:
        checks.append((True, f"nnUNet_extTrainer contains {folder}"))
    else:
        checks.append((False, f'nnUNet_extTrainer does not contain {folder}: run eval "$(nnunet-lesionloss env)"'))
    checks.extend(_discovery_checks(folder))
    return checks


def _discovery_checks(folder: str) -> list[tuple[bool, str]]:
    """Look every shipped trainer up through nnU-Net's own lookup, with our folder on the path."""
    import contextlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    saved = os.environ.get("nnUNet_extTrainer")
    os.environ["nnUNet_extTrainer"] = os.pathsep.join([p for p in (saved or "").split(os.pathsep) if p] + [folder])
    found, missing = [], []
    try:
        for name in shipped_trainer_names():
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    trainer = recursive_find_trainer_class_by_name(name)
                (found if trainer.__module__.startswith("nnunet_lesionloss.") else missing).append(name)
            except Exception as error:  # report, never crash the doctor
                missing.append(f"{name} ({type(error).__name__}: {error})")
    finally:
        if saved is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = saved
    checks = [(True, f"nnU-Net finds {len(found)}/{len(found) + len(missing)} shipped trainers: {', '.join(found)}")]
    checks += [(False, f"nnU-Net cannot find {name}") for name in missing]
    return checks


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


def _run_synth(args) -> int:
    from nnunet_lesionloss.synthetic import write_dataset_from_case, write_synthetic_dataset

    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        print("error: give --raw or set nnUNet_raw", file=sys.stderr)
        return 2
    if args.from_isles:
        files = {name: os.path.join(args.from_isles, f"{name.lower()}.nii.gz") for name in ("DWI", "ADC")}
        missing = [
            path for path in [*files.values(), os.path.join(args.from_isles, "mask.nii.gz")] if not os.path.isfile(path)
        ]
        if missing:
            print(
                f"error: --from-isles needs dwi.nii.gz, adc.nii.gz and mask.nii.gz; missing {missing}", file=sys.stderr
            )
            return 2
        folder = write_dataset_from_case(
            raw,
            args.dataset_id,
            files,
            os.path.join(args.from_isles, "mask.nii.gz"),
            name="ISLES22Copies",
            num_cases=min(args.cases, 8),
        )
        print(folder)
        return 0
    folder = write_synthetic_dataset(
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
    )
    print(folder)
    return 0


def register(subparsers) -> None:
    env = subparsers.add_parser("env", help="print the export line that lets nnU-Net find this package's trainers")
    env.set_defaults(func=_run_env)
    doctor = subparsers.add_parser("doctor", help="check versions, nnU-Net paths and that nnU-Net finds every trainer")
    doctor.set_defaults(func=_run_doctor)
    synth = subparsers.add_parser("synth", help="write the synthetic MS-like lesion dataset in nnU-Net raw format")
    synth.add_argument("--dataset-id", type=int, default=901)
    synth.add_argument("--name", default="SyntheticLesions")
    synth.add_argument("--raw", help="nnU-Net raw folder (default: $nnUNet_raw)")
    synth.add_argument("--cases", type=int, default=8)
    synth.add_argument("--shape", type=int, nargs=3, default=(48, 48, 48), metavar=("Z", "Y", "X"))
    synth.add_argument("--lesions", type=int, nargs=2, default=(6, 20), metavar=("MIN", "MAX"), help="lesions per case")
    synth.add_argument("--classes", type=int, default=1, help="number of lesion classes (labels 1..n)")
    synth.add_argument("--two-channels", action="store_true", help="add a second (T1-like) channel")
    synth.add_argument(
        "--contrast",
        type=float,
        default=1.5,
        help="brightness added to lesion voxels (plus 0.3 per label value); lower: harder small lesions",
    )
    synth.add_argument("--noise", type=float, default=0.5, help="std of the Gaussian noise of the image")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--from-isles",
        metavar="DIR",
        help="instead of synthetic data: mirrored copies (up to 8) of one real ISLES 2022 case "
        "(DIR with dwi.nii.gz, adc.nii.gz, mask.nii.gz, e.g. one case of the ISLES 2022 dataset)",
    )
    synth.set_defaults(func=_run_synth)
