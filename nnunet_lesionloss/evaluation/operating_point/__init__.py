"""The operating point of a model chosen by cross-validation: ``choose-threshold`` and ``apply-threshold``.

An operating point is a probability threshold t and a minimum component size m (voxels): the prediction
of a label or region is {p >= t}, without its connected components of fewer than m voxels. It is chosen on
the validation probabilities nnU-Net keeps (``nnUNetv2_train ... --npz``: ``fold_*/validation/*.npz``),
over a grid of t and m, by one criterion:

- ``dice``: the aggregate Dice 2·Σ|P∩G| / Σ(|P|+|G|) over all cases (Joshi 2026 §4.5, thresholds 0.3-0.7);
- ``lesion_f1``: the mean over cases of the lesion F1 that ``evaluate`` reports;
- ``sensitivity``: the lesion sensitivity (detected reference lesions / reference lesions, pooled over the
  cases as a FROC curve counts them) subject to at most N false-positive lesions per case.

Lesions are counted as the evaluation counts them (:func:`~nnunet_lesionloss.evaluation.matching.lesion_hits`
with the preset's settings: connectivity, lesion rule, minimum lesion size), so a chosen point's numbers are
those ``evaluate`` reports on the post-processed masks; the minimum-size removal has its own connectivity (the
Dice criterion's default: Joshi's 18), recorded beside the settings. Because the choice is made on the same cases it is
measured on, that number is optimistic; the nested estimate chooses on all folds but one and measures on the
one left out, for each fold, and pools the left-out cases.

Speed: per case and threshold the components are labelled once (cc3d) and one overlap table is built;
every minimum size is a selection of that table's components (no re-labelling), unless the removal's
connectivity differs from the lesions' (then each minimum size above 1 labels what it keeps again). The counts of every case,
threshold and size are kept in memory, so the optimistic choice, the nested one and every criterion are
arithmetic over those counts.

Modules, in the order of the work (each imports only those before it):

- :mod:`.grid`: the grid's defaults and check, the count layout, :func:`grid_counts` (one case);
- :mod:`.selection`: :func:`measure`, :func:`select`, :func:`nested_estimate`, :func:`per_case_lesion_f1`;
- :mod:`.inputs`: the cases of a results folder or a plain folder (:func:`plan_inputs`), their folds, the
  probabilities of each label or region, the work on one case;
- :mod:`.choose`: :func:`choose_operating_point` and the JSON record it returns;
- :mod:`.apply`: the points of a record (:func:`read_operating_points`), :func:`apply_operating_point`;
- :mod:`.report`: the text of a choice (:func:`format_record`) and of the points applied.
"""

from nnunet_lesionloss.evaluation.operating_point.apply import (
    ApplyPlan,
    OperatingPoint,
    apply_operating_point,
    check_operating_points,
    plan_apply,
    points_from_record,
    read_operating_points,
    segmentation_from_masks,
)
from nnunet_lesionloss.evaluation.operating_point.choose import DEFAULT_NESTED_FOLDS, FORMAT, choose_operating_point
from nnunet_lesionloss.evaluation.operating_point.grid import (
    DICE_CONNECTIVITY,
    DICE_THRESHOLDS,
    LESION_MIN_SIZES,
    LESION_THRESHOLDS,
    N_COUNTS,
    check_grid,
    grid_counts,
)
from nnunet_lesionloss.evaluation.operating_point.inputs import (
    ChoiceInputs,
    assign_folds,
    find_dataset_json,
    plan_inputs,
    read_target_probabilities,
)
from nnunet_lesionloss.evaluation.operating_point.report import format_points, format_record
from nnunet_lesionloss.evaluation.operating_point.selection import (
    CRITERIA,
    DEFINITIONS,
    Choice,
    measure,
    nested_estimate,
    per_case_lesion_f1,
    select,
)

__all__ = [
    "CRITERIA",
    "DEFAULT_NESTED_FOLDS",
    "DEFINITIONS",
    "DICE_CONNECTIVITY",
    "DICE_THRESHOLDS",
    "FORMAT",
    "LESION_MIN_SIZES",
    "LESION_THRESHOLDS",
    "N_COUNTS",
    "ApplyPlan",
    "Choice",
    "ChoiceInputs",
    "OperatingPoint",
    "apply_operating_point",
    "assign_folds",
    "check_grid",
    "check_operating_points",
    "choose_operating_point",
    "find_dataset_json",
    "format_points",
    "format_record",
    "grid_counts",
    "measure",
    "nested_estimate",
    "per_case_lesion_f1",
    "plan_apply",
    "plan_inputs",
    "points_from_record",
    "read_operating_points",
    "read_target_probabilities",
    "segmentation_from_masks",
    "select",
]
