"""Time of the dynamic lesion candidates of one case: the one-pass extraction (``nnunet_lesionloss.froc_dynamic``)
against the evaluation's per-step one (one labelling of the volume per step) and, with ``--reference``,
report_guided_annotation's ``extract_lesion_candidates(threshold="dynamic-v2")``, on one CPU core.

The case: a 182×218×182 map (the MNI brain grid of BraTS / ISLES-style data) of ``--lesions`` lesion-like
bumps (peak probability 0.3-0.99) and ``--false-positives`` weaker ones (0.02-0.4; 80: about 200 candidates), Gaussian profiles of
radius 1-6 voxels at random places, over a background of 0.001 (below 0.01 / factor: never a candidate).
Every implementation runs on the same map; the table says whether each gives the one-pass labels voxel
for voxel.

    python scripts/bench_dynamic_candidates.py                 # the one-pass and the per-step extraction
    python scripts/bench_dynamic_candidates.py --reference     # + report_guided_annotation (minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

import numpy as np


def make_case(shape: tuple[int, ...], lesions: int, false_positives: int, seed: int) -> np.ndarray:
    """A float32 probability map of Gaussian bumps (module docstring)."""
    rng = np.random.default_rng(seed)
    probability = np.full(shape, 0.001, dtype=np.float32)
    peaks = np.concatenate([rng.uniform(0.3, 0.99, lesions), rng.uniform(0.02, 0.4, false_positives)])
    for peak in peaks:
        sigma = rng.uniform(1.0, 6.0) / 2
        reach = int(np.ceil(3 * sigma))
        centre = [int(rng.integers(reach, s - reach)) for s in shape]
        box = tuple(slice(c - reach, c + reach + 1) for c in centre)
        grid = np.meshgrid(*[np.arange(-reach, reach + 1)] * len(shape), indexing="ij")
        bump = (peak * np.exp(-sum(g.astype(np.float64) ** 2 for g in grid) / (2 * sigma**2))).astype(np.float32)
        np.maximum(probability[box], bump, out=probability[box])
    return probability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[182, 218, 182])
    parser.add_argument("--lesions", type=int, default=50)
    parser.add_argument("--false-positives", type=int, default=80, help="weaker bumps (80: about 200 candidates)")
    parser.add_argument(
        "--factor", type=float, default=2.5, help="dynamic threshold factor (report_guided_annotation's)"
    )
    parser.add_argument("--min-voxels", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="also time report_guided_annotation (one run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from nnunet_lesionloss.evaluation.detection import dynamic_candidates as per_step
    from nnunet_lesionloss.froc_dynamic import dynamic_candidates

    probability = make_case(tuple(args.shape), args.lesions, args.false_positives, args.seed)
    one_pass = lambda: dynamic_candidates(probability, args.factor, args.min_voxels)  # noqa: E731
    one_pass()  # compiles (cached on disk after the first run)
    implementations = {
        "one pass (nnunet_lesionloss.froc_dynamic)": (one_pass, args.repeats),
        "per step (nnunet_lesionloss.evaluation.detection)": (
            lambda: tuple(vars(per_step(probability, args.factor, args.min_voxels)).values()),
            max(1, args.repeats // 5),
        ),
    }
    if args.reference:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
            from report_guided_annotation import extract_lesion_candidates

        def reference():
            _, found, labels = extract_lesion_candidates(
                probability,
                threshold="dynamic-v2",
                num_lesions_to_extract=probability.size,
                min_voxels_detection=args.min_voxels,
                dynamic_threshold_factor=args.factor,
            )
            return labels, np.asarray([confidence for _, confidence in found])

        implementations["report_guided_annotation dynamic-v2"] = (reference, 1)

    expected_labels, expected_confidences = one_pass()
    print(
        f"Dynamic candidates of one {'×'.join(map(str, args.shape))} map, {args.lesions} lesion bumps + "
        f"{args.false_positives} weaker ones, factor {args.factor}, min voxels {args.min_voxels}: "
        f"{len(expected_confidences)} candidates; CPU time of one process, one core\n"
    )
    print("| implementation | runs | median (s) | min (s) | same labels and confidences as the one pass |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, (run, runs) in implementations.items():
        times, result = [], None
        for _ in range(runs):
            start = time.process_time()
            result = run()
            times.append(time.process_time() - start)
        labels, confidences = result
        same = np.array_equal(labels, expected_labels) and np.array_equal(
            np.asarray(confidences, dtype=np.float64), expected_confidences
        )
        print(f"| {name} | {runs} | {statistics.median(times):.3f} | {min(times):.3f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
