"""Trainer hyperparameters as data: defaults in ``configs/<name>.yaml``, overridable without code.

Resolution order (later wins): the trainer's default file, the trainer class's ``config_overrides``
(small named variants such as ``nnUNetTrainerCATMIL_0102``), then the YAML/JSON file named by the
environment variable ``NNUNET_LESIONLOSS_CONFIG`` (merged key by key). Unknown keys and
out-of-range values raise :class:`ConfigError` naming the key, at trainer start.

Scoping of the override file (so that a file written for one trainer cannot silently change another):

* it may only change keys the trainer's own config has: a term under ``terms:`` must be one of the
  trainer's terms, ``auto_tau`` only where the trainer has it. A new term is added only by naming it
  under ``add_terms:`` (same settings as ``terms:``). ``trainer:`` (epochs, iterations, learning rate)
  applies to every trainer of this package;
* ``applies_to: [nnUNetTrainerCATMIL, "nnUNetTrainerCATMIL_*"]`` (trainer names, shell-style patterns)
  restricts the file to those trainers: any other trainer stops at start.

:func:`load_config_with_sources` also returns which file (or class) changed which key, from what to what;
the trainer writes it into its effective config (``sources``).

Schema::

    channels: per_class | union        # label-based datasets: one-vs-rest per class, or one union channel
    connectivity: full                 # of the ground-truth components: full (26 in 3D, 8 in 2D),
                                       # face (6 in 3D, 4 in 2D), or a number valid for the patch
    base: {weight: 1.0, loss: nnunet}  # the segmentation loss: nnU-Net's own DC+CE (DC+BCE for regions),
                                       # or generalized_dice_focal (Generalized Dice + Focal); weight 0 disables it
    terms:                             # extra loss terms, by name (see nnunet_lesionloss.losses.terms)
      <term>: {weight: w, warmup_epochs: T, scales: all | full, params: {...}, subterms: {...}}
    trainer: {num_epochs: ..., num_iterations_per_epoch: ..., num_val_iterations_per_epoch: ..., initial_lr: ...}
    lesion_validation:                 # lesion metrics on the validation patches of every epoch (every trainer)
      {enabled: true, connectivity: full, small_lesion_voxels: auto, checkpoint_metric: lesion_f1,
       fold_evaluation: default}       # see LESION_VALIDATION_DEFAULTS
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
import re
from collections.abc import Hashable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nnunet_lesionloss.components import VALID_CONNECTIVITY, check_connectivity, check_connectivity_value

__all__ = [
    "resolve_connectivity",
    "ConfigError",
    "CONFIG_ENV",
    "load_config",
    "merge",
    "validate_structure",
    "default_config_path",
    "BASE_LOSSES",
    "loss_terms",
    "load_config_with_sources",
    "read_config_file",
    "OVERRIDE_ONLY_KEYS",
    "LESION_VALIDATION_DEFAULTS",
    "config_differences",
    "ABSENT",
]

CONFIG_ENV = "NNUNET_LESIONLOSS_CONFIG"

_TOP_KEYS = {"channels", "connectivity", "base", "terms", "trainer", "auto_tau", "lesion_validation"}
#: keys only an override file may hold: its scope (``applies_to``) and the terms it adds (``add_terms``)
OVERRIDE_ONLY_KEYS = ("applies_to", "add_terms")
_TERM_KEYS = {"weight", "warmup_epochs", "scales", "params", "subterms"}
_TRAINER_KEYS = {
    "num_epochs": int,
    "num_iterations_per_epoch": int,
    "num_val_iterations_per_epoch": int,
    "initial_lr": float,
    "save_every": int,
}


#: ``base.loss``: the segmentation loss every trainer keeps. "nnunet" is nnU-Net's own DC+CE (DC+BCE
#: for regions); the others are spelled out as terms at every deep-supervision scale, each weighted
#: by ``base.weight``. Generalized Dice + Focal (MONAI's GeneralizedDiceFocalLoss defaults: γ = 2,
#: no α) is the L_seg of Rachmadi et al.'s instance-loss compounds.
BASE_LOSSES: dict[str, dict] = {
    "nnunet": {},
    "generalized_dice_focal": {"generalized_dice": {}, "focal": {"params": {"gamma": 2.0, "alpha": None}}},
}


#: ``lesion_validation``: what every trainer measures on nnU-Net's validation patches each epoch
#: (training.lesion_validation), the best checkpoint it keeps by them, and the fold-level evaluation.
LESION_VALIDATION_DEFAULTS: dict[str, Any] = {
    # chosen here: on for every trainer (one cc3d labelling per validation patch and channel)
    "enabled": True,
    # the evaluation's default (26 in 3D, 8 in 2D: evaluation.settings), the same for every trainer
    # whatever the loss's connectivity, so that the curves of two trainers count the same lesions
    "connectivity": "full",
    # "auto": the evaluation's small lesion, <= 0.05 mL (Rachmadi et al. 2024 §4.1; inclusive as Luu et
    # al. 2026 eq. 3.6), in voxels at the configuration's spacing (50 voxels at 1 mm isotropic); or a number
    "small_lesion_voxels": "auto",
    # chosen here: lesion F1 (Luu et al. 2026 eq. 3.5) balances detection and false components; a recall
    # alone is highest for an over-segmenting early network. null: no lesion-aware checkpoint
    "checkpoint_metric": "lesion_f1",
    # evaluation preset of the fold-level evaluation after nnU-Net's final validation (cv-summary's
    # default preset, so cv-summary reuses it); null: none
    "fold_evaluation": "default",
}


class ConfigError(ValueError):
    """A configuration value is unknown or out of range; the message names the key."""


def default_config_path(name: str) -> Path:
    """Path of the shipped default config ``configs/<name>.yaml``."""
    path = resources.files("nnunet_lesionloss.configs").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"no default config named {name!r} (looked for {path})")
    return Path(str(path))


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax: ``1e-3`` and ``5E4`` are numbers.

    PyYAML follows YAML 1.1, whose floats need a dot, so it reads ``1e-3`` as the *string* "1e-3".
    It also refuses duplicate keys (:meth:`construct_mapping`).
    """

    def construct_mapping(self, node, deep=False):
        """PyYAML keeps the last of two equal keys in silence; a config refuses them, naming the key and
        both lines. Keys a merge (``<<: *anchor``) brings in may still be overridden, as YAML intends."""
        if isinstance(node, yaml.MappingNode):
            first_line = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, Hashable) and key in first_line:
                    raise ConfigError(
                        f"duplicate key {key!r} on line {line} (first on line {first_line[key]}): YAML would keep "
                        "only the last one and lose the other setting in silence; remove one of them"
                    )
                if isinstance(key, Hashable):
                    first_line[key] = line
        return super().construct_mapping(node, deep=deep)


