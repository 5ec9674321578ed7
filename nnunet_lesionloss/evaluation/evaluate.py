"""Evaluate one case (a prediction against its reference, per label or region) and aggregate the cases.

:func:`evaluate_case` reads the two images and returns a :class:`CaseResult` (the metrics per label, the
reasons of undefined values, the rows of lesions.csv, or the error that stopped it); :func:`evaluate_pairs`
evaluates many, in parallel; :func:`aggregate` and :func:`build_summary` turn the results into
``summary.json``'s content in nnU-Net's layout (``metric_per_case``, ``mean``, ``foreground_mean``) extended
with the lesion metrics, ``aggregates`` (mean, std, median, n), ``across_cases`` (volume CCC,
volume-weighted Dice, pooled lesion counts), ``undefined`` reasons and per-case ``errors``. The files
(summary.json, cases.csv, lesions.csv, summary.md) are written by summary_report.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.lesion_table import lesion_rows
from nnunet_lesionloss.evaluation.metrics import (
    BinaryEvaluation,
    concordance_correlation,
    evaluate_binary,
    foreground_crop,
    remove_small_components,
    size_bin_labels,
    volume_weighted_dice,
)
from nnunet_lesionloss.evaluation.panoptica_adapter import panoptica_instance_metrics
from nnunet_lesionloss.evaluation.parallel import run_parallel, unexpected_error_reason
from nnunet_lesionloss.evaluation.settings import EvaluationSettings


@dataclass
class LabelSpec:
    """What is evaluated: label/region name -> label values, plus the values allowed in the images."""

    groups: dict[str, tuple[int, ...]] | None  # None: every foreground label found in the images
    allowed: set[int] | None = None  # None: no check
    ignore_label: int | None = None
    names: dict[str, str] = field(default_factory=dict)  # key -> human name

    @classmethod
    def from_dataset_json(cls, dataset: dict) -> LabelSpec:
        groups = io.labels_from_dataset_json(dataset)
        ignore = dataset["labels"].get("ignore")
        allowed = io.allowed_label_values(dataset)
        keyed = {io.label_key(values): values for values in groups.values()}
        names = {io.label_key(values): name for name, values in groups.items()}
        return cls(groups=keyed, allowed=allowed, ignore_label=None if ignore is None else int(ignore), names=names)

    @classmethod
    def from_regions(cls, regions: dict[str, tuple[int, ...]], allowed: set[int] | None = None) -> LabelSpec:
        return cls(groups=dict(regions), allowed=allowed, names={k: k for k in regions})


@dataclass
class CaseResult:
    case: str
    reference_file: str
    prediction_file: str | None
    metrics: dict[str, dict] = field(default_factory=dict)  # label key -> metric -> value
    undefined: dict[str, dict] = field(default_factory=dict)  # label key -> metric -> reason
    reference_lesions: dict[str, list] = field(default_factory=dict)
    panoptica_check: dict[str, float | str] = field(default_factory=dict)  # label key -> max |ours - panoptica|
    error: str | None = None
    lesion_rows: list[list] = field(default_factory=list)  # lesions.csv rows (lesion_table.lesion_rows)
    # evaluated without a list of labels: the label keys present in the images (empty: label 1 stood in)
    found_labels: list[str] | None = None


def evaluate_arrays(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    labels: LabelSpec,
    settings: EvaluationSettings,
    panoptica_check: dict | None = None,
    keep_lesion_maps: bool = False,
) -> dict[str, BinaryEvaluation]:
    """Per label or region key, the metrics of one case given as integer label arrays.

    With a ``panoptica_check`` dictionary, panoptica also evaluates every label and the largest
    difference to our instance metrics is stored in it per label. ``keep_lesion_maps`` keeps each
    evaluation's labelled lesions (``lesion_maps``, offsets in the indices of the whole image).
    """
    total_voxels = reference.size
    # crop once to the non-zero voxels of both images: outside it both are 0 (see foreground_crop)
    crop = foreground_crop(reference, prediction)
    reference, prediction = reference[crop], prediction[crop]
    present = {"reference": set(np.unique(reference).tolist()), "prediction": set(np.unique(prediction).tolist())}
    for name, values in present.items():
        io.check_label_values(values, labels.allowed, name)
    groups = labels.groups
    if groups is None:
        found = sorted((present["reference"] | present["prediction"]) - {0})
        groups = {str(v): (v,) for v in found} or {"1": (1,)}
    valid = None if labels.ignore_label is None else reference != labels.ignore_label
    results = {}
    for key, values in groups.items():
        ref_mask = np.isin(reference, values) if len(values) > 1 else reference == values[0]
        pred_mask = np.isin(prediction, values) if len(values) > 1 else prediction == values[0]
        if valid is not None:  # nnU-Net's ignore label: those voxels count for nothing
            ref_mask &= valid
            pred_mask &= valid
        results[key] = evaluate_binary(
            ref_mask, pred_mask, spacing, settings, total_voxels=total_voxels, keep_lesion_maps=keep_lesion_maps
        )
        if keep_lesion_maps:
            maps = results[key].lesion_maps
            maps.offset = tuple(outer.start + inner for outer, inner in zip(crop, maps.offset))
        if panoptica_check is not None:
            try:
                panoptica_check[key] = panoptica_difference(ref_mask, pred_mask, spacing, settings, results[key].values)
            except Exception as error:  # a panoptica failure must not lose our own results
                panoptica_check[key] = f"panoptica failed: {type(error).__name__}: {error}"
    return results


def panoptica_difference(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], settings: EvaluationSettings, values: dict
) -> float:
    """Largest |ours - panoptica| over tp/fp/fn, RQ, SQ, SQ-DSC, PQ, PQ-DSC and the per-pair surface means.

    Matchings without a true positive are skipped (panoptica's edge-case conventions differ from our
    undefined values there, and the counts are then trivially equal); HD95 is compared only when ours is
    the pooled definition, which is panoptica's.
    """
    reference = remove_small_components(
        reference, settings.connectivity, spacing, settings.min_lesion_voxels, settings.min_lesion_volume_mm3
    )
    prediction = remove_small_components(
        prediction, settings.connectivity, spacing, settings.min_lesion_voxels, settings.min_lesion_volume_mm3
    )
    worst = 0.0
    for spec in settings.matchings:
        if not values.get(f"{spec.name}_tp"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = panoptica_instance_metrics(
                reference,
                prediction,
                settings.instance_distance_spacing(spacing),
                spec,
                settings.connectivity,
                settings.matching_algorithm,
            )
        for name, value in theirs.items():
            if (name == "sq_hd95" and settings.hd95 != "pooled") or (
                name == "sq_nsd" and settings.nsd_tolerance_mm is not None
            ):
                continue
            mine = values.get(f"{spec.name}_{name}")
            if mine is None or value is None or not math.isfinite(value):
                continue
            worst = max(worst, abs(float(mine) - value))
    return worst


def evaluate_case(
    case: str,
    reference_file: str,
    prediction_file: str | None,
    labels: LabelSpec,
    settings: EvaluationSettings,
    keep_lesions: bool = False,
    check_panoptica: bool = False,
    lesion_table: bool = False,
) -> CaseResult:
    """Evaluate one case; errors are caught and reported in ``CaseResult.error``. With ``lesion_table``
    the rows of lesions.csv are kept in ``CaseResult.lesion_rows``."""
    result = CaseResult(case, str(reference_file), None if prediction_file is None else str(prediction_file))
    try:
        if prediction_file is None:
            raise CaseError(f"missing prediction for case {case}")
        reference = io.read_label_image(reference_file)
        prediction = io.read_label_image(prediction_file)
        io.check_same_geometry(reference, prediction)
        reference_labels, predicted_labels = io.as_integer_labels(reference), io.as_integer_labels(prediction)
        if labels.groups is None:
            present = np.union1d(np.unique(reference_labels), np.unique(predicted_labels))
            result.found_labels = [str(v) for v in present.tolist() if v > 0]
        evaluations = evaluate_arrays(
            reference_labels,
            predicted_labels,
            reference.spacing,
            labels,
            settings,
            panoptica_check=result.panoptica_check if check_panoptica else None,
            keep_lesion_maps=lesion_table,
        )
        for key, evaluation in evaluations.items():
            result.metrics[key] = evaluation.values
            result.undefined[key] = evaluation.undefined
            if keep_lesions:
                result.reference_lesions[key] = evaluation.reference_lesions
            if lesion_table:
                result.lesion_rows += lesion_rows(
                    case,
                    key,
                    evaluation.lesion_maps,
                    reference.spacing,
                    reference.origin,
                    reference.direction,
                    settings,
                )
    except CaseError as error:
        result.error = str(error)
    except Exception as error:  # keep the other cases going, but say where it broke
        result.error = unexpected_error_reason(error)
    return result


def evaluate_pairs(
    pairs: list[tuple[str, Path, Path | None]],
    labels: LabelSpec,
    settings: EvaluationSettings,
    num_processes: int = 1,
    keep_lesions: bool = False,
    progress: bool = True,
    check_panoptica: bool = False,
    lesion_table: bool = False,
) -> list[CaseResult]:
    """Evaluate (case, reference, prediction) triples, in parallel when ``num_processes`` > 1."""
    jobs = [
        (case, ref, pred, labels, settings, keep_lesions, check_panoptica, lesion_table) for case, ref, pred in pairs
    ]
    return run_parallel(evaluate_case, jobs, num_processes, progress)


# --------------------------------------------------------------------------- aggregation
def _describe(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    n = len(array)
    return {
        "mean": float(array.mean()) if n else None,
        "std": float(array.std(ddof=1)) if n > 1 else None,
        "median": float(np.median(array)) if n else None,
        "n": n,
    }


def label_keys(results: list[CaseResult]) -> list[str]:
    """The label keys of the results, in order of appearance."""
    keys: list[str] = []
    for result in results:
        for key in result.metrics:
            if key not in keys:
                keys.append(key)
    return keys


def metric_names(results: list[CaseResult], key: str) -> list[str]:
    """The metric names of label ``key`` in the results, in order of appearance."""
    names: list[str] = []
    for result in results:
        for name in result.metrics.get(key, {}):
            if name not in names:
                names.append(name)
    return names


def aggregate(results: list[CaseResult], settings: EvaluationSettings) -> dict:
    """mean / std / median / n per label and metric (undefined values skipped), plus across-case metrics."""
    ok = [r for r in results if r.error is None]
    aggregates, means, across = {}, {}, {}
    for key in label_keys(ok):
        aggregates[key], means[key] = {}, {}
        for name in metric_names(ok, key):
            values = [r.metrics[key][name] for r in ok if r.metrics.get(key, {}).get(name) is not None]
            described = _describe(values)
            described["n_undefined"] = sum(1 for r in ok if key in r.metrics and r.metrics[key].get(name) is None)
            aggregates[key][name] = described
            means[key][name] = described["mean"]
        across[key] = across_case_metrics([r.metrics[key] for r in ok if key in r.metrics], settings)
    foreground_mean = {}
    ordered_names: list[str] = []
    for by_metric in means.values():
        ordered_names += [n for n in by_metric if n not in ordered_names]
    for name in ordered_names:  # nnU-Net: the mean over labels of the per-label means
        values = [m[name] for m in means.values() if m.get(name) is not None]
        foreground_mean[name] = float(np.mean(values)) if values else None
    return {"mean": means, "foreground_mean": foreground_mean, "aggregates": aggregates, "across_cases": across}


def across_case_metrics(case_metrics: list[dict], settings: EvaluationSettings) -> dict:
    """Metrics that need all cases at once: volume CCC, volume-weighted Dice, pooled lesion counts, case-volume bins."""
    if not case_metrics:
        return {}
    ref_volumes = [m["ref_volume_ml"] for m in case_metrics]
    pred_volumes = [m["pred_volume_ml"] for m in case_metrics]
    tp = sum(m["lesion_tp"] for m in case_metrics)
    tp_pred = sum(m["lesion_tp_pred"] for m in case_metrics)
    n_ref = sum(m["n_ref_lesions"] for m in case_metrics)
    n_pred = sum(m["n_pred_lesions"] for m in case_metrics)
    precision = tp_pred / n_pred if n_pred else None
    recall = tp / n_ref if n_ref else None
    f1 = (
        None
        if precision is None or recall is None
        else (0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    )
    out = {
        "volume_ccc": concordance_correlation(pred_volumes, ref_volumes),
        "volume_weighted_dice": volume_weighted_dice([m["Dice"] for m in case_metrics], ref_volumes),
        "pooled_dice": _pooled_dice(case_metrics),
        "pooled_lesion_precision": precision,
        "pooled_lesion_recall": recall,
        "pooled_lesion_f1": f1,
        "pooled_n_ref_lesions": n_ref,
        "pooled_n_pred_lesions": n_pred,
    }
    for name in size_bin_labels(settings.size_bins_ml):
        n_bin = sum(m.get(f"bin{name}_n_ref_lesions", 0) for m in case_metrics)
        hits = sum(
            (m.get(f"bin{name}_lesion_recall") or 0.0) * m.get(f"bin{name}_n_ref_lesions", 0) for m in case_metrics
        )
        out[f"pooled_bin{name}_n_ref_lesions"] = n_bin
        out[f"pooled_bin{name}_lesion_recall"] = round(hits) / n_bin if n_bin else None
    # Joshi 2026 Table 5.4: cases grouped by their reference volume
    edges = list(settings.size_bins_ml)
    case_bin = np.digitize(ref_volumes, edges, right=False)
    by_bin = {}
    spec = settings.size_bin_matching + "_"
    for b, name in enumerate(size_bin_labels(edges)):
        members = [m for m, cb, v in zip(case_metrics, case_bin, ref_volumes) if cb == b and v > 0]
        entry = {"n": len(members)}
        for metric in ("Dice", "rve", "lesion_fp", "lesion_fn", spec + "pq_dsc", spec + "sq_dsc", spec + "rq", "assd"):
            values = [m[metric] for m in members if m.get(metric) is not None]
            entry[metric] = float(np.mean(values)) if values else None
        by_bin[name] = entry
    out["by_case_reference_volume"] = by_bin
    return out


def _pooled_dice(case_metrics: list[dict]) -> float | None:
    tp = sum(m["TP"] for m in case_metrics)
    denominator = sum(m["n_ref"] + m["n_pred"] for m in case_metrics)
    return 2 * tp / denominator if denominator else None


def build_summary(
    results: list[CaseResult],
    settings: EvaluationSettings,
    labels: LabelSpec,
    preset: str | None,
    extra: dict | None = None,
) -> dict:
    """summary.json's content; ``extra`` adds keys (ignored predictions, input fingerprints, folders)."""
    aggregated = aggregate(results, settings)
    summary = {
        "metric_per_case": [
            {
                "prediction_file": r.prediction_file,
                "reference_file": r.reference_file,
                "case": r.case,
                "metrics": r.metrics,
                "undefined": {k: v for k, v in r.undefined.items() if v},
                "error": r.error,
            }
            for r in results
        ],
        "mean": aggregated["mean"],
        "foreground_mean": aggregated["foreground_mean"],
        "aggregates": aggregated["aggregates"],
        "across_cases": aggregated["across_cases"],
        "label_names": labels.names,
        "errors": {r.case: r.error for r in results if r.error},
        "n_cases": len(results),
        "n_failed": sum(1 for r in results if r.error),
        "settings": settings.to_dict(),
        "preset": preset,
        "label_groups": None if labels.groups is None else {k: list(v) for k, v in labels.groups.items()},
        **(extra or {}),
    }
    checks = {r.case: r.panoptica_check for r in results if r.panoptica_check}
    if checks:
        numbers = [v for by_label in checks.values() for v in by_label.values() if isinstance(v, float)]
        summary["panoptica_check"] = {"max_abs_difference": max(numbers) if numbers else None, "cases": checks}
    return summary
