"""Statistics of runs trained more than once (training repeats), for ``cv-summary`` and ``compare``: each
repeat's aggregate and the spread between repeats; the two-level bootstrap of the difference between a run
and a reference run (cases resampled paired across the runs, each run's retrainings drawn independently),
with its interval, P(better) and verdict (Holm's step-down over the runs compared); the variance of the
difference by source (case sampling, retraining); the two-way random-effects decomposition of one run's
values; and the power of the design (the smallest difference it separates, the repeats that would separate
the observed one). Formulas and the measured coverage: docs/metrics.md, "Training repeats". Pure
computation on arrays: nothing here reads or writes files.

A run enters as :class:`RunResamples`: its statistic for every repeat on the cases as they are, and under
every case weighting of one case bootstrap shared by all runs (``case_resample_weights``). The statistic is
the caller's: a mean over cases (:func:`resample_case_means`), or any aggregate recomputed with case weights
(a pooled rate, a FROC statistic), so the bootstrap never needs to know what it resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nnunet_lesionloss.evaluation.statistics import percentile_interval

__all__ = [
    "RETRAINING_LEVELS",
    "VERDICTS",
    "RunResamples",
    "RepeatSummary",
    "VarianceComponents",
    "VarianceBudget",
    "RepeatComparison",
    "RepeatPower",
    "weighted_case_means",
    "resample_case_means",
    "resample_statistic",
    "summarise_repeats",
    "variance_components",
    "compare_repeats",
    "verdict_from_interval",
    "holm_verdicts",
    "repeat_power",
]

#: how the bootstrap draws a run's retrainings: "student-t" (default) draws the mean of the R repeats around
#: the observed mean with the between-repeat spread, in a Student-t scale mixture whose degrees of freedom are
#: those of the estimated variance (R - 1 per run, Welch-Satterthwaite with the case part); "resample" draws R
#: of the repeats with replacement, which with few repeats cannot leave the range of the observed ones and
#: covers too little (docs/metrics.md)
RETRAINING_LEVELS = ("student-t", "resample")
#: the verdicts, in the metric's direction: the run is better or worse than the reference, or the interval
#: holds 0 ("not separable with these repeats")
VERDICTS = ("better", "worse", "not separable")


@dataclass(frozen=True)
class RunResamples:
    """One run's statistic per repeat: ``observed`` on the ``n_cases`` cases as they are (``[repeats]``) and
    ``resampled`` under each case weighting of the shared case bootstrap (``[resamples, repeats]``); NaN where
    a repeat leaves the statistic undefined (e.g. no case of a resample defines it)."""

    observed: np.ndarray
    resampled: np.ndarray
    n_cases: int

    def __post_init__(self) -> None:
        if isinstance(self.n_cases, bool) or not isinstance(self.n_cases, int | np.integer) or self.n_cases < 1:
            raise ValueError(f"n_cases must be an integer >= 1, got {self.n_cases!r}")
        observed = np.asarray(self.observed, dtype=np.float64)
        resampled = np.asarray(self.resampled, dtype=np.float64)
        if observed.ndim != 1 or len(observed) < 1:
            raise ValueError(f"observed must hold one value per repeat (a 1-D array), got shape {observed.shape}")
        if resampled.ndim != 2 or resampled.shape[1] != len(observed):
            raise ValueError(
                f"resampled must be [resamples, repeats] with {len(observed)} repeats, got shape {resampled.shape}"
            )
        if np.isinf(observed).any() or np.isinf(resampled).any():
            raise ValueError("a statistic is infinite: give NaN for an undefined value")
        object.__setattr__(self, "observed", observed)
        object.__setattr__(self, "resampled", resampled)

    @property
    def n_repeats(self) -> int:
        return len(self.observed)


def _check_values(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"values must be [repeats, cases] with at least one of each, got shape {values.shape}")
    if np.isinf(values).any():
        raise ValueError("values hold an infinite number: give NaN for a value a case leaves undefined")
    return values


def weighted_case_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[resamples, repeats]``: each repeat's mean over the cases that define the metric (``values``:
    ``[repeats, cases]``, NaN = undefined), each case counted with its weight (``weights``:
    ``[resamples, cases]``); NaN where no case with a weight defines it."""
    values = _check_values(values)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if weights.shape[1] != values.shape[1]:
        raise ValueError(f"weights are for {weights.shape[1]} cases, values for {values.shape[1]}")
    defined = np.isfinite(values)
    total = weights @ np.where(defined, values, 0.0).T
    count = weights @ defined.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def resample_case_means(values: np.ndarray, weights: np.ndarray) -> RunResamples:
    """A run whose statistic is the mean over cases of ``values`` (``[repeats, cases]``, NaN = undefined),
    on the cases as they are and under each row of ``weights`` (``[resamples, cases]``)."""
    values = _check_values(values)
    observed = weighted_case_means(values, np.ones((1, values.shape[1])))[0]
    return RunResamples(observed, weighted_case_means(values, weights), values.shape[1])


