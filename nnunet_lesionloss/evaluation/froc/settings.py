"""What the FROC analysis is set to do and the names it writes under: :class:`FrocSettings` (candidates,
matching, FP rates, bootstrap), the allowed values of its options, the FP-rate keys of froc.json and the
files it writes (froc.json last)."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_lesionloss.components import check_connectivity_value

#: LUNA16's FP rates (Setio et al. 2017): the CPM is the mean sensitivity at these false positives per case
DEFAULT_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MATCHINGS = ("iou", "dsc", "any")
CANDIDATE_METHODS = ("static", "dynamic")
#: written last: its presence means the other files of the FROC analysis are complete
FROC_MARKER = "froc.json"
#: per case and label: matched confidences, lesion sizes, false-positive confidences (what compare reads)
FROC_CASES = "froc_cases.json"
FROC_FILES = (FROC_CASES, "froc_cases.csv", "froc.md", FROC_MARKER)


@dataclass(frozen=True)
class FrocSettings:
    """How candidates are extracted and matched, and what is reported (docs/metrics.md, "FROC analysis")."""

    #: dynamic | static; dynamic, as report_guided_annotation's own default: static candidates merge neighbouring
    #: lesions under wide low-probability halos (docs/evaluation.md, "Which candidates")
    candidates: str = "dynamic"
    threshold: float = 0.1  # static: t_min (report_guided_annotation's static default)
    matching: str = "iou"  # iou | dsc | any (picai_eval: IoU)
    min_overlap: float = 0.1  # picai_eval's default
    connectivity: int | str = "full"  # 26 in 3D: picai_eval labels with a 3×3×3 structure; 8 in 2D
    #: picai_eval's allow_unmatched_candidates_with_minimal_overlap (its default True): a second candidate
    #: on an already matched lesion is ignored (True) or counted as a false positive (False)
    allow_unmatched_candidates_with_minimal_overlap: bool = True
    min_candidate_voxels: int = 0  # candidates of at most this many voxels are dropped (report_guided_annotation: 10)
    max_candidates: int | None = None  # dynamic: stop after this many candidates (report_guided_annotation: 5)
    dynamic_threshold_factor: float = 2.5  # report_guided_annotation's default
    min_lesion_voxels: int = 0  # reference lesions below this size are removed first (as in evaluate)
    min_lesion_volume_mm3: float = 0.0
    fp_rates: tuple[float, ...] = DEFAULT_FP_RATES
    size_fp_rate: float = 1.0  # the FP rate of the per-size-bin sensitivities and of the per-case values
    size_bins_ml: tuple[float, ...] = (1.0, 5.0)
    bootstrap_resamples: int = 1000  # picai_eval's bootstrap_score_ci default
    seed: int = 0

    def __post_init__(self):
        """Every field checked, for library callers as the command line checks its options: a NaN, an
        infinity, a fraction where a count belongs or a factor below 1 is a ValueError naming the field (a
        NaN factor made the dynamic extraction loop for ever)."""
        if self.candidates not in CANDIDATE_METHODS:
            raise ValueError(f"candidates must be one of {', '.join(CANDIDATE_METHODS)}, got {self.candidates!r}")
        check_connectivity_value(self.connectivity)
        if self.matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {', '.join(MATCHINGS)}, got {self.matching!r}")
        if not isinstance(self.allow_unmatched_candidates_with_minimal_overlap, (bool, np.bool_)):
            raise ValueError(
                "allow_unmatched_candidates_with_minimal_overlap must be True or False, got "
                f"{self.allow_unmatched_candidates_with_minimal_overlap!r}"
            )
        _check_number("threshold", self.threshold, 0, 1, low_open=True)
        _check_number("min_overlap", self.min_overlap, 0, 1, low_open=True)
        _check_number("dynamic_threshold_factor", self.dynamic_threshold_factor, 1, math.inf)
        _check_count("min_candidate_voxels", self.min_candidate_voxels, 0)
        if self.max_candidates is not None:
            _check_count("max_candidates", self.max_candidates, 1, "(or None: no limit)")
        _check_count("min_lesion_voxels", self.min_lesion_voxels, 0)
        _check_number("min_lesion_volume_mm3", self.min_lesion_volume_mm3, 0, math.inf)
        _check_increasing("fp_rates", self.fp_rates, unique_only=True)
        _check_number("size_fp_rate", self.size_fp_rate, 0, math.inf, low_open=True)
        _check_increasing("size_bins_ml", self.size_bins_ml, allow_empty=True)
        _check_count("bootstrap_resamples", self.bootstrap_resamples, 0)
        _check_count("seed", self.seed, 0)

    def replace(self, **changes) -> FrocSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fp_rates"] = list(self.fp_rates)
        out["size_bins_ml"] = list(self.size_bins_ml)
        if self.matching == "any":
            out["min_overlap"] = None  # a shared voxel decides
        if self.candidates == "static":
            for name in ("max_candidates", "dynamic_threshold_factor"):
                out[name] = None
        else:
            out["threshold"] = None
        return out


def _is_integer(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_number(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    """A finite real number in [low, high] (low excluded with ``low_open``); ``high`` inf: no upper bound."""
    real = isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
    inside = real and math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, " + ("inf)" if math.isinf(high) else f"{high:g}]")
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def _check_count(name: str, value, low: int, note: str = "") -> None:
    """An integer >= ``low`` (a fraction is not silently truncated)."""
    if not _is_integer(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{' ' + note if note else ''}, got {value!r}")


def _check_increasing(name: str, values, unique_only: bool = False, allow_empty: bool = False) -> None:
    """Finite positive numbers, strictly increasing (``unique_only``: in any order, none twice)."""
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} must hold at least one number > 0")
    for value in values:
        _check_number(name, value, 0, math.inf, low_open=True)
    ordered = sorted(values) if unique_only else list(values)
    if any(b <= a for a, b in zip(ordered, ordered[1:])):
        what = "no value twice" if unique_only else "strictly increasing"
        raise ValueError(f"{name} must be finite numbers > 0, {what}, got {list(values)}")


def rate_key(rate: float) -> str:
    """'0.125', '1', '8': the key of an FP rate in froc.json."""
    return f"{rate:g}"


def label_slug(key: str) -> str:
    """A file-name form of a label or region key: '1' -> '1', '(1, 2)' -> '1-2'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-") or "label"


def label_files(key: str) -> dict[str, str]:
    """The files the FROC analysis writes for one label or region key: its curve's points and figure."""
    return {"froc_csv": f"froc_{label_slug(key)}.csv", "froc_png": f"froc_{label_slug(key)}.png"}


def output_names(keys: Sequence[str]) -> list[str]:
    """Every file the FROC analysis writes for these labels, froc.json last."""
    return [name for key in keys for name in label_files(key).values()] + list(FROC_FILES)
