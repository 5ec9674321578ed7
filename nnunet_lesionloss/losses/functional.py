"""Public functional API of the losses: pure torch, usable without nnU-Net."""
from .catmil import cat_loss, mil_loss, component_adaptive_weights
from .size_penalty import size_penalty_loss, estimate_size_penalty_tau
from .tversky import tversky_loss, focal_tversky_loss, binary_focal_loss, generalized_dice_loss
from .instance import blob_loss, cc_loss, inverse_weighted_loss
from .instance_family import instance_losses

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
