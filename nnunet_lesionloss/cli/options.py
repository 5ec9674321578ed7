"""The options the commands share, checked where they are parsed: number types (finite, in range), the
connectivity, the evaluation settings (``--preset`` and the lesion options) and the FROC analysis options."""

from __future__ import annotations

import argparse
import math

from nnunet_lesionloss.components import check_connectivity_value
from nnunet_lesionloss.evaluation.froc.settings import CANDIDATE_METHODS, MATCHINGS, FrocSettings
from nnunet_lesionloss.evaluation.settings import LESION_RULES, PRESETS, EvaluationSettings, MatchingSpec, get_preset


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a distance, a volume)."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (NaN and infinities refused)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_in_range(low: int, high: int):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


#: fewer resamples than this give no 95 % percentile interval worth the name (B = 1 gives an "interval" that
#: excludes its own estimate); Efron & Tibshirani (1993) recommend 1000 and more for percentile intervals
MIN_BOOTSTRAP_RESAMPLES = 100


def bootstrap_resamples(allow_none: bool = False):
    """An argparse type: resamples of a bootstrap, >= :data:`MIN_BOOTSTRAP_RESAMPLES` (or 0 = no interval)."""

    def parse(text: str) -> int:
        value = int(text)
        if not (value >= MIN_BOOTSTRAP_RESAMPLES or (allow_none and value == 0)):
            alternative = "0 (no interval) or " if allow_none else ""
            raise argparse.ArgumentTypeError(
                f"must be {alternative}>= {MIN_BOOTSTRAP_RESAMPLES} (a percentile interval of fewer resamples is "
                f"noise; 1000 or more recommended), got {value}"
            )
        return value

    return parse


def number_in(low: float, high: float, *, low_open: bool = True, high_open: bool = False):
    """An argparse type: a finite number in the interval from ``low`` to ``high`` (open or closed at each end)."""

    def parse(text: str) -> float:
        value = float(text)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text}")
        return value

    return parse


#: a probability threshold: p >= T with T in (0, 1]
probability_threshold = number_in(0.0, 1.0)
#: an overlap (IoU, DSC) a match needs: (0, 1]
overlap_fraction = number_in(0.0, 1.0)


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


class UniqueValues(argparse.Action):
    """A list option whose values must differ (each already checked by the option's type); kept in the given order."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = [v for k, v in enumerate(values) if v in values[:k]]
        if seen:
            parser.error(f"argument {option_string}: {', '.join(map(str, dict.fromkeys(seen)))} listed twice")
        setattr(namespace, self.dest, list(values))


class IncreasingValues(argparse.Action):
    """A list option whose values must be strictly increasing (bin edges)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if any(b <= a for a, b in zip(values, values[1:])):
            parser.error(
                f"argument {option_string}: values must be strictly increasing, got {' '.join(map(str, values))}"
            )
        setattr(namespace, self.dest, list(values))


