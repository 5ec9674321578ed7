#!/usr/bin/env python
"""Loader cost of the component maps: ComponentMapsTransform on one sample, per patch size and
lesion count, with and without Voronoi cells, over nnU-Net's 3d_fullres deep-supervision scales.

Prints a Markdown table of median milliseconds per sample (what one augmentation worker spends).
    python scripts/bench_loader.py [--sizes 96 128] [--lesions 1 40 400] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from nnunet_lesionloss.synthetic import make_lesion_labels
from nnunet_lesionloss.training.transforms import ComponentMapsTransform


def deep_supervision_targets(labels: np.ndarray, levels: int = 5) -> list[torch.Tensor]:
    """nnU-Net's DownsampleSegForDSTransform for strides of 2: nearest-neighbour at 1, 1/2, 1/4, ..."""
    seg = torch.from_numpy(labels[None].astype(np.int16))
    out = [seg]
    for level in range(1, levels):
        shape = [s // 2**level for s in labels.shape]
        out.append(torch.nn.functional.interpolate(seg[None].float(), shape, mode="nearest-exact")[0].to(torch.int16))
    return out


def median_ms(transform, targets, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        transform(segmentation=list(targets))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--lesions", type=int, nargs="+", default=[1, 40, 400])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one augmentation worker
    print(
        "| patch | lesions | components | ids, full res only (ms) | ids, all scales (ms) | ids + cells, all scales (ms) | ids + cells, full res only (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for lesions in args.lesions:
            labels = make_lesion_labels((size,) * 3, lesions, radius_range=(1.0, 6.0), seed=lesions)
            targets = deep_supervision_targets(labels)
            components = int(
                ComponentMapsTransform(label_groups=[(1,)])(segmentation=targets[0])["segmentation"][1].max()
            )
            row = [
                median_ms(ComponentMapsTransform(label_groups=[(1,)], scales_with_maps=1), targets, args.repeats),
                median_ms(ComponentMapsTransform(label_groups=[(1,)]), targets, args.repeats),
                median_ms(ComponentMapsTransform(label_groups=[(1,)], with_cells=True), targets, args.repeats),
                median_ms(
                    ComponentMapsTransform(label_groups=[(1,)], with_cells=True, scales_with_maps=1),
                    targets,
                    args.repeats,
                ),
            ]
            print(f"| {size}³ | {lesions} | {components} | " + " | ".join(f"{v:.1f}" for v in row) + " |")


if __name__ == "__main__":
    main()