def resample_statistic(
    statistic: Callable[[int, np.ndarray], float], n_repeats: int, weights: np.ndarray
) -> RunResamples:
    """A run whose statistic is any aggregate of a repeat under case weights: ``statistic(repeat, w)`` with
    ``w`` the weight of each case (ones: the cases as they are; NaN when undefined), e.g. a pooled lesion F1
    or a FROC statistic recomputed from the weighted cases. Called once per repeat and row of ``weights``."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int) or n_repeats < 1:
        raise ValueError(f"n_repeats must be an integer >= 1, got {n_repeats!r}")
    ones = np.ones(weights.shape[1])
    observed = np.array([statistic(r, ones) for r in range(n_repeats)], dtype=np.float64)
    resampled = np.array([[statistic(r, w) for r in range(n_repeats)] for w in weights], dtype=np.float64)
    return RunResamples(observed, resampled.reshape(len(weights), n_repeats), weights.shape[1])


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RepeatSummary:
    """One run's aggregate per repeat, their mean and the sample standard deviation between repeats (the
    repeats that define the aggregate; ``undefined_repeats``: positions of those that do not)."""

    per_repeat: tuple[float | None, ...]
    mean: float | None
    sd_between_repeats: float | None
    n_repeats: int
    undefined_repeats: tuple[int, ...]


def summarise_repeats(per_repeat: Sequence[float | None] | np.ndarray) -> RepeatSummary:
    """Mean over repeats of the per-repeat aggregates and their standard deviation (n - 1; None with fewer
    than two repeats that define it)."""
    values = np.array([np.nan if v is None else v for v in per_repeat], dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError("a per-repeat aggregate is infinite")
    defined = values[np.isfinite(values)]
    return RepeatSummary(
        per_repeat=tuple(float(v) if np.isfinite(v) else None for v in values),
        mean=float(defined.mean()) if len(defined) else None,
        sd_between_repeats=float(defined.std(ddof=1)) if len(defined) >= 2 else None,
        n_repeats=len(defined),
        undefined_repeats=tuple(int(k) for k in np.flatnonzero(~np.isfinite(values))),
    )


@dataclass(frozen=True)
class VarianceComponents:
    """The two-way random-effects decomposition of one run's values y_ri (repeat r, case i):
    y_ri = mu + c_i + t_r + e_ri, with variances ``case`` (between cases), ``retraining`` (a retraining's
    shift shared by every case) and ``interaction`` (what a retraining changes case by case, with noise);
    on the ``n_cases`` cases every repeat defines. ``truncated`` names the estimates below 0 set to 0."""

    case: float
    retraining: float
    interaction: float
    n_cases: int
    n_repeats: int
    truncated: tuple[str, ...]


def variance_components(values: np.ndarray) -> VarianceComponents | None:
    """Method-of-moments (ANOVA) estimates of the two-way random-effects model without replication, on the
    cases every repeat defines: with the mean squares of repeats, cases and residual,
    sigma2_interaction = MS_res, sigma2_retraining = (MS_repeats - MS_res) / n_cases,
    sigma2_case = (MS_cases - MS_res) / n_repeats (each unbiased; a negative estimate is set to 0).
    None with fewer than two repeats or two such cases."""
    values = _check_values(values)
    complete = values[:, np.isfinite(values).all(axis=0)]
    n_repeats, n_cases = complete.shape
    if n_repeats < 2 or n_cases < 2:
        return None
    grand = complete.mean()
    repeat_means, case_means = complete.mean(axis=1), complete.mean(axis=0)
    ms_repeats = n_cases * ((repeat_means - grand) ** 2).sum() / (n_repeats - 1)
    ms_cases = n_repeats * ((case_means - grand) ** 2).sum() / (n_cases - 1)
    residual = complete - repeat_means[:, None] - case_means[None, :] + grand
    ms_residual = (residual**2).sum() / ((n_repeats - 1) * (n_cases - 1))
    estimates = {
        "case": (ms_cases - ms_residual) / n_repeats,
        "retraining": (ms_repeats - ms_residual) / n_cases,
        "interaction": ms_residual,
    }
    truncated = tuple(name for name, value in estimates.items() if value < 0)
    return VarianceComponents(
        **{name: float(max(value, 0.0)) for name, value in estimates.items()},
        n_cases=n_cases,
        n_repeats=n_repeats,
        truncated=truncated,
    )


# --------------------------------------------------------------------------- a run against the reference


@dataclass(frozen=True)
class VarianceBudget:
    """The variance of the difference (run - reference) by source. ``case``: case sampling (paired), the
    retraining-by-case part removed (it is counted under retraining); ``retraining``: sum over the two runs of
    s_k^2 / R_k, with ``retraining_per_repeat`` = (s_run^2, s_reference^2) the variance between one run's
    repeats (None for a run with one repeat: unknown, not counted)."""

    case: float
    retraining: float
    retraining_per_repeat: tuple[float | None, float | None]
    n_repeats: tuple[int, int]
    n_cases: int

    @property
    def total(self) -> float:
        return self.case + self.retraining

    @property
    def retraining_share(self) -> float | None:
        """The share of the difference's variance that retraining contributes (None when both are 0)."""
        return self.retraining / self.total if self.total > 0 else None


