#!/usr/bin/env python3
"""Lesion recall, precision and F1 under each detection rule, on the cases that decide between them.

Prints a Markdown table (docs/metrics.md quotes it): for every case, the lesion counts and the lesion
metrics with the default rule (one-to-one matching at DSC >= 0.1) and with the papers' any overlap.

- ``blob``: one predicted component over 88 % of a 64³ image, every reference lesion inside it
  (the case where any overlap gives recall = precision = F1 = 1 at Dice 0.003);
- ``blob, training patch``: the same masks counted as a validation patch during training;
- ``MS, dilated by k``: a real multi-rater consensus MS mask (Lesjak et al. 2017, Open MS Data, CC BY 4.0;
  182×218×182 at 1 mm; in the repository, tests/data/open_ms_data/masks/patient01.nii.gz) against itself
  dilated by k voxels (a realistic over-segmentation that merges neighbours);
- ``BraTS-METS <region>``: the official BraTS 2025 evaluator's sample, real predictions of 4 cases,
  counts pooled over the cases. The sample may not be redistributed: only with ``--data DIR``, DIR holding
  ``brats_mets/ref`` and ``brats_mets/pred``.

Usage: ``python scripts/lesion_matching_cases.py [--data DIR] [--quick]`` (``--quick``: the synthetic cases
only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation.metrics import evaluate_binary
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, MatchingSpec
from nnunet_lesionloss.synthetic import make_lesion_labels

REPOSITORY = Path(__file__).resolve().parents[1]
#: the Open MS Data consensus mask of patient01, in the repository (tests/data/open_ms_data/README.md)
MS_MASK = REPOSITORY / "tests" / "data" / "open_ms_data" / "masks" / "patient01.nii.gz"
#: only the matching the default detection uses: the other PQ thresholds do not change these rows
ONE_MATCHING = {
    "matchings": (MatchingSpec("dsc", 0.1),),
    "size_bin_matching": "dsc0.1",
    "reference_lesion_spec": "dsc0.1",
}
RULES = {
    "one-to-one, DSC >= 0.1 (default)": EvaluationSettings(**ONE_MATCHING),
    "any overlap (papers)": EvaluationSettings(lesion_rule="any_overlap", **ONE_MATCHING),
}
COUNTS = ("n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_tp_pred", "TP", "n_ref", "n_pred")


def blob_case(shape=(64, 64, 64), fraction: float = 0.88, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference: small lesions; prediction: one slab over ``fraction`` of the image that covers them all."""
    reference = make_lesion_labels(shape, 12, radius_range=(1.4, 3.2), seed=seed) > 0
    z = int(round(fraction * shape[0]))
    reference[z:] = False  # every lesion lies under the blob
    prediction = np.zeros(shape, bool)
    prediction[:z] = True
    return reference, prediction


def pooled(rows: list[dict]) -> dict:
    """Counts summed over cases, then the rates (pooled, like cv-summary's pooled lesion metrics)."""
    total = {k: sum(r[k] for r in rows) for k in COUNTS}
    recall = total["lesion_tp"] / total["n_ref_lesions"] if total["n_ref_lesions"] else None
    precision = total["lesion_tp_pred"] / total["n_pred_lesions"] if total["n_pred_lesions"] else None
    f1 = None
    if recall is not None and precision is not None:
        f1 = 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
    dice = 2 * total["TP"] / (total["n_ref"] + total["n_pred"]) if total["n_ref"] + total["n_pred"] else None
    return {**total, "recall": recall, "precision": precision, "f1": f1, "dice": dice}


def cases(data: Path | None, quick: bool):
    """(name, [(reference, prediction, spacing), ...]) of every case."""
    yield "blob over 88 % of the image", [(*blob_case(), (1.0, 1.0, 1.0))]
    if quick:
        return
    from scipy.ndimage import binary_dilation, generate_binary_structure

    from nnunet_lesionloss.evaluation import io

    image = io.read_label_image(MS_MASK)
    reference = io.as_integer_labels(image) > 0
    for k in (1, 2):
        dilated = binary_dilation(reference, generate_binary_structure(3, 1), iterations=k)
        yield (
            f"MS patient01, prediction dilated by {k} voxel{'s' if k > 1 else ''}",
            [(reference, dilated, image.spacing)],
        )
    if data is not None:
        brats = data / "brats_mets"
        references = sorted((brats / "ref").glob("*.nii.gz"))
        predictions = sorted((brats / "pred").glob("*.nii.gz"))
        pairs = []
        for reference_file in references:
            subject = io.brats_subject_id(reference_file.name)
            prediction_file = next(p for p in predictions if p.name.endswith(f"{subject}.nii.gz"))
            ref, pred = (io.read_label_image(f) for f in (reference_file, prediction_file))
            pairs.append((io.as_integer_labels(ref), io.as_integer_labels(pred), ref.spacing))
        for region, labels in (("wt", (1, 2, 3)), ("tc", (1, 3)), ("et", (3,))):
            yield (
                f"BraTS-METS sample, {region} (4 real predictions)",
                [(np.isin(r, labels), np.isin(p, labels), s) for r, p, s in pairs],
            )


def training_patch_row() -> dict:
    """The blob case counted as the trainers count a validation patch (lesion_validation.patch_lesion_counts)."""
    from nnunet_lesionloss.training import lesion_validation as lv

    reference, prediction = blob_case()
    counts = lv.patch_lesion_counts(
        prediction[None, None], reference[None, None], connectivity=26, small_lesion_voxels=50
    )
    n = {name: int(counts[k]) for k, name in enumerate(lv.COUNT_FIELDS)}
    rates = lv.lesion_rates(counts)
    return {
        "n_ref_lesions": n["ref_lesions"],
        "n_pred_lesions": n["pred_lesions"],
        "recall": rates["lesion_recall"],
        "precision": rates["lesion_precision"],
        "f1": rates["lesion_f1"],
    }


def show(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with brats_mets/ (the BraTS 2025 evaluator's sample, which may not be redistributed): adds "
        "its rows; without it they are left out",
    )
    parser.add_argument("--quick", action="store_true", help="synthetic cases only")
    args = parser.parse_args()
    if args.data is not None and not (args.data / "brats_mets" / "ref").is_dir():
        parser.error(f"--data {args.data}: no brats_mets/ref folder in it")
    print(
        "| case | rule | reference lesions | predicted lesions | Dice | lesion recall | lesion precision | lesion F1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, pairs in cases(args.data, args.quick):
        for rule, settings in RULES.items():
            rows = [evaluate_binary(r, p, s, settings).values for r, p, s in pairs]
            m = pooled(rows)
            print(
                f"| {name} | {rule} | {m['n_ref_lesions']} | {m['n_pred_lesions']} | {show(m['dice'])} | "
                f"{show(m['recall'])} | {show(m['precision'])} | {show(m['f1'])} |"
            )
    patch = training_patch_row()
    print(
        f"| blob over 88 % of the image, as a training patch | patch counts (the default rule) | "
        f"{patch['n_ref_lesions']} | {patch['n_pred_lesions']} | | {show(patch['recall'])} | "
        f"{show(patch['precision'])} | {show(patch['f1'])} |"
    )
    if args.quick:
        print("\n(--quick: the real cases were left out)")
    elif args.data is None:
        print("\n(the BraTS-METS rows were left out: they need --data DIR, DIR holding brats_mets/)")


if __name__ == "__main__":
    main()
