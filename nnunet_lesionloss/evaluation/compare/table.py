"""The comparison table of ``compare``: per metric, each run's mean and std, the best complete run, and the
paired difference of every run against the reference run over the cases both evaluated with the metric
defined (mean, percentile-bootstrap 95 % CI, two-sided Wilcoxon signed-rank p, Holm-corrected per metric
across the runs compared; the statistics are evaluation/statistics.py's). It returns rows; report.py writes
them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnunet_lesionloss.evaluation.compare.runs import Run
from nnunet_lesionloss.evaluation.statistics import BOOTSTRAP_RESAMPLES, bootstrap_ci, holm, wilcoxon_p

__all__ = ["TABLE_METRICS", "best_indices", "paired_difference", "comparison_table"]

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
    """Mean of other − reference over the cases both define, bootstrap CI, Wilcoxon p."""
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


def comparison_table(
    runs: list[Run],
    label: str,
    reference: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    paired: bool = True,
) -> list[dict]:
    """One row per metric of TABLE_METRICS that some run has: ``metric``, ``display``, ``direction``,
    ``values`` and ``stds`` (one per run, None where undefined), ``best`` (indices of the best complete
    runs) and ``paired`` (run index -> :func:`paired_difference` against ``reference``, with ``p_holm``)."""
    eligible = [run.complete for run in runs]
    rows = []
    for key, display, direction in TABLE_METRICS:
        values = [run.means.get(label, {}).get(key) for run in runs]
        if all(v is None for v in values):
            continue
        row = {
            "metric": key,
            "display": display,
            "direction": direction,
            "values": values,
            "stds": [run.stds.get(label, {}).get(key) for run in runs],
            "best": best_indices(values, direction, eligible),
            "paired": {},
        }
        if paired:
            base = runs[reference].case_values(label).get(key, {})
            for k, run in enumerate(runs):
                if k != reference:
                    row["paired"][k] = paired_difference(base, run.case_values(label).get(key, {}), resamples, seed)
            adjusted = holm([row["paired"][k]["p_wilcoxon"] for k in row["paired"]])
            for k, p in zip(row["paired"], adjusted):
                row["paired"][k]["p_holm"] = p
        rows.append(row)
    return rows