class IncreasingPair(argparse.Action):
    """``MIN MAX`` with MIN <= MAX (each value already checked by the option's type)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values[0] > values[1]:
            parser.error(f"argument {option_string}: MIN must be <= MAX, got {values[0]} {values[1]}")
        setattr(namespace, self.dest, tuple(values))


def non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def connectivity_option(text: str) -> int | str:
    """'full', 'face' or a number of ANY_CONNECTIVITY (:func:`~nnunet_lesionloss.components.check_connectivity_value`)."""
    try:
        return check_connectivity_value(int(text) if text.lstrip("+-").isdigit() else text, "the connectivity")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def matching_option(text: str) -> MatchingSpec:
    """A one-to-one matching such as dsc0.5 or iou0.1 (metric and threshold in (0, 1])."""
    try:
        return MatchingSpec.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "lesion definition and matching (defaults: --preset, then the papers of docs/references.md)"
    )
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="challenge definition of a lesion and its metrics (docs/metrics.md lists the sources)",
    )
    group.add_argument(
        "--connectivity",
        type=connectivity_option,
        metavar="{full,face,6,18,26,4,8}",
        help="lesion connectivity: 'full' (26 in 3D, 8 in 2D; default), 'face' (6 / 4), or a number valid for the "
        "images' dimension (6, 18, 26 in 3D, 4, 8 in 2D)",
    )
    group.add_argument(
        "--lesion-rule",
        choices=LESION_RULES,
        help="when a lesion counts as detected: one_to_one_dsc (default: the one-to-one matching at DSC >= "
        "--lesion-rule-threshold, 0.1), one_to_one_iou, any_overlap (the papers' rule: Luu et al. 2026, Kofler et al. "
        "2023, WMH, ISLES), iou (Shifts), overlap_fraction (MSSEG); docs/metrics.md",
    )
    group.add_argument(
        "--lesion-rule-threshold",
        type=non_negative_float,
        metavar="T",
        help="the DSC / IoU a one-to-one pair needs (default 0.1), or the threshold of iou / overlap_fraction",
    )
    group.add_argument(
        "--min-lesion-voxels",
        type=positive_int,
        help="remove components with fewer voxels from both masks first (Joshi 2026: 5 with 18-connectivity)",
    )
    group.add_argument(
        "--min-lesion-volume",
        type=non_negative_float,
        metavar="MM3",
        help="remove components of at most this volume (mm³) first (MSSEG/Anima: 3)",
    )
    group.add_argument(
        "--small-lesion-ml",
        type=non_negative_float,
        help="small lesion: volume <= this (mL; default 0.05, Rachmadi et al. 2024)",
    )
    group.add_argument(
        "--size-bins",
        type=positive_float,
        nargs="+",
        action=IncreasingValues,
        metavar="ML",
        help="lesion volume bin edges in mL (default 1 5: <1, 1-5, >=5 mL, Joshi 2026)",
    )
    group.add_argument(
        "--matching",
        nargs="+",
        type=matching_option,
        action=UniqueValues,
        metavar="SPEC",
        help="one-to-one matchings for PQ/SQ/RQ, e.g. dsc0.1 dsc0.5 iou0.5 (default)",
    )
    group.add_argument(
        "--matching-algorithm", choices=("hungarian", "greedy"), help="default hungarian (Kundu et al. 2026)"
    )
    group.add_argument(
        "--hd95",
        choices=("max_directed", "pooled"),
        help="HD95 definition: max of the two directed 95th percentiles "
        "(Luu et al. 2026 eq. 3.3, default) or the 95th percentile of the pooled distances "
        "(panoptica, BraTS)",
    )
    group.add_argument(
        "--nsd-tolerance", type=positive_float, metavar="MM", help="NSD tolerance in mm (default: smallest spacing)"
    )
    add_renamed_lesion_rule_options(group)


#: command-line option (argparse dest) -> EvaluationSettings field it sets as given
OPTION_TO_SETTING = {
    "connectivity": "connectivity",
    "lesion_rule": "lesion_rule",
    "lesion_rule_threshold": "lesion_rule_threshold",
    "min_lesion_voxels": "min_lesion_voxels",
    "min_lesion_volume": "min_lesion_volume_mm3",
    "small_lesion_ml": "small_lesion_ml",
    "matching_algorithm": "matching_algorithm",
    "hd95": "hd95",
    "nsd_tolerance": "nsd_tolerance_mm",
}


def settings_from_args(args) -> tuple[EvaluationSettings, object]:
    preset = get_preset(args.preset)
    # options given on the command line override the preset's setting of the same meaning
    changes = {
        setting: getattr(args, option)
        for option, setting in OPTION_TO_SETTING.items()
        if getattr(args, option) is not None
    }
    if args.size_bins is not None:
        changes["size_bins_ml"] = tuple(args.size_bins)
    if args.matching:
        specs = tuple(args.matching)
        changes["matchings"] = specs
        names = [s.name for s in specs]
        if preset.settings.size_bin_matching not in names:
            changes["size_bin_matching"] = names[-1]
        if preset.settings.reference_lesion_spec not in names:
            changes["reference_lesion_spec"] = names[-1]
    settings = preset.settings.replace(**changes)
    if args.lesion_rule_threshold is not None and settings.lesion_rule == "any_overlap":
        raise ValueError(
            f"--lesion-rule-threshold has no effect on the any_overlap lesion rule (of --preset {preset.name} or "
            "--lesion-rule): leave it out, or choose a rule with a threshold (one_to_one_dsc, one_to_one_iou, iou, "
            "overlap_fraction)"
        )
    if args.nsd_tolerance is not None and settings.global_distances_in_voxels:
        raise ValueError(
            f"--nsd-tolerance is a distance in mm, but --preset {preset.name} measures the whole-mask HD95 and NSD in "
            "voxels with a tolerance of 0.5 voxel, as the BraTS 2025 evaluator does: a tolerance in mm cannot be "
            "applied there. Leave it out, or use --preset default --hd95 pooled for distances in mm"
        )
    return settings, preset


def add_froc_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Options of the FROC analysis (docs/metrics.md, "FROC analysis"); ``prefix`` 'froc-' for cv-summary,
    whose --matching and --connectivity are the lesion evaluation's."""

    group = parser.add_argument_group(
        "FROC analysis (FROC, AP, CPM) from nnU-Net's .npz probabilities (defaults: picai_eval's)"
    )
    group.add_argument(
        f"--{prefix}candidates",
        choices=CANDIDATE_METHODS,
        help="dynamic (default, report_guided_annotation's): peak-wise extraction, which splits touching lesions; "
        f"static: components of p >= --{prefix}threshold, confidence max p",
    )
    group.add_argument(
        f"--{prefix}threshold",
        type=probability_threshold,
        metavar="T",
        help=f"static candidates (--{prefix}candidates static): p >= T, 0 < T <= 1 (default 0.1)",
    )
    group.add_argument(
        f"--{prefix}matching",
        choices=MATCHINGS,
        help=f"a candidate matches a lesion at IoU >= --{prefix}min-overlap (default, picai_eval), DSC >= it, "
        "or on any shared voxel",
    )
    group.add_argument(
        f"--{prefix}min-overlap",
        type=overlap_fraction,
        metavar="X",
        help=f"the IoU or DSC of --{prefix}matching iou/dsc, in (0, 1] (default 0.1, picai_eval); not with any",
    )
    group.add_argument(
        f"--{prefix}unmatched-overlapping-candidates",
        choices=("ignore", "false-positive"),
        help="a second candidate overlapping an already matched lesion enough: ignored (default, picai_eval's "
        "allow_unmatched_candidates_with_minimal_overlap=True) or a false positive",
    )
    group.add_argument(
        f"--{prefix}min-candidate-voxels",
        type=non_negative_int,
        metavar="N",
        help="drop candidates of N voxels or fewer (default 0; report_guided_annotation: 10)",
    )
    group.add_argument(
        f"--{prefix}max-candidates",
        type=positive_int,
        metavar="N",
        help="dynamic: at most N per case (default: all; report_guided_annotation: 5)",
    )
    group.add_argument(
        f"--{prefix}dynamic-threshold-factor",
        type=number_in(1.0, 1e6, low_open=False),
        metavar="F",
        help="dynamic: p >= peak / F, F >= 1 (default 2.5)",
    )
    group.add_argument(
        f"--{prefix}fp-rates",
        type=positive_float,
        nargs="+",
        action=UniqueValues,
        metavar="F",
        help="FP per case at which the sensitivity is reported; their mean is the CPM (default LUNA16's 0.125 ... 8)",
    )
    group.add_argument(
        f"--{prefix}size-fp-rate",
        type=positive_float,
        metavar="F",
        help="FP per case of the per-size-bin and per-case sensitivities (default 1)",
    )
    group.add_argument(
        f"--{prefix}bootstrap-resamples",
        type=bootstrap_resamples(allow_none=True),
        metavar="B",
        help="case-bootstrap resamples of the 95 %% CIs: 0 (none) or >= 100 (default 1000, picai_eval's)",
    )
    if not prefix:
        group.add_argument(
            "--connectivity",
            type=connectivity_option,
            metavar="{full,face,6,18,26,4,8}",
            help="of candidates and reference lesions: 'full' (default: 26 in 3D as picai_eval, 8 in 2D), 'face' "
            "(6 / 4), or a number valid for the images' dimension",
        )
        group.add_argument(
            "--size-bins",
            type=positive_float,
            nargs="+",
            action=IncreasingValues,
            metavar="ML",
            help="lesion volume bin edges in mL, increasing (default 1 5)",
        )
        group.add_argument("--seed", type=non_negative_int, help="seed of the bootstrap (default 0)")