_FLOAT_TAG = "tag:yaml.org,2002:float"
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}  # a deep copy: add_implicit_resolver would otherwise append to SafeLoader's own lists
_ConfigLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _json_object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ConfigError(
            f"duplicate key {duplicates[0]!r}: JSON readers keep only the last one and lose the other setting "
            "in silence; remove one of them"
        )
    return dict(pairs)


def read_config_file(path: str | os.PathLike) -> dict:
    """A YAML (``1e-3`` is a number, as in YAML 1.2) or JSON config file as a mapping; duplicate keys
    are refused."""
    path = Path(path)
    origin = f"(from {CONFIG_ENV} or an argument)"
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a config file {origin}: name a .yaml or .json file")
    if not path.is_file():
        if path.is_symlink():
            raise ConfigError(f"config file {path} is a broken symbolic link (to {os.readlink(path)}) {origin}")
        if path.exists():
            raise ConfigError(f"config file {path} is not a regular file {origin}")
        raise ConfigError(f"config file {path} does not exist {origin}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_json_object_without_duplicates)
        else:
            data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except ConfigError as error:
        raise ConfigError(f"config file {path}: {error}") from error
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot parse config file {path}: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key, every other value is replaced."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _number(
    value: Any, key: str, *, minimum: float | None = None, above: float | None = None, integer: bool = False
) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (written in quotes?)" if isinstance(value, str) else ""
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}{hint}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if integer and not float(value).is_integer():
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"{key} must be > {above}, got {value!r}")
    return int(value) if integer else float(value)


