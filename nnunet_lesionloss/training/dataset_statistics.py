"""Statistics of a preprocessed nnU-Net dataset that a trainer derives settings from at start-up."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["draw_training_patches", "patch_foreground_volumes"]


def draw_training_patches(
    dataset,
    label_manager,
    *,
    batch_size: int,
    initial_patch_size: Sequence[int],
    patch_size: Sequence[int],
    oversample_foreground_percent: float,
    probabilistic_oversampling: bool = False,
    num_patches: int,
    seed: int = 0,
) -> list[np.ndarray]:
    """Label patches as nnU-Net's training loader draws them: ``num_patches`` label maps [*patch_size].

    nnU-Net's own ``nnUNetDataLoader`` picks the cases and the patch boxes (uniformly at random, or
    around a random voxel of a random foreground class for the last ``oversample_foreground_percent``
    of each batch of ``batch_size``), at the initial (rotation-padded) patch size; the spatial
    augmentation then keeps the centre ``patch_size`` of it, which is what is returned here (the
    rotation and scaling themselves are left out). Voxels outside the image are -1 (nnU-Net's
    padding). The draw is seeded; numpy's global random state is restored afterwards.
    """
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    loader = nnUNetDataLoader(
        dataset,
        batch_size,
        list(initial_patch_size),
        list(patch_size),
        label_manager,
        oversample_foreground_percent=oversample_foreground_percent,
        sampling_probabilities=None,
        pad_sides=None,
        probabilistic_oversampling=probabilistic_oversampling,
        transforms=None,
    )
    state = np.random.get_state()
    np.random.seed(seed)
    patches: list[np.ndarray] = []
    try:
        while len(patches) < num_patches:
            target = loader.generate_train_batch()["target"].numpy()  # [B, 1, *initial_patch_size]
            offset = [(i - p) // 2 for i, p in zip(target.shape[2:], patch_size)]
            centre = tuple(slice(o, o + p) for o, p in zip(offset, patch_size))
            patches += [sample[0][centre] for sample in target]
    finally:
        np.random.set_state(state)
    return patches[:num_patches]


def patch_foreground_volumes(
    patches: Iterable[np.ndarray], channel_masks: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """V_g of every (patch, loss channel): the number of foreground voxels of each channel of each
    label patch, int64 [num_patches · C] (patch-major, zeros included). ``channel_masks`` maps a
    label map to the boolean masks [C, *spatial] of the loss channels (label groups or regions)."""
    volumes = [
        np.asarray(channel_masks(patch), dtype=bool).reshape(-1, np.asarray(patch).size).sum(axis=1)
        for patch in patches
    ]
    return np.concatenate(volumes).astype(np.int64) if volumes else np.zeros(0, dtype=np.int64)