#: FROC option (without prefix, argparse form) -> FrocSettings field
FROC_OPTIONS = {
    "candidates": "candidates",
    "threshold": "threshold",
    "matching": "matching",
    "min_overlap": "min_overlap",
    "min_candidate_voxels": "min_candidate_voxels",
    "max_candidates": "max_candidates",
    "dynamic_threshold_factor": "dynamic_threshold_factor",
    "size_fp_rate": "size_fp_rate",
    "bootstrap_resamples": "bootstrap_resamples",
    "connectivity": "connectivity",
    "seed": "seed",
}


def refuse_ignored(ignored: list[tuple[str, str]]) -> None:
    """An option the chosen mode ignores is a mistake to say, not a setting to drop in silence: a ValueError
    (exit status 2, before any work) naming each (option, what makes it meaningless, e.g. 'with --sweep')."""
    if ignored:
        raise ValueError("; ".join(f"{option} has no effect {reason}: leave it out" for option, reason in ignored))


def given_froc_options(args, prefix: str = "") -> list[str]:
    """The FROC options (as in :func:`add_froc_arguments`) given on the command line, by their names."""
    dest = prefix.replace("-", "_")
    names = [*FROC_OPTIONS, "fp_rates", "unmatched_overlapping_candidates"]
    return [f"--{prefix}{name.replace('_', '-')}" for name in names if getattr(args, dest + name, None) is not None]


