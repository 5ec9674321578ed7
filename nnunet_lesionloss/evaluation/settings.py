"""Evaluation settings and the challenge presets (each with its source).

Defaults come from the papers this package implements (docs/metrics.md; full citations in
docs/references.md): full connectivity (26 in 3D, 8 in 2D), small lesion = at most 0.05 mL
(Rachmadi et al. 2024 §4.1 threshold, CATMIL eq. 3.6 comparison), size bins < 1 mL, 1-5 mL, >= 5 mL
(Joshi 2026 §5), one-to-one matching at DSC 0.1 and 0.5 (Kundu et al. 2026) and at IoU 0.5
(panoptica / Kirillov et al. 2019). A lesion counts as detected when the one-to-one matching at DSC
>= 0.1 pairs it (BraTS 2025 and PI-CAI match one-to-one too), so that one predicted blob over many
lesions is one lesion, not a detection of each; the papers' any-overlap rule (Luu et al. 2026 (CATMIL)
§3.4, Kofler et al. 2023 (blob loss) §2.5, WMH 2017, ISLES 2022) is kept in the presets that
reproduce them (``catmil``, ``wmh``, ``isles22``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnunet_lesionloss.components import check_connectivity_value


@dataclass(frozen=True)
class MatchingSpec:
    """One-to-one instance matching criterion: a pair is eligible when metric >= threshold."""

    metric: str = "dsc"  # "dsc" or "iou"
    threshold: float = 0.5

    def __post_init__(self):
        if self.metric not in ("dsc", "iou"):
            raise ValueError(f"matching metric must be 'dsc' or 'iou', got {self.metric!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"matching threshold must be in (0, 1], got {self.threshold}")

    @property
    def name(self) -> str:
        return f"{self.metric}{self.threshold:g}"

    @classmethod
    def parse(cls, text: str) -> MatchingSpec:
        """'dsc0.5', 'iou:0.5' or 'dsc=0.1' -> MatchingSpec."""
        cleaned = text.strip().lower().replace(":", "").replace("=", "")
        for metric in ("dsc", "iou"):
            if cleaned.startswith(metric):
                try:
                    return cls(metric, float(cleaned[len(metric) :]))
                except ValueError:
                    break
        raise ValueError(f"cannot read matching {text!r}; write e.g. dsc0.5 or iou0.5")


DEFAULT_MATCHINGS = (MatchingSpec("dsc", 0.1), MatchingSpec("dsc", 0.5), MatchingSpec("iou", 0.5))


#: how a lesion counts as detected (metrics.apply_lesion_rule; docs/metrics.md "Lesion level")
LESION_RULES = ("one_to_one_dsc", "one_to_one_iou", "any_overlap", "iou", "overlap_fraction")


@dataclass(frozen=True)
class EvaluationSettings:
    connectivity: int | str = "full"  # 'full' (26 in 3D, 8 in 2D), 'face' (6 / 4) or a number for one dimension
    min_lesion_voxels: int = 0  # components with fewer voxels are removed from both masks first
    min_lesion_volume_mm3: float = 0.0  # components with volume <= this are removed first (Anima: 3 mm³)
    small_lesion_ml: float = 0.05
    small_lesion_inclusive: bool = True  # CATMIL eq. 3.6: |g| <= tau
    size_bins_ml: tuple[float, ...] = (1.0, 5.0)
    matchings: tuple[MatchingSpec, ...] = DEFAULT_MATCHINGS
    matching_algorithm: str = "hungarian"
    size_bin_matching: str = "dsc0.5"  # which matching feeds the size-stratified PQ/RQ
    reference_lesion_spec: str = "dsc0.5"  # which matching the per-lesion details report
    lesion_rule: str = "one_to_one_dsc"  # one of LESION_RULES: when a lesion counts as detected
    lesion_rule_threshold: float = (
        0.1  # one_to_one_*: the pair's DSC / IoU; iou, overlap_fraction: see apply_lesion_rule
    )
    lesion_rule_beta: float = 0.65
    hd95: str = "max_directed"  # max_directed (CATMIL eq. 3.3) | pooled (panoptica, BraTS)
    nsd_tolerance_mm: float | None = None  # None: the smallest voxel spacing (panoptica default)
    f1_both_empty: float | None = None  # ISLES'22: 1.0
    # Reproduction of the official BraTS 2025 evaluator (see presets / docs): it hands panoptica
    # SimpleITK spacing (x, y, z) for arrays in (z, y, x) order, and global surface metrics in voxels.
    instance_spacing_reversed: bool = False
    global_distances_in_voxels: bool = False

    def __post_init__(self):
        check_connectivity_value(self.connectivity)
        if self.hd95 not in ("max_directed", "pooled"):
            raise ValueError(f"hd95 must be 'max_directed' or 'pooled', got {self.hd95!r}")
        if self.lesion_rule not in LESION_RULES:
            raise ValueError(f"lesion_rule must be one of {', '.join(LESION_RULES)}, got {self.lesion_rule!r}")
        if not 0 <= self.lesion_rule_beta <= 1:
            raise ValueError(f"lesion_rule_beta must be in [0, 1], got {self.lesion_rule_beta}")
        if self.lesion_rule != "any_overlap" and not (
            isinstance(self.lesion_rule_threshold, (int, float)) and 0 < self.lesion_rule_threshold <= 1
        ):
            measure = {
                "one_to_one_dsc": "the pair's DSC",
                "one_to_one_iou": "the pair's IoU",
                "iou": "the IoU with the touching lesions",
                "overlap_fraction": "the covered fraction",
            }[self.lesion_rule]
            raise ValueError(
                f"lesion_rule_threshold of {self.lesion_rule} is {measure} and must be in (0, 1] (at 0 a lesion nothing "
                f"touches would count as detected), got {self.lesion_rule_threshold}"
            )
        if self.nsd_tolerance_mm is not None and not (
            math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm > 0
        ):
            raise ValueError(
                f"nsd_tolerance_mm must be a positive distance in mm (or None: the smallest spacing), got {self.nsd_tolerance_mm}"
            )
        if self.matching_algorithm not in ("hungarian", "greedy"):
            raise ValueError(f"matching_algorithm must be hungarian or greedy, got {self.matching_algorithm!r}")
        if list(self.size_bins_ml) != sorted(self.size_bins_ml) or any(e <= 0 for e in self.size_bins_ml):
            raise ValueError(f"size bins must be increasing positive volumes in mL, got {self.size_bins_ml}")
        if self.small_lesion_ml < 0 or self.min_lesion_voxels < 0 or self.min_lesion_volume_mm3 < 0:
            raise ValueError("small_lesion_ml, min_lesion_voxels and min_lesion_volume_mm3 must be >= 0")
        names = [m.name for m in self.matchings]
        for field_name in ("size_bin_matching", "reference_lesion_spec"):
            if getattr(self, field_name) not in names:
                raise ValueError(f"{field_name}={getattr(self, field_name)!r} is not one of the matchings {names}")

    def is_small(self, volumes_ml):
        """Which lesions of these volumes (mL) are small: <= small_lesion_ml (CATMIL eq. 3.6), or < it when
        ``small_lesion_inclusive`` is False (BraTS 2025)."""
        if self.small_lesion_inclusive:
            return volumes_ml <= self.small_lesion_ml
        return volumes_ml < self.small_lesion_ml

    def instance_distance_spacing(self, spacing: Sequence[float]) -> tuple[float, ...]:
        return tuple(spacing[::-1]) if self.instance_spacing_reversed else tuple(spacing)

    def global_distance_spacing(self, spacing: Sequence[float]) -> tuple[float, ...]:
        return tuple(1.0 for _ in spacing) if self.global_distances_in_voxels else tuple(spacing)

    def nsd_tolerance(self, spacing: Sequence[float], in_voxels: bool = False) -> float:
        if self.nsd_tolerance_mm is not None:
            return self.nsd_tolerance_mm
        if in_voxels:
            return 0.5  # panoptica's tolerance when it is given no spacing
        return float(min(spacing))

    def replace(self, **changes) -> EvaluationSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["matchings"] = [m.name for m in self.matchings]
        d["size_bins_ml"] = list(self.size_bins_ml)
        return d


#: keys of a recorded settings dictionary (summary.json, cv_summary.json) that earlier releases wrote under
#: another name -> their name now: an earlier output stays readable (compare, cv-summary's reuse)
RENAMED_SETTING_KEYS = {
    "detection": "lesion_rule",
    "detection_threshold": "lesion_rule_threshold",
    "detection_beta": "lesion_rule_beta",
}


def current_settings_record(recorded: dict | None) -> dict | None:
    """A recorded settings dictionary with the keys of earlier releases renamed to today's (a copy)."""
    if recorded is None:
        return None
    return {RENAMED_SETTING_KEYS.get(key, key): value for key, value in recorded.items()}


