#!/usr/bin/env python3
"""Time choose-threshold's counts: one 182x218x182 case (MNI 1 mm grid) with about 50 lesions, over the
default lesion grid (9 thresholds x 6 minimum sizes), and the nested choice over cached counts.

Prints a Markdown table: the counts as choose-threshold makes them (one labelling per threshold, every
minimum size a selection of its components), the same counts made the direct way (remove the small
components of each thresholded mask, label it again, count), and the nested cross-validation over the
counts of many cases (arithmetic only). File reading excluded. Usage:

    python scripts/benchmark_operating_point.py [--repeats 3] [--lesions 50] [--cases 100] [--shape 182 218 182]
"""

from __future__ import annotations

import argparse

import numpy as np
from benchmark_evaluation import timed  # scripts/ is on the path when a script runs
from scipy.ndimage import gaussian_filter

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.matching import OverlapTable, lesion_hits
from nnunet_lesionloss.evaluation.metrics import remove_small_components
from nnunet_lesionloss.evaluation.operating_point import (
    LESION_MIN_SIZES,
    LESION_THRESHOLDS,
    grid_counts,
    nested_estimate,
)
from nnunet_lesionloss.evaluation.settings import EvaluationSettings
from nnunet_lesionloss.synthetic import make_lesion_labels


def make_case(shape: tuple[int, ...], n_lesions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference blobs, and a probability map: the reference blurred (a soft edge), minus some lesions, plus
    blurred false-positive blobs and low-level noise."""
    reference = make_lesion_labels(shape, n_lesions, radius_range=(1.0, 8.0), seed=seed) > 0
    rng = np.random.default_rng(seed + 1)
    labels, count = label_components(reference, 26, return_count=True)
    missed = np.isin(labels, rng.choice(np.arange(1, count + 1), size=max(1, count // 6), replace=False))
    extra = make_lesion_labels(shape, max(1, 4 * n_lesions), radius_range=(0.5, 3.0), seed=seed + 7) > 0
    signal = 0.9 * (reference & ~missed) + 0.3 * (reference & missed) + rng.uniform(0.2, 0.7) * extra
    probability = np.clip(gaussian_filter(signal.astype(np.float32), 1.0) + rng.normal(0, 0.02, shape), 0, 1)
    return probability.astype(np.float32), reference


def direct_counts(probability, reference, settings, thresholds, min_sizes) -> np.ndarray:
    """The same counts the direct way: per (threshold, minimum size) remove, label and count again."""
    connectivity = settings.connectivity
    reference_ids, n_reference = label_components(reference, connectivity, return_count=True)
    out = np.zeros((len(thresholds), len(min_sizes), 4), dtype=np.int64)
    for ti, threshold in enumerate(thresholds):
        for mi, min_size in enumerate(min_sizes):
            mask = remove_small_components(probability >= threshold, connectivity, (1.0,) * 3, min_voxels=min_size)
            ids, n = label_components(mask, connectivity, return_count=True)
            table = OverlapTable.build(reference_ids, n_reference, ids, n)
            reference_hit, predicted_hit = lesion_hits(table, settings)
            out[ti, mi] = (n_reference, reference_hit.sum(), n, predicted_hit.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lesions", type=int, default=50)
    parser.add_argument("--cases", type=int, default=100, help="cases of the nested choice over cached counts")
    parser.add_argument("--shape", type=int, nargs=3, default=(182, 218, 182))
    args = parser.parse_args()

    shape = tuple(args.shape)
    probability, reference = make_case(shape, args.lesions)
    settings = EvaluationSettings()
    thresholds, min_sizes = LESION_THRESHOLDS, LESION_MIN_SIZES
    counts = grid_counts(probability, reference, (1.0, 1.0, 1.0), settings, thresholds, min_sizes)
    direct = direct_counts(probability, reference, settings, thresholds, min_sizes)
    if not np.array_equal(counts[..., :4], direct):
        raise SystemExit("the two ways disagree: this is a bug")
    mid = thresholds.index(0.5)
    rows = [
        (
            "choose-threshold's counts (1 labelling per threshold, crop included)",
            timed(
                lambda: grid_counts(probability, reference, (1.0,) * 3, settings, thresholds, min_sizes), args.repeats
            ),
        ),
        (
            "the direct way (remove, label again and count per threshold and size)",
            timed(lambda: direct_counts(probability, reference, settings, thresholds, min_sizes), args.repeats),
        ),
    ]
    rng = np.random.default_rng(0)
    cached = np.repeat(counts[None], args.cases, axis=0)
    cached[..., 2] += rng.integers(0, 5, cached.shape[:3])  # cases differ in their false positives
    folds = np.array_split(rng.permutation(args.cases), 5)
    rows.append(
        (
            f"nested choice, 5 folds of {args.cases} cases, over the cached counts",
            timed(
                lambda: nested_estimate(cached, folds, list(range(5)), "lesion_f1", thresholds, min_sizes),
                args.repeats,
            ),
        )
    )
    print(
        f"Case {'x'.join(map(str, shape))} at 1 mm, {counts[0, 0, 0]} reference lesions, "
        f"{counts[mid, 0, 2]} predicted components at threshold 0.5 (26-connected); grid of {len(thresholds)} "
        f"thresholds x {len(min_sizes)} minimum sizes; median of {args.repeats} runs; file reading excluded.\n"
    )
    print("| step | seconds |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
