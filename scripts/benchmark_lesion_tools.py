#!/usr/bin/env python3
"""Time ``inspect`` on a folder of label images and what ``lesions.csv`` adds to ``evaluate``, on one core.

Prints two Markdown tables:

1. ``inspect`` on FOLDER (default: the 30 Open MS Data consensus masks in the repository,
   tests/data/open_ms_data/masks, Lesjak et al. 2017, CC BY 4.0), in this process pinned to one CPU core with
   one thread, imports excluded;
2. ``evaluate`` of every mask of FOLDER against a perturbed copy (shifted one voxel, every sixth lesion
   dropped, specks added), with and without the per-lesion table: file reading included (what a user
   waits for), then the metrics alone (arrays in memory). Paired per case (the variants alternate which
   goes first), summed over the cases; "added" is the median over the repeats of the ratio of the sums.

Usage:

    python scripts/benchmark_lesion_tools.py [--folder DIR] [--cases N] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread everywhere, before numpy and torch load

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "scripts"))
from benchmark_evaluation import timed  # noqa: E402  (the median-of-repeats timer of the evaluation benchmark)

DEFAULT_FOLDER = REPOSITORY / "tests" / "data" / "open_ms_data" / "masks"


def perturbed(reference: np.ndarray, seed: int) -> np.ndarray:
    """A prediction: the reference shifted by one voxel, every sixth lesion dropped, 20 specks added."""
    from nnunet_lesionloss.components import label_components

    rng = np.random.default_rng(seed)
    prediction = np.roll(reference, 1, axis=2)
    labels, count = label_components(prediction > 0, 26, return_count=True)
    prediction[np.isin(labels, np.arange(1, count + 1, 6))] = 0
    for _ in range(20):
        z, y, x = (int(rng.integers(0, s - 2)) for s in reference.shape)
        prediction[z : z + 2, y, x : x + 2] = 1
    return prediction


def write_pairs(folder: Path, cases: int, root: Path) -> tuple[Path, Path]:
    import SimpleITK as sitk

    gt, pred = root / "gt", root / "pred"
    gt.mkdir()
    pred.mkdir()
    for k, path in enumerate(sorted(folder.glob("*.nii.gz"))[:cases]):
        image = sitk.ReadImage(str(path))
        sitk.WriteImage(image, str(gt / path.name), True)
        prediction = sitk.GetImageFromArray(perturbed(sitk.GetArrayFromImage(image), k))
        prediction.CopyInformation(image)
        sitk.WriteImage(prediction, str(pred / path.name), True)
    return gt, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="folder of label images")
    parser.add_argument("--cases", type=int, default=30, help="cases of FOLDER for the evaluate timing")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"{args.folder} not found: pass --folder (a folder of label images)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)
    from nnunet_lesionloss.evaluation.evaluate import LabelSpec, evaluate_arrays, evaluate_case
    from nnunet_lesionloss.evaluation.io import as_integer_labels, read_label_image
    from nnunet_lesionloss.evaluation.lesion_table import lesion_rows, write_lesion_table
    from nnunet_lesionloss.evaluation.settings import EvaluationSettings
    from nnunet_lesionloss.inspection_report import run_inspection

    run_inspection(str(args.folder), tau=False)  # warm-up: numba's cache, lazy imports
    inspect_seconds = timed(lambda: run_inspection(str(args.folder), tau=False), args.repeats)
    n_files = len(list(args.folder.glob("*.nii.gz")))
    print(f"`inspect` on {args.folder} ({n_files} label images), one core, one thread, imports excluded:\n")
    print(f"| command | seconds (median of {args.repeats}) |")
    print("|---|---|")
    print(f"| inspect (counts, sizes, 26/6 splits, border, deep-supervision erasure) | {inspect_seconds:.2f} |")

    settings = EvaluationSettings()
    labels = LabelSpec(groups={"1": (1,)}, allowed={0, 1})
    with tempfile.TemporaryDirectory() as temporary:
        gt, pred = write_pairs(args.folder, args.cases, Path(temporary))
        pairs = [(p.name[: -len(".nii.gz")], p, pred / p.name) for p in sorted(gt.glob("*.nii.gz"))]
        images = {case: (read_label_image(r), read_label_image(q)) for case, r, q in pairs}

        def from_files(case, reference, prediction, table: bool):
            return evaluate_case(case, reference, prediction, labels, settings, lesion_table=table)

        def in_memory(case, reference, prediction, table: bool):
            ref_image, pred_image = images[case]
            results = evaluate_arrays(
                as_integer_labels(ref_image),
                as_integer_labels(pred_image),
                ref_image.spacing,
                labels,
                settings,
                keep_lesion_maps=table,
            )
            if table:
                for key, evaluation in results.items():
                    lesion_rows(
                        case,
                        key,
                        evaluation.lesion_maps,
                        ref_image.spacing,
                        ref_image.origin,
                        ref_image.direction,
                        settings,
                    )

        for job in pairs:  # warm-up
            from_files(*job, True)
        timings = {}
        for name, step in (("files", from_files), ("memory", in_memory)):
            ratios, totals = [], []
            for repeat in range(args.repeats):
                seconds = {False: 0.0, True: 0.0}
                for k, job in enumerate(pairs):  # paired per case, alternating which variant goes first
                    for table in (False, True) if (k + repeat) % 2 == 0 else (True, False):
                        seconds[table] += timed(lambda job=job, table=table, step=step: step(*job, table), 1)
                ratios.append(seconds[True] / seconds[False])
                totals.append((seconds[False], seconds[True]))
            timings[name] = (
                statistics.median(t[0] for t in totals),
                statistics.median(t[1] for t in totals),
                statistics.median(ratios),
            )
        rows = [row for job in pairs for row in from_files(*job, True).lesion_rows]
        write_seconds = timed(lambda: write_lesion_table(Path(temporary) / "lesions.csv", rows), args.repeats)
    print(f"\n`evaluate` of {len(pairs)} cases ({len(rows)} lesion rows), default settings, one core:\n")
    print("| evaluate | without lesions.csv (s) | with lesions.csv (s) | added |")
    print("|---|---|---|---|")
    for name, title in (("files", "files read + all metrics"), ("memory", "all metrics, arrays in memory")):
        without, with_table, ratio = timings[name]
        print(f"| {title} | {without:.2f} | {with_table:.2f} | {100 * (ratio - 1):+.1f} % |")
    without = timings["files"][0]
    print(f"| writing lesions.csv | – | {write_seconds:.3f} | {100 * write_seconds / without:+.1f} % |")


if __name__ == "__main__":
    main()
