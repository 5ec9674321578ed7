"""Synthetic lesion data: label maps with many small blobs, and a tiny nnU-Net raw dataset; and simulated
metric values of two runs trained several times, with known variance components.

Used by the tests, the benchmarks and the demo, so that everything runs without downloading data.
"""

from __future__ import annotations

import numpy as np

from nnunet_lesionloss.evaluation.repeat_statistics import RepeatComparison, compare_repeats, resample_case_means
from nnunet_lesionloss.evaluation.statistics import case_resample_weights

__all__ = ["make_lesion_labels", "make_lesion_image", "simulate_repeat_studies", "compare_simulated_studies"]


def make_lesion_labels(
    shape: tuple[int, ...],
    n_lesions: int,
    *,
    radius_range: tuple[float, float] = (1.0, 4.0),
    num_classes: int = 1,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """A label map (uint8, 0 = background) of ``n_lesions`` random ellipsoids (2D or 3D).

    Each lesion gets a class in 1..num_classes; radii are drawn log-uniformly in ``radius_range``
    (voxels) so that small lesions dominate, as in MS/WMH/metastasis data. Lesions may touch or
    merge, as real ones do: count components with cc3d, not by ``n_lesions``.
    """
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D or 3D, got {shape}")
    if n_lesions < 0 or num_classes < 1:
        raise ValueError("n_lesions must be >= 0 and num_classes >= 1")
    lo, hi = radius_range
    if not 0 < lo <= hi:
        raise ValueError(f"radius_range must satisfy 0 < low <= high, got {radius_range}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    for _ in range(n_lesions):
        radii = np.exp(rng.uniform(np.log(lo), np.log(hi), size=len(shape)))
        centre = rng.uniform(0, shape)
        lower = np.maximum(np.floor(centre - radii).astype(int), 0)
        upper = np.minimum(np.ceil(centre + radii).astype(int) + 1, shape)
        if np.any(upper <= lower):
            continue
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lower, upper))]
        inside = sum(((g + 0.5 - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
        if not inside.any():  # a lesion smaller than a voxel still marks its centre voxel
            inside = np.zeros(inside.shape, bool)
            inside[tuple(np.clip(np.floor(centre).astype(int) - lower, 0, np.array(inside.shape) - 1))] = True
        region = labels[tuple(slice(a, b) for a, b in zip(lower, upper))]
        region[inside] = rng.integers(1, num_classes + 1)
    return labels


def make_lesion_image(
    labels: np.ndarray, *, contrast: float = 1.5, noise: float = 0.5, seed: int | None = 0
) -> np.ndarray:
    """A float32 intensity image in which lesions are brighter than a noisy background."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, noise, size=labels.shape).astype(np.float32)
    image += contrast * (labels > 0) + 0.3 * labels.astype(np.float32)
    return image


def write_synthetic_dataset(
    raw_root: str,
    dataset_id: int = 901,
    *,
    name: str = "SyntheticLesions",
    num_cases: int = 8,
    shape: tuple[int, int, int] = (48, 48, 48),
    lesions_per_case: tuple[int, int] = (6, 20),
    num_classes: int = 1,
    two_channels: bool = False,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    contrast: float = 1.5,
    noise: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Write an MS-like synthetic dataset in nnU-Net's raw format and return its folder.

    Each case: a FLAIR-like channel (a bright head-shaped ellipsoid with noise, lesions brighter
    still), optionally a second T1-like channel (lesions dark), and a label map of many lesions with
    a heavy-tailed size distribution (radii log-uniform in 0.6-5 voxels: many of 1-10 voxels, a few
    large ones, some touching). Reproducible from ``seed``. Writes ``imagesTr``, ``labelsTr`` and
    ``dataset.json`` (labels ``lesion`` or ``lesion_1..n``). ``contrast`` and ``noise`` are those of
    :func:`make_lesion_image` (lower contrast: small lesions closer to the noise, harder to detect).
    """
    import os

    import SimpleITK as sitk

    if num_cases < 2:
        raise ValueError("nnU-Net needs at least 2 training cases")
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be 2 or 3 positive sizes, got {shape}")
    if not 0 <= lesions_per_case[0] <= lesions_per_case[1]:
        raise ValueError(f"lesions_per_case must be (MIN, MAX) with 0 <= MIN <= MAX, got {lesions_per_case}")
    if num_classes < 1 or not np.isfinite(contrast) or not (np.isfinite(noise) and noise >= 0):
        raise ValueError(
            f"num_classes must be >= 1, contrast finite and noise finite and >= 0, got {num_classes}, {contrast}, {noise}"
        )
    folder = _raw_dataset_folder(raw_root, dataset_id, name, overwrite)
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = sum(g**2 for g in grids) <= 0.85**2

    def write(array: np.ndarray, path: str) -> None:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # numpy (z, y, x) -> ITK (x, y, z)
        sitk.WriteImage(image, path)

    for case in range(num_cases):
        n_lesions = int(rng.integers(lesions_per_case[0], lesions_per_case[1] + 1))
        labels = make_lesion_labels(shape, n_lesions, radius_range=(0.6, 5.0), num_classes=num_classes, seed=rng)
        labels[~head] = 0
        flair = make_lesion_image(labels, contrast=contrast, noise=noise, seed=int(rng.integers(2**31))) + 1.0 * head
        key = f"case_{case:03d}"
        write(flair.astype(np.float32), os.path.join(folder, "imagesTr", f"{key}_0000.nii.gz"))
        if two_channels:
            t1 = (1.0 * head - 0.8 * (labels > 0) + rng.normal(0, 0.3, shape)).astype(np.float32)
            write(t1, os.path.join(folder, "imagesTr", f"{key}_0001.nii.gz"))
        write(labels.astype(np.uint8), os.path.join(folder, "labelsTr", f"{key}.nii.gz"))
    label_names = {"background": 0}
    label_names.update({"lesion": 1} if num_classes == 1 else {f"lesion_{c}": c for c in range(1, num_classes + 1)})
    channels = ["FLAIR", "T1"] if two_channels else ["FLAIR"]
    _write_dataset_json(folder, channels, label_names, num_cases, name, f"synthetic MS-like lesions {WRITTEN_BY}")
    return folder


def write_dataset_from_case(
    raw_root: str,
    dataset_id: int,
    channel_images: dict[str, str],
    mask: str,
    *,
    name: str = "RealCaseCopies",
    num_cases: int = 4,
    overwrite: bool = False,
) -> str:
    """An nnU-Net raw dataset of ``num_cases`` mirrored copies of one real case (smoke runs on a real image).

    ``channel_images`` maps channel names to image files (e.g. ``{"DWI": ".../dwi.nii.gz", "ADC":
    ".../adc.nii.gz"}``), ``mask`` is the lesion mask (binary). Copy k is the case mirrored along the
    axes of the binary digits of k (copy 0 = the original), so every copy has the same lesions at
    other places; geometry (spacing, origin, direction) is kept. Enough for nnU-Net's planning and a
    short training on real contrast and real small lesions (e.g. one case of the ISLES 2022
    dataset, Hernandez Petzsche et al. 2022), not for a meaningful model.
    """
    import os

    import SimpleITK as sitk

    if not 1 <= num_cases <= 8:
        raise ValueError(f"num_cases must be in 1..8 (mirrorings of 3 axes), got {num_cases}")
    if not channel_images:
        raise ValueError("give at least one channel image")
    folder = _raw_dataset_folder(raw_root, dataset_id, name, overwrite)
    reference = sitk.ReadImage(mask)
    labels = (sitk.GetArrayFromImage(reference) > 0).astype(np.uint8)
    channels = {}
    for channel, path in channel_images.items():
        image = sitk.ReadImage(path)
        if image.GetSize() != reference.GetSize():
            raise ValueError(f"{path} has size {image.GetSize()}, the mask {reference.GetSize()}")
        channels[channel] = sitk.GetArrayFromImage(image).astype(np.float32)

    def write(array: np.ndarray, path: str) -> None:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.CopyInformation(reference)
        sitk.WriteImage(image, path)

    for copy in range(num_cases):
        axes = tuple(axis for axis in range(3) if copy >> axis & 1)
        key = f"case_{copy:03d}"
        for index, array in enumerate(channels.values()):
            write(
                np.flip(array, axes) if axes else array, os.path.join(folder, "imagesTr", f"{key}_{index:04d}.nii.gz")
            )
        write(np.flip(labels, axes) if axes else labels, os.path.join(folder, "labelsTr", f"{key}.nii.gz"))
    source = os.path.basename(os.path.dirname(os.path.abspath(mask)))
    _write_dataset_json(
        folder,
        list(channels),
        {"background": 0, "lesion": 1},
        num_cases,
        name,
        f"{num_cases} mirrored copies of {source}, {WRITTEN_BY}",
    )
    return folder


#: the mark ``dataset.json`` carries when this module wrote the dataset: only such a dataset is ever replaced
WRITTEN_BY = "written by nnunet-lesionloss synth"


def _raw_dataset_folder(raw_root: str, dataset_id: int, name: str, overwrite: bool = False) -> str:
    """``raw_root/DatasetXXX_name`` with empty imagesTr and labelsTr folders.

    Never beside another dataset of the same id (nnU-Net refuses an id held by two folders), and never over an
    existing dataset unless ``overwrite`` is given and the dataset is one this module wrote (its dataset.json
    says so); then the old folder is removed whole, so no case of the earlier dataset is left behind."""
    import json
    import os
    import shutil

    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"the dataset name may hold letters, digits, '_' and '-' only, got {name!r}")
    folder = os.path.join(raw_root, f"Dataset{dataset_id:03d}_{name}")
    prefix = f"Dataset{dataset_id:03d}_"
    others = (
        sorted(e for e in os.listdir(raw_root) if e.startswith(prefix) and e != os.path.basename(folder))
        if (os.path.isdir(raw_root))
        else []
    )
    if others:
        raise FileExistsError(
            f"dataset id {dataset_id} is taken in {raw_root} by {', '.join(others)}: nnU-Net would refuse both; "
            "choose another --dataset-id"
        )
    if os.path.exists(folder):
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass --overwrite to replace it")
        try:
            with open(os.path.join(folder, "dataset.json")) as handle:
                description = json.load(handle).get("description", "")
        except (OSError, ValueError, AttributeError):
            description = ""
        if WRITTEN_BY not in str(description):
            raise FileExistsError(f"{folder} exists and was not written by synth: it is never replaced")
        shutil.rmtree(folder)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    return folder


def _write_dataset_json(
    folder: str, channels: list[str], labels: dict, num_cases: int, name: str, description: str
) -> None:
    """nnU-Net's dataset.json for NIfTI cases."""
    import json
    import os

    dataset_json = {
        "channel_names": {str(i): channel for i, channel in enumerate(channels)},
        "labels": labels,
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "name": name,
        "description": description,
    }
    with open(os.path.join(folder, "dataset.json"), "w") as file:
        json.dump(dataset_json, file, indent=2)


def simulate_repeat_studies(
    rng: np.random.Generator,
    *,
    studies: int,
    repeats: int,
    cases: int,
    difference: float = 0.0,
    sd_case: float = 0.1,
    sd_paired: float = 0.0,
    sd_retraining: float = 0.0,
    sd_interaction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case values of a run and a reference run, each trained ``repeats`` times on the same ``cases``,
    for ``studies`` independent studies: arrays ``[studies, repeats, cases]`` from the two-way model
    y_ri = mu + c_i + p_i + t_r + e_ri with a case effect c_i shared by both runs (``sd_case``), a run-specific
    case effect p_i (the paired differences p_i(run) - p_i(reference) have standard deviation ``sd_paired``),
    a retraining's shift t_r (``sd_retraining``) and a retraining-by-case term e_ri (``sd_interaction``), each
    run's own; the run's mean is the reference's + ``difference``. The variance of the difference of the
    means over repeats and cases is sd_paired^2 / cases + 2 (sd_retraining^2 + sd_interaction^2 / cases) / repeats."""
    shape = (studies, repeats, cases)
    shared = rng.normal(0.0, sd_case, (studies, 1, cases))

    def run(mean: float) -> np.ndarray:
        paired = rng.normal(0.0, sd_paired / np.sqrt(2.0), (studies, 1, cases))
        shift = rng.normal(0.0, sd_retraining, (studies, repeats, 1))
        return mean + shared + paired + shift + rng.normal(0.0, sd_interaction, shape)

    return run(difference), run(0.0)


def compare_simulated_studies(
    run: np.ndarray, reference: np.ndarray, *, resamples: int = 1000, one_level: bool = False, **options
) -> list[RepeatComparison]:
    """``compare_repeats`` (its ``options``) of the run against the reference in every study of
    :func:`simulate_repeat_studies`, on the mean over cases, with the case bootstrap seeded by the study's
    index. ``one_level``: each run's repeats averaged into one value per case first, so that only the cases
    are resampled (retraining ignored, as compare with one training per run)."""
    results = []
    for study in range(run.shape[0]):
        weights = case_resample_weights(run.shape[2], resamples, study)
        values = (run[study], reference[study])
        if one_level:
            values = tuple(v.mean(axis=0, keepdims=True) for v in values)
        runs = [resample_case_means(v, weights) for v in values]
        results.append(compare_repeats(*runs, **{"higher_is_better": True, "seed": study, **options}))
    return results
