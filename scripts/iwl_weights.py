"""The inverse-size weight of IWL-Blob / IWL-CC (Kundu et al. 2026 §2.5) on realistic patches.

For every lesion (connected component, 26-connectivity, one-vs-rest per class) of a patch, the
ratio r = |Ω_n| / |C_n| of its domain to its size: for blob, Ω_n = the patch minus the other
lesions of its class; for CC, Ω_n = its Voronoi cell. The table shows, per source and domain, the
lesion sizes, the ratios, the share of lesions at the bound (r ≥ 100: the clip of the ratio, the
trainers' default as Kundu et al. 2026 writes it, gives all of them the same weight 100), and for
each reading of the weight how much size dependence is left: the number of distinct weights per
lesion of a patch (1.00 = every lesion its own weight) and the ratio of the largest to the
smallest lesion weight in a patch (medians over patches). The "power" reading is this package's
option (``iwl_reading: power``) for the lesions the clip makes alike.

Sources: the synthetic dataset's generator (lesions of radius 0.6-5 voxels, 6-20 per case) at
128³; with ``--data DIR``, real cases from DIR, data that the repository may not redistribute:
``isles22_case0009/mask.nii.gz`` (ISLES 2022 case 0009; the whole 112×112×73 image is one patch) and
``brats_mets/ref/*.nii.gz`` (BraTS-METS 2025 reference segmentations, the sample cases of the official BraTS
evaluator; NETC, SNFH, ET, RC one-vs-rest), 128³ patches centred on random lesion voxels (as nnU-Net's
foreground oversampling draws them).

    python scripts/iwl_weights.py [--data DIR] [--cases 8] [--patches 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nnunet_lesionloss.components import label_components, voronoi_cells
from nnunet_lesionloss.losses.component_dice import IWL_MAX_DEFAULT, iwl_weight
from nnunet_lesionloss.synthetic import make_lesion_labels

PATCH = (128, 128, 128)


def synthetic_patches(cases: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        ("synthetic 128³", make_lesion_labels(PATCH, int(rng.integers(6, 21)), radius_range=(0.6, 5.0), seed=rng))
        for _ in range(cases)
    ]


def _read(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj).astype(np.int16)


def isles_patches(data: Path) -> list[tuple[str, np.ndarray]]:
    path = data / "isles22_case0009" / "mask.nii.gz"
    return [("ISLES 2022 case (whole image)", (_read(path) > 0).astype(np.int16))] if path.exists() else []


def brats_patches(data: Path, patches: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for path in sorted((data / "brats_mets" / "ref").glob("*.nii.gz")):
        seg = _read(path)
        foreground = np.argwhere(seg > 0)
        for _ in range(patches):
            centre = foreground[rng.integers(len(foreground))]
            lower = [int(np.clip(c - p // 2, 0, max(s - p, 0))) for c, p, s in zip(centre, PATCH, seg.shape)]
            out.append(("BraTS-METS 128³ (per class)", seg[tuple(slice(a, a + p) for a, p in zip(lower, PATCH))]))
    return out


def lesion_ratios(patch: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    """(|C_n|, |Ω_n|) of every lesion of every class of a patch, for the blob and CC domains."""
    result = {"blob": [], "cc": []}
    voxels = patch.size
    for label in [v for v in np.unique(patch) if v > 0]:
        ids = label_components(patch == label)
        sizes = np.bincount(ids.ravel())[1:]
        cells = np.bincount(voronoi_cells(ids).ravel(), minlength=sizes.size + 1)[1:]
        foreground = int(sizes.sum())
        for size, cell in zip(sizes.tolist(), cells.tolist()):
            result["blob"].append((size, voxels - foreground + size))
            result["cc"].append((size, cell))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=None, help="folder with isles22_case0009/ and brats_mets/ (see above)"
    )
    parser.add_argument("--cases", type=int, default=8, help="synthetic 128³ cases")
    parser.add_argument("--patches", type=int, default=4, help="BraTS-METS patches per case")
    args = parser.parse_args()
    sources = synthetic_patches(args.cases)
    if args.data is not None:
        if not args.data.is_dir():
            parser.error(f"--data {args.data}: not a folder")
        sources += isles_patches(args.data) + brats_patches(args.data, args.patches)
    readings = {"clamp(r, 1, 100) (default)": "clamp", "r^κ in [1, 100] (option power)": "power"}
    rows = {}
    for name, patch in sources:
        for domain, lesions in lesion_ratios(patch).items():
            row = rows.setdefault((name, domain), {"sizes": [], "ratios": [], "levels": {r: [] for r in readings}})
            if not lesions:
                continue
            sizes, domains = (torch.tensor(v, dtype=torch.float64) for v in zip(*lesions))
            ratios = domains / sizes
            row["sizes"] += sizes.tolist()
            row["ratios"] += ratios.tolist()
            for label, reading in readings.items():
                weights = iwl_weight(ratios, domains, reading=reading, iwl_max=IWL_MAX_DEFAULT).numpy()
                row["levels"][label].append(len(np.unique(np.round(weights, 6))) / len(weights))
                row.setdefault("spread", {}).setdefault(label, []).append(weights.max() / weights.min())
    print(
        "| source | domain | lesions | size (voxels) median [min-max] | r = Ω/C median [min-max] | at the bound (r ≥ 100) | "
        + " | ".join(f"distinct weights per lesion / largest weight ratio in a patch, {label}" for label in readings)
        + " |"
    )
    print("|---|---|---:|---|---|---:|" + "---:|" * len(readings))
    for (name, domain), row in rows.items():
        sizes, ratios = np.array(row["sizes"]), np.array(row["ratios"])
        if not sizes.size:
            continue
        levels = [
            f"{np.median(row['levels'][label]):.2f} / {np.median(row['spread'][label]):.3g}" for label in readings
        ]
        print(
            f"| {name} | {domain} | {sizes.size} | {np.median(sizes):.0f} [{sizes.min()}-{sizes.max()}] | "
            f"{np.median(ratios):.3g} [{ratios.min():.3g}-{ratios.max():.3g}] | {np.mean(ratios >= 100):.0%} | "
            + " | ".join(levels)
            + " |"
        )


if __name__ == "__main__":
    main()
