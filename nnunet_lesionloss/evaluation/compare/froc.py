"""The FROC comparison of ``compare``, for runs with a FROC analysis (froc.json and froc_cases.json, which
cv-summary and ``froc`` write from nnU-Net's probabilities): the checks that the runs' candidates and matching
are the same, the warnings about runs without an analysis or with failed cases, and the paired difference of
the sensitivity at a rate of false positives per case against the reference run (pooled over the cases both
runs analysed, with a paired case bootstrap; and per case, with a bootstrap CI and the Wilcoxon test,
Holm-corrected across the runs; docs/metrics.md). It returns a :class:`FrocComparison`; report.py and
plots.py write it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from nnunet_lesionloss.evaluation.compare.runs import Run
from nnunet_lesionloss.evaluation.compare.table import paired_difference
from nnunet_lesionloss.evaluation.froc.paired import cases_of, paired_sensitivity_difference, per_case_sensitivity
from nnunet_lesionloss.evaluation.statistics import holm

__all__ = ["FrocComparison", "froc_settings_differences", "froc_notes", "compare_froc"]


@dataclass
class FrocComparison:
    """The FROC analyses of one label side by side, and the paired differences against the reference run."""

    label: str
    fp_rate: float
    reference: int  # index of the reference run
    resamples: int
    entries: dict[int, dict]  # run index -> its analysis of the label (froc.json's entry)
    missing_label: list[str]  # runs whose analysis has no entry of the label
    absent: list[str]  # runs without an analysis
    rates: list[str] = field(default_factory=list)  # the FP-per-case rates of sensitivity_at_fp
    # the paired differences, per run other than the reference (empty when the reference run has no analysis
    # of the label): of the per-case sensitivities (paired_difference, with p_holm), of the pooled ones
    per_case: dict[int, dict] = field(default_factory=dict)
    pooled: dict[int, dict] = field(default_factory=dict)
    # every run with an analysis -> its threshold for fp_rate FP per case (with the paired differences only)
    thresholds: dict[int, float | None] = field(default_factory=dict)

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


def compare_froc(
    runs: list[Run],
    frocs: list,
    label: str,
    reference: int,
    fp_rate: float,
    resamples: int,
    seed: int,
) -> FrocComparison:
    """The runs' analyses of ``label`` and, when the reference run has one, the paired difference of the
    sensitivity at ``fp_rate`` FP per case of every other run against it (docs/metrics.md)."""
    entries = {k: d[0].get(label) for k, d in enumerate(frocs) if d is not None}
    comparison = FrocComparison(
        label=label,
        fp_rate=fp_rate,
        reference=reference,
        resamples=resamples,
        entries={k: e for k, e in entries.items() if e is not None},
        missing_label=[runs[k].name for k, e in entries.items() if e is None],
        absent=[run.name for k, run in enumerate(runs) if frocs[k] is None],
    )
    if not comparison.entries:
        return comparison
    comparison.rates = list(next(iter(comparison.entries.values()))["sensitivity_at_fp"])
    if not comparison.paired:
        return comparison
    cases = {k: cases_of(frocs[k][1], label) for k in comparison.entries}
    per_case = {k: per_case_sensitivity(cases[k], fp_rate) for k in comparison.entries}
    others = [k for k in comparison.entries if k != reference]
    paired = {k: paired_difference(per_case[reference][0], per_case[k][0], resamples, seed) for k in others}
    for k, p in zip(others, holm([paired[k]["p_wilcoxon"] for k in others])):
        paired[k]["p_holm"] = p
    comparison.per_case = paired
    comparison.pooled = {
        k: paired_sensitivity_difference(cases[reference], cases[k], fp_rate, resamples, seed) for k in others
    }
    comparison.thresholds = {k: threshold for k, (_, threshold) in per_case.items()}
    return comparison