def validate_structure(config: dict) -> dict:
    """Check keys and ranges of everything but the term params (those are checked against the loss
    functions' own signatures and validation by ``losses.terms``). Returns a normalised copy."""
    config = copy.deepcopy(config)
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    channels = config.setdefault("channels", "per_class")
    if channels not in ("per_class", "union"):
        raise ConfigError(f"channels must be 'per_class' or 'union', got {channels!r}")
    _check_connectivity_setting(config.setdefault("connectivity", "full"), "connectivity")
    base = config.setdefault("base", {"weight": 1.0})
    if not isinstance(base, dict) or set(base) - {"weight", "loss"}:
        raise ConfigError(f"base must be a mapping with the keys 'weight' and 'loss', got {base!r}")
    base["weight"] = _number(base.get("weight", 1.0), "base.weight", minimum=0)
    base.setdefault("loss", "nnunet")
    if base["loss"] not in BASE_LOSSES:
        raise ConfigError(f"base.loss must be one of {sorted(BASE_LOSSES)}, got {base['loss']!r}")
    terms = config.setdefault("terms", {})
    if not isinstance(terms, dict):
        raise ConfigError(f"terms must be a mapping of term name to settings, got {terms!r}")
    for name, term in terms.items():
        if not isinstance(term, dict):
            raise ConfigError(f"terms.{name} must be a mapping, got {term!r}")
        unknown = set(term) - _TERM_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in terms.{name}; allowed: {sorted(_TERM_KEYS)}")
        term["weight"] = _number(term.get("weight", 1.0), f"terms.{name}.weight", minimum=0)
        term["warmup_epochs"] = _number(
            term.get("warmup_epochs", 0), f"terms.{name}.warmup_epochs", minimum=0, integer=True
        )
        term.setdefault("scales", "all")
        if term["scales"] not in ("all", "full"):
            raise ConfigError(f"terms.{name}.scales must be 'all' or 'full', got {term['scales']!r}")
        term.setdefault("params", {})
        if not isinstance(term["params"], dict):
            raise ConfigError(f"terms.{name}.params must be a mapping, got {term['params']!r}")
        if "subterms" in term:
            if not isinstance(term["subterms"], dict):
                raise ConfigError(f"terms.{name}.subterms must map sub-term names to weights, got {term['subterms']!r}")
            term["subterms"] = {
                key: _number(value, f"terms.{name}.subterms.{key}", minimum=0)
                for key, value in term["subterms"].items()
            }
    trainer = config.setdefault("trainer", {})
    if not isinstance(trainer, dict):
        raise ConfigError(f"trainer must be a mapping, got {trainer!r}")
    for key, value in trainer.items():
        if key not in _TRAINER_KEYS:
            raise ConfigError(f"unknown key trainer.{key}; allowed: {sorted(_TRAINER_KEYS)}")
        # every trainer number is positive: counts of at least 1, a learning rate above 0 (0 trains nothing)
        integer = _TRAINER_KEYS[key] is int
        trainer[key] = (
            _number(value, f"trainer.{key}", minimum=1, integer=True)
            if integer
            else _number(value, f"trainer.{key}", above=0)
        )
    auto_tau = config.setdefault("auto_tau", None)
    if auto_tau is not None:
        if not isinstance(auto_tau, dict):
            raise ConfigError(f"auto_tau must be a mapping or null, got {auto_tau!r}")
        unknown = set(auto_tau) - {"quantile", "gate_quantile", "patches"}
        if unknown:
            raise ConfigError(
                f"unknown key(s) {sorted(unknown)} in auto_tau; allowed: gate_quantile, patches, quantile"
            )
        for key in ("quantile", "gate_quantile"):
            value = auto_tau.setdefault(key, 0.5 if key == "quantile" else None)
            if value is not None and not 0 <= _number(value, f"auto_tau.{key}") <= 1:
                raise ConfigError(f"auto_tau.{key} must be in [0, 1], got {value!r}")
        auto_tau["patches"] = _number(auto_tau.get("patches", 500), "auto_tau.patches", minimum=1, integer=True)
    if base["weight"] == 0 and all(_trains_nothing(term) for term in terms.values()):
        raise ConfigError(
            "base.weight is 0 and every term has weight 0 (or only sub-terms of weight 0): the loss would be "
            "0 and the network would not train; give base.weight or a term a weight > 0"
        )
    config["lesion_validation"] = _validate_lesion_validation(config.get("lesion_validation"))
    return config


