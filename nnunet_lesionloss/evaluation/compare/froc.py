"""The FROC comparison of ``compare``, for runs with a FROC analysis (froc.json and froc_cases.json, which
cv-summary and ``froc`` write from nnU-Net's probabilities): the checks that the runs' candidates and matching
are the same, the warnings about runs without an analysis or with failed cases, each run's AP, CPM and
sensitivities (a run with repeats: the mean over its repeats, with two-level intervals and a FROC band that
include the retraining), and the paired differences against the reference run of AP, CPM and the sensitivity
at a rate of false positives per case: pooled over the cases both runs analysed, with the two-level bootstrap
of repeat_statistics.py (one repeat each: the paired case bootstrap), P(better) and a verdict; and, for runs of
one repeat, per case, with a bootstrap CI and the Wilcoxon test, Holm-corrected across the runs
(docs/metrics.md). It returns a :class:`FrocComparison`; report.py and plots.py write it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from nnunet_lesionloss.evaluation.compare.groups import RepeatedRun
from nnunet_lesionloss.evaluation.compare.runs import Run
from nnunet_lesionloss.evaluation.compare.table import (
    finish_pairs,
    make_row,
    no_interval,
    pair_from_resamples,
    paired_difference,
)
from nnunet_lesionloss.evaluation.froc.curves import FrocPool, average_precision, froc_grid, sensitivity_at_rates
from nnunet_lesionloss.evaluation.froc.paired import cases_of, per_case_sensitivity
from nnunet_lesionloss.evaluation.froc.settings import rate_key
from nnunet_lesionloss.evaluation.repeat_statistics import RunResamples, compare_repeats, summarise_repeats
from nnunet_lesionloss.evaluation.statistics import case_resample_weights, holm

__all__ = ["FrocComparison", "froc_settings_differences", "froc_notes", "compare_froc", "froc_metric_key"]


@dataclass
class FrocComparison:
    """The FROC analyses of one label side by side, and the paired differences against the reference run."""

    label: str
    fp_rate: float
    reference: int  # index of the reference run
    resamples: int
    entries: dict[int, dict]  # run index -> its analysis of the label (froc.json's entry; repeats: their mean)
    missing_label: list[str]  # runs whose analysis has no entry of the label (in every repeat)
    absent: list[str]  # runs without an analysis
    rates: list[str] = field(default_factory=list)  # the FP-per-case rates of sensitivity_at_fp
    # the paired differences, per run other than the reference (empty when the reference run has no analysis
    # of the label): of the per-case sensitivities (runs of one repeat: paired_difference, with p_holm), of the
    # pooled sensitivities at fp_rate (n, difference, ci_low, ci_high)
    per_case: dict[int, dict] = field(default_factory=dict)
    pooled: dict[int, dict] = field(default_factory=dict)
    # every run of one repeat with an analysis -> its threshold for fp_rate FP per case
    thresholds: dict[int, float | None] = field(default_factory=dict)
    # compare's table rows of AP, CPM and the sensitivity at fp_rate (table.make_row, with their paired part)
    rows: list[dict] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        """Whether there are paired differences (the reference run has an analysis of the label)."""
        return self.reference in self.entries


def froc_settings_differences(runs: list[Run], frocs: list, label: str) -> list[str]:
    """Differences between the FROC settings of the runs that have a FROC analysis of ``label``."""
    recorded = [
        (run.name, froc[0][label]["settings"])
        for run, froc in zip(runs, frocs)
        if froc is not None and label in froc[0]
    ]
    differences = []
    keys: list[str] = []
    for _, settings in recorded:
        keys += [k for k in settings if k not in keys]
    for key in keys:
        if key in ("bootstrap_resamples", "seed"):  # the precision of the CIs, not what is measured
            continue
        values = [json.dumps(settings.get(key)) for _, settings in recorded]
        if len(set(values)) > 1:
            differences.append(f"FROC {key}: " + ", ".join(f"{n}={v}" for (n, _), v in zip(recorded, values)))
    return differences


def froc_notes(runs: list[Run], frocs: list, label: str) -> list[str]:
    """Warnings: a run's analysis that lacks cases, and (when some run has one) the runs without an analysis."""
    with_froc = [k for k, d in enumerate(frocs) if d is not None]
    notes = []
    for k in with_froc:
        failed = frocs[k][0].get(label, {}).get("n_failed", 0)
        if failed:
            notes.append(
                f"{runs[k].name}'s FROC analysis lacks {failed} case(s) (listed in its froc.json): its "
                "curve is over the others"
            )
    if with_froc:
        notes += [
            f"{run.name} has no FROC analysis (no froc.json in {run.folder}; cv-summary writes it when "
            "the folds were validated with nnUNetv2_train --npz): it is missing from the FROC comparison"
            for k, run in enumerate(runs)
            if frocs[k] is None
        ]
    return notes


