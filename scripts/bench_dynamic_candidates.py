"""Time of the lesion candidates of one case: the dynamic extraction of the FROC analysis
(``nnunet_lesionloss.evaluation.froc.dynamic_extraction``, one compiled pass) against the static one (one
labelling at ``--threshold``), the per-step dynamic extraction the evaluation had before (one labelling of the
volume per step; kept as the oracle tests/per_step_dynamic_candidates.py; ``--per-step``) and
report_guided_annotation's ``extract_lesion_candidates(threshold="dynamic-v2")`` (``--reference``), on one
CPU core. The compile time of the one pass (numba, once per installation: the compiled code is cached on
disk) is measured apart, in fresh processes: with an empty cache and with the cache written.

The case: a 182×218×182 map (the MNI brain grid of BraTS / ISLES-style data) of ``--lesions`` lesion-like
bumps (peak probability 0.3-0.99) and ``--false-positives`` weaker ones (0.02-0.4; 80: about 200
candidates), Gaussian profiles of radius 1-6 voxels at random places, over a background of 0.001 (below
0.01 / factor: never a candidate). Every implementation runs on the same map; the table says whether each
dynamic one gives the one-pass labels and confidences voxel for voxel.

    python scripts/bench_dynamic_candidates.py                          # one pass, static, compile time
    python scripts/bench_dynamic_candidates.py --per-step --reference   # + the per-step and the reference (minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--threshold", type=float, default=0.1, help="static candidates' threshold (FROC default)")
    parser.add_argument("--per-step", action="store_true", help="also time the per-step extraction (one run)")
    parser.add_argument("--reference", action="store_true", help="also time report_guided_annotation (one run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from nnunet_lesionloss.evaluation.froc.candidates import dynamic_candidates, static_candidates

    compile_times = first_call_times()
    probability = make_case(tuple(args.shape), args.lesions, args.false_positives, args.seed)

    def one_pass():
        candidates = dynamic_candidates(probability, args.factor, args.min_voxels)
        return candidates.labels, candidates.confidences

    def static():
        candidates = static_candidates(probability, args.threshold, "full", args.min_voxels)
        return candidates.labels, candidates.confidences

    one_pass()  # compiled or loaded from the cache (timed apart below)
    implementations = {
        "dynamic, one pass (evaluation.froc.dynamic_extraction)": (one_pass, args.repeats),
        f"static at {args.threshold:g} (evaluation.froc.candidates)": (static, args.repeats),
    }
    if args.per_step:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from per_step_dynamic_candidates import per_step_dynamic_candidates

        implementations["dynamic, per step (before; tests/per_step_dynamic_candidates.py)"] = (
            lambda: per_step_dynamic_candidates(probability, args.factor, args.min_voxels),
            1,
        )
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

        implementations["dynamic, report_guided_annotation dynamic-v2"] = (reference, 1)

    expected_labels, expected_confidences = one_pass()
    print(
        f"Lesion candidates of one {'×'.join(map(str, args.shape))} map, {args.lesions} lesion bumps + "
        f"{args.false_positives} weaker ones, factor {args.factor}, min voxels {args.min_voxels}: "
        f"{len(expected_confidences)} dynamic candidates; CPU time of one process, one core\n"
    )
    print("| implementation | runs | candidates | median (s) | min (s) | same labels and confidences as the one pass |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
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
        verdict = "(static)" if name.startswith("static") else ("yes" if same else "NO")
        print(
            f"| {name} | {runs} | {len(confidences)} | {statistics.median(times):.3f} | {min(times):.3f} | {verdict} |"
        )
    print(
        f"\nFirst call of the one pass in a new process, on a 16³ map (wall time, import excluded): "
        f"{compile_times[0]:.2f} s with nothing cached (numba compiles), {compile_times[1]:.2f} s with the cache "
        "written by that call (numba loads it)"
    )


FIRST_CALL = """
import time
import numpy as np
from nnunet_lesionloss.evaluation.froc.dynamic_extraction import dynamic_candidate_labels
start = time.perf_counter()
dynamic_candidate_labels(np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
print(time.perf_counter() - start)
"""


def first_call_times() -> tuple[float, float]:
    """Wall time of the first call in a fresh process with an empty numba cache, then with that cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        times = [
            float(
                subprocess.run(
                    [sys.executable, "-c", FIRST_CALL], env=env, check=True, capture_output=True, text=True
                ).stdout
            )
            for _ in range(2)
        ]
    return times[0], times[1]


if __name__ == "__main__":
    main()