def _trains_nothing(term: dict) -> bool:
    return term["weight"] == 0 or ("subterms" in term and not any(term["subterms"].values()))


def _validate_lesion_validation(section: Any) -> dict:
    """``lesion_validation`` merged over :data:`LESION_VALIDATION_DEFAULTS`, each value checked."""
    from nnunet_lesionloss.evaluation.settings import PRESETS
    from nnunet_lesionloss.training.lesion_validation import CHECKPOINT_METRICS

    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"lesion_validation must be a mapping, got {section!r}")
    unknown = set(section) - set(LESION_VALIDATION_DEFAULTS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} in lesion_validation; allowed: {sorted(LESION_VALIDATION_DEFAULTS)}"
        )
    out = merge(LESION_VALIDATION_DEFAULTS, section)
    if not isinstance(out["enabled"], bool):
        raise ConfigError(f"lesion_validation.enabled must be true or false, got {out['enabled']!r}")
    _check_connectivity_setting(out["connectivity"], "lesion_validation.connectivity")
    if out["small_lesion_voxels"] != "auto":
        out["small_lesion_voxels"] = _number(
            out["small_lesion_voxels"], "lesion_validation.small_lesion_voxels", minimum=1, integer=True
        )
    if out["checkpoint_metric"] is not None and out["checkpoint_metric"] not in CHECKPOINT_METRICS:
        raise ConfigError(
            f"lesion_validation.checkpoint_metric must be one of {list(CHECKPOINT_METRICS)} or null, "
            f"got {out['checkpoint_metric']!r}"
        )
    if out["fold_evaluation"] is not None and out["fold_evaluation"] not in PRESETS:
        raise ConfigError(
            f"lesion_validation.fold_evaluation must be an evaluation preset ({', '.join(PRESETS)}) or null, "
            f"got {out['fold_evaluation']!r}"
        )
    return out


def load_config(name: str, overrides: dict | None = None, env: dict | None = None, trainer: str | None = None) -> dict:
    """The effective config of trainer config ``name`` (see module docstring), validated."""
    return load_config_with_sources(name, overrides, env, trainer)[0]


def load_config_with_sources(
    name: str, overrides: dict | None = None, env: dict | None = None, trainer: str | None = None
) -> tuple[dict, list[dict]]:
    """The effective config and where each value came from.

    ``trainer`` (the class name) is what the override file's scope is checked against and what its
    messages name; without it, messages name the config and ``applies_to`` is not checked.
    Returns ``(config, sources)``: ``sources`` lists, in order, the default file, the class
    overrides and the override file, each with the keys it changed (``{"terms.cat.weight":
    {"from": 0.1, "to": 0.2}}``; ``from`` is absent for a key it added).
    """
    env = os.environ if env is None else env
    who = trainer or f"config {name!r}"
    default_path = default_config_path(name)
    config = read_config_file(default_path)
    sources = [{"source": f"default config of {who}", "path": str(default_path)}]
    if overrides:
        if trainer is not None:
            sources.append({"source": f"{trainer}.config_overrides", "changes": changed_keys(config, overrides)})
        else:
            sources.append({"source": "overrides given in code", "changes": changed_keys(config, overrides)})
        config = merge(config, overrides)
    path = env.get(CONFIG_ENV)
    if path:
        override = read_config_file(path)
        override = scope_override(override, validate_structure(config), who, trainer, f"{CONFIG_ENV}={path}")
        sources.append(
            {
                "source": CONFIG_ENV,
                "path": str(Path(path).resolve()),
                "changes": changed_keys(config, override),
            }
        )
        config = merge(config, override)
    return validate_structure(config), sources


