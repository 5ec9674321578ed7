"""What ``compare`` needs of two runs' FROC analyses, paired by case: the cases of a froc_cases.json, each
case's sensitivity at a run's operating threshold, and the pooled sensitivity difference at one FP rate with a
paired case-bootstrap 95 % CI (the same resampled cases for both runs; evaluation/statistics.py).
"""

from __future__ import annotations

import math

import numpy as np

from nnunet_lesionloss.evaluation.froc.curves import (
    FrocPool,
    case_sensitivity_at,
    operating_threshold,
    sensitivity_at_rates,
)
from nnunet_lesionloss.evaluation.froc.matching import FrocCase
from nnunet_lesionloss.evaluation.statistics import case_resample_counts, percentile_interval


def cases_of(raw: dict, key: str) -> dict[str, FrocCase]:
    """Case -> FrocCase of one label from a froc_cases.json (as :func:`~.cross_validation.load_froc` reads it)."""
    return {case: FrocCase.from_json(case, data) for case, data in raw.get("labels", {}).get(key, {}).items()}


def per_case_sensitivity(cases: dict[str, FrocCase], rate: float) -> tuple[dict[str, float], float | None]:
    """Each case's sensitivity at the run's threshold for ``rate`` FP per case over all its cases (cases
    without reference lesions have none), and that threshold (None: no threshold gives so few)."""
    pool = FrocPool(list(cases.values()))
    tp, fp, _ = pool.counts()
    threshold = operating_threshold(tp, fp, pool.thresholds, pool.n_cases, rate) if pool.n_cases else None
    values = {}
    for case, froc_case in cases.items():
        sensitivity, _ = case_sensitivity_at(froc_case, threshold)
        if sensitivity is not None:
            values[case] = sensitivity
    return values, threshold


def paired_sensitivity_difference(
    reference: dict[str, FrocCase], other: dict[str, FrocCase], rate: float, resamples: int, seed: int
) -> dict:
    """Pooled sensitivity at ``rate`` FP per case of ``other`` − ``reference`` over the cases both analysed,
    with a paired case-bootstrap 95 % CI (the same resampled cases for both runs)."""
    common = sorted(set(reference) & set(other))
    pools = [FrocPool([runs[c] for c in common]) for runs in (reference, other)]
    n = len(common)

    def difference(weights=None) -> float:
        values = []
        for pool in pools:
            tp, fp, n_lesions = pool.counts(weights)
            values.append(sensitivity_at_rates(tp, fp, n_lesions, n, [rate])[0])
        return float(values[1] - values[0])

    if n == 0:
        return {"n": 0, "difference": None, "ci_low": None, "ci_high": None}
    point = difference()
    samples = np.array([difference(w) for w in case_resample_counts(n, resamples, seed)]) if resamples else np.zeros(0)
    interval = percentile_interval(samples)
    return {
        "n": n,
        "difference": None if not math.isfinite(point) else point,
        "ci_low": None if interval is None else interval[0],
        "ci_high": None if interval is None else interval[1],
    }