def froc_metric_key(statistic: str, fp_rate: float | None = None) -> str:
    """The name of a FROC statistic in compare.csv and compare.json: froc_ap, froc_cpm, froc_sensitivity_at_1fp."""
    return f"froc_sensitivity_at_{rate_key(fp_rate)}fp" if statistic == "sensitivity" else f"froc_{statistic}"


def _statistics(pools: list[FrocPool], n: int, rates: list[float], fp_rate: float, weights, grid=None) -> dict:
    """Per statistic (ap, cpm, sensitivity at fp_rate, at each of ``rates``, on ``grid``): ``[resamples,
    repeats]`` (``[resamples, repeats, points]`` for the rates and the grid), each repeat's pool counted with
    each row of ``weights`` (None: once, one row)."""
    rows = np.ones((1, n)) if weights is None else weights
    out = {
        "ap": np.full((len(rows), len(pools)), np.nan),
        "sensitivity": np.full((len(rows), len(pools)), np.nan),
        "rates": np.full((len(rows), len(pools), len(rates)), np.nan),
    }
    if grid is not None:
        out["grid"] = np.full((len(rows), len(pools), len(grid)), np.nan)
    for b, w in enumerate(rows):
        for r, pool in enumerate(pools):
            tp, fp, n_lesions = pool.counts(w)
            if not n_lesions:
                continue
            out["ap"][b, r] = average_precision(tp, fp, n_lesions)
            out["rates"][b, r] = sensitivity_at_rates(tp, fp, n_lesions, n, rates)
            out["sensitivity"][b, r] = sensitivity_at_rates(tp, fp, n_lesions, n, [fp_rate])[0]
            if grid is not None:
                out["grid"][b, r] = sensitivity_at_rates(tp, fp, n_lesions, n, grid)
    out["cpm"] = out["rates"].mean(axis=2)
    return out


def _resamples(observed: dict, resampled: dict, name: str, n: int, point: int | None = None) -> RunResamples:
    pick = (lambda a: a[..., point]) if point is not None else (lambda a: a)
    return RunResamples(pick(observed[name])[0], pick(resampled[name]), n)


def _interval_of_run(run: RunResamples, seed: int, retraining_level: str) -> list[float] | None:
    """The two-level 95 % interval of one run's statistic (its difference to a constant 0)."""
    if not np.isfinite(run.observed).any():
        return None
    zero = RunResamples(np.zeros(1), np.zeros((run.resampled.shape[0], 1)), run.n_cases)
    comparison = compare_repeats(run, zero, higher_is_better=True, seed=seed, retraining_level=retraining_level)
    return None if comparison.ci_low is None else [comparison.ci_low, comparison.ci_high]


def _repeats_entry(
    group: RepeatedRun,
    entries: list[dict],
    cases: list[dict],
    fp_rates: list[str],
    resamples: int,
    seed: int,
    level: str,
) -> dict:
    """A run with repeats as one analysis: per statistic the mean over its repeats (on the cases every repeat
    analysed) and the standard deviation between them, two-level 95 % intervals, and the mean FROC curve on a
    grid of FP rates with its two-level band."""
    common = sorted(set.intersection(*(set(c) for c in cases)))
    n = len(common)
    pools = [FrocPool([c[case] for case in common]) for c in cases]
    rates = [float(r) for r in fp_rates]
    largest = max((e["froc"][-1][0] for e in entries if e.get("froc")), default=0.0)
    grid = froc_grid(largest, rates)
    observed = _statistics(pools, n, rates, rates[0], None, grid)
    weights = case_resample_weights(n, resamples, seed) if n >= 2 else np.zeros((0, n))
    resampled = _statistics(pools, n, rates, rates[0], weights, grid)

    def summary(name: str, point: int | None = None) -> tuple[float | None, float | None, list | None]:
        run = _resamples(observed, resampled, name, n, point)
        repeats = summarise_repeats(run.observed)
        interval = _interval_of_run(run, seed, level) if len(weights) else None
        return repeats.mean, repeats.sd_between_repeats, interval

    ap, cpm = summary("ap"), summary("cpm")
    at_rates = {key: summary("rates", k) for k, key in enumerate(fp_rates)}
    curve = [summary("grid", k) for k in range(len(grid))]
    return {
        "name": group.name,
        "n_repeats": group.n_repeats,
        "ap": ap[0],
        "cpm": cpm[0],
        "sensitivity_at_fp": {key: value[0] for key, value in at_rates.items()},
        "sd_between_repeats": {
            "ap": ap[1],
            "cpm": cpm[1],
            "sensitivity_at_fp": {key: value[1] for key, value in at_rates.items()},
        },
        "ci": {"ap": ap[2], "cpm": cpm[2], "sensitivity_at_fp": {key: value[2] for key, value in at_rates.items()}},
        "froc": [[float(g), c[0]] for g, c in zip(grid, curve, strict=True) if c[0] is not None],
        "froc_band": {
            "fp_per_case": [float(g) for g in grid],
            "low": [None if c[2] is None else c[2][0] for c in curve],
            "high": [None if c[2] is None else c[2][1] for c in curve],
        },
        "n_cases": n,
        "n_failed": max(e["n_failed"] for e in entries),
        "n_lesions": entries[0]["n_lesions"],
        "n_candidates": float(np.mean([e["n_candidates"] for e in entries])),
    }


