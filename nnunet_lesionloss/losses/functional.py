"""Public functional API of the losses: pure torch, usable without nnU-Net."""

from .blob import blob_loss
from .catmil import cat_loss, component_adaptive_weights, mil_loss
from .cc import cc_loss
from .instance_losses import instance_losses
from .inverse_weighting import inverse_weighted_loss
from .size_penalty import estimate_size_penalty_tau, size_penalty_loss
from .voxel_losses import binary_focal_loss, focal_tversky_loss, generalized_dice_loss, tversky_loss

__all__ = [
    "blob_loss",
    "cc_loss",
    "inverse_weighted_loss",
    "cat_loss",
    "mil_loss",
    "component_adaptive_weights",
    "size_penalty_loss",
    "estimate_size_penalty_tau",
    "tversky_loss",
    "focal_tversky_loss",
    "binary_focal_loss",
    "generalized_dice_loss",
    "instance_losses",
]
