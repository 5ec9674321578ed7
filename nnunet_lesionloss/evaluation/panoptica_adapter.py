"""Run panoptica on the same lesions as our evaluator, to cross-check PQ/SQ/RQ (tests, ``--check``).

Pitfalls handled here (panoptica 2.1.7, measured):
- spacing: we pass numpy arrays and the spacing in *array-axis order*; handing panoptica a SimpleITK
  image pairs its (z, y, x) array with ``GetSpacing()`` (x, y, z);
- instances: we pass our own connected components (``UNMATCHED_INSTANCE``), so the connectivity is ours
  (panoptica's own approximator always uses cc3d's default, 26);
- its global distance metrics ignore the spacing, so only instance-level values are compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.settings import MatchingSpec


def panoptica_instance_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    matching: MatchingSpec,
    connectivity: int = 26,
    algorithm: str = "hungarian",
) -> dict:
    """panoptica's tp/fp/fn, RQ, SQ (IoU), SQ-DSC, PQ, PQ-DSC and per-pair ASSD/HD95/NSD means, in our key names."""
    import panoptica
    from panoptica import InputType, MaxBipartiteMatching, Metric, NaiveThresholdMatching, Panoptica_Evaluator

    if hasattr(panoptica, "disable_citation_reminder"):
        panoptica.disable_citation_reminder()
    ref_labels = label_components(reference, connectivity)
    pred_labels = label_components(prediction, connectivity)
    metric = Metric.DSC if matching.metric == "dsc" else Metric.IOU
    matcher_class = MaxBipartiteMatching if algorithm == "hungarian" else NaiveThresholdMatching
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.UNMATCHED_INSTANCE,
        instance_matcher=matcher_class(matching_metric=metric, matching_threshold=matching.threshold),
        instance_metrics=[Metric.DSC, Metric.IOU, Metric.ASSD, Metric.HD95, Metric.NSD],
        global_metrics=[Metric.DSC],
    )
    results = evaluator.evaluate(
        pred_labels.astype(np.int32),
        ref_labels.astype(np.int32),
        voxelspacing=tuple(float(s) for s in spacing),
        verbose=False,
    )
    result = next(iter(results.values()))
    names = {
        "tp": "tp",
        "fp": "fp",
        "fn": "fn",
        "rq": "rq",
        "sq": "sq",
        "sq_dsc": "sq_dsc",
        "pq": "pq",
        "pq_dsc": "pq_dsc",
        "sq_assd": "sq_assd",
        "sq_hd95": "sq_hd95",
        "sq_nsd": "sq_nsd",
    }
    out = {}
    for ours, theirs in names.items():
        value = getattr(result, theirs)
        out[ours] = None if value is None else float(value)
    return out
