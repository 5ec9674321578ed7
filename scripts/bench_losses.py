"""Forward+backward time and peak extra memory of each loss term against nnU-Net's DC+CE.

Same logits for every loss: B patches of size³ with 2 foreground classes (+ background), lesion
maps from ``make_lesion_labels`` with K requested lesions. The targets are what the trainers' loader
produces: ``ComponentMapsTransform`` packs component ids, Voronoi cells and the cells' voxel counts
into the target (input preparation, not timed: the augmentation workers do it). A step is what a
training step does with the network's output: the probabilities of the trainers
(``foreground_probabilities``: softmax, one channel per class) + the term + backward; DC+CE gets the
logits as in nnU-Net. With ``--autocast`` (default on CUDA: float16, as nnU-Net's trainer) the step
runs under ``torch.autocast`` and the logits enter it in that dtype, as a network's output would;
the terms compute in float32 themselves.

Time (default): the median and min over the repeats and the ratio to DC+CE ("× DC+CE", paired per
round so that load changes on a shared machine cancel), then per loss how its ratio grows from the
smallest to the largest K (this package's design target: cost flat in K, no loop over lesions);
every K is timed in every round, so that the growth is paired per round too.
On a shared CPU, ``--threads 1`` avoids the OpenMP spin-waits that inflate multi-threaded timings,
and the default clock there is the process's CPU time (``--clock cpu``), which other jobs on an
oversubscribed machine inflate far less than wall time; on CUDA it is wall time.

Memory (``--memory``): the peak memory of one step of DC+CE alone and, per term, how much more the
step DC+CE + term needs at its peak (what adding the term to a training step costs), for each K.
CUDA: ``torch.cuda.max_memory_allocated`` above the memory held before the step. CPU: the peak of
the tensors allocated during the step, from torch.profiler's memory events (tensors only: the host
numpy buffers of the instance family's prediction labelling, about 9 bytes per voxel, are not
tensors and not counted).

    python scripts/bench_losses.py --threads 1                   # CPU, 96³, time
    python scripts/bench_losses.py --threads 1 --memory          # CPU, 96³, peak memory
    python scripts/bench_losses.py --device cuda                 # GPU, 128³, float16 autocast
    python scripts/bench_losses.py --threads 1 --check-cost      # + every term with its input checks (validate=True)

The terms are called as the trainers call them (``validate=False``). ``--check-cost`` times every term
a second time with ``validate=True`` in the same round, on fresh tensor objects as a training loop gives
them, and prints what the checks add as a share of the term's forward + backward.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_lesionloss.config import load_config
from nnunet_lesionloss.losses.compound import foreground_probabilities
from nnunet_lesionloss.losses.functional import (
    blob_loss,
    cat_loss,
    cc_loss,
    inverse_weighted_loss,
    mil_loss,
    size_penalty_loss,
)
from nnunet_lesionloss.losses.predicted_components import predicted_components  # the labelling step, timed alone
from nnunet_lesionloss.losses.terms import build_term
from nnunet_lesionloss.synthetic import make_lesion_labels
from nnunet_lesionloss.targets import TargetLayout, split_cell_counts, split_target
from nnunet_lesionloss.training.transforms import ComponentMapsTransform

#: the instance-family term of each compound trainer, built from its shipped config
INSTANCE_TERMS = {
    name: build_term("instance_family", load_config(name, env={})["terms"]["instance_family"])
    for name in ("ici", "false", "proximity")
}

# name -> callable(probs [B, C, *spatial], maps, validate) -> scalar loss; maps: ids, cells, counts (the loader's)
LossFn = Callable[[torch.Tensor, dict, bool], torch.Tensor]
LOSSES: dict[str, LossFn] = {
    "blob Dice+CE": lambda p, m, v: blob_loss(p, m["ids"], validate=v),
    "IWL-blob Dice+CE": lambda p, m, v: blob_loss(p, m["ids"], iwl=True, validate=v),
    "CC Dice+CE": lambda p, m, v: cc_loss(p, m["ids"], m["cells"], cell_counts=m["counts"], validate=v),
    "CC Dice+CE, lesion-free pairs skipped": lambda p, m, v: cc_loss(
        p, m["ids"], m["cells"], cell_counts=m["counts"], empty_pairs="skip", validate=v
    ),
    "IWL-CC Dice+CE": lambda p, m, v: cc_loss(p, m["ids"], m["cells"], iwl=True, cell_counts=m["counts"], validate=v),
    # the functional API without the loader's cell counts: the loss counts the cells' voxels itself
    "CC Dice+CE, cells counted by the loss": lambda p, m, v: cc_loss(p, m["ids"], m["cells"], validate=v),
    "inverse-weighted Dice+CE": lambda p, m, v: inverse_weighted_loss(p, m["ids"], validate=v),
    "CAT": lambda p, m, v: cat_loss(p, m["ids"], validate=v),
    "MIL": lambda p, m, v: mil_loss(p, m["ids"], validate=v),
    "Size Penalty": lambda p, m, v: size_penalty_loss(p, m["ids"] > 0, validate=v),
    # the instance family (Rachmadi et al. 2024) as its trainers build it (sub-terms weighted as in their configs), L_seg left out
    "ICI terms (0.5·inst_GT + 0.25·center)": lambda p, m, v: INSTANCE_TERMS["ici"](p, m["ids"], validate=v),
    "False terms (false_P + false_GT)": lambda p, m, v: INSTANCE_TERMS["false"](p, m["ids"], validate=v),
    "Proximity terms (0.1·proximity)": lambda p, m, v: INSTANCE_TERMS["proximity"](p, m["ids"], validate=v),
}

BASELINE = "nnU-Net DC+CE"
LABELLING = "(in the 3 rows above) labelling the prediction on the host, forward only"
INSTANCE_FAMILY = [name for name in LOSSES if name.split()[0] in ("ICI", "False", "Proximity")]
AUTOCAST = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}
VALIDATED = " (validate=True)"  # suffix of the rows that time a term with its input checks


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
    """nnU-Net's target [B, 1, *spatial] and the component maps the loader packs with it, for one K."""
    groups = [(c,) for c in range(1, classes + 1)]
    transform = ComponentMapsTransform(label_groups=groups, with_cells=True)
    layout = TargetLayout(1, torch.int16, classes, True, None)
    packed = torch.stack(
        [
            transform(
                segmentation=torch.from_numpy(
                    make_lesion_labels((size,) * 3, lesions, num_classes=classes, seed=seed + b)[None].astype(np.int16)
                )
            )["segmentation"]
            for b in range(batch)
        ]
    )
    seg, ids, cells = split_target(packed, layout)
    # channel views of the packed target, as the loss gets them in training (no copy)
    maps = {"ids": ids, "cells": cells, "counts": split_cell_counts(packed, layout)}
    return seg.long(), maps, groups


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_steps(
    names, dc_and_ce, logits, target, maps, groups, amp_dtype, check_cost=False
) -> dict[str, Callable[[], torch.Tensor]]:
    """One callable per loss: the forward of one training step on ``logits`` (autocast as nnU-Net's trainer)."""
    device = logits.device

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def output():  # the network's output: in the autocast dtype under autocast
        return logits.to(amp_dtype) if amp_dtype is not None else logits

    def baseline():
        with autocast():
            return dc_and_ce(output(), target)

    steps: dict[str, Callable[[], torch.Tensor]] = {BASELINE: baseline}
    for name in names:

        def step(loss_fn=LOSSES[name]):
            with autocast():
                return loss_fn(foreground_probabilities(output(), groups), maps, False)

        steps[name] = step
        if check_cost:

            def validated_step(loss_fn=LOSSES[name]):
                # fresh view objects of the maps, as a training loop gives new tensors every step: the checks
                # that read every voxel run once per distinct input (losses.checks.checked_once) and must not
                # be skipped here because the benchmark repeats the same maps
                fresh = {key: value[...] for key, value in maps.items()}
                with autocast():
                    return loss_fn(foreground_probabilities(output(), groups), fresh, True)

            steps[name + VALIDATED] = validated_step
    if any(name in INSTANCE_FAMILY for name in names):
        # what the three instance-family rows spend on the host: the prediction mask to the host, cc3d
        # per (b, c) pair, the statistics of the predicted components, the labels back (no backward)
        mask = (foreground_probabilities(logits.detach(), groups) > 0.5).reshape(logits.shape[0] * len(groups), -1)
        spatial = tuple(logits.shape[2:])

        def labelling():
            predicted_components(mask, spatial, 26, "cc3d", torch.float32, True)

        steps[LABELLING] = labelling
    return steps


