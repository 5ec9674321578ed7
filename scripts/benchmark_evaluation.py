#!/usr/bin/env python3
"""Time the lesion-wise evaluation of one 182x218x182 case (MNI 1 mm grid) with about 50 lesions.

Prints a Markdown table: our evaluator per step and in total (file reading excluded), next to panoptica
doing the instance part alone for one matching threshold. Usage:

    python scripts/benchmark_evaluation.py [--repeats 5] [--lesions 50] [--no-panoptica]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.evaluate import LabelSpec, evaluate_arrays
from nnunet_lesionloss.evaluation.matching import OverlapTable
from nnunet_lesionloss.evaluation.metrics import evaluate_binary
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, MatchingSpec
from nnunet_lesionloss.evaluation.surface import SurfacePoints
from nnunet_lesionloss.synthetic import make_lesion_labels

SHAPE = (182, 218, 182)


def make_case(n_lesions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference with ``n_lesions`` blobs; prediction shifted by a voxel, some lesions dropped, some added."""
    reference = make_lesion_labels(SHAPE, n_lesions, radius_range=(1.0, 8.0), seed=seed)
    rng = np.random.default_rng(seed + 1)
    prediction = np.roll(reference, 1, axis=2)
    labels, count = label_components(prediction > 0, 26, return_count=True)
    dropped = rng.choice(np.arange(1, count + 1), size=max(1, count // 6), replace=False)
    prediction[np.isin(labels, dropped)] = 0
    extra = make_lesion_labels(SHAPE, max(1, n_lesions // 5), radius_range=(1.0, 3.0), seed=seed + 7)
    prediction[extra > 0] = 1
    return reference, prediction


def timed(function, repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lesions", type=int, default=50)
    parser.add_argument("--no-panoptica", action="store_true")
    args = parser.parse_args()

    reference, prediction = make_case(args.lesions)
    ref_mask, pred_mask = reference > 0, prediction > 0
    spacing = (1.0, 1.0, 1.0)
    settings = EvaluationSettings()
    _, n_ref = label_components(ref_mask, 26, return_count=True)
    _, n_pred = label_components(pred_mask, 26, return_count=True)
    rows = []

    def components():
        return label_components(ref_mask, 26, return_count=True), label_components(pred_mask, 26, return_count=True)

    (ref_labels, n_r), (pred_labels, n_p) = components()
    rows.append(("connected components (cc3d, both masks, full volume)", timed(components, args.repeats)))
    rows.append(
        (
            "overlap table (np.unique + bincount, full volume)",
            timed(lambda: OverlapTable.build(ref_labels, n_r, pred_labels, n_p), args.repeats),
        )
    )
    rows.append(
        (
            "border voxels of all lesions (both masks)",
            timed(
                lambda: (SurfacePoints.from_labels(ref_labels, n_r), SurfacePoints.from_labels(pred_labels, n_p)),
                args.repeats,
            ),
        )
    )
    rows.append(
        (
            "evaluate_binary: all metrics, 3 matchings (crop included)",
            timed(lambda: evaluate_binary(ref_mask, pred_mask, spacing, settings), args.repeats),
        )
    )
    rows.append(
        (
            "evaluate_arrays: label check + all metrics of label 1",
            timed(
                lambda: evaluate_arrays(
                    reference, prediction, spacing, LabelSpec(groups={"1": (1,)}, allowed={0, 1}), settings
                ),
                args.repeats,
            ),
        )
    )
    if not args.no_panoptica:
        from nnunet_lesionloss.evaluation.panoptica_adapter import panoptica_instance_metrics

        def run_panoptica():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return panoptica_instance_metrics(ref_mask, pred_mask, spacing, MatchingSpec("dsc", 0.5))

        rows.append(
            (
                "panoptica 2.1.7: instance metrics, 1 matching (for comparison)",
                timed(run_panoptica, max(1, args.repeats // 2)),
            )
        )

    print(
        f"Case {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} at 1 mm, {n_ref} reference / {n_pred} predicted lesions "
        f"(26-connected); median of {args.repeats} runs; file reading excluded.\n"
    )
    print("| step | seconds |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
