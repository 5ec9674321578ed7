"""The installation as nnU-Net sees it: the trainer folder for nnUNet_extTrainer, the declared requirements
against the installed versions, nnU-Net's paths, trainer discovery through nnU-Net's own lookup (``doctor``), and
the config a trainer would train with, checked as the trainer checks it at start (``config``)."""

from __future__ import annotations

import json
import os
import shlex
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

__all__ = [
    "DISTRIBUTION",
    "NNUNET_DEFAULT_FOLDS",
    "NotALesionLossTrainer",
    "check_folds",
    "cross_validation_folds",
    "dataset_configuration",
    "declared_requirements",
    "doctor_report",
    "effective_config",
    "export_line",
    "shipped_trainer_names",
    "trainer_class",
    "trainer_folder",
]

#: the distribution whose declared requirements doctor checks the installation against
DISTRIBUTION = "nnunet-lesionloss"
#: the folds of the split nnU-Net writes to splits_final.json at a dataset's first training, when there is
#: none (nnUNetTrainer.do_split: a seeded 5-fold split)
NNUNET_DEFAULT_FOLDS = 5


def trainer_folder() -> str:
    """The folder to put in nnUNet_extTrainer (works for editable and regular installs)."""
    import nnunet_lesionloss.trainers

    return os.path.dirname(os.path.abspath(nnunet_lesionloss.trainers.__file__))


def shipped_trainer_names() -> list[str]:
    from nnunet_lesionloss.training.variants import __all__ as names

    return list(names)


def export_line(current: str | None = None) -> str:
    """The shell line that adds this package's trainer folder to ``nnUNet_extTrainer`` (kept: the
    folders already there), quoted so that ``eval`` keeps a path with spaces or shell characters whole."""
    folder = trainer_folder()
    paths = [p for p in (current or "").split(os.pathsep) if p]
    if folder not in paths:
        paths.append(folder)
    return f"export nnUNet_extTrainer={shlex.quote(os.pathsep.join(paths))}"


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
            checks.append((False, f"{variable}={value} does not exist: mkdir -p {shlex.quote(value)}"))
        else:
            checks.append((True, f"{variable}={value}"))
    folder = trainer_folder()
    ext = environ.get("nnUNet_extTrainer", "")
    if folder in [os.path.abspath(p) for p in ext.split(os.pathsep) if p]:
        checks.append((True, f"nnUNet_extTrainer contains {folder}"))
    else:
        checks.append((False, f'nnUNet_extTrainer does not contain {folder}: run eval "$(nnunet-lesionloss env)"'))
    checks.extend(_discovery_checks(ext, folder))
    return checks


def lookup_trainer_class(name: str) -> type:
    """The class ``nnUNetv2_train -tr NAME`` would train: nnU-Net's own lookup (its package, then the
    folders of nnUNet_extTrainer), its progress lines kept off the output. RuntimeError when none."""
    import contextlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()):
        return recursive_find_trainer_class_by_name(name)


