#!/usr/bin/env python3
"""Coverage of the intervals of a difference between two runs trained several times, on simulated metric
values with known variance components (nnunet_lesionloss.synthetic.simulate_repeat_studies): for each
scenario and number of repeats, the share of simulated studies whose 95 % interval holds the true difference
(0), and the mean width, for three intervals:

- two-level, Student-t retraining level (compare_repeats' default),
- two-level, repeats resampled with replacement (retraining_level="resample"),
- cases only (each run's repeats averaged, then the cases resampled: retraining ignored).

Then the power of the default interval: for each row, the separable difference repeat_power computes from the
true variances (80 % power), and the share of studies with that true difference whose verdict is "better".

Prints Markdown tables (docs/metrics.md, "Training repeats", shows its output). Usage:

    python scripts/repeat_coverage.py [--studies 1000] [--cases 30] [--repeats 2 3 5 10] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nnunet_lesionloss.evaluation.repeat_statistics import VarianceBudget, repeat_power
from nnunet_lesionloss.synthetic import compare_simulated_studies, simulate_repeat_studies

#: standard deviations of the paired case effect, a retraining's shift and the retraining-by-case term
#: (a Dice-like metric: case values spread by 0.1 around their mean)
SCENARIOS = {
    "retraining dominates": dict(sd_paired=0.01, sd_retraining=0.03, sd_interaction=0.02),
    "mixed": dict(sd_paired=0.03, sd_retraining=0.01, sd_interaction=0.10),
    "cases dominate": dict(sd_paired=0.06, sd_retraining=0.005, sd_interaction=0.05),
    "retraining by case only": dict(sd_paired=0.02, sd_retraining=0.0, sd_interaction=0.15),
}
INTERVALS = ("two-level, Student-t", "two-level, resample", "cases only")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def true_budget(sds: dict, repeats: int, cases: int) -> VarianceBudget:
    """The variance budget of the simulated design from its true standard deviations."""
    per_repeat = sds["sd_retraining"] ** 2 + sds["sd_interaction"] ** 2 / cases
    return VarianceBudget(
        sds["sd_paired"] ** 2 / cases, 2 * per_repeat / repeats, (per_repeat,) * 2, (repeats,) * 2, cases
    )


def realised_power(sds: dict, repeats: int, args, rng: np.random.Generator) -> tuple[float, float]:
    """(separable difference at 80 % power, share of studies with that true difference called better)."""
    separable = repeat_power(true_budget(sds, repeats, args.cases), 1.0).separable_difference
    run, reference = simulate_repeat_studies(
        rng, studies=args.studies, repeats=repeats, cases=args.cases, difference=separable, **sds
    )
    results = compare_simulated_studies(run, reference, resamples=args.resamples)
    better = sum(r.verdict == "better" for r in results)
    return separable, better / args.studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=positive_int, default=1000, help="simulated studies per row (1000)")
    parser.add_argument("--cases", type=positive_int, default=30, help="cases per study (30)")
    parser.add_argument("--repeats", type=positive_int, nargs="+", default=[2, 3, 5, 10], help="repeats per run")
    parser.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples per study (1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.repeats) < 2 or args.cases < 2:
        parser.error("--repeats and --cases must be >= 2")
    start = time.perf_counter()
    print(
        f"Coverage of the 95 % interval of the difference (true difference 0), {args.studies} simulated studies "
        f"of {args.cases} cases per row, {args.resamples} bootstrap resamples; mean width in brackets.\n"
    )
    print("| scenario (sd paired / retraining / retraining×case) | repeats | " + " | ".join(INTERVALS) + " |")
    print("|---|---:|" + "---:|" * len(INTERVALS))
    for index, (name, sds) in enumerate(SCENARIOS.items()):
        for repeats in args.repeats:
            rng = np.random.default_rng((args.seed, index, repeats))
            run, reference = simulate_repeat_studies(
                rng, studies=args.studies, repeats=repeats, cases=args.cases, **sds
            )
            each = [
                compare_simulated_studies(run, reference, resamples=args.resamples),
                compare_simulated_studies(run, reference, resamples=args.resamples, retraining_level="resample"),
                compare_simulated_studies(run, reference, resamples=args.resamples, one_level=True),
            ]
            intervals = np.array([[(r.ci_low, r.ci_high) for r in results] for results in each])  # [interval, study, 2]
            covered = ((intervals[..., 0] <= 0) & (intervals[..., 1] >= 0)).mean(axis=1)
            widths = (intervals[..., 1] - intervals[..., 0]).mean(axis=1)
            label = f"{name} ({sds['sd_paired']} / {sds['sd_retraining']} / {sds['sd_interaction']})"
            cells = " | ".join(f"{c:.1%} ({w:.3f})" for c, w in zip(covered, widths, strict=True))
            print(f"| {label} | {repeats} | {cells} |")
    print(
        "\nPower of the two-level interval (Student-t): the separable difference at 80 % power from the true "
        "variances (repeat_power), and the share of simulated studies with that true difference called better.\n"
    )
    print("| scenario | repeats | separable difference | called better |")
    print("|---|---:|---:|---:|")
    for index, (name, sds) in enumerate(SCENARIOS.items()):
        for repeats in args.repeats:
            separable, power = realised_power(sds, repeats, args, np.random.default_rng((args.seed, index, repeats, 1)))
            print(f"| {name} | {repeats} | {separable:.4f} | {power:.1%} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
