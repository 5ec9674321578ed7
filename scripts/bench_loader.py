#!/usr/bin/env python
"""Loader cost of the component maps, per sample, next to nnU-Net's own augmentation of that sample.

Two tables (milliseconds per sample, one augmentation worker, 1 thread; CPU time of the process,
``--clock wall`` for elapsed time: on a shared, overloaded machine CPU time is the stable measure
of the work, on an idle one both agree):

1. Voronoi cells of one channel: scipy's exact EDT with indices (``distance_transform_edt(...,
   return_indices=True)`` then a gather, the method this package used before) against
   ``components.voronoi_cells``; speed-up = median over rounds of the paired ratio.
2. One training sample through nnU-Net's 3d_fullres training transforms (``nnUNetTrainer.
   get_training_transforms``: spatial, intensity, mirroring, deep-supervision downsampling; two
   foreground classes) and then through ``ComponentMapsTransform`` as the trainers append it: ids
   only (blob, CAT, MIL, ...: all deep-supervision scales) or ids + cells + cell counts (the CC
   trainers, all scales), with the share of nnU-Net's own time. The spatial transforms are random
   (rotation and scaling each with probability 0.2, which dominate their cost), hence the mean over
   many samples, the same seeds for every row.

    python scripts/bench_loader.py [--sizes 96 128] [--lesions 1 40 400] [--repeats 5] [--samples 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from scipy import ndimage

from nnunet_lesionloss.components import label_components, voronoi_cells
from nnunet_lesionloss.synthetic import make_lesion_labels
from nnunet_lesionloss.training.transforms import ComponentMapsTransform

ROTATION = (-30.0 / 360 * 2.0 * np.pi, 30.0 / 360 * 2.0 * np.pi)  # nnU-Net's 3D rotation range
DS_SCALES = [[1.0 / 2**level] * 3 for level in range(5)]  # 3d_fullres: 5 deep-supervision outputs
CLOCK = time.process_time  # --clock: process_time (cpu) or perf_counter (wall)


def scipy_cells(ids: np.ndarray) -> np.ndarray:
    nearest = ndimage.distance_transform_edt(ids == 0, return_distances=False, return_indices=True)
    return ids[tuple(nearest)]


def paired(functions: dict, argument, repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each function per round, the functions interleaved within each round."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = CLOCK()
            function(argument)
            times[name].append((CLOCK() - start) * 1e3)
    return times


def nnunet_transforms(size: int):
    return nnUNetTrainer.get_training_transforms(
        (size,) * 3,
        ROTATION,
        DS_SCALES,
        mirror_axes=(0, 1, 2),
        do_dummy_2d_data_aug=False,
        use_mask_for_norm=[False],
        is_cascaded=False,
        foreground_labels=[1, 2],
        regions=None,
        ignore_label=None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--lesions", type=int, nargs="+", default=[1, 40, 400])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the Voronoi comparison")
    parser.add_argument("--samples", type=int, default=20, help="augmented samples per row of the loader table")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="CPU time (default) or elapsed time")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)  # one augmentation worker
    voronoi_cells(np.eye(3, dtype=np.int32))  # compile (or load the cached compilation) before timing

    print(f"Voronoi cells of one channel ({args.clock} time, ms, median; speed-up = median of the paired ratios):\n")
    print("| patch | lesions | components | scipy EDT with indices | voronoi_cells | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for lesions in args.lesions:
            labels = make_lesion_labels((size,) * 3, lesions, radius_range=(1.0, 6.0), seed=lesions)
            ids = label_components(labels > 0)
            times = paired({"scipy": scipy_cells, "ours": voronoi_cells}, ids, args.repeats)
            speedup = statistics.median(s / o for s, o in zip(times["scipy"], times["ours"]))
            print(
                f"| {size}³ | {lesions} | {ids.max()} | {statistics.median(times['scipy']):.1f} | "
                f"{statistics.median(times['ours']):.1f} | {speedup:.1f}× |"
            )

    print(
        f"\nOne training sample ({args.clock} time, ms, mean over {args.samples} augmented samples): nnU-Net's 3d_fullres"
    )
    print("training transforms, then the component maps (all deep-supervision scales) as the trainers append them;")
    print("% = share of nnU-Net's own time:\n")
    print("| patch | lesions | nnU-Net transforms | + component ids | % | + ids, cells, cell counts (CC) | % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        augment = nnunet_transforms(size)
        ids_only = ComponentMapsTransform(label_groups=[(1,), (2,)])
        with_cells = ComponentMapsTransform(label_groups=[(1,), (2,)], with_cells=True)
        # the data loader crops a larger patch, so that rotation and scaling leave no empty border
        initial = tuple(int(s) for s in get_patch_size((size,) * 3, ROTATION, ROTATION, ROTATION, (0.85, 1.25)))
        for lesions in args.lesions:
            scale = np.prod(initial) / size**3  # same lesion density in the larger crop
            labels = make_lesion_labels(initial, int(lesions * scale), radius_range=(1.0, 6.0), num_classes=2, seed=1)
            image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, *initial)).astype(np.float32))
            seg = torch.from_numpy(labels[None].astype(np.int16))
            nnunet, ids_ms, cells_ms = [], [], []
            for sample in range(args.samples):
                # the same augmentation draws for every patch size and lesion count
                torch.manual_seed(sample)
                np.random.seed(sample)
                start = CLOCK()
                augmented = augment(image=image.clone(), segmentation=seg.clone())
                nnunet.append((CLOCK() - start) * 1e3)
                targets = augmented["segmentation"]
                for transform, out in ((ids_only, ids_ms), (with_cells, cells_ms)):
                    start = CLOCK()
                    transform(segmentation=list(targets))
                    out.append((CLOCK() - start) * 1e3)
            base, ids_t, cells_t = (statistics.mean(t) for t in (nnunet, ids_ms, cells_ms))
            print(
                f"| {size}³ | {lesions} | {base:.0f} | {ids_t:.0f} | {100 * ids_t / base:.0f}% | "
                f"{cells_t:.0f} | {100 * cells_t / base:.0f}% |"
            )


if __name__ == "__main__":
    main()
