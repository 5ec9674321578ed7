"""Curves of the FROC analysis, pooled over cases, with picai_eval's definitions (Saha et al. 2024,
DIAGNijmegen/picai_eval 1.4): at every distinct candidate confidence t, sensitivity = matched lesions with
confidence >= t / reference lesions, FP per case = false positives with confidence >= t / cases;
AP = Σ_t (recall(t) − recall(previous t)) · precision(t) (picai_eval's step integral of sklearn's
precision-recall curve); sensitivity at F FP per case = that of the lowest threshold whose FP per case is
<= F (0 when none is); CPM = the mean at 1/8 ... 8 FP per case (LUNA16, Setio et al. 2017).

Uncertainty: case bootstrap (cases resampled with replacement, seeded; evaluation/statistics.py) of every
statistic and of the FROC curve on a grid of FP rates; percentile 95 % intervals. :func:`summarise` gives
what froc.json holds for one label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunet_lesionloss.evaluation.froc.matching import FrocCase
from nnunet_lesionloss.evaluation.froc.settings import FrocSettings, rate_key
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML, size_bin_labels
from nnunet_lesionloss.evaluation.statistics import case_resample_counts, percentile_interval


@dataclass
class Froc:
    """Points of a FROC curve, one per distinct confidence (descending), then picai_eval's last point:
    the last sensitivity at infinitely many false positives."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    n_lesions: int
    n_cases: int

    @property
    def sensitivity(self) -> np.ndarray:
        if self.n_lesions == 0:
            return np.full(len(self.true_positives), np.nan)
        return self.true_positives / self.n_lesions

    @property
    def fp_per_case(self) -> np.ndarray:
        return self.false_positives / max(self.n_cases, 1)

    def finite_points(self) -> list[tuple[float, float, float, int, int]]:
        """(threshold, FP per case, sensitivity, TP, FP) of every point with finitely many false positives."""
        sensitivity = self.sensitivity
        return [
            (float(t), float(f), float(s), int(tp), int(fp))
            for t, f, s, tp, fp in zip(
                self.thresholds, self.fp_per_case, sensitivity, self.true_positives, self.false_positives
            )
            if math.isfinite(fp)
        ]


