"""The text of an operating point: :func:`format_record` shows a choose-threshold record (per label or region
the grid of the criterion, the chosen point, its optimistic and nested estimates); :func:`format_points` the
points ``apply-threshold`` applies."""

from __future__ import annotations

import numpy as np

from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.operating_point.apply import ApplyPlan

__all__ = ["format_points", "format_record"]


def format_record(record: dict) -> str:
    """The choice in a few lines: per label or region, the grid of the criterion, the point, both estimates."""
    criterion = record["criterion"]
    name = {"dice": "aggregate Dice", "lesion_f1": "lesion F1", "sensitivity": "lesion sensitivity"}[criterion]
    lines = []
    for key, target in record["targets"].items():
        lines.append(f"{target['name']} ({key}; {target['probability']}):")
        values = np.asarray(target["grid"][criterion], dtype=object)
        for ti, threshold in enumerate(record["thresholds"]):
            cells = "  ".join(
                f"m={m}: {format_number(values[ti][mi])}" for mi, m in enumerate(record["min_sizes_voxels"])
            )
            lines.append(f"  threshold {format_number(threshold, None)}: {name} {cells}")
        optimistic = target["optimistic"]
        extra = f", {format_number(optimistic['fp_per_case'], 2)} FP per case" if criterion != "dice" else ""
        limit = (
            f" (at most {format_number(record['max_fp_per_case'], None)} FP per case)"
            if criterion == "sensitivity"
            else ""
        )
        lines.append(
            f"  chosen{limit}: threshold {format_number(target['threshold'], None)}, min size {target['min_size_voxels']} voxels; "
            f"{name} {format_number(optimistic[criterion])}{extra} when chosen and measured on all {record['n_cases']} cases "
            "(optimistic)"
        )
        if target.get("constraint_met") is False:
            lines.append(
                f"  no grid point has at most {format_number(record['max_fp_per_case'], None)} FP per case: "
                "the fewest were taken"
            )
        nested = target["nested"]
        if nested is None:
            lines.append("  nested estimate: none (one fold)")
        else:
            pooled = nested["pooled"] or {}
            extra = f", {format_number(pooled.get('fp_per_case'), 2)} FP per case" if criterion != "dice" else ""
            lines.append(
                f"  nested estimate (chosen on the other folds, measured on each fold): {name} "
                f"{format_number(pooled.get(criterion))}{extra} pooled, {format_number(nested['mean_over_folds'])} mean over folds"
            )
            for fold in nested["folds"]:
                if "measured" in fold:
                    lines.append(
                        f"    fold {fold['fold']}: threshold {format_number(fold['threshold'], None)}, min size {fold['min_size_voxels']} "
                        f"-> {format_number(fold['measured'][criterion])} on {fold['n_cases']} cases"
                    )
                else:
                    lines.append(f"    fold {fold['fold']}: {fold['reason']}")
    lines.append(f"{record['n_cases']} cases ({record['fold_source']}); {record['n_failed']} failed")
    return "\n".join(lines)


def format_points(plan: ApplyPlan) -> str:
    """Each label's or region's threshold and minimum size, and the connectivity of the removal."""
    described = "; ".join(
        f"{t.name}: threshold {format_number(plan.points[t.key].threshold, None)}, min size {plan.points[t.key].min_size_voxels}"
        for t in plan.targets
    )
    # None: REMOVAL_CONNECTIVITY of each image's dimension (the plane's restriction of 18 is 8)
    shown = "18 (3D) / 8 (2D)" if plan.connectivity is None else plan.connectivity
    return f"{described} ({shown}-connectivity)"