def time_steps(
    steps: dict[tuple[int, str], tuple[Callable[[], torch.Tensor], torch.Tensor]],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[tuple[int, str], list[float]], dict[tuple[int, str], float | None]]:
    """Forward+backward time (ms, by ``clock``) of every (K, loss) step per round, and on CUDA its peak
    memory above the inputs (MiB). ``steps`` maps (K, loss) to (step, the logits it differentiates).

    All steps, of every K, are interleaved round by round, so that the ratios paired per round (a loss
    against DC+CE, and a loss at the largest K against itself at the smallest K) see the same
    machine load: on shared CPUs the load changes between rounds.
    """
    times: dict[tuple[int, str], list[float]] = {key: [] for key in steps}
    peaks: dict[tuple[int, str], float | None] = {key: None for key in steps}
    for round_index in range(warmup + repeats):
        for key, (step, logits) in steps.items():
            device = logits.device
            logits.grad = None
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = clock()
            loss = step()
            if loss is not None:
                loss.backward()
            synchronize(device)
            elapsed = clock() - start
            if round_index < warmup:
                continue
            times[key].append(elapsed * 1e3)
            if device.type == "cuda":
                extra = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                peaks[key] = extra if peaks[key] is None else max(peaks[key], extra)
    return times, peaks


def peak_memory(step: Callable[[], torch.Tensor], logits: torch.Tensor) -> float:
    """Peak bytes allocated during one forward+backward of ``step`` above what was allocated before it."""
    logits.grad = None
    device = logits.device
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step().backward()
        synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    # torch's profiler backend logs two lines to the process's stderr per profiled step (not through
    # Python's sys.stderr): silence file descriptor 2 around the step so the table stays readable
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step().backward()
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as file:
            events = json.load(file)["traceEvents"]
    # "Total Allocated" is the allocator's total after each event: its maximum minus the total
    # before the first event of the step is the step's peak
    memory_events = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    if not memory_events:
        return 0.0
    first = memory_events[0]["args"]
    before = first["Total Allocated"] - first["Bytes"]
    return float(max(e["args"]["Total Allocated"] for e in memory_events) - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=None, help="patch edge in voxels (default 96 on CPU, 128 on CUDA)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=2, help="foreground classes (logits get one more channel)")
    parser.add_argument("--lesions", type=int, nargs="+", default=None, help="requested lesions per patch (K)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--only", nargs="*", default=None, help="names of LOSSES entries to run (default: all)")
    parser.add_argument(
        "--autocast",
        choices=sorted(AUTOCAST),
        default=None,
        help="autocast dtype around each step (default: fp16 on CUDA as nnU-Net's trainer, none on CPU)",
    )
    parser.add_argument("--memory", action="store_true", help="peak memory of DC+CE + each term instead of time")
    parser.add_argument(
        "--check-cost", action="store_true", help="also time every term with validate=True (its input checks)"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=None,
        help="wall: elapsed time; cpu: CPU time of this process, which a shared, overloaded machine inflates "
        "far less (with --threads 1 it is the step's work). Default: cpu on the CPU, wall on CUDA",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size or (128 if device.type == "cuda" else 96)
    lesions_list = args.lesions or ([1, 100, 1000] if args.memory else [1, 10, 100, 1000])
    amp_name = args.autocast or ("fp16" if device.type == "cuda" else "none")
    names = [n for n in LOSSES if args.only is None or n in args.only]
    dc_and_ce = nnunet_dc_and_ce()
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )

    memory: dict[str, dict[int, float]] = {}  # loss -> K -> bytes (DC+CE: its peak; a term: extra over DC+CE)
    components: dict[int, float] = {}
    timed: dict[tuple[int, str], tuple[Callable[[], torch.Tensor], torch.Tensor]] = {}
    voxels = args.batch * args.classes * size**3
    for lesions in lesions_list:
        target, maps, groups = make_inputs(size, args.batch, args.classes, lesions, args.seed)
        components[lesions] = float(maps["ids"].reshape(args.batch * args.classes, -1).amax(dim=1).float().mean())
        generator = torch.Generator().manual_seed(args.seed)
        logits = (
            torch.randn((args.batch, args.classes + 1, *target.shape[2:]), generator=generator)
            .to(device)
            .requires_grad_(True)
        )
        target = target.to(device)
        if device.type != "cpu":  # one packed tensor to the device, as nnU-Net's train_step moves the target
            packed_maps = torch.cat([maps["ids"], maps["cells"], maps["counts"]], dim=1).to(device)
            maps = dict(zip(("ids", "cells", "counts"), packed_maps.split(args.classes, dim=1)))
        steps = make_steps(
            names, dc_and_ce, logits, target, maps, groups, AUTOCAST[amp_name], args.check_cost and not args.memory
        )
        if not args.memory:
            timed.update({(lesions, name): (step, logits) for name, step in steps.items()})
            continue
        baseline = steps[BASELINE]
        steps.pop(LABELLING, None)
        for step in steps.values():  # warm-up: lazy initialisations and compilation
            step().backward()
        base_peak = peak_memory(baseline, logits)
        memory.setdefault(BASELINE, {})[lesions] = base_peak
        for name in names:
            combined = steps[name]
            extra = peak_memory(lambda b=baseline, c=combined: b() + c(), logits) - base_peak
            memory.setdefault(name, {})[lesions] = extra

    header = (
        f"batch {args.batch}, {args.classes} foreground classes, {size}³, {device_name}, autocast {amp_name}, "
        f"torch {torch.__version__}"
    )
    if args.memory:
        print(f"Peak memory of one forward+backward, {header}\n")
        columns = " | ".join(f"K={k} ({components[k]:.1f} per (b,c))" for k in lesions_list)
        print(f"| step | {columns} |")
        print("|---|" + "---:|" * len(lesions_list))

        def cell(size_bytes: float) -> str:  # MiB, and in units of one V-sized float32 tensor
            return f"{size_bytes / 2**20:.0f} ({size_bytes / (voxels * 4):.1f} V)"

        print(f"| {BASELINE}: peak (MiB) | " + " | ".join(cell(memory[BASELINE][k]) for k in lesions_list) + " |")
        for name in names:
            print(f"| + {name} (MiB more) | " + " | ".join(cell(memory[name][k]) for k in lesions_list) + " |")
        largest = lesions_list[-1]
        print(
            f"\nFor scale: one K×V float32 tensor at K = {largest} ({components[largest]:.0f} components per (b, c)) "
            f"would take {components[largest] * voxels * 4 / 2**20:,.0f} MiB; one V-sized float32 tensor takes "
            f"{voxels * 4 / 2**20:.0f} MiB (V = {voxels:,} voxels of the B·C probability maps; "
            '"n V" above = n such tensors).'
        )
        return

    clock_name = args.clock or ("cpu" if device.type == "cpu" else "wall")
    times, peaks = time_steps(
        timed, args.repeats, args.warmup, time.process_time if clock_name == "cpu" else time.perf_counter
    )

    def ratios(lesions: int, name: str) -> list[float]:  # per round: loss time / DC+CE time, same K
        return [t / t0 for t, t0 in zip(times[lesions, name], times[lesions, BASELINE])]

    print(
        f"Forward+backward, {header}, {clock_name} time, median of {args.repeats} rounds after {args.warmup} warm-up\n"
    )
    print("| loss | K requested | components per (b, c) | median (ms) | min (ms) | × DC+CE | peak extra memory (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [BASELINE, *names] + [extra for extra in (LABELLING,) if (lesions_list[0], extra) in times]
    for name in rows:
        for lesions in lesions_list:
            peak = peaks[lesions, name]
            print(
                f"| {name} | {lesions} | {components[lesions]:.1f} | {statistics.median(times[lesions, name]):.1f} | "
                f"{min(times[lesions, name]):.1f} | {statistics.median(ratios(lesions, name)):.2f} | "
                f"{'n/a (CPU)' if peak is None else f'{peak:.0f}'} |"
            )
    print("\n× DC+CE: median over the rounds of (loss time / DC+CE time in the same round).")
    first, last = lesions_list[0], lesions_list[-1]
    print(
        f"\nGrowth with the number of lesions, flat ≈ 1: median over the rounds of (× DC+CE at K = {last}) / "
        f"(× DC+CE at K = {first}), both in the same round:\n"
    )
    print("| loss | growth |")
    print("| --- | ---: |")
    for name in names:
        growth = [r / r0 for r, r0 in zip(ratios(last, name), ratios(first, name))]
        print(f"| {name} | {statistics.median(growth):.2f} |")
    if args.check_cost:
        print("\nCost of the input checks (validate=True) as a share of each term's forward+backward: median over the")
        print("rounds of (time with validate=True / time with validate=False) - 1, both in the same round; every call")
        print("gets fresh tensors, as in a training loop (the checks of a tensor that already passed are skipped):\n")
        print("| term | " + " | ".join(f"K={k}" for k in lesions_list) + " |")
        print("| --- |" + " ---: |" * len(lesions_list))
        for name in names:
            shares = [
                100 * statistics.median(c / t - 1 for c, t in zip(times[k, name + VALIDATED], times[k, name]))
                for k in lesions_list
            ]
            print(f"| {name} | " + " | ".join(f"{share:.1f}%" for share in shares) + " |")


if __name__ == "__main__":
    main()