def froc_settings_from_args(args, prefix: str = "", base=None):
    """FrocSettings from the options given (``prefix`` as in :func:`add_froc_arguments`)."""

    dest = prefix.replace("-", "_")
    changes = {
        field: getattr(args, dest + option)
        for option, field in FROC_OPTIONS.items()
        if getattr(args, dest + option, None) is not None
    }
    fp_rates = getattr(args, dest + "fp_rates", None)
    if fp_rates is not None:
        changes["fp_rates"] = tuple(fp_rates)
    size_bins = getattr(args, "size_bins", None) if not prefix else None
    if size_bins is not None:
        changes["size_bins_ml"] = tuple(size_bins)
    unmatched = getattr(args, dest + "unmatched_overlapping_candidates", None)
    if unmatched is not None:
        changes["allow_unmatched_candidates_with_minimal_overlap"] = unmatched == "ignore"
    settings = (base or FrocSettings()).replace(**changes)
    # an option the chosen analysis ignores is a mistake to say, not a setting to drop in silence
    ignored = []
    if getattr(args, dest + "min_overlap", None) is not None and settings.matching == "any":
        ignored.append((f"--{prefix}min-overlap", f"with --{prefix}matching any (a match on any shared voxel)"))
    for option, method in (
        ("max_candidates", "dynamic"),
        ("dynamic_threshold_factor", "dynamic"),
        ("threshold", "static"),
    ):
        if getattr(args, dest + option, None) is not None and settings.candidates != method:
            ignored.append(
                (f"--{prefix}{option.replace('_', '-')}", f"with --{prefix}candidates {settings.candidates}")
            )
    refuse_ignored(ignored)
    return settings


class _RenamedOption(argparse.Action):
    """An option of an earlier release that now has another name: a clear error naming the new one."""

    def __init__(self, option_strings, dest, new_name: str, **kwargs):
        self.new_name = new_name
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} was renamed: use {self.new_name} (the lesion rule: when a lesion counts as detected)"
        )


def add_renamed_lesion_rule_options(group) -> None:
    """``--detection`` / ``--detection-threshold`` of earlier releases: an error naming ``--lesion-rule``."""
    group.add_argument("--detection", action=_RenamedOption, new_name="--lesion-rule", dest="renamed_detection")
    group.add_argument(
        "--detection-threshold",
        action=_RenamedOption,
        new_name="--lesion-rule-threshold",
        dest="renamed_detection_threshold",
    )
