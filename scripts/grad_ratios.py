"""How strongly each lesion-aware term pulls on the network compared with its segmentation loss.

For each trainer setting, the gradient norm (with respect to the logits) of the extra terms, at
their full weight, divided by the gradient norm of the trainer's own segmentation loss (nnU-Net's
DC+CE times ``base.weight``; for trainers whose loss replaces DC+CE, nnU-Net's DC+CE itself):

    ratio = ‖∇_logits Σ_t λ_t·T_t‖ / ‖∇_logits β·L_DC+CE‖

A ratio far above 1 means the term, not the segmentation loss, sets the direction of the update
(and after nnU-Net's gradient clipping at norm 12 the segmentation loss contributes almost
nothing). Four prediction states on the same ground truth (B patches of size³ with a few small
lesions, one foreground class, label-based softmax logits):

* early: background logit 0, foreground logit −2 + N(0, 1) everywhere (p ≈ 0.12, about 2 % of
  the voxels above 0.5 as speckles), as a fresh network on small-lesion data;
* cleared: foreground logit −5 + N(0, 1) everywhere (p ≈ 0.01: the background cleared, the
  lesions not found yet, the predicted volume a few times the lesion volume);
* mid: foreground logit 0 on the lesions and −4 elsewhere, + N(0, 1.3²) (lesions half found,
  a few tens of single-voxel speckles per patch);
* late: foreground logit +6 on the lesions and −8 elsewhere, + N(0, 1), the smallest lesion of
  each patch missed (logit −2) and two 2³-voxel false positives (logit +4): a near-correct
  prediction with the errors that remain late in training.

Each row is a trainer's shipped config, optionally with overrides (the former defaults, the
papers' literal settings). The weight at epoch 0 is printed separately (a warm-up makes it 0).
The table reports the median over ``--seeds`` random batches (min-max in brackets).
``--empty-samples N`` makes the last N patches of every batch lesion-free (with nnU-Net's
foreground oversampling of 0.33 and batch 2, one patch of most batches is drawn at random and, on
small-lesion data, often holds no lesion). ``--measure value`` compares the loss values instead of
the gradients.

    python scripts/grad_ratios.py                  # 40³, batch 2, 3 lesions per patch, CPU
    python scripts/grad_ratios.py --size 48 --lesions 2 --seeds 5
    python scripts/grad_ratios.py --measure lesion   # which way each term pushes the lesions
    python scripts/grad_ratios.py --only CC InvWeight IWL --empty-samples 1 --measure value
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from bench_losses import nnunet_dc_and_ce  # nnU-Net's default label-based loss, as the loss benchmark builds it

from nnunet_lesionloss.components import channel_component_maps
from nnunet_lesionloss.config import load_config, loss_terms, resolve_connectivity
from nnunet_lesionloss.losses.compound import foreground_probabilities
from nnunet_lesionloss.losses.terms import build_term
from nnunet_lesionloss.synthetic import make_lesion_labels

#: (row label, config name, overrides[, terms that form L_seg]): the shipped defaults and the
#: settings they replaced. Without the 4th entry L_seg is nnU-Net's DC+CE (times base.weight).
SETTINGS: list[tuple] = [
    ("Proximity, shipped default (after its warm-up)", "proximity", {}),
    (
        "Proximity, eq. 9-10 sums, no cap (former default)",
        "proximity",
        {
            "terms": {
                "instance_family": {
                    "warmup_epochs": 0,
                    "params": {"proximity_reduction": "sum", "max_pred_instances": None},
                }
            }
        },
    ),
    (
        "Proximity, sums + authors' cap (50 per image, 50× GT)",
        "proximity",
        {
            "terms": {
                "instance_family": {
                    "params": {"proximity_reduction": "sum", "max_pred_instances": 50, "too_many_factor": 50}
                }
            }
        },
    ),
    (
        "Proximity, per-side means, no cap, no warm-up",
        "proximity",
        {
            "terms": {
                "instance_family": {
                    "warmup_epochs": 0,
                    "params": {"proximity_reduction": "mean", "max_pred_instances": None},
                }
            }
        },
    ),
    (
        "Proximity, per-side means + authors' cap",
        "proximity",
        {
            "terms": {
                "instance_family": {
                    "params": {"proximity_reduction": "mean", "max_pred_instances": 50, "too_many_factor": 50}
                }
            }
        },
    ),
    ("ICI, shipped default", "ici", {}),
    (
        "ICI_GDF, shipped default (vs its 0.25·GDF)",
        "ici",
        {"base": {"loss": "generalized_dice_focal"}},
        ("generalized_dice", "focal"),
    ),
    ("False, shipped default", "false", {}),
    (
        "Proximity_GDF, shipped default (vs its GDF)",
        "proximity",
        {"base": {"loss": "generalized_dice_focal"}},
        ("generalized_dice", "focal"),
    ),
    ("Size Penalty, shipped default (after its warm-up)", "size_penalty", {}),
    (
        "Size Penalty, paper (λ_S 0.3 from epoch 0, τ 600; former default)",
        "size_penalty",
        {"terms": {"size_penalty": {"weight": 0.3, "warmup_epochs": 0}}},
    ),
    ("Size Penalty DTS, shipped default (vs its Dice + Tversky)", "size_penalty_dts", {}, ("dice", "tversky")),
    (
        "Size Penalty DTS, paper (no warm-up; vs its Dice + Tversky)",
        "size_penalty_dts",
        {"terms": {"size_penalty": {"warmup_epochs": 0}}},
        ("dice", "tversky"),
    ),
    ("CATMIL (CAT + MIL), shipped default", "catmil", {}),
    ("Blob, shipped default (lesion-free pairs skipped, Kofler et al.'s code)", "blob", {}),
    (
        "Blob, lesion-free pairs scored whole (the CC authors' blob code)",
        "blob",
        {"terms": {"blob": {"params": {"empty_pairs": "whole_patch"}}}},
    ),
    ("CC, shipped default (lesion-free pairs scored whole, the CC authors' code)", "cc", {}),
    (
        "CC, lesion-free pairs skipped (_skipEmpty; former default)",
        "cc",
        {"terms": {"cc": {"params": {"empty_pairs": "skip"}}}},
    ),
    ("IWL-Blob, shipped default (clamp(r, 1, 100), Kundu et al. 2026 §2.5)", "iwl_blob", {}),
    (
        "IWL-Blob, power reading (this package's option; former default)",
        "iwl_blob",
        {"terms": {"blob": {"params": {"iwl_reading": "power"}}}},
    ),
    ("IWL-CC, shipped default (clamp(r, 1, 100), lesion-free pairs scored whole)", "iwl_cc", {}),
    (
        "IWL-CC, power reading, lesion-free pairs skipped (former default)",
        "iwl_cc",
        {"terms": {"cc": {"params": {"iwl_reading": "power", "empty_pairs": "skip"}}}},
    ),
    ("InvWeight, shipped default (authors' cc2weight, squared Dice, CE / N; replaces DC+CE)", "inv_weight", {}),
    (
        "InvWeight, first commit's map, nnU-Net's Dice (former default; replaces DC+CE)",
        "inv_weight",
        {
            "terms": {
                "inverse_weighted": {
                    "params": {
                        "balance": "lesions",
                        "weight_clip": None,
                        "dice_denominator": "plain",
                        "smooth": 1e-5,
                    }
                }
            }
        },
    ),
    (
        "InvWeight, authors' map unclipped, nnU-Net's Dice, + DC+CE (earlier default)",
        "inv_weight",
        {
            "base": {"weight": 1.0},
            "terms": {
                "inverse_weighted": {
                    "params": {"weight_clip": None, "dice_denominator": "plain", "smooth": 1e-5},
                }
            },
        },
    ),
    ("Tversky, shipped default (replaces DC+CE)", "tversky", {}),
    (
        "Tversky, foreground only (former default)",
        "tversky",
        {"terms": {"tversky": {"params": {"include_background": False}}}},
    ),
    ("FocalTversky, shipped default (replaces DC+CE)", "focal_tversky", {}),
    (
        "FocalTversky, foreground only, power per pair (former default)",
        "focal_tversky",
        {"terms": {"focal_tversky": {"params": {"include_background": False, "reduction": "power_then_mean"}}}},
    ),
]

STATES = ("early", "cleared", "mid", "late")


def make_batch(size: int, batch: int, lesions: int, seed: int, state: str, empty_samples: int = 0):
    """(labels [B, 1, *spatial] int64, logits [B, 2, *spatial]) for one prediction state (module
    docstring); the last ``empty_samples`` patches hold no lesion."""
    labels = np.stack(
        [
            make_lesion_labels((size,) * 3, lesions, radius_range=(1.5, 3.5), seed=seed * 100 + b)
            if b < batch - empty_samples
            else np.zeros((size,) * 3, dtype=np.int64)
            for b in range(batch)
        ]
    )
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((batch, *labels.shape[1:]), generator=generator, dtype=torch.float64)
    lesion = torch.from_numpy(labels > 0)
    if state == "early":
        foreground = -2.0 + noise
    elif state == "cleared":
        foreground = -5.0 + noise
    elif state == "mid":
        foreground = torch.where(lesion, 0.0, -4.0) + 1.3 * noise
    else:
        foreground = torch.where(lesion, 6.0, -8.0) + noise
        for b in range(batch):  # the smallest lesion missed, two small false positives
            ids = channel_component_maps(labels[b : b + 1] > 0)[0][0]
            sizes = np.bincount(ids.ravel())[1:]
            if sizes.size:
                foreground[b][torch.from_numpy(ids == int(np.argmin(sizes)) + 1)] = -2.0
            for corner in ((2, 2, 2), (size - 5, size - 5, 2)):
                block = tuple(slice(c, c + 2) for c in corner)
                if not lesion[b][block].any():
                    foreground[b][block] = 4.0
    logits = torch.stack([torch.zeros_like(foreground), foreground], dim=1).float()
    return torch.from_numpy(labels[:, None].astype(np.int64)), logits


def gradient_measure(loss_fn, logits: torch.Tensor, labels: torch.Tensor, measure: str = "2") -> float:
    """The 2- or 1-norm of the gradient w.r.t. the logits; ("lesion") the net push on the lesion
    voxels, -Σ over the ground-truth lesion voxels of ∂L/∂(foreground logit), > 0 when the loss
    raises the lesions' foreground logits; ("background") the net push on the other voxels, +Σ of the
    same derivative there, > 0 when the loss lowers them (suppresses false positives); or ("value")
    the loss value itself."""
    leaf = logits.detach().clone().requires_grad_(True)
    value = loss_fn(leaf)
    if measure == "value":
        return float(value.detach())
    (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    if grad is None:
        return 0.0
    if measure == "lesion":
        return float(-grad[:, 1][labels[:, 0] > 0].sum())
    if measure == "background":
        return float(grad[:, 1][labels[:, 0] == 0].sum())
    return float(grad.norm(p=int(measure)))


def setting_measures(
    config_name: str, overrides: dict, seg_terms, labels, logits, dc_and_ce, measure: str = "2"
) -> tuple[float, float, float]:
    """(the extra terms' measure at full weight, L_seg's measure, extra-term weight at epoch 0 / at full
    weight) for one batch."""
    config = load_config(config_name, overrides, env={})
    connectivity = resolve_connectivity(config["connectivity"], 3)
    context = {"connectivity": connectivity, "spacing": (1.0, 1.0, 1.0)}
    terms = [build_term(name, settings, context=context) for name, settings in loss_terms(config).items()]
    with_cells = any(t.needs_cells for t in terms)
    maps = [channel_component_maps(lab > 0, connectivity=connectivity, with_cells=with_cells) for lab in labels.numpy()]
    component_ids = torch.from_numpy(np.stack([ids for ids, _ in maps])).long()
    cells = torch.from_numpy(np.stack([c for _, c in maps])).long() if with_cells else None
    groups = [(1,)]
    late_epoch = 10**6
    seg = [t for t in terms if seg_terms and t.name in seg_terms]
    extra = [t for t in terms if t not in seg]

    def weighted(selected):
        def loss(leaf):
            probs = foreground_probabilities(leaf, groups)
            return sum(t.weight_at(late_epoch) * t(probs, component_ids, cells) for t in selected)

        return loss

    if seg:
        base = gradient_measure(weighted(seg), logits, labels, measure)
    else:  # nnU-Net's DC+CE times base.weight; a loss that replaces DC+CE is compared with DC+CE itself
        base_weight = config["base"]["weight"] if config["base"]["loss"] == "nnunet" else 0.0
        scale = base_weight if base_weight > 0 else 1.0
        base = scale * gradient_measure(lambda leaf: dc_and_ce(leaf, labels), logits, labels, measure)
    full = sum(t.weight_at(late_epoch) for t in extra)
    start = sum(t.weight_at(0) for t in extra)
    return gradient_measure(weighted(extra), logits, labels, measure), base, (start / full if full else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lesions", type=int, default=3, help="lesions requested per patch (radius 1.5-3.5 voxels)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="row labels (substrings) to run")
    parser.add_argument(
        "--measure",
        choices=["2", "1", "lesion", "background", "value"],
        default="2",
        help="2 (default) or 1: the norm of the gradient (a gradient on a few voxels, MIL: one per lesion, has a "
        "large 2-norm but a small 1-norm, a uniform one, Size Penalty, the opposite); lesion: the net push on the "
        "lesion voxels' foreground logits, as a ratio to L_seg's (negative: the term lowers the lesions); background: "
        "the net push down on the other voxels, as a ratio to L_seg's (negative: the term raises false positives); "
        "value: the loss values, the term's and (in brackets) L_seg's",
    )
    parser.add_argument(
        "--empty-samples",
        type=int,
        default=0,
        help="the last N patches of every batch hold no lesion (as nnU-Net's randomly drawn patches often do)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dc_and_ce = nnunet_dc_and_ce()
    settings = [s for s in SETTINGS if args.only is None or any(o in s[0] for o in args.only)]
    if not 0 <= args.empty_samples < args.batch:
        parser.error("--empty-samples must leave at least one patch with lesions")
    batches = {
        (state, seed): make_batch(args.size, args.batch, args.lesions, seed, state, args.empty_samples)
        for state in STATES
        for seed in range(args.seeds)
    }
    value = args.measure == "value"
    print(
        f"measure {args.measure}: "
        + ("term value (L_seg value)" if value else "term / L_seg")
        + f", {args.batch}×{args.size}³, {args.lesions} lesions per patch ({args.empty_samples} lesion-free "
        f"patches per batch), median [min-max] over {args.seeds} seeds\n"
    )
    print("| setting | " + " | ".join(STATES) + " | weight at epoch 0 / full |")
    print("|---|" + "---:|" * (len(STATES) + 1))
    for label, config_name, overrides, *seg_terms in settings:
        seg_terms = seg_terms[0] if seg_terms else None
        cells, start = [], 1.0
        for state in STATES:
            terms, bases = [], []
            for seed in range(args.seeds):
                labels, logits = batches[state, seed]
                term, base, start = setting_measures(
                    config_name, overrides, seg_terms, labels, logits, dc_and_ce, args.measure
                )
                terms.append(term)
                bases.append(base)
            if value:
                cells.append(f"{statistics.median(terms):.3g} ({statistics.median(bases):.3g})")
            else:
                ratios = [t / b for t, b in zip(terms, bases)]
                cells.append(f"{statistics.median(ratios):.3g} [{min(ratios):.2g}-{max(ratios):.2g}]")
        print(f"| {label} | " + " | ".join(cells) + f" | {start:.2g} |", flush=True)


if __name__ == "__main__":
    main()
