"""Lesion-wise evaluation: voxel, lesion and instance (panoptica-style) metrics, folders, CV, comparison.

Every metric is defined in ``docs/metrics.md`` with its paper and equation (full citations: ``docs/references.md``).
"""

from nnunet_lesionloss.evaluation.matching import apply_lesion_rule, match_instances
from nnunet_lesionloss.evaluation.metrics import (
    BinaryEvaluation,
    concordance_correlation,
    evaluate_binary,
    remove_small_components,
    volume_weighted_dice,
)
from nnunet_lesionloss.evaluation.settings import PRESETS, EvaluationSettings, MatchingSpec, get_preset

__all__ = [
    "BinaryEvaluation",
    "EvaluationSettings",
    "MatchingSpec",
    "PRESETS",
    "concordance_correlation",
    "apply_lesion_rule",
    "evaluate_binary",
    "get_preset",
    "match_instances",
    "remove_small_components",
    "volume_weighted_dice",
]
