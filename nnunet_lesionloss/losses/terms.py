"""Named loss terms: how a config entry ``terms: {<name>: {params: ...}}`` becomes a call of a
functional loss.

``TERM_FUNCTIONS`` maps each config name to its function. What the function is given follows
from its parameter names, so one adapter serves every loss: ``component_ids`` gets the
ground-truth components, ``gt`` the binary ground truth (ids > 0), ``voronoi_cells`` the cells,
``cell_counts`` the cells' voxel counts precomputed by the loader (when the batch has them),
``ignore_mask`` the ignore mask; the config's ``params`` become its keyword arguments. A function
without an ``ignore_mask`` parameter sees ignored voxels zeroed in both the probabilities and the
ground truth. A function that returns a dict of named sub-terms (the instance family) is reduced
with the config's ``subterms`` weights: Σ weight_k · subterm_k.

Parameters are checked once, when the term is built (:func:`build_term`: unknown keys against
the signature, values by the loss function's own validation on a tiny input); every training step
then calls the function with ``validate=False``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nnunet_lesionloss.config import ConfigError
from nnunet_lesionloss.losses.blob import blob_loss
from nnunet_lesionloss.losses.catmil import cat_loss, mil_loss
from nnunet_lesionloss.losses.cc import cc_loss
from nnunet_lesionloss.losses.instance_losses import TERM_NAMES as INSTANCE_SUBTERMS
from nnunet_lesionloss.losses.instance_losses import instance_losses
from nnunet_lesionloss.losses.inverse_weighting import inverse_weighted_loss
from nnunet_lesionloss.losses.size_penalty import size_penalty_loss
from nnunet_lesionloss.losses.voxel_losses import (
    binary_focal_loss,
    focal_tversky_loss,
    generalized_dice_loss,
    tversky_loss,
)

__all__ = ["TERM_FUNCTIONS", "FIXED_PARAMS", "LossTerm", "build_term"]

#: config term name -> functional loss
TERM_FUNCTIONS: dict[str, Callable] = {
    "dice": tversky_loss,  # soft Dice = Tversky with α = β = 0.5 (see FIXED_PARAMS)
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "focal": binary_focal_loss,
    "generalized_dice": generalized_dice_loss,
    "blob": blob_loss,
    "cc": cc_loss,
    "inverse_weighted": inverse_weighted_loss,
    "cat": cat_loss,
    "mil": mil_loss,
    "size_penalty": size_penalty_loss,
    "instance_family": instance_losses,
}

#: params a term fixes because they define it (not settable in the config)
FIXED_PARAMS = {"dice": {"alpha": 0.5, "beta": 0.5}}

#: sub-terms a term function returns as a dict (only these terms take ``subterms`` weights)
SUBTERMS = {"instance_family": INSTANCE_SUBTERMS}

_DATA_PARAMETERS = {"probs", "component_ids", "gt", "voronoi_cells", "cell_counts", "ignore_mask", "validate"}


@dataclass
class LossTerm:
    """One weighted term: weight(t) = weight · min(t / warmup_epochs, 1) (constant when warmup is 0).

    ``subterm_weights`` reduces a function that returns a dict of named sub-terms; None otherwise.
    """

    name: str
    function: Callable
    params: dict
    weight: float
    warmup_epochs: int
    full_resolution_only: bool
    subterm_weights: dict | None = None
    accepted: frozenset = field(init=False)

    def __post_init__(self):
        # which data the function takes, read once from its signature (not on every step)
        self.accepted = frozenset(inspect.signature(self.function).parameters)

    @property
    def needs_cells(self) -> bool:
        return "voronoi_cells" in self.accepted

    def weight_at(self, epoch: int) -> float:
        """The schedule: a pure function of the epoch, so a resumed run gets the same weight."""
        if self.warmup_epochs <= 0:
            return self.weight
        return self.weight * min(epoch / self.warmup_epochs, 1.0)

    def __call__(
        self, probs, component_ids, voronoi_cells=None, ignore_mask=None, *, cell_counts=None, validate=False
    ) -> torch.Tensor:
        if ignore_mask is not None and "ignore_mask" not in self.accepted:
            keep = ~ignore_mask  # the function cannot exclude them: zero them after the activation
            probs = probs * keep
            component_ids = component_ids * keep
        kwargs = {"component_ids": component_ids, "voronoi_cells": voronoi_cells, "ignore_mask": ignore_mask}
        if cell_counts is not None:
            kwargs["cell_counts"] = cell_counts
        kwargs = {key: value for key, value in kwargs.items() if key in self.accepted}
        if "gt" in self.accepted:
            kwargs["gt"] = component_ids > 0
        if "voronoi_cells" in kwargs and voronoi_cells is None:
            raise RuntimeError(f"loss term {self.name!r} needs Voronoi cells but the batch has none")
        result = self.function(probs, **kwargs, **self.params, validate=validate)
        if isinstance(result, dict):
            return sum(weight * result[key] for key, weight in self.subterm_weights.items())
        return result


def build_term(name: str, settings: dict, *, spatial_dims: int = 3, context: dict | None = None) -> LossTerm:
    """Build a term from its validated config entry and check its params on a tiny input, so an
    unknown key or out-of-range value fails now, with the loss function's own message.

    ``context`` holds what the trainer knows and a loss may take (e.g. ``connectivity`` of the
    ground-truth components, ``spacing``): each is passed when the function has a parameter of
    that name and the config does not set it.
    """
    if name not in TERM_FUNCTIONS:
        raise ConfigError(f"unknown loss term {name!r}; known terms: {sorted(TERM_FUNCTIONS)}")
    function = TERM_FUNCTIONS[name]
    params = dict(settings.get("params", {}))
    subterm_weights = _subterm_weights(name, settings.get("subterms"))
    if subterm_weights is not None and "terms" not in params:
        params["terms"] = tuple(subterm_weights)  # compute only the sub-terms that are weighted
    signature = inspect.signature(function).parameters
    fixed = FIXED_PARAMS.get(name, {})
    allowed = {
        k
        for k, p in signature.items()
        if k not in _DATA_PARAMETERS and k not in fixed and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    unknown = set(params) - allowed
    if unknown:
        hint = " (sub-term weights are set under terms.<name>.subterms)" if "weights" in unknown else ""
        raise ConfigError(
            f"unknown param(s) {sorted(unknown)} in terms.{name}.params; allowed: {sorted(allowed)}{hint}"
        )
    params.update(fixed)
    for key, value in (context or {}).items():
        if key in signature and key not in params:
            params[key] = value
    term = LossTerm(
        name=name,
        function=function,
        params=params,
        weight=float(settings.get("weight", 1.0)),
        warmup_epochs=int(settings.get("warmup_epochs", 0)),
        full_resolution_only=settings.get("scales", "all") == "full",
        subterm_weights=subterm_weights,
    )
    _smoke_test(term, spatial_dims)
    return term


def _subterm_weights(name: str, subterms: dict | None) -> dict | None:
    if name not in SUBTERMS:
        if subterms is not None:
            raise ConfigError(f"terms.{name}.subterms: the term {name!r} has no sub-terms")
        return None
    known = SUBTERMS[name]
    if not isinstance(subterms, dict) or not subterms:
        raise ConfigError(f"terms.{name}.subterms must map sub-term names ({', '.join(known)}) to weights")
    unknown = sorted(set(subterms) - set(known))
    if unknown:
        raise ConfigError(f"terms.{name}.subterms names unknown sub-term(s) {unknown}; known: {list(known)}")
    return dict(subterms)


def _smoke_test(term: LossTerm, spatial_dims: int) -> None:
    shape = (1, 1) + (4,) * spatial_dims
    probs = torch.full(shape, 0.5, requires_grad=True)
    ids = torch.zeros(shape, dtype=torch.int32)
    ids[(0, 0) + (1,) * spatial_dims] = 1
    try:
        value = term(probs, ids, voronoi_cells=torch.ones_like(ids), validate=True)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"terms.{term.name}: {error}") from error
    if not torch.isfinite(value):
        raise ConfigError(
            f"terms.{term.name} gives a non-finite value ({float(value)}) on a test input: check its params"
        )
