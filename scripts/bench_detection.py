"""Benchmark of the FROC analysis of one case against picai_eval's ``evaluate_case``.

One 182×218×182 case (the MNI 1 mm grid) with 50 reference lesions (balls of radius 1-6 voxels) and 200
candidates (balls of radius 1-5, one confidence each, no two touching; 60 of them on a lesion), on one core:

- ``ours (detection map)``: what picai_eval's evaluate_case does on the same maps: the candidates of the
  detection map, the reference lesions, the overlap table and the matching (``detection_map_candidates`` +
  ``match_case``);
- ``ours (probabilities, static)``: from a probability map instead (``match_probability``: crop, static
  candidates at p >= 0.1, matching), as the ``froc`` command runs per case and label with ``--candidates static``;
- ``ours (probabilities, dynamic)``: the same with report_guided_annotation's dynamic extraction (the
  default of ``froc``; one compiled pass, compiled before timing);
- ``picai_eval evaluate_case``: its candidate × lesion loop over full-volume masks (one run).

Both give the same lesion list (checked before timing). Usage: ``python scripts/bench_detection.py
[--repeats 5] [--threads 1]``; prints a table (ours: median wall time over the repeats; picai_eval, which
takes minutes here: one run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

SHAPE = (182, 218, 182)


def _balls(shape, count, radii, rng, forbidden=None, touching_allowed=True):
    """Label map of ``count`` balls; with ``forbidden`` (a boolean map), balls must avoid it and each other."""
    import numpy as np
    from scipy import ndimage

    labels = np.zeros(shape, dtype=np.int32)
    blocked = np.zeros(shape, dtype=bool) if forbidden is None else forbidden.copy()
    k = 0
    while k < count:
        radius = int(rng.integers(radii[0], radii[1] + 1))
        centre = [int(rng.integers(radius + 1, s - radius - 1)) for s in shape]
        box = tuple(slice(c - radius - 1, c + radius + 2) for c in centre)
        grid = np.ogrid[tuple(slice(-radius - 1, radius + 2) for _ in shape)]
        ball = sum(g**2 for g in grid) <= radius**2
        if not touching_allowed and (blocked[box] & ndimage.binary_dilation(ball, np.ones((3, 3, 3)))).any():
            continue
        k += 1
        labels[box][ball] = k
        blocked[box] |= ndimage.binary_dilation(ball, np.ones((3, 3, 3)))
    return labels


def make_case(shape=SHAPE, n_lesions: int = 50, n_candidates: int = 200, seed: int = 0):
    """(reference mask, detection map, probability map) of the benchmark case."""
    import numpy as np

    rng = np.random.default_rng(seed)
    reference = _balls(shape, n_lesions, (1, 6), rng) > 0
    on_lesion = np.zeros(shape, dtype=np.int32)
    centres = np.argwhere(reference)
    chosen = centres[rng.choice(len(centres), min(len(centres), int(0.3 * n_candidates)), replace=False)]
    occupied = np.zeros(shape, dtype=bool)
    k = 0
    for centre in chosen:  # candidates on lesions, no two touching
        radius = int(rng.integers(1, 4))
        box = tuple(slice(max(c - radius - 1, 0), c + radius + 2) for c in centre)
        grid = np.ogrid[tuple(slice(b.start - c, b.stop - c) for b, c in zip(box, centre))]
        ball = sum(g**2 for g in grid) <= radius**2
        from scipy import ndimage

        if (occupied[box] & ndimage.binary_dilation(ball, np.ones((3, 3, 3)))).any():
            continue
        k += 1
        on_lesion[box][ball] = k
        occupied[box] |= ndimage.binary_dilation(ball, np.ones((3, 3, 3)))
    elsewhere = _balls(shape, n_candidates - k, (1, 5), rng, forbidden=occupied | reference, touching_allowed=False)
    candidates = np.where(elsewhere > 0, elsewhere + k, on_lesion)
    confidences = rng.uniform(0.1, 1.0, candidates.max() + 1).astype(np.float32)
    confidences[0] = 0
    detection_map = confidences[candidates]
    # a probability map whose p >= 0.1 components are the candidates: the confidence at the centre, lower around
    probability = (detection_map * 0.999).astype(np.float32)
    return reference, detection_map, probability


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), help="default 182 218 182")
    parser.add_argument("--lesions", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=200)
    args = parser.parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    import numpy as np

    with contextlib.redirect_stdout(io.StringIO()):  # picai_eval prints a banner on import
        from picai_eval.eval import evaluate_case

    from nnunet_lesionloss.evaluation.froc import (
        FrocSettings,
        detection_map_candidates,
        match_case,
        match_probability,
    )

    shape = tuple(args.shape)
    reference, detection_map, probability = make_case(shape, args.lesions, args.candidates)
    settings = FrocSettings()

    def ours_map():
        return match_case(reference, detection_map_candidates(detection_map), settings)

    def ours_static():
        return match_probability(probability, reference, settings.replace(candidates="static"))

    def ours_dynamic():
        return match_probability(probability, reference, settings.replace(candidates="dynamic"))

    def picai():
        return evaluate_case(detection_map, reference.astype(np.int32))[0]

    start = time.perf_counter()
    theirs = picai()  # minutes: run once, timed, and its lesion list checked against ours
    picai_seconds = time.perf_counter() - start
    mine = ours_map()
    n_candidates = int(detection_map_candidates(detection_map).n)
    expected = sorted(
        [(1, float(c)) for c in mine.lesion_confidence] + [(0, float(c)) for c in mine.false_positive_confidence]
    )
    assert expected == sorted((int(a), float(b)) for a, b, _ in theirs), "ours and picai_eval's lesion lists differ"
    print(
        f"one case of {'x'.join(map(str, shape))} voxels, {mine.n_lesions} reference lesions, {n_candidates} candidates; "
        f"{args.threads} thread(s); ours: median of {args.repeats} runs, picai_eval: one run"
    )
    rows = []
    ours_dynamic()  # numba compiles the dynamic extraction (or loads it from its cache) on the first call
    jobs = (
        ("ours (detection map)", ours_map),
        ("ours (probabilities, static)", ours_static),
        ("ours (probabilities, dynamic)", ours_dynamic),
    )
    for name, job in jobs:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
        rows.append((name, float(np.median(times))))
    rows.append(("picai_eval evaluate_case", picai_seconds))
    base = rows[-1][1]
    print("| method | seconds | picai_eval / method |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {base / seconds:.1f}× |")


if __name__ == "__main__":
    main()
