"""Time of one nnU-Net training iteration with each trainer family, as a multiple of nnU-Net's own trainer.

One iteration is what ``nnUNetTrainer.train_step`` does with a batch the loader has already produced:
the network's forward, the loss, the backward, gradient clipping and the optimizer step (the loader and
its augmentation are excluded; ``scripts/bench_loader.py`` measures them). Every trainer runs nnU-Net's
own ``train_step`` on the same network (one PlainConvUNet, the topology nnU-Net's default planner gives
the patch: ``get_pool_and_conv_props`` at 1 mm, 32-320 features, two convolutions per stage), restored to
the same weights before every step, so that each trainer's step differs from nnU-Net's by its loss alone.
Each trainer gets the batch its own validation transforms make of the same image and lesion map (deep
supervision targets, and the component maps, Voronoi cells and cell counts its terms need, packed into the
target as in training). Synthetic data: ``make_lesion_labels`` with ``--lesions`` lesions per patch and
``--classes`` lesion classes (the demo: one), an image of the lesions plus noise.

Every round times every trainer once, in turn; the ratio to nnUNetTrainer is paired per round (median of
the per-round ratios), so that load changes on a shared machine cancel. On the CPU the default clock is
the process's CPU time (``--clock cpu``; with ``--threads 1`` it is the step's work), on CUDA wall time.

    python scripts/bench_training_step.py --threads 1 --patch 48           # the demo's patch (48³), CPU
    python scripts/bench_training_step.py --threads 1 --patch 128 --repeats 3
    python scripts/bench_training_step.py --device cuda --patch 128        # GPU (float16 autocast, as nnU-Net)

Trainers: one per config family (``--trainers`` to choose). Nothing is written outside a temporary folder
(nnU-Net's results folder of the throw-away trainers), removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

#: nnU-Net's own trainer and one trainer per config family of this package
DEFAULT_TRAINERS = (
    "nnUNetTrainer",
    "nnUNetTrainerDiceCE",
    "nnUNetTrainerTversky",
    "nnUNetTrainerFocalTversky",
    "nnUNetTrainerBlob",
    "nnUNetTrainerIWLBlob",
    "nnUNetTrainerCC",
    "nnUNetTrainerIWLCC",
    "nnUNetTrainerInvWeight",
    "nnUNetTrainerCATMIL",
    "nnUNetTrainerSizePenalty",
    "nnUNetTrainerSizePenaltyDTS",
    "nnUNetTrainerSizePenaltyFSD",
    "nnUNetTrainerICI",
    "nnUNetTrainerFalse",
    "nnUNetTrainerProximity",
    "nnUNetTrainerGDF",
)
BASELINE = "nnUNetTrainer"
DATASET_NAME = "Dataset999_TrainingStepBenchmark"

# nnU-Net's default planner (ExperimentPlanner): base and largest feature count, convolutions per stage,
# the smallest feature map edge
BASE_FEATURES, MAX_FEATURES, CONVS_PER_STAGE, MIN_FEATURE_MAP_EDGE = 32, 320, 2, 4


def plans_for(patch: int, batch: int, classes: int) -> tuple[dict, dict]:
    """nnU-Net plans (3d_fullres only) and dataset.json of a 1 mm isotropic, one-channel dataset whose
    patch is ``patch``³, with the network topology nnU-Net's default planner derives for that patch."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    spacing = (1.0, 1.0, 1.0)
    _, strides, kernels, patch_size, _ = get_pool_and_conv_props(spacing, (patch,) * 3, MIN_FEATURE_MAP_EDGE, 999999)
    stages = len(strides)
    architecture = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [min(MAX_FEATURES, BASE_FEATURES * 2**i) for i in range(stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides],
            "n_conv_per_stage": [CONVS_PER_STAGE] * stages,
            "n_conv_per_stage_decoder": [CONVS_PER_STAGE] * (stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch,
        "patch_size": [int(s) for s in patch_size],
        "median_image_size_in_voxels": [float(s) for s in patch_size],
        "spacing": list(spacing),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": architecture,
        "batch_dice": False,
    }
    plans = {
        "dataset_name": DATASET_NAME,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [int(s) for s in patch_size],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 5.0,
                "mean": 2.0,
                "median": 2.0,
                "min": 0.0,
                "percentile_00_5": 0.1,
                "percentile_99_5": 4.0,
                "std": 1.0,
            }
        },
    }
    labels = {"background": 0, **{f"lesion_{c}": c for c in range(1, classes + 1)}}
    dataset_json = {"channel_names": {"0": "FLAIR"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    return plans, dataset_json


def trainer_classes(names: list[str]) -> dict:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_lesionloss.training import variants

    classes = {}
    for name in names:
        if name == BASELINE:
            classes[name] = nnUNetTrainer
        elif name in variants.__all__:
            classes[name] = getattr(variants, name)
        else:
            raise SystemExit(f"unknown trainer {name!r}; known: {BASELINE} and {', '.join(variants.__all__)}")
    return classes


def make_batch(trainer, images: np.ndarray, segmentations: np.ndarray) -> dict:
    """The batch the trainer's loader would give for these samples without augmentation: its own
    validation transforms (deep-supervision targets and, for this package's trainers, the packed maps)."""
    label_manager = trainer.label_manager
    transforms = trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales(),
        is_cascaded=trainer.is_cascaded,
        foreground_labels=label_manager.foreground_labels,
        regions=label_manager.foreground_regions if label_manager.has_regions else None,
        ignore_label=label_manager.ignore_label,
    )
    samples = [
        transforms(image=torch.from_numpy(image), segmentation=torch.from_numpy(segmentation))
        for image, segmentation in zip(images, segmentations)
    ]
    target = samples[0]["segmentation"]
    if isinstance(target, list):
        target = [torch.stack([s["segmentation"][k] for s in samples]) for k in range(len(target))]
    else:
        target = torch.stack([s["segmentation"] for s in samples])
    return {"data": torch.stack([s["image"] for s in samples]), "target": target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--patch", type=int, default=48, help="patch edge in voxels (the demo's: 48)")
    parser.add_argument("--batch", type=int, default=2, help="samples per batch (nnU-Net's 3d_fullres: 2)")
    parser.add_argument("--classes", type=int, default=1, help="lesion classes (the demo's: 1)")
    parser.add_argument("--lesions", type=int, default=40, help="lesions requested per patch")
    parser.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=0, help="untimed rounds (after one untimed step)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default=None, help="default: cpu on the CPU, wall on CUDA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if BASELINE not in args.trainers:
        args.trainers.insert(0, BASELINE)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        # nnU-Net reads its folders when it is imported: throw-away ones. The trainers' initialize() infers
        # the dataset format from the file endings of the preprocessed folder; no case is ever read.
        os.environ.update(nnUNet_results=work, nnUNet_preprocessed=work, nnUNet_compile="false")
        data = os.path.join(work, DATASET_NAME, "nnUNetPlans_3d_fullres")
        os.makedirs(data)
        open(os.path.join(data, "case_000.b2nd"), "w").close()
        run(args)


def run(args) -> None:
    from nnunet_lesionloss.synthetic import make_lesion_labels

    device = torch.device(args.device)
    plans, dataset_json = plans_for(args.patch, args.batch, args.classes)
    patch = tuple(plans["configurations"]["3d_fullres"]["patch_size"])
    rng = np.random.default_rng(args.seed)
    segmentations = np.stack(
        [
            make_lesion_labels(patch, args.lesions, num_classes=args.classes, seed=args.seed + b)[None].astype(np.int16)
            for b in range(args.batch)
        ]
    )
    images = (segmentations > 0).astype(np.float32) + rng.normal(0.0, 1.0, segmentations.shape).astype(np.float32)

    trainers, batches = {}, {}
    network = optimizer = None
    for name, cls in trainer_classes(args.trainers).items():
        # nnU-Net 2.8's run_training puts --c into the plans, and the trainer takes it out again
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's banner and device line, once per trainer
            trainer = cls({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json, device=device)
            trainer.print_to_log_file = lambda *a, **k: None  # nothing to log: the trainers never train
            trainer.initialize()
        if network is None:  # every trainer steps the same network, restored before each step
            network, optimizer = trainer.network, trainer.optimizer
        trainer.network, trainer.optimizer = network, optimizer
        trainers[name] = trainer
        batches[name] = make_batch(trainer, images, segmentations)
    initial = {key: value.clone() for key, value in network.state_dict().items()}

    clock = (
        time.process_time if (args.clock or ("cpu" if device.type == "cpu" else "wall")) == "cpu" else time.perf_counter
    )
    times: dict[str, list[float]] = {name: [] for name in trainers}
    trainers[BASELINE].train_step(batches[BASELINE])  # untimed: the first step sets up the convolution kernels
    for round_index in range(args.warmup + args.repeats):
        for name, trainer in trainers.items():
            network.load_state_dict(initial)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = clock()
            trainer.train_step(batches[name])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index >= args.warmup:
                times[name].append(clock() - start)

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    stages = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_stages"]
    print(
        f"One training iteration (forward + loss + backward + optimizer step), patch {'×'.join(map(str, patch))}, "
        f"batch {args.batch}, {args.classes} lesion class(es), {args.lesions} lesions requested per patch, "
        f"PlainConvUNet with {stages} stages, {device_name}, torch {torch.__version__}; "
        f"{'CPU' if clock is time.process_time else 'wall'} time, median of {args.repeats} rounds after "
        f"{args.warmup} untimed round(s) and one untimed step\n"
    )
    print(f"| trainer | median (s) | min (s) | × {BASELINE} |")
    print("| --- | ---: | ---: | ---: |")
    for name in trainers:
        ratios = [t / t0 for t, t0 in zip(times[name], times[BASELINE])]
        print(
            f"| {name} | {statistics.median(times[name]):.3f} | {min(times[name]):.3f} | "
            f"{statistics.median(ratios):.3f} |"
        )
    print(f"\n× {BASELINE}: median over the rounds of (trainer's step / {BASELINE}'s step in the same round).")


if __name__ == "__main__":
    sys.exit(main())