@dataclass(frozen=True)
class RepeatComparison:
    """A run against the reference run, for one metric: the difference of their means over repeats, its
    two-level bootstrap interval at ``level``, P(better) (the share of resamples where the run is better
    than the reference in the metric's direction; a tie is not better), the two-sided bootstrap p-value,
    the verdict read from the interval, whether the interval covers retraining (both runs with two or more
    repeats; otherwise it covers case sampling only, and retraining where known), the variance budget and
    the bootstrap's differences (``draws``, for intervals at other levels)."""

    difference: float
    ci_low: float | None
    ci_high: float | None
    p_better: float | None
    p_two_sided: float | None
    verdict: str
    covers_retraining: bool
    budget: VarianceBudget
    higher_is_better: bool
    level: float
    retraining_level: str
    draws: np.ndarray

    def interval(self, level: float) -> list[float] | None:
        """The bootstrap interval of the difference at another level (Holm's step-down)."""
        return percentile_interval(self.draws, level)


def _defined_repeats(run: RunResamples, name: str) -> RunResamples:
    keep = np.isfinite(run.observed)
    if not keep.any():
        raise ValueError(f"the {name} has no repeat that defines the statistic")
    return run if keep.all() else RunResamples(run.observed[keep], run.resampled[:, keep], run.n_cases)


