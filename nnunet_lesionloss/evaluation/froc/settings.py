"""What the FROC analysis is set to do and the names it writes under: :class:`FrocSettings` (candidates,
matching, FP rates, bootstrap), the allowed values of its options, the FP-rate keys of froc.json and the
files it writes (froc.json last)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

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

    candidates: str = "static"  # static | dynamic
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
        if self.candidates not in CANDIDATE_METHODS:
            raise ValueError(f"candidates must be one of {', '.join(CANDIDATE_METHODS)}, got {self.candidates!r}")
        check_connectivity_value(self.connectivity)
        if self.matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {', '.join(MATCHINGS)}, got {self.matching!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"the candidate threshold must be in (0, 1], got {self.threshold}")
        if self.matching != "any" and not 0 < self.min_overlap <= 1:
            raise ValueError(f"min_overlap must be in (0, 1] for {self.matching} matching, got {self.min_overlap}")
        if self.dynamic_threshold_factor < 1:
            raise ValueError(f"dynamic_threshold_factor must be >= 1, got {self.dynamic_threshold_factor}")
        if self.min_candidate_voxels < 0 or self.min_lesion_voxels < 0 or self.min_lesion_volume_mm3 < 0:
            raise ValueError("min_candidate_voxels, min_lesion_voxels and min_lesion_volume_mm3 must be >= 0")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1 (or None), got {self.max_candidates}")
        if not self.fp_rates or any(r <= 0 for r in self.fp_rates) or self.size_fp_rate <= 0:
            raise ValueError("FP rates must be positive")
        if self.bootstrap_resamples < 0:
            raise ValueError(f"bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}")
        if list(self.size_bins_ml) != sorted(self.size_bins_ml) or any(e <= 0 for e in self.size_bins_ml):
            raise ValueError(f"size bins must be increasing positive volumes in mL, got {self.size_bins_ml}")

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