def _find_trainers(ext_trainer: str | None) -> tuple[list[str], list[str]]:
    """Look every shipped trainer up through nnU-Net's own lookup with ``nnUNet_extTrainer`` set to
    ``ext_trainer`` (None: unset), as ``nnUNetv2_train -tr`` would. Returns (found, not found or
    found elsewhere, with the reason)."""
    saved = os.environ.get("nnUNet_extTrainer")
    if ext_trainer is None:
        os.environ.pop("nnUNet_extTrainer", None)
    else:
        os.environ["nnUNet_extTrainer"] = ext_trainer
    found, missing = [], []
    try:
        for name in shipped_trainer_names():
            try:
                trainer = lookup_trainer_class(name)
            except Exception as error:  # report, never crash the doctor
                missing.append(f"{name} ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
                continue
            if trainer.__module__.startswith("nnunet_lesionloss."):
                found.append(name)
            else:  # an earlier folder of nnUNet_extTrainer (or nnU-Net itself) defines a class of that name
                missing.append(f"{name} (nnU-Net would use {trainer.__module__}.{trainer.__name__} instead)")
    finally:
        if saved is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = saved
    return found, missing


def _discovery_checks(ext_trainer: str, folder: str) -> list[tuple[bool, str]]:
    """Trainer discovery with the environment as the user has it; if that fails, whether adding this
    package's folder (``nnunet-lesionloss env``) would fix it."""
    found, missing = _find_trainers(ext_trainer or None)
    total = len(found) + len(missing)
    shown = f"nnUNet_extTrainer={ext_trainer}" if ext_trainer else "nnUNet_extTrainer not set"
    if not missing:
        return [(True, f"with your environment ({shown}) nnU-Net finds {total}/{total} shipped trainers")]
    checks = [
        (
            False,
            f"with your environment ({shown}) nnU-Net finds {len(found)}/{total} shipped trainers; "
            f"nnUNetv2_train -tr would fail (or use another class) for: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
        )
    ]
    fixed = os.pathsep.join([p for p in ext_trainer.split(os.pathsep) if p] + [folder])
    found_after, missing_after = _find_trainers(fixed)
    if not missing_after:
        checks.append((True, f'after eval "$(nnunet-lesionloss env)" nnU-Net would find {total}/{total}'))
    else:
        checks += [(False, f"even with {folder} on nnUNet_extTrainer, nnU-Net cannot find {m}") for m in missing_after]
    return checks


class NotALesionLossTrainer(LookupError):
    """A trainer nnU-Net finds that is not derived from this package's base: it reads no config."""


def trainer_class(name: str) -> type:
    """The trainer class ``nnUNetv2_train -tr NAME`` would use: this package's trainers directly, any
    other name (nnU-Net's trainers, a user's subclass in nnUNet_extTrainer) through nnU-Net's lookup.
    Raises RuntimeError naming nnUNet_extTrainer when nnU-Net finds no such trainer."""
    from nnunet_lesionloss.training import variants

    if name in shipped_trainer_names():
        return getattr(variants, name)
    try:
        return lookup_trainer_class(name)
    except RuntimeError:
        raise RuntimeError(
            f"nnU-Net finds no trainer {name} in its package or nnUNet_extTrainer="
            f"{os.environ.get('nnUNet_extTrainer', '')}, so nnUNetv2_train -tr {name} would fail: check the "
            f'name, and that the folder defining it is on nnUNet_extTrainer (eval "$(nnunet-lesionloss env)" '
            "adds this package's)"
        ) from None
    except AssertionError as error:  # nnU-Net's check that the class derives from nnUNetTrainer
        raise RuntimeError(f"{name}: {error}") from None


def dataset_configuration(dataset: str, configuration: str, plans: str = "nnUNetPlans"):
    """(dataset name, configuration manager, label manager) of a preprocessed dataset, as the trainer
    reads them from nnUNet_preprocessed; RuntimeError with what is missing."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(f"dataset {dataset}: {str(error).splitlines()[0]}") from None
    folder = os.path.join(nnUNet_preprocessed.require(), name)
    plans_file, dataset_json = os.path.join(folder, f"{plans}.json"), os.path.join(folder, "dataset.json")
    for path in (plans_file, dataset_json):
        if not os.path.isfile(path):
            raise RuntimeError(
                f"{path} does not exist: plan and preprocess {name} first (nnUNetv2_plan_and_preprocess)"
            )
    try:
        with open(dataset_json) as file:
            labels = json.load(file)
        manager = PlansManager(plans_file)
    except ValueError as error:  # JSONDecodeError
        raise RuntimeError(f"cannot read the plans of {name} ({plans_file}, {dataset_json}): {error}") from None
    try:
        configuration_manager = manager.get_configuration(configuration)
    except RuntimeError as error:
        raise RuntimeError(f"{name} ({plans}): {error}") from None
    return name, configuration_manager, manager.get_label_manager(labels)


def cross_validation_folds(dataset_name: str) -> tuple[int, str]:
    """The number of cross-validation folds of a preprocessed dataset, and what says so: the splits of
    ``nnUNet_preprocessed/<dataset>/splits_final.json``, or nnU-Net's 5 when that file does not exist yet (the
    first training writes it). RuntimeError for a file that is not a list of splits."""
    from nnunet_lesionloss.evaluation.cv import read_splits  # the evaluation is heavy to import: only here

    folder = os.environ.get("nnUNet_preprocessed")
    if not folder:
        raise RuntimeError("nnUNet_preprocessed is not set: cannot find the dataset's splits_final.json")
    splits_file = Path(folder) / dataset_name / "splits_final.json"
    if not splits_file.is_file():
        return NNUNET_DEFAULT_FOLDS, (
            f"it has no splits_final.json yet; nnU-Net writes a {NNUNET_DEFAULT_FOLDS}-fold one at the first training"
        )
    try:
        count = len(read_splits(splits_file))
    except (OSError, ValueError) as error:
        raise RuntimeError(str(error)) from None
    return count, f"{splits_file} has {count} folds"


def check_folds(dataset_name: str, folds: list[int]) -> str:
    """Refuses (RuntimeError) a fold that is not a fold of the dataset's cross-validation (nnU-Net would
    train a random 80:20 split for it, which no cross-validation summary counts); the sentence saying why
    the folds fit."""
    count, source = cross_validation_folds(dataset_name)
    outside = [fold for fold in folds if fold < 0 or fold >= count]
    if outside:
        raise RuntimeError(
            f"fold(s) {' '.join(map(str, outside))} of --folds are not folds of {dataset_name}: {source} "
            f"(folds 0-{count - 1})"
        )
    return f"folds {' '.join(map(str, folds))} of {dataset_name}: {source}"


def effective_config(
    trainer: str, environ=None, dataset: str | None = None, configuration: str | None = None, plans: str = "nnUNetPlans"
) -> dict:
    """The config ``trainer`` would train with, and which file changed what (``sources``), after the
    checks the trainer runs at start (:func:`~nnunet_lesionloss.training.setup.resolve_setup`): with
    ``dataset`` and ``configuration``, on that configuration's patch dimension, spacing and labels or
    regions; without them, on 3D patches at 1 mm and label-based data.

    Raises :class:`NotALesionLossTrainer` for a trainer that is not derived from this package's base
    (it reads no config), RuntimeError when nnU-Net finds no such trainer or dataset configuration, and
    ``ConfigError`` for a config the trainer would refuse at start.
    """
    from nnunet_lesionloss.config import load_config_with_sources
    from nnunet_lesionloss.training.setup import resolve_setup
    from nnunet_lesionloss.training.trainer import nnUNetTrainerLesionLoss

    cls = trainer_class(trainer)
    if not issubclass(cls, nnUNetTrainerLesionLoss):
        raise NotALesionLossTrainer(trainer)
    config, sources = load_config_with_sources(cls.config_name, cls.config_overrides, environ, trainer=trainer)
    if dataset is not None:
        name, configuration_manager, label_manager = dataset_configuration(dataset, configuration, plans)
        spatial_dims, spacing = len(configuration_manager.patch_size), configuration_manager.spacing
        checked = f"{name} {configuration} ({plans}): {spatial_dims}D patches {list(configuration_manager.patch_size)}"
    else:
        label_manager, spatial_dims, spacing = None, 3, (1.0, 1.0, 1.0)
        checked = "3D patches at 1 mm, label-based data (give DATASET CONFIGURATION to check against its plans)"
    resolve_setup(config, spatial_dims=spatial_dims, spacing=spacing, label_manager=label_manager)
    # shown as lesionloss_config.json shows it: "trainer" is the class, its settings "trainer_settings"
    shown = {"trainer": trainer, "config_name": cls.config_name}
    shown.update({key: value for key, value in config.items() if key != "trainer"})
    return {**shown, "trainer_settings": config["trainer"], "sources": sources, "checked_for": checked}