@dataclass
class FrocPool:
    """The lesions and false positives of a set of cases, grouped by distinct confidence, so that every
    statistic (and every bootstrap resample, as case weights) is a few cumulative sums."""

    cases: list[FrocCase]
    thresholds: np.ndarray = field(init=False)  # distinct positive confidences, descending
    lesion_case: np.ndarray = field(init=False)
    lesion_group: np.ndarray = field(init=False)  # index into thresholds; len(thresholds) for a missed lesion
    fp_case: np.ndarray = field(init=False)
    fp_group: np.ndarray = field(init=False)

    def __post_init__(self):
        lesion = [c.lesion_confidence for c in self.cases]
        fp = [c.false_positive_confidence for c in self.cases]
        lesion_conf = np.concatenate(lesion) if lesion else np.zeros(0)
        fp_conf = np.concatenate(fp) if fp else np.zeros(0)
        self.lesion_case = np.repeat(np.arange(len(self.cases)), [len(v) for v in lesion]).astype(np.int64)
        self.fp_case = np.repeat(np.arange(len(self.cases)), [len(v) for v in fp]).astype(np.int64)
        self.thresholds = np.unique(np.concatenate([lesion_conf[lesion_conf > 0], fp_conf[fp_conf > 0]]))[::-1]
        descending = -self.thresholds
        # position of each confidence among the descending thresholds (exact: they come from the same values)
        self.lesion_group = np.where(
            lesion_conf > 0, np.searchsorted(descending, -lesion_conf), len(self.thresholds)
        ).astype(np.int64)
        self.fp_group = np.where(fp_conf > 0, np.searchsorted(descending, -fp_conf), len(self.thresholds)).astype(
            np.int64
        )

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def counts(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(TP, FP) at every threshold, and the number of reference lesions, with each case counted
        ``weights[case]`` times (default once)."""
        groups = len(self.thresholds) + 1
        lesion_weights = None if weights is None else weights[self.lesion_case]
        fp_weights = None if weights is None else weights[self.fp_case]
        tp = np.cumsum(np.bincount(self.lesion_group, weights=lesion_weights, minlength=groups)[:-1])
        fp = np.cumsum(np.bincount(self.fp_group, weights=fp_weights, minlength=groups)[:-1])
        n_lesions = float(len(self.lesion_case) if weights is None else lesion_weights.sum())
        return tp, fp, n_lesions

    def froc(self) -> Froc:
        """The curve as picai_eval's ``calculate_counts`` builds it, always with the threshold-0 entry of a
        missed lesion: one point per distinct confidence, then (last TP, ∞)."""
        tp, fp, n_lesions = self.counts()
        if len(tp) == 0:  # no candidate: picai_eval's two points (0, 0), (0, ∞)
            tp, fp, thresholds = np.zeros(1), np.zeros(1), np.array([np.inf])
        else:
            thresholds = self.thresholds
        return Froc(
            thresholds=np.append(thresholds, 0.0),
            true_positives=np.append(tp, tp[-1]),
            false_positives=np.append(fp, np.inf),
            n_lesions=int(n_lesions),
            n_cases=self.n_cases,
        )


def sensitivity_at_rates(
    tp: np.ndarray, fp: np.ndarray, n_lesions: float, n_cases: int, rates: Sequence[float]
) -> np.ndarray:
    """picai_eval's ``lesion_TPR_at_FPR``: the sensitivity of the lowest threshold with FP per case <=
    rate, 0 when no threshold has so few; NaN without reference lesions."""
    if n_lesions == 0:
        return np.full(len(rates), np.nan)
    index = np.searchsorted(fp / n_cases, np.asarray(rates, dtype=np.float64), side="right") - 1
    return np.where(index >= 0, tp[np.maximum(index, 0)] / n_lesions if len(tp) else 0.0, 0.0)


def average_precision(tp: np.ndarray, fp: np.ndarray, n_lesions: float) -> float:
    """Σ_t Δrecall(t) · precision(t) over the distinct confidences (picai_eval's AP); NaN without lesions."""
    if n_lesions == 0:
        return math.nan
    if len(tp) == 0:
        return 0.0
    gained = np.diff(tp, prepend=0.0)
    step = gained > 0
    return float(np.sum(gained[step] / n_lesions * tp[step] / (tp[step] + fp[step])))


def operating_threshold(tp: np.ndarray, fp: np.ndarray, thresholds: np.ndarray, n_cases: int, rate: float):
    """The lowest threshold with FP per case <= ``rate`` (None when even the highest has more)."""
    index = int(np.searchsorted(fp / n_cases, rate, side="right")) - 1
    return None if index < 0 else float(thresholds[index])


def froc_grid(max_fp_per_case: float, rates: Sequence[float]) -> np.ndarray:
    """FP rates at which the bootstrap band of the FROC curve is evaluated (log-spaced, the rates included)."""
    top = max(max(rates), max_fp_per_case if math.isfinite(max_fp_per_case) else 0.0)
    grid = np.geomspace(min(rates) / 4, top, 120)
    return np.unique(np.concatenate([grid, np.asarray(rates, dtype=np.float64)]))


def bootstrap_statistics(pool: FrocPool, settings: FrocSettings, grid: np.ndarray) -> dict:
    """Case-bootstrap resamples of AP, CPM, the sensitivity at each FP rate and on ``grid``."""
    resamples = settings.bootstrap_resamples
    n = pool.n_cases
    ap = np.full(resamples, np.nan)
    at_rates = np.full((resamples, len(settings.fp_rates)), np.nan)
    on_grid = np.full((resamples, len(grid)), np.nan)
    if resamples and n:
        for b, weights in enumerate(case_resample_counts(n, resamples, settings.seed)):
            tp, fp, n_lesions = pool.counts(weights)
            ap[b] = average_precision(tp, fp, n_lesions)
            at_rates[b] = sensitivity_at_rates(tp, fp, n_lesions, n, settings.fp_rates)
            on_grid[b] = sensitivity_at_rates(tp, fp, n_lesions, n, grid)
    return {"ap": ap, "sensitivity_at_fp": at_rates, "cpm": at_rates.mean(axis=1), "grid": on_grid}


def case_sensitivity_at(case: FrocCase, threshold: float | None) -> tuple[float | None, int]:
    """(sensitivity of the case's lesions, its false positives) at a global threshold (None: nothing counts)."""
    if threshold is None:
        hits, false_positives = 0, 0
    else:
        hits = int(np.count_nonzero(case.lesion_confidence >= threshold))
        false_positives = int(np.count_nonzero(case.false_positive_confidence >= threshold))
    return (hits / case.n_lesions if case.n_lesions else None), false_positives


def summarise(cases: list[FrocCase], settings: FrocSettings) -> tuple[dict, Froc]:
    """What froc.json holds for one label (without its name, failures and settings), and the curve."""
    pool = FrocPool(cases)
    tp, fp, n_lesions = pool.counts()
    n = pool.n_cases
    curve = pool.froc()
    at_rates = (
        sensitivity_at_rates(tp, fp, n_lesions, n, settings.fp_rates) if n else np.full(len(settings.fp_rates), np.nan)
    )
    ap = average_precision(tp, fp, n_lesions)
    threshold = operating_threshold(tp, fp, pool.thresholds, n, settings.size_fp_rate) if n else None
    points = curve.finite_points()
    grid = froc_grid(points[-1][1] if points else 0.0, settings.fp_rates)
    boot = bootstrap_statistics(pool, settings, grid)
    by_size = {}
    edges = np.asarray(settings.size_bins_ml, dtype=np.float64)
    volumes = [c.lesion_voxels * c.voxel_volume_mm3 / MM3_PER_ML for c in cases]
    all_volumes = np.concatenate(volumes) if volumes else np.zeros(0)
    lesion_conf = np.concatenate([c.lesion_confidence for c in cases]) if cases else np.zeros(0)
    bins = np.digitize(all_volumes, edges, right=False)
    for b, name in enumerate(size_bin_labels(edges)):
        in_bin = bins == b
        found = 0 if threshold is None else int(np.count_nonzero(lesion_conf[in_bin] >= threshold))
        by_size[name] = {
            "n_lesions": int(in_bin.sum()),
            "sensitivity": found / int(in_bin.sum()) if in_bin.any() else None,
        }
    mean_fp_at_threshold = None
    if threshold is not None and n:
        mean_fp_at_threshold = float(fp[np.searchsorted(-pool.thresholds, -threshold)] / n)
    band = [percentile_interval(boot["grid"][:, k]) for k in range(len(grid))]
    return {
        "ap": ap,
        "cpm": float(np.mean(at_rates)) if n_lesions else None,
        "sensitivity_at_fp": {rate_key(r): float(v) for r, v in zip(settings.fp_rates, at_rates)},
        "froc": [[f, s] for _, f, s, _, _ in points],
        "n_cases": n,
        "n_lesions": int(n_lesions),
        "n_candidates": int(sum(c.n_candidates for c in cases)),
        "n_false_positive_candidates": int(len(pool.fp_case)),
        "n_ignored_candidates": int(sum(c.n_ignored for c in cases)),
        "operating_point": {
            "fp_per_case": settings.size_fp_rate,
            "threshold": threshold,
            "sensitivity": None
            if not n_lesions
            else float(sensitivity_at_rates(tp, fp, n_lesions, n, [settings.size_fp_rate])[0]),
            "mean_fp_per_case": mean_fp_at_threshold,
        },
        "sensitivity_by_size": by_size,
        "ci": {
            "level": 0.95,
            "resamples": settings.bootstrap_resamples,
            "seed": settings.seed,
            "ap": percentile_interval(boot["ap"]),
            "cpm": percentile_interval(boot["cpm"]),
            "sensitivity_at_fp": {
                rate_key(r): percentile_interval(boot["sensitivity_at_fp"][:, k])
                for k, r in enumerate(settings.fp_rates)
            },
        },
        "froc_band": {
            "fp_per_case": [float(g) for g in grid],
            "low": [None if i is None else i[0] for i in band],
            "high": [None if i is None else i[1] for i in band],
        },
    }, curve
