"""Forward+backward time (and peak extra memory on CUDA) of each loss term against nnU-Net's DC+CE.

Same logits for every loss: B patches of size³ with 2 foreground classes (+ background), lesion
maps from ``make_lesion_labels`` with K requested lesions, component ids by cc3d and Voronoi cells
by scipy's Euclidean distance transform (input preparation only, not timed: the loader does it).
The timed step is softmax + loss + backward, as DC+CE does its own softmax. Prints a Markdown table
with the median and min time over the repeats, the ratio to DC+CE ("× DC+CE", paired per round so
that load changes on a shared machine cancel) and, per loss, how its ratio grows from the smallest
to the largest K (this package's design target: cost flat in K, no loop over lesions). On a shared
CPU, ``--threads 1`` avoids the OpenMP spin-waits that inflate multi-threaded timings when another process holds a core.

    python scripts/bench_losses.py --threads 1                   # CPU, 96³
    python scripts/bench_losses.py --device cuda                 # GPU, 128³
    python scripts/bench_losses.py --threads 1 --check-cost      # + the probability-range check of validate=True

The functional losses are called as the public API calls them (``validate=True``, argument checks
included); the trainers call them with ``validate=False``. ``--check-cost`` adds a row that times the
probability-range check alone on the same probabilities, and a table of its cost per term.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cc3d
import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from scipy import ndimage

from nnunet_lesionloss.config import load_config
from nnunet_lesionloss.losses.checks import check_probability_range
from nnunet_lesionloss.losses.functional import (
    blob_loss,
    cat_loss,
    cc_loss,
    inverse_weighted_loss,
    mil_loss,
    size_penalty_loss,
)
from nnunet_lesionloss.losses.terms import build_term
from nnunet_lesionloss.synthetic import make_lesion_labels

#: the instance-family term of each compound trainer, built from its shipped config
INSTANCE_TERMS = {
    name: build_term("instance_family", load_config(name, env={})["terms"]["instance_family"])
    for name in ("ici", "false", "proximity")
}

# name -> callable(probs [B, C, *spatial], component_ids, voronoi_cells, ignore_mask) -> scalar loss
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
LOSSES: dict[str, LossFn] = {
    "blob Dice+CE": lambda p, ids, cells, ignore: blob_loss(p, ids, ignore_mask=ignore),
    "IWL-blob Dice+CE": lambda p, ids, cells, ignore: blob_loss(p, ids, iwl=True, ignore_mask=ignore),
    "CC Dice+CE": lambda p, ids, cells, ignore: cc_loss(p, ids, cells, ignore_mask=ignore),
    "IWL-CC Dice+CE": lambda p, ids, cells, ignore: cc_loss(p, ids, cells, iwl=True, ignore_mask=ignore),
    "inverse-weighted Dice+CE": lambda p, ids, cells, ignore: inverse_weighted_loss(p, ids, ignore_mask=ignore),
    "CAT": lambda p, ids, cells, ignore: cat_loss(p, ids, ignore_mask=ignore),
    "MIL": lambda p, ids, cells, ignore: mil_loss(p, ids, ignore_mask=ignore),
    "Size Penalty": lambda p, ids, cells, ignore: size_penalty_loss(p, ids > 0, ignore_mask=ignore),
    # the instance family (Rachmadi et al. 2024) as its trainers build it (sub-terms weighted as in their configs), L_seg left out
    "ICI terms (0.5·inst_GT + 0.25·center)": lambda p, ids, cells, ignore: INSTANCE_TERMS["ici"](p, ids, None, ignore),
    "False terms (false_P + false_GT)": lambda p, ids, cells, ignore: INSTANCE_TERMS["false"](p, ids, None, ignore),
    "Proximity terms (0.1·proximity)": lambda p, ids, cells, ignore: INSTANCE_TERMS["proximity"](p, ids, None, ignore),
}

BASELINE = "nnU-Net DC+CE"
CHECK = "probability-range check alone (validate=True)"


def nnunet_dc_and_ce() -> DC_and_CE_loss:
    """nnU-Net's default loss of 3d_fullres (batch_dice False), as nnUNetTrainer._build_loss builds it."""
    return DC_and_CE_loss(
        {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=None,
        dice_class=MemoryEfficientSoftDiceLoss,
    )


def make_inputs(size: int, batch: int, classes: int, lesions: int, seed: int):
    """Label maps, per-class component ids and Voronoi cells (numpy), for one requested K."""
    labels = np.stack(
        [make_lesion_labels((size,) * 3, lesions, num_classes=classes, seed=seed + b) for b in range(batch)]
    )
    component_ids = np.zeros((batch, classes, *labels.shape[1:]), dtype=np.int64)
    voronoi_cells = np.zeros_like(component_ids)
    for b in range(batch):
        for c in range(classes):
            ids = cc3d.connected_components(labels[b] == c + 1, connectivity=26).astype(np.int64)
            component_ids[b, c] = ids
            if ids.max() > 0:
                _, nearest = ndimage.distance_transform_edt(ids == 0, return_indices=True)
                voronoi_cells[b, c] = ids[tuple(nearest)]
    return labels, component_ids, voronoi_cells


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    steps: dict[str, Callable[[], torch.Tensor]], logits: torch.Tensor, repeats: int, warmup: int, baseline: str
) -> dict[str, dict[str, float | None]]:
    """Forward+backward wall time of each step: median and min (ms), the median over rounds of its
    ratio to ``baseline`` timed in the same round, and on CUDA the peak memory above the inputs (MiB).

    The steps are interleaved round by round and the ratio is paired per round, so that a change of
    machine load (shared CPUs) hits a loss and its DC+CE yardstick alike.
    """
    device = logits.device
    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, float | None] = {name: None for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            logits.grad = None
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            step().backward()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if round_index < warmup:
                continue
            times[name].append(elapsed * 1e3)
            if device.type == "cuda":
                extra = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                peaks[name] = extra if peaks[name] is None else max(peaks[name], extra)
    return {
        name: {
            "median": statistics.median(times[name]),
            "min": min(times[name]),
            "ratio": statistics.median(t / t0 for t, t0 in zip(times[name], times[baseline])),
            "peak": peaks[name],
        }
        for name in steps
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=None, help="patch edge in voxels (default 96 on CPU, 128 on CUDA)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=2, help="foreground classes (logits get one more channel)")
    parser.add_argument(
        "--lesions", type=int, nargs="+", default=[1, 10, 100, 1000], help="requested lesions per patch (K)"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--only", nargs="*", default=None, help="names of LOSSES entries to run (default: all)")
    parser.add_argument(
        "--check-cost", action="store_true", help="also time the probability-range check of validate=True alone"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size or (128 if device.type == "cuda" else 96)
    names = [n for n in LOSSES if args.only is None or n in args.only]
    dc_and_ce = nnunet_dc_and_ce()

    rows = []  # (loss, K requested, components per pair, median ms, min ms, × DC+CE, MiB)
    ratios: dict[str, dict[int, float]] = {}  # loss -> K -> × DC+CE
    for lesions in args.lesions:
        labels, component_ids, voronoi_cells = make_inputs(size, args.batch, args.classes, lesions, args.seed)
        components_per_pair = component_ids.reshape(args.batch * args.classes, -1).max(axis=1).mean()
        generator = torch.Generator().manual_seed(args.seed)
        logits = (
            torch.randn((args.batch, args.classes + 1, *labels.shape[1:]), generator=generator)
            .to(device)
            .requires_grad_(True)
        )
        target = torch.from_numpy(labels[:, None].astype(np.int64)).to(device)
        ids = torch.from_numpy(component_ids).to(device)
        cells = torch.from_numpy(voronoi_cells).to(device)

        def baseline(logits=logits, target=target):
            return dc_and_ce(logits, target)

        steps: dict[str, Callable[[], torch.Tensor]] = {BASELINE: baseline}
        for name in names:

            def step(loss_fn=LOSSES[name], logits=logits, ids=ids, cells=cells):
                probs = torch.softmax(logits, 1)[:, 1:]
                return loss_fn(probs, ids, cells, None)

            steps[name] = step
        if args.check_cost:
            probs = torch.softmax(logits.detach(), 1)[:, 1:].contiguous()
            anchor = torch.zeros((), device=device, requires_grad=True)

            def check(probs=probs, anchor=anchor):
                check_probability_range(probs)
                return anchor * 1.0  # a trivial graph: the step's backward costs nothing

            steps[CHECK] = check
        measured = time_steps(steps, logits, args.repeats, args.warmup, BASELINE)
        for name, result in measured.items():
            rows.append(
                (name, lesions, components_per_pair, result["median"], result["min"], result["ratio"], result["peak"])
            )
            ratios.setdefault(name, {})[lesions] = result["ratio"]

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"Forward+backward, batch {args.batch}, {args.classes} foreground classes, {size}³, {device_name}, "
        f"median of {args.repeats} after {args.warmup} warm-up, torch {torch.__version__}\n"
    )
    print("| loss | K requested | components per (b, c) | median (ms) | min (ms) | × DC+CE | peak extra memory (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, lesions, per_pair, median_ms, min_ms, ratio, mib in sorted(
        rows, key=lambda r: (list(ratios).index(r[0]), r[1])
    ):
        memory = "n/a (CPU)" if mib is None else f"{mib:.0f}"
        print(f"| {name} | {lesions} | {per_pair:.1f} | {median_ms:.1f} | {min_ms:.1f} | {ratio:.2f} | {memory} |")
    print("\n× DC+CE: median over the rounds of (loss time / DC+CE time in the same round).")
    first, last = args.lesions[0], args.lesions[-1]
    # DC+CE does not depend on K, so normalising by it (same round) cancels load drift between the K runs
    print(f"\n(× DC+CE at K = {last}) / (× DC+CE at K = {first}): growth with the number of lesions, flat ≈ 1:\n")
    print("| loss | ratio |")
    print("| --- | ---: |")
    for name, per_k in ratios.items():
        if name not in (BASELINE, CHECK):
            print(f"| {name} | {per_k[last] / per_k[first]:.2f} |")
    if args.check_cost:
        print("\nCost of the probability-range check (validate=True) as a share of each term's forward+backward")
        print("((check × DC+CE) / (term × DC+CE), same rounds; the trainers call the terms with validate=False):\n")
        print("| term | " + " | ".join(f"K={k}" for k in args.lesions) + " |")
        print("| --- |" + " ---: |" * len(args.lesions))
        for name, per_k in ratios.items():
            if name not in (BASELINE, CHECK):
                shares = [100 * ratios[CHECK][k] / per_k[k] for k in args.lesions]
                print(f"| {name} | " + " | ".join(f"{share:.1f}%" for share in shares) + " |")


if __name__ == "__main__":
    main()
