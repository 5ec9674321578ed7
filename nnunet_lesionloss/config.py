"""Trainer hyperparameters as data: defaults in ``configs/<name>.yaml``, overridable without code.

Resolution order (later wins): the trainer's default file, the trainer class's ``config_overrides``
(small named variants such as ``nnUNetTrainerCATMIL_0102``), then the YAML/JSON file named by the
environment variable ``NNUNET_LESIONLOSS_CONFIG`` (merged key by key). Unknown keys and
out-of-range values raise :class:`ConfigError` naming the key, at trainer start.

Schema::

    channels: per_class | union        # label-based datasets: one-vs-rest per class, or one union channel
    connectivity: full                 # of the ground-truth components: full (26 in 3D, 8 in 2D),
                                       # face (6 in 3D, 4 in 2D), or a number valid for the patch
    base: {weight: 1.0, loss: nnunet}  # the segmentation loss: nnU-Net's own DC+CE (DC+BCE for regions),
                                       # or generalized_dice_focal (Generalized Dice + Focal); weight 0 disables it
    terms:                             # extra loss terms, by name (see nnunet_lesionloss.losses.terms)
      <term>: {weight: w, warmup_epochs: T, scales: all | full, params: {...}, subterms: {...}}
    trainer: {num_epochs: ..., num_iterations_per_epoch: ..., num_val_iterations_per_epoch: ..., initial_lr: ...}
"""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nnunet_lesionloss.components import ANY_CONNECTIVITY, VALID_CONNECTIVITY

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
]

CONFIG_ENV = "NNUNET_LESIONLOSS_CONFIG"

_TOP_KEYS = {"channels", "connectivity", "base", "terms", "trainer", "auto_tau"}
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


class ConfigError(ValueError):
    """A configuration value is unknown or out of range; the message names the key."""


def default_config_path(name: str) -> Path:
    """Path of the shipped default config ``configs/<name>.yaml``."""
    path = resources.files("nnunet_lesionloss.configs").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"no default config named {name!r} (looked for {path})")
    return Path(str(path))


def read_config_file(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (from {CONFIG_ENV} or an argument)")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
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


def _number(value: Any, key: str, *, minimum: float | None = None, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value!r}")
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
    connectivity = config.setdefault("connectivity", "full")
    if connectivity not in ("full", "face", *ANY_CONNECTIVITY):
        raise ConfigError(
            f"connectivity must be 'full', 'face', {VALID_CONNECTIVITY[2]} (2D) or {VALID_CONNECTIVITY[3]} (3D), got {connectivity!r}"
        )
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
        integer = _TRAINER_KEYS[key] is int
        trainer[key] = _number(value, f"trainer.{key}", minimum=1 if integer else 0, integer=integer)
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
    return config


def load_config(name: str, overrides: dict | None = None, env: dict | None = None) -> dict:
    """The effective config of trainer config ``name`` (see module docstring), validated."""
    env = os.environ if env is None else env
    config = read_config_file(default_config_path(name))
    config = merge(config, overrides or {})
    if env.get(CONFIG_ENV):
        config = merge(config, read_config_file(env[CONFIG_ENV]))
    return validate_structure(config)


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


def resolve_connectivity(connectivity: str | int, spatial_dims: int) -> int:
    """The cc3d connectivity of a config value for 2D or 3D patches ('full', 'face' or a number)."""
    valid = VALID_CONNECTIVITY[spatial_dims]
    if connectivity == "full":
        return valid[-1]
    if connectivity == "face":
        return valid[0]
    if connectivity not in valid:
        raise ConfigError(
            f"connectivity {connectivity} is not valid for {spatial_dims}D patches; choose one of {valid}, 'face' or 'full'"
        )
    return int(connectivity)