def _interaction_per_repeat(run: RunResamples) -> float:
    """The retraining-by-case part of one repeat's variance under case resampling, s_e^2 / n for a mean: the
    mean over repeats of each repeat's bootstrap variance exceeds the bootstrap variance of the repeats' mean
    by (1 - 1/R) of it. 0 for one repeat (not estimable)."""
    r = run.n_repeats
    if r < 2:
        return 0.0
    usable = np.isfinite(run.resampled).all(axis=1)
    if usable.sum() < 2:
        return 0.0
    resampled = run.resampled[usable]
    single = resampled.var(axis=0, ddof=1).mean()
    averaged = resampled.mean(axis=1).var(ddof=1)
    return max(float((single - averaged) * r / (r - 1)), 0.0)


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance estimates (variance, its degrees of
    freedom); infinite when the sum is 0."""
    total = sum(v for v, _ in terms)
    denominator = sum(v * v / df for v, df in terms if v > 0)
    return total * total / denominator if denominator > 0 else math.inf


def _check_level(level: float) -> None:
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ValueError(f"level must be between 0 and 1 (exclusive), got {level!r}")


def verdict_from_interval(low: float | None, high: float | None, higher_is_better: bool) -> str:
    """better: the whole interval on the better side of 0 (above for a metric where higher is better, below
    for one where lower is better, such as an FP count); worse: on the other side; else not separable."""
    if low is None or high is None:
        return "not separable"
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "not separable"


def compare_repeats(
    run: RunResamples,
    reference: RunResamples,
    *,
    higher_is_better: bool,
    level: float = 0.95,
    seed: int = 0,
    retraining_level: str = "student-t",
) -> RepeatComparison:
    """The two-level bootstrap of D = (mean over the run's repeats) - (mean over the reference's repeats).

    Level 1, cases: every resample weighs the cases as one row of the shared case bootstrap, the same
    weights for both runs (paired). Level 2, retrainings, independently per run: ``"student-t"`` shrinks
    the case level's deviations so that it counts only the case variance V_case that retraining does not
    already count (the retraining-by-case part, estimated from the single-repeat and repeat-averaged
    bootstrap variances), adds sqrt(V_r) * Z (Z standard normal) with V_r = s_run^2 / R_run + s_ref^2 / R_ref,
    and divides the deviation from D by sqrt(chi2_nu / nu), nu the Welch-Satterthwaite degrees of freedom
    of V_case + V_r (each s^2 with R - 1, the case part with n - 1): a Student-t scale mixture that keeps the
    case bootstrap's shape. ``"resample"`` draws R repeats of each run with replacement. With one repeat
    in both runs there is no retraining level: the interval is the case bootstrap's (case sampling only).
    Repeats whose observed statistic is undefined are left out; resamples where the statistic is undefined
    are not counted.
    """
    _check_level(level)
    if retraining_level not in RETRAINING_LEVELS:
        raise ValueError(f"retraining_level must be one of {', '.join(RETRAINING_LEVELS)}, got {retraining_level!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if run.n_cases != reference.n_cases:
        raise ValueError(f"the runs are not paired: {run.n_cases} cases vs {reference.n_cases} in the reference")
    if run.resampled.shape[0] != reference.resampled.shape[0]:
        raise ValueError(
            f"the runs were resampled differently ({run.resampled.shape[0]} vs {reference.resampled.shape[0]} "
            "resamples): give both the rows of one case bootstrap"
        )
    run, reference = _defined_repeats(run, "run"), _defined_repeats(reference, "reference")
    resamples = run.resampled.shape[0]
    difference = float(run.observed.mean() - reference.observed.mean())
    between = tuple(float(r.observed.var(ddof=1)) if r.n_repeats >= 2 else None for r in (run, reference))
    retraining_terms = [
        (s2 / r.n_repeats, r.n_repeats - 1) for s2, r in zip(between, (run, reference), strict=True) if s2 is not None
    ]
    retraining = sum(v for v, _ in retraining_terms)
    case_draws = run.resampled.mean(axis=1) - reference.resampled.mean(axis=1)
    finite = np.isfinite(case_draws)
    raw_case = float(case_draws[finite].var(ddof=1)) if finite.sum() >= 2 else 0.0
    counted_twice = sum(_interaction_per_repeat(r) / r.n_repeats for r in (run, reference))
    case = max(raw_case - counted_twice, 0.0)
    rng = np.random.default_rng((seed, 23))
    if retraining_level == "resample":
        picks = [rng.integers(0, r.n_repeats, size=(resamples, r.n_repeats)) for r in (run, reference)]
        draws = np.take_along_axis(run.resampled, picks[0], axis=1).mean(axis=1) - np.take_along_axis(
            reference.resampled, picks[1], axis=1
        ).mean(axis=1)
    else:
        shrink = math.sqrt(case / raw_case) if raw_case > 0 else 0.0
        deviations = shrink * (case_draws - difference)
        if retraining > 0:
            # the retrainings' mean drawn around the observed one, and the whole deviation divided by
            # sqrt(chi2_nu / nu): a Student-t scale mixture for a variance estimated with nu degrees of freedom
            deviations = deviations + math.sqrt(retraining) * rng.standard_normal(resamples)
            df = _satterthwaite([*retraining_terms, (case, max(run.n_cases - 1, 1))])
            if math.isfinite(df):
                deviations = deviations / np.sqrt(rng.chisquare(df, size=resamples) / df)
        draws = difference + deviations
    draws = draws[np.isfinite(draws)]
    interval = percentile_interval(draws, level)
    low, high = (None, None) if interval is None else interval
    if len(draws):
        better = draws > 0 if higher_is_better else draws < 0
        p_better = float(better.mean())
        p_two_sided = float(min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean())))
    else:
        p_better = p_two_sided = None
    return RepeatComparison(
        difference=difference,
        ci_low=low,
        ci_high=high,
        p_better=p_better,
        p_two_sided=p_two_sided,
        verdict=verdict_from_interval(low, high, higher_is_better),
        covers_retraining=all(s2 is not None for s2 in between),
        budget=VarianceBudget(
            case=case,
            retraining=retraining,
            retraining_per_repeat=between,
            n_repeats=(run.n_repeats, reference.n_repeats),
            n_cases=run.n_cases,
        ),
        higher_is_better=higher_is_better,
        level=level,
        retraining_level=retraining_level,
        draws=draws,
    )


def holm_verdicts(comparisons: Sequence[RepeatComparison]) -> list[str]:
    """The verdicts of m runs compared against one reference, with Holm's step-down read from intervals:
    in the order of their two-sided bootstrap p-values, the k-th run (k = 1..m) is read from its
    1 - alpha / (m - k + 1) interval (alpha = 1 - level) as long as every run before it was separated;
    from the first run that is not, every later one is "not separable". With one run: its interval."""
    levels = {c.level for c in comparisons}
    if len(levels) > 1:
        raise ValueError(f"the comparisons have different levels {sorted(levels)}: Holm needs one family")
    m = len(comparisons)
    order = sorted(range(m), key=lambda k: (comparisons[k].p_two_sided is None, comparisons[k].p_two_sided or 0.0))
    verdicts = ["not separable"] * m
    for rank, k in enumerate(order):
        comparison = comparisons[k]
        alpha = 1 - comparison.level
        interval = comparison.interval(1 - alpha / (m - rank))
        verdict = verdict_from_interval(*(interval or (None, None)), comparison.higher_is_better)
        if verdict == "not separable":
            break
        verdicts[k] = verdict
    return verdicts


# --------------------------------------------------------------------------- power of the design


@dataclass(frozen=True)
class RepeatPower:
    """What the design separates: ``separable_difference``, the smallest true difference its interval
    excludes 0 for with probability ``power`` (with the repeats and cases at hand); ``repeats_needed``, the
    repeats per run (the same for both) that would separate the observed difference with that power (None:
    not within ``max_repeats``, or ``limited_by_cases``: not with any number of repeats, as the case
    sampling alone leaves it inseparable: more cases are needed)."""

    separable_difference: float | None
    repeats_needed: int | None
    limited_by_cases: bool
    level: float
    power: float


def repeat_power(
    budget: VarianceBudget, difference: float, *, level: float = 0.95, power: float = 0.8, max_repeats: int = 100
) -> RepeatPower:
    """The power of the design from its variance budget, with the normal-theory formula of docs/metrics.md:
    with R_run and R_ref repeats, V = V_case + s_run^2 / R_run + s_ref^2 / R_ref and nu its Welch-Satterthwaite
    degrees of freedom (n - 1 for the case part, R - 1 for each retraining part), the difference separated
    with probability ``power`` is (t_{1 - alpha/2, nu} + t_{power, nu}) * sqrt(V). It assumes the case part
    does not change with R (the retraining-by-case part is counted under retraining) and the variances
    estimated here. None for a run with one repeat (its retraining variance is unknown)."""
    from scipy.stats import t as student_t  # scipy.stats is heavy to import: only where power is asked for

    _check_level(level)
    if not (isinstance(power, float | int) and 0 < power < 1):
        raise ValueError(f"power must be between 0 and 1 (exclusive), got {power!r}")
    if isinstance(max_repeats, bool) or not isinstance(max_repeats, int) or max_repeats < 2:
        raise ValueError(f"max_repeats must be an integer >= 2, got {max_repeats!r}")
    if not math.isfinite(difference):
        raise ValueError(f"difference must be finite, got {difference!r}")
    s2_run, s2_ref = budget.retraining_per_repeat
    if s2_run is None or s2_ref is None:
        return RepeatPower(None, None, False, level, power)
    case_df = max(budget.n_cases - 1, 1)

    def separable(r_run: int, r_ref: int) -> float:
        terms = [(budget.case, case_df), (s2_run / r_run, r_run - 1), (s2_ref / r_ref, r_ref - 1)]
        df = _satterthwaite(terms)
        quantiles = student_t.ppf(1 - (1 - level) / 2, df) + student_t.ppf(power, df)
        return float(quantiles * math.sqrt(sum(v for v, _ in terms)))

    at_hand = separable(*budget.n_repeats)
    target = abs(difference)
    case_limit = (student_t.ppf(1 - (1 - level) / 2, case_df) + student_t.ppf(power, case_df)) * math.sqrt(budget.case)
    if target == 0 or target <= case_limit:
        return RepeatPower(at_hand, None, target > 0, level, power)
    # the separable difference falls as R grows: the first R at or below the target
    needed = next((r for r in range(2, max_repeats + 1) if separable(r, r) <= target), None)
    return RepeatPower(at_hand, needed, False, level, power)