def compare_froc(
    groups: list[RepeatedRun],
    frocs: list[list],
    label: str,
    reference: int,
    fp_rate: float,
    resamples: int,
    seed: int,
    retraining_level: str = "student-t",
) -> FrocComparison:
    """The runs' analyses of ``label`` (``frocs``: per run, each repeat's load_froc result) and, when the
    reference run has one, the paired differences of every other run against it (docs/metrics.md)."""
    analysed = {
        k: [f[0][label] for f in per_repeat]
        for k, per_repeat in enumerate(frocs)
        if all(f is not None and label in f[0] for f in per_repeat)
    }
    comparison = FrocComparison(
        label=label,
        fp_rate=fp_rate,
        reference=reference,
        resamples=resamples,
        entries={},
        missing_label=[
            groups[k].name
            for k, per_repeat in enumerate(frocs)
            if k not in analysed and any(f is not None for f in per_repeat)
        ],
        absent=[groups[k].name for k, per_repeat in enumerate(frocs) if all(f is None for f in per_repeat)],
    )
    if not analysed:
        return comparison
    cases = {k: [cases_of(f[1], label) for f in frocs[k]] for k in analysed}
    comparison.rates = list(analysed[next(iter(analysed))][0]["sensitivity_at_fp"])
    rates = [float(r) for r in comparison.rates]
    for k, entries in analysed.items():
        group = groups[k]
        comparison.entries[k] = (
            entries[0]
            if group.n_repeats == 1
            else _repeats_entry(group, entries, cases[k], comparison.rates, resamples, seed, retraining_level)
        )
    statistics = ("ap", "cpm", "sensitivity")
    per_repeat = {s: [[None] * g.n_repeats for g in groups] for s in statistics}
    for k in analysed:
        own = sorted(set.intersection(*(set(c) for c in cases[k])))
        values = _statistics([FrocPool([c[x] for x in own]) for c in cases[k]], len(own), rates, fp_rate, None)
        for s in statistics:
            per_repeat[s][k] = [None if not np.isfinite(v) else float(v) for v in values[s][0]]
    displays = {"ap": "AP (FROC)", "cpm": "CPM (FROC)", "sensitivity": f"Sensitivity at {rate_key(fp_rate)} FP/case"}
    rows = {s: make_row(froc_metric_key(s, fp_rate), displays[s], +1, per_repeat[s], groups) for s in statistics}
    if comparison.paired:
        _pair_runs(comparison, groups, cases, rates, seed, retraining_level, rows)
    comparison.rows = list(rows.values())
    return comparison


def _pair_runs(comparison, groups, cases, rates, seed, retraining_level, rows) -> None:
    reference, fp_rate, resamples = comparison.reference, comparison.fp_rate, comparison.resamples
    others = [k for k in comparison.entries if k != reference]
    for k in others:
        common = sorted(set.intersection(*(set(c) for c in [*cases[k], *cases[reference]])))
        n = len(common)
        weights = case_resample_weights(n, resamples, seed) if n else np.zeros((0, 0))
        computed = []
        for g in (k, reference):
            pools = [FrocPool([c[x] for x in common]) for c in cases[g]]
            computed.append(
                (_statistics(pools, n, rates, fp_rate, None), _statistics(pools, n, rates, fp_rate, weights))
            )
        for statistic, row in rows.items():
            if n == 0:
                row["paired"][k] = no_interval(0, None)
                continue
            run, ref = (_resamples(o, r, statistic, n) for o, r in computed)
            row["paired"][k] = pair_from_resamples(
                run, ref, higher_is_better=True, seed=seed, retraining_level=retraining_level
            )
        pair = rows["sensitivity"]["paired"][k]
        comparison.pooled[k] = {
            "n": n,
            "difference": pair["mean_difference"],
            "ci_low": pair["ci_low"],
            "ci_high": pair["ci_high"],
        }
    for row in rows.values():
        finish_pairs(row["paired"])
    single = [k for k in comparison.entries if groups[k].n_repeats == 1]
    if reference not in single:
        return
    per_case = {k: per_case_sensitivity(cases[k][0], fp_rate) for k in single}
    paired = {
        k: paired_difference(per_case[reference][0], per_case[k][0], resamples, seed) for k in single if k != reference
    }
    for k, p in zip(paired, holm([p["p_wilcoxon"] for p in paired.values()]), strict=True):
        paired[k]["p_holm"] = p
    comparison.per_case = paired
    comparison.thresholds = {k: threshold for k, (_, threshold) in per_case.items()}