@dataclass(frozen=True)
class Preset:
    name: str
    settings: EvaluationSettings
    source: str
    regions: dict[str, tuple[int, ...]] | None = None  # name -> labels merged into one binary mask
    brats_outputs: bool = False


PRESETS: dict[str, Preset] = {
    "default": Preset(
        "default",
        EvaluationSettings(),
        "full connectivity; a lesion is detected when the one-to-one (Hungarian) matching at DSC >= 0.1 pairs it "
        "(as BraTS 2025 and PI-CAI match one-to-one), so one predicted blob over several lesions detects one; "
        "HD95 max of the directed 95th percentiles (Luu et al. 2026 (CATMIL) eq. 3.3), Rachmadi et al. 2024 "
        "(0.05 mL small lesions), Joshi 2026 §4.5-4.6 (RVE, bins), Kundu et al. 2026 (PQ at DSC 0.1/0.5)",
    ),
    "catmil": Preset(
        "catmil",
        EvaluationSettings(connectivity="face", lesion_rule="any_overlap", hd95="pooled"),
        "Luu et al. 2026 (CATMIL) §3.4 as its authors' multiscale_eval.py computes it (luumsk/SmallLesionMRI): "
        "6-connected lesions, a lesion is detected on any overlap, HD95 of the pooled directed distances, "
        "small lesion <= 50 voxels (0.05 mL at their 1 mm³ voxels)",
    ),
    "wmh": Preset(
        "wmh",
        EvaluationSettings(connectivity="full", lesion_rule="any_overlap", hd95="max_directed"),
        "WMH Segmentation Challenge 2017 (Kuijf et al. 2019, IEEE TMI): fully connected lesions (26 in 3D), a lesion "
        "is detected on any overlap, HD95 = max of the two directed 95th percentiles",
    ),
    "isles22": Preset(
        "isles22",
        EvaluationSettings(connectivity="full", lesion_rule="any_overlap", f1_both_empty=1.0),
        "ISLES 2022 (Hernandez Petzsche et al. 2022, Sci Data; ezequieldlrosa/isles22 eval): 26-connected "
        "lesions, any overlap, lesion F1 = tp / (tp + (fp + fn) / 2) reported as lesion_f1_count, 1 when both empty",
    ),
    "msseg": Preset(
        "msseg",
        EvaluationSettings(
            connectivity="face",
            min_lesion_volume_mm3=3.0,
            lesion_rule="overlap_fraction",
            lesion_rule_threshold=0.1,
            lesion_rule_beta=0.65,
        ),
        "MSSEG 2016 / Anima animaSegPerfAnalyzer (Commowick et al. 2018, Sci Rep): 6-connectivity, lesions > 3 mm³, "
        "detected when covered >= 10 % (alpha) with at most 65 % (beta) of the touching lesions outside; "
        "Anima's gamma (fragmentation) rule is not reproduced",
    ),
    "shifts": Preset(
        "shifts",
        EvaluationSettings(connectivity="face", lesion_rule="iou", lesion_rule_threshold=0.25),
        "Shifts MS lesion segmentation (Malinin et al. 2022, Shifts 2.0, arXiv:2206.15407): 6-connectivity, a lesion "
        "is detected when its IoU with the touching lesions of the other mask is >= 0.25",
    ),
    "brats-mets": Preset(
        "brats-mets",
        EvaluationSettings(
            connectivity="full",
            matchings=(MatchingSpec("dsc", 1e-6),),
            lesion_rule="one_to_one_dsc",
            lesion_rule_threshold=1e-6,
            size_bin_matching="dsc1e-06",
            reference_lesion_spec="dsc1e-06",
            hd95="pooled",
            small_lesion_ml=0.02,
            small_lesion_inclusive=False,
            instance_spacing_reversed=True,
            global_distances_in_voxels=True,
        ),
        "BraTS 2025 lesion-wise evaluation (BraTS/BraTS_evaluation with panoptica): regions et={3}, rc={4}, "
        "tc={1,3}, wt={1,2,3}; 26-connected instances; Hungarian matching on DSC > 0 (also the lesion detection "
        "rule); pooled HD95; NSD at the "
        "smallest spacing; small instance < 20 mm³ detected at DSC >= 0.1. Reproduces the evaluator's numbers, "
        "including its spacing axis order for per-lesion distances and voxel units for global distances",
        regions={"et": (3,), "rc": (4,), "tc": (1, 3), "wt": (1, 2, 3)},
        brats_outputs=True,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
