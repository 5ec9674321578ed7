"""The comparison table of ``compare``: per metric, each run's value, the best complete run, and the paired
difference of every run against the reference run.

Every run's value is computed the same way, whatever produced it (evaluate, cv-summary, a cv-summary of
repeats): per repeat, the mean over the cases it evaluated of its per-case values (cases.csv); per run, the
mean over its repeats, with the standard deviation between repeats. The paired difference of a run against
the reference is that of the means over repeats on the cases both runs evaluated with the metric defined,
with the two-level bootstrap of repeat_statistics.py (cases resampled paired across the runs, each run's
retrainings drawn independently; with one repeat in both runs, the case bootstrap alone): its 95 % interval,
P(better), the variance of the difference by source (cases, retraining), the power of the design, and a
verdict read from the interval with Holm's step-down over the runs compared. For runs of one repeat each,
the two-sided Wilcoxon signed-rank p (Holm-corrected) is kept as before. Returns rows; report.py writes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnunet_lesionloss.evaluation.compare.groups import RepeatedRun
from nnunet_lesionloss.evaluation.repeat_statistics import (
    RepeatComparison,
    RunResamples,
    compare_repeats,
    holm_verdicts,
    repeat_power,
    resample_case_means,
    summarise_repeats,
    variance_components,
)
from nnunet_lesionloss.evaluation.statistics import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_ci,
    case_resample_weights,
    holm,
    wilcoxon_p,
)

__all__ = [
    "TABLE_METRICS",
    "best_indices",
    "paired_difference",
    "repeat_values",
    "no_interval",
    "pair_from_resamples",
    "finish_pairs",
    "make_row",
    "comparison_table",
]

# (metric key, display name, +1 if higher is better, -1 if lower is better)
TABLE_METRICS = (
    ("Dice", "Dice", +1),
    ("hd95", "HD95 (mm)", -1),
    ("assd", "ASSD (mm)", -1),
    ("lesion_f1", "Lesion F1", +1),
    ("lesion_precision", "Lesion precision (PPV)", +1),
    ("lesion_recall", "Lesion recall (SEN)", +1),
    ("small_lesion_recall", "Small lesion recall", +1),
    ("lesion_fn", "FN count", -1),
    ("lesion_fp", "FP count", -1),
    ("fn_volume_fraction", "FN volume fraction", -1),
    ("fp_volume_mm3", "FP volume (mm³)", -1),
    ("rve", "RVE", -1),
    ("abs_volume_error_ml", "Abs. volume error (mL)", -1),
    ("dsc0.1_pq_dsc", "PQ (DSC>=0.1)", +1),
    ("dsc0.5_pq_dsc", "PQ (DSC>=0.5)", +1),
    ("dsc0.5_sq_dsc", "SQ (DSC>=0.5)", +1),
    ("dsc0.5_rq", "RQ (DSC>=0.5)", +1),
    ("iou0.5_pq", "PQ (IoU>=0.5)", +1),
)


def best_indices(values: list, direction: int, eligible: Sequence[bool] | None = None) -> set[int]:
    """Runs with the best value; only ``eligible`` runs (complete ones) can be best."""
    eligible = eligible or [True] * len(values)
    defined = [(v, k) for k, v in enumerate(values) if v is not None and math.isfinite(v) and eligible[k]]
    if not defined or direction == 0:
        return set()
    target = max(v for v, _ in defined) if direction > 0 else min(v for v, _ in defined)
    return {k for v, k in defined if v == target}


def paired_difference(
    reference: dict[str, float], other: dict[str, float], resamples: int, seed: int
) -> dict[str, float | int | None]:
    """Mean of other − reference over the cases both define, bootstrap CI, Wilcoxon p (one repeat each: the
    FROC analysis's per-case sensitivities)."""
    common = sorted(set(reference) & set(other))
    differences = np.array([other[c] - reference[c] for c in common], dtype=np.float64)
    ci = bootstrap_ci(differences, resamples, seed)
    return {
        "n": len(common),
        "mean_difference": float(differences.mean()) if len(common) else None,
        "ci_low": None if ci is None else ci[0],
        "ci_high": None if ci is None else ci[1],
        "p_wilcoxon": wilcoxon_p(differences),
    }


def repeat_values(group: RepeatedRun, label: str, key: str) -> list[float | None]:
    """Each repeat's mean over the cases it evaluated with ``key`` defined (from its cases.csv; a run without
    one: its summary's mean)."""
    out = []
    for run in group.repeats:
        by_case = run.case_values(label).get(key)
        if run.cases_csv is None:
            out.append(run.means.get(label, {}).get(key))
        else:
            out.append(float(np.mean(list(by_case.values()))) if by_case else None)
    return out


def _case_matrix(groups: Sequence[RepeatedRun], label: str, key: str, cases: list[str]) -> list[np.ndarray]:
    """Per group, its values ``[repeats, cases]`` (NaN: undefined in that repeat)."""
    return [
        np.array([[run.case_values(label).get(key, {}).get(c, np.nan) for c in cases] for run in g.repeats])
        for g in groups
    ]


def _pair_cases(run: RepeatedRun, reference: RepeatedRun, label: str, key: str) -> list[str]:
    """The cases every repeat of both runs evaluated that each run defines in one repeat at least (with one
    repeat each: the cases both define), sorted."""
    evaluated = set.intersection(*(r.evaluated_cases(label) for r in [*run.repeats, *reference.repeats]))
    defined = [set().union(*(r.case_values(label).get(key, {}) for r in g.repeats)) for g in (run, reference)]
    return sorted(evaluated & defined[0] & defined[1])


def no_interval(n: int, difference: float | None, p_wilcoxon: float | None = None) -> dict:
    """The paired statistics of a pair without an interval (fewer than two cases, or no resample)."""
    return {
        "n": n,
        "mean_difference": difference,
        "ci_low": None,
        "ci_high": None,
        "p_wilcoxon": p_wilcoxon,
        "p_better": None,
        "p_bootstrap": None,
        "covers_retraining": False,
        "variance_cases": None,
        "variance_retraining": None,
        "retraining_share": None,
        "separable_difference": None,
        "repeats_needed": None,
        "limited_by_cases": False,
        "comparison": None,
    }


def pair_from_resamples(
    run: RunResamples,
    reference: RunResamples,
    *,
    higher_is_better: bool,
    seed: int,
    retraining_level: str,
    p_wilcoxon: float | None = None,
) -> dict:
    """The paired statistics of a run against the reference from their resamples (the same case weights):
    the two-level bootstrap (compare_repeats), its variance budget and the power of the design (repeat_power,
    for the observed difference); without an interval with fewer than two cases."""
    defined = np.isfinite(run.observed).any() and np.isfinite(reference.observed).any()
    difference = float(np.nanmean(run.observed) - np.nanmean(reference.observed)) if defined else None
    if run.n_cases < 2 or not defined or run.resampled.shape[0] == 0:
        return no_interval(run.n_cases, difference, p_wilcoxon)
    comparison = compare_repeats(
        run, reference, higher_is_better=higher_is_better, seed=seed, retraining_level=retraining_level
    )
    budget = comparison.budget
    power = repeat_power(budget, comparison.difference, level=comparison.level)
    known = comparison.covers_retraining
    return {
        "n": run.n_cases,
        "mean_difference": comparison.difference,
        "ci_low": comparison.ci_low,
        "ci_high": comparison.ci_high,
        "p_wilcoxon": p_wilcoxon,
        "p_better": comparison.p_better,
        "p_bootstrap": comparison.p_two_sided,
        "covers_retraining": known,
        "variance_cases": budget.case,
        "variance_retraining": budget.retraining if known else None,
        "retraining_share": budget.retraining_share if known else None,
        "separable_difference": power.separable_difference,
        "repeats_needed": power.repeats_needed,
        "limited_by_cases": power.limited_by_cases,
        "comparison": comparison,
    }


def finish_pairs(pairs: dict[int, dict]) -> None:
    """Holm over the runs compared, per metric: the verdicts read from the bootstrap intervals
    (holm_verdicts) and the Wilcoxon p-values (runs of one repeat)."""
    with_interval = [k for k, p in pairs.items() if isinstance(p["comparison"], RepeatComparison)]
    verdicts = dict(zip(with_interval, holm_verdicts([pairs[k]["comparison"] for k in with_interval]), strict=True))
    adjusted = holm([p["p_wilcoxon"] for p in pairs.values()])
    for (k, pair), p_holm in zip(pairs.items(), adjusted, strict=True):
        pair["verdict"] = verdicts.get(k, "not separable")
        pair["p_holm"] = p_holm


def make_row(
    key: str, display: str, direction: int, per_repeat: list[list[float | None]], groups: list[RepeatedRun]
) -> dict:
    """A row's per-run part: the mean over repeats, the sd between repeats, the per-repeat values and the best
    complete run; ``paired`` and ``components`` are filled by the caller."""
    summaries = [summarise_repeats(values) for values in per_repeat]
    values = [s.mean for s in summaries]
    return {
        "metric": key,
        "display": display,
        "direction": direction,
        "values": values,
        "sd_between_repeats": [s.sd_between_repeats for s in summaries],
        "n_repeats": [s.n_repeats for s in summaries],
        "per_repeat": [dict(zip(g.repeat_names, s.per_repeat, strict=True)) for g, s in zip(groups, summaries)],
        "best": best_indices(values, direction, [g.complete for g in groups]),
        "paired": {},
        "components": [None] * len(groups),
    }


def comparison_table(
    groups: list[RepeatedRun],
    label: str,
    reference: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    retraining_level: str = "student-t",
) -> list[dict]:
    """One row per metric of TABLE_METRICS that some run has: ``metric``, ``display``, ``direction``,
    ``values``, ``sd_between_repeats``, ``n_repeats`` and ``per_repeat`` (one per run), ``stds`` (each run's
    standard deviation over cases, mean over its repeats), ``best`` (indices of the best complete runs),
    ``components`` (each run's variance components, runs with repeats) and ``paired`` (run index -> its
    statistics against ``reference``: :func:`pair_from_resamples`, with ``verdict`` and ``p_holm``)."""
    rows = []
    weights: dict[int, np.ndarray] = {}
    for key, display, direction in TABLE_METRICS:
        per_repeat = [repeat_values(g, label, key) for g in groups]
        if all(v is None for values in per_repeat for v in values):
            continue
        row = make_row(key, display, direction, per_repeat, groups)
        row["stds"] = [_std_over_cases(g, label, key) for g in groups]
        for k, group in enumerate(groups):
            if group.n_repeats > 1:
                common = sorted(set.intersection(*(r.evaluated_cases(label) for r in group.repeats)))
                matrix = _case_matrix([group], label, key, common)[0]
                row["components"][k] = variance_components(matrix) if len(common) else None
        for k, group in enumerate(groups):
            if k == reference:
                continue
            cases = _pair_cases(group, groups[reference], label, key)
            run_values, ref_values = _case_matrix([group, groups[reference]], label, key, cases)
            p_wilcoxon = None
            if group.n_repeats == 1 and groups[reference].n_repeats == 1 and cases:
                # one repeat each: the mean of the paired differences, resampled as such (the same statistic as
                # the difference of the means on these cases, without its rounding)
                run_values, ref_values = run_values - ref_values, np.zeros_like(ref_values)
                p_wilcoxon = wilcoxon_p(run_values[0])
            if not cases:
                row["paired"][k] = no_interval(0, None)
                continue
            if len(cases) not in weights:  # the same case draws for every run paired on as many cases
                weights[len(cases)] = case_resample_weights(len(cases), resamples, seed)
            w = weights[len(cases)]
            row["paired"][k] = pair_from_resamples(
                resample_case_means(run_values, w),
                resample_case_means(ref_values, w),
                higher_is_better=direction > 0,
                seed=seed,
                retraining_level=retraining_level,
                p_wilcoxon=p_wilcoxon,
            )
        finish_pairs(row["paired"])
        rows.append(row)
    return rows


def _std_over_cases(group: RepeatedRun, label: str, key: str) -> float | None:
    stds = []
    for run in group.repeats:
        values = list(run.case_values(label).get(key, {}).values())
        if len(values) > 1:
            stds.append(float(np.std(values, ddof=1)))
        elif run.cases_csv is None and run.stds.get(label, {}).get(key) is not None:
            stds.append(run.stds[label][key])
    return float(np.mean(stds)) if stds else None