def scope_override(override: dict, defaults: dict, who: str, trainer: str | None, origin: str) -> dict:
    """Check that an override file may change this trainer (module docstring) and turn its
    ``add_terms`` into ``terms``; raises :class:`ConfigError` naming the key, the trainer and the file."""
    override = copy.deepcopy(override)
    scope = override.pop("applies_to", None)
    if scope is not None:
        patterns = [scope] if isinstance(scope, str) else scope
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{origin}: applies_to must be a trainer name or a list of them, got {scope!r}")
        if trainer is not None and not any(fnmatch.fnmatchcase(trainer, p) for p in patterns):
            raise ConfigError(
                f"{origin} applies_to {patterns}, not to {trainer}: unset {CONFIG_ENV} for this trainer "
                f"or add {trainer} to applies_to"
            )
    added = override.pop("add_terms", None) or {}
    if not isinstance(added, dict):
        raise ConfigError(f"{origin}: add_terms must map term names to settings, got {added!r}")
    own_terms = sorted(defaults["terms"])
    terms = override.get("terms") or {}
    if isinstance(terms, dict):
        for term in terms:
            if term not in defaults["terms"]:
                raise ConfigError(
                    f"{origin} sets terms.{term}, but {who} has no term {term!r} (its terms: "
                    f"{', '.join(own_terms) or 'none'}). The file was probably written for another trainer: "
                    f"unset {CONFIG_ENV}, limit the file with applies_to, or add the term on purpose under "
                    f"add_terms.{term}"
                )
    for term in added:
        if term in defaults["terms"] or term in BASE_LOSSES.get(defaults["base"]["loss"], {}):
            raise ConfigError(f"{origin}: add_terms.{term}: {who} already has the term {term!r}; set it under terms")
    if "auto_tau" in override and defaults.get("auto_tau") is None:
        raise ConfigError(f"{origin} sets auto_tau, but {who} does not estimate τ from the data (no auto_tau)")
    if added:
        override["terms"] = {**(terms if isinstance(terms, dict) else {}), **added}
    return override


def changed_keys(before: dict, override: dict, prefix: str = "") -> dict:
    """Dotted key -> {"from": old, "to": new} for every leaf ``override`` sets to a new value."""
    changes = {}
    for key, value in (override or {}).items():
        dotted = f"{prefix}{key}"
        old = before.get(key) if isinstance(before, dict) else None
        if isinstance(value, dict) and value and (isinstance(old, dict) or old is None):
            changes.update(changed_keys(old or {}, value, dotted + "."))
        elif not isinstance(before, dict) or key not in before:
            changes[dotted] = {"to": copy.deepcopy(value)}
        elif old != value:
            changes[dotted] = {"from": copy.deepcopy(old), "to": copy.deepcopy(value)}
    return changes


#: marks a key one of two configs does not have (:func:`config_differences`)
ABSENT = "(not set)"


def config_differences(before: dict, after: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in before, value in after)`` of every leaf that differs between two
    configs, in key order; :data:`ABSENT` stands for a key one of them does not have."""
    differences = []
    for key in sorted(set(before) | set(after), key=str):
        dotted = f"{prefix}{key}"
        old, new = before.get(key, ABSENT), after.get(key, ABSENT)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, dotted + ".")
        elif old != new:
            differences.append((dotted, old, new))
    return differences


def loss_terms(config: dict) -> dict:
    """The terms a validated config trains with: those of ``base.loss`` (unless it is nnU-Net's own,
    weighted ``base.weight`` at every scale), then ``terms``."""
    base = config["base"]
    terms = {
        name: merge({"weight": base["weight"], "warmup_epochs": 0, "scales": "all", "params": {}}, settings)
        for name, settings in BASE_LOSSES[base["loss"]].items()
    }
    clash = set(terms) & set(config["terms"])
    if clash:
        raise ConfigError(f"terms {sorted(clash)} are already part of base.loss {base['loss']!r}")
    return {**terms, **config["terms"]}


def _check_connectivity_setting(value, name: str) -> None:
    try:
        check_connectivity_value(value, name)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def resolve_connectivity(connectivity: str | int, spatial_dims: int) -> int:
    """The cc3d connectivity of a config value for 2D or 3D patches ('full', 'face' or a number), as
    :func:`~nnunet_lesionloss.components.check_connectivity` resolves it; ConfigError when invalid there."""
    try:
        return check_connectivity(connectivity, spatial_dims)
    except ValueError:
        raise ConfigError(
            f"connectivity {connectivity} is not valid for {spatial_dims}D patches; choose one of "
            f"{VALID_CONNECTIVITY[spatial_dims]}, 'face' or 'full'"
        ) from None
