"""What a trainer's config becomes for one dataset configuration: the connectivities, the loss terms built
and tried, and the loss channels of the dataset's labels or regions (:func:`resolve_setup`). The trainer
(``training/trainer.py``), ``nnunet-lesionloss config`` and ``inspect`` run this one function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nnunet_lesionloss.config import ConfigError, loss_terms, merge, resolve_connectivity
from nnunet_lesionloss.losses.terms import LossTerm, build_term

__all__ = ["LesionLossSetup", "resolve_setup"]


@dataclass
class LesionLossSetup:
    """What a validated config becomes for one dataset configuration (:func:`resolve_setup`)."""

    connectivity: int  # of the ground-truth components of the loss
    terms: list[LossTerm]
    label_groups: list[tuple[int, ...]] | None  # label-based: the labels of each loss channel
    region_channels: list[int] | None  # region-based: the regions the terms see
    lesion_connectivity: int  # of the lesion-wise validation
    notes: list[str]  # what the trainer writes to its log


def resolve_setup(config: dict, *, spatial_dims: int, spacing: Sequence[float], label_manager=None) -> LesionLossSetup:
    """Every check the trainer runs on its config at start, in one place (``nnunet-lesionloss config``
    runs it too): the connectivities for the patch dimension, each term built and tried on a tiny
    input (``losses.terms.build_term``: unknown terms, params, sub-terms, out-of-range values) and the
    loss channels of the dataset's labels or regions. Without ``label_manager`` (no dataset) the
    channel checks are skipped and label-based data is assumed. Raises :class:`ConfigError`."""
    has_regions = label_manager is not None and label_manager.has_regions
    connectivity = resolve_connectivity(config["connectivity"], spatial_dims)
    terms, notes = [], []
    for name, settings in loss_terms(config).items():
        term, note = build_trainer_term(
            name,
            settings,
            spatial_dims=spatial_dims,
            spacing=spacing,
            connectivity=connectivity,
            has_regions=has_regions,
        )
        terms.append(term)
        notes += [note] if note else []
    label_groups = region_channels = None
    if label_manager is not None:
        label_groups = label_groups_of(config, label_manager)
        region_channels = region_channels_of(config, label_manager)
    return LesionLossSetup(
        connectivity=connectivity,
        terms=terms,
        label_groups=label_groups,
        region_channels=region_channels,
        lesion_connectivity=resolve_connectivity(config["lesion_validation"]["connectivity"], spatial_dims),
        notes=notes,
    )


def build_trainer_term(
    name: str, settings: dict, *, spatial_dims: int, spacing: Sequence[float], connectivity: int, has_regions: bool
) -> tuple[LossTerm, str | None]:
    """A term as the trainer builds it, and the note to log about it (or None)."""
    note = None
    if has_regions and settings.get("params", {}).get("include_background"):
        # sigmoid regions have no background output: as MONAI's losses on sigmoid outputs, every
        # channel is a foreground region and there is no background class to include
        settings = merge(settings, {"params": {"include_background": False}})
        note = (
            f"terms.{name}.params.include_background: no effect on a region-based dataset "
            "(sigmoid regions, no background output); the term uses the regions only"
        )
    # losses that label the prediction use the ground truth's connectivity and the data's spacing
    context = {"connectivity": connectivity, "spacing": tuple(float(s) for s in spacing)}
    return build_term(name, settings, spatial_dims=spatial_dims, context=context), note


def label_groups_of(config: dict, label_manager) -> list[tuple[int, ...]] | None:
    """Label-based: the labels of each loss channel (per class, or their union). Regions: None."""
    if label_manager.has_regions:
        return None
    foreground = [int(label) for label in label_manager.foreground_labels]
    if config["channels"] == "union":
        return [tuple(foreground)]
    return [(label,) for label in foreground]


def region_channels_of(config: dict, label_manager) -> list[int] | None:
    """Region-based: the regions the terms see. ``per_class``: every region. ``union``: the region
    that contains every other one (nnU-Net orders regions from the largest, e.g. whole tumour
    first), i.e. the union of all foreground labels, as the binary union of label-based data."""
    if not label_manager.has_regions:
        return None
    regions = [set(r) if isinstance(r, (list, tuple)) else {r} for r in label_manager.foreground_regions]
    if config["channels"] != "union":
        return list(range(len(regions)))
    everything = set().union(*regions)
    containing = [i for i, region in enumerate(regions) if region == everything]
    if not containing:
        raise ConfigError(
            f"channels: union on a region-based dataset needs a region that contains all the others "
            f"(their union), but the regions are {label_manager.foreground_regions}; "
            "set channels: per_class (one term per region) in the config"
        )
    return containing[:1]
