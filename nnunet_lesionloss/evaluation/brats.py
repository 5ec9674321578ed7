"""Outputs in the layout of the official BraTS 2025 lesion-wise evaluator (``--preset brats-mets``).

``brats_region_metrics`` turns our per-region results into the evaluator's per-case dictionary
(``metrics.json``: panoptica's names), ``brats_summary_rows`` into the rows of its summary CSV.
Which program we follow: BraTS/BraTS_evaluation's ``evaluation.py`` with panoptica 2.1.x and its
``config_mets.yaml`` (per-case values), and the ``metrics_parser.py mets`` of the release that produced
the repository's own sample summary (the same file in its packaged release); a later revision of that
parser (not in a release we could test against) adds rows for large lesions and penalties for misses.

Per-case values, edge cases (panoptica's edge-case handler as config_mets.yaml sets it):
- no lesion in reference and prediction: every ratio and distance NaN (``prec``/``rec`` absent);
- lesions but no matched pair (a region empty on one side, or no overlapping voxel): per-lesion DSC and
  NSD 0, HD95 infinite, their std NaN (panoptica's std of an empty list); RQ and PQ 0;
- ``prec`` is absent without predicted lesions, ``rec`` without reference lesions;
- global DSC/NSD/HD95 of the whole region: NaN when both masks are empty; 0, 0 and infinite when the masks
  share no voxel (one of them empty, or both non-empty and disjoint); otherwise computed.
Summary conventions (``metrics_parser.py mets``):
- ``all_instance_f1`` = RQ of the one-to-one matching; undefined when a region is absent from both;
- ``lesionwise_{dsc,hd95,nsd}_{mean,std}``: over matched reference lesions that are not small
  (volume >= 20 mm³), population std; undefined when the reference has no lesion of >= 20 mm³; 0 (DSC,
  NSD), 373 (HD95) and std 0 when it has some but none is matched;
- ``small_instance_*``: small reference lesions (< 20 mm³) are tp when matched with DSC >= 0.1, else fn;
  fp = all unmatched predicted lesions; all four undefined when the reference has no small lesion;
- a reference without a prediction (``missings``) adds a row of 0, and 373 for HD95 columns;
  a case whose evaluation failed is left out;
- the ``mean``/``std`` rows skip undefined values, std with n - 1.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation.io import csv_text_cell
from nnunet_lesionloss.evaluation.metrics import BinaryEvaluation

SMALL_VOLUME_MM3 = 20.0
SMALL_DETECTION_DSC = 0.1
#: the parser's HD95 for a large lesion without a match and for a missing case ("diameter of the cube in SRI space")
PENALTY_HD95 = 373.0
NAN = float("nan")
INF = float("inf")


def brats_region_metrics(result: BinaryEvaluation, spec_name: str) -> dict:
    """One region of one case in the evaluator's ``metrics.json`` layout (NaN where it writes NaN)."""
    v = result.values
    p = spec_name + "_"

    def get(name):
        value = v.get(name)
        return NAN if value is None else value

    matched = [les for les in result.reference_lesions if les["matched"]]
    unmatched = [les for les in result.reference_lesions if not les["matched"]]
    out = {
        "n_ref_instances": v["n_ref_lesions"],
        "n_pred_instances": v["n_pred_lesions"],
        "tp": v[p + "tp"],
        "fp": v[p + "fp"],
        "fn": v[p + "fn"],
    }
    if v.get(p + "precision") is not None:
        out["prec"] = v[p + "precision"]
    if v.get(p + "recall") is not None:
        out["rec"] = v[p + "recall"]
    tp = v[p + "tp"]
    has_instances = v["n_ref_lesions"] + v["n_pred_lesions"] > 0
    zero_tp = has_instances and tp == 0
    # global metrics: panoptica takes its zero-TP edge case when the masks share no voxel
    disjoint = has_instances and v["TP"] == 0
    out.update(
        {
            "rq": get(p + "rq"),
            # lesions but no match: DSC and NSD 0, HD95 infinite; std of the empty list NaN
            "sq_dsc": 0.0 if zero_tp else get(p + "sq_dsc"),
            "sq_dsc_std": NAN if zero_tp else get(p + "sq_dsc_std"),
            "pq_dsc": get(p + "pq_dsc"),
            "sq_hd95": INF if zero_tp else get(p + "sq_hd95"),
            "sq_hd95_std": NAN if zero_tp else get(p + "sq_hd95_std"),
            "sq_nsd": 0.0 if zero_tp else get(p + "sq_nsd"),
            "sq_nsd_std": NAN if zero_tp else get(p + "sq_nsd_std"),
            "instance_voxel_count_ref": float(np.mean([m["voxels"] for m in matched])) if matched else NAN,
            "instance_volume_ref": float(np.mean([m["volume_mm3"] for m in matched])) if matched else NAN,
            "global_bin_volume_pred": v["n_pred"],
            "global_bin_volume_ref": v["n_ref"],
            "global_bin_dsc": 0.0 if disjoint else get("Dice"),
            "global_bin_hd95": INF if disjoint else get("hd95"),
            "global_bin_nsd": 0.0 if disjoint else get("nsd"),
        }
    )
    out["reference_instances"] = [
        {
            "sq_dsc": m["dsc"],
            "sq_hd95": m["hd95"],
            "sq_nsd": m["nsd"],
            "voxel_count": m["voxels"],
            "volume": m["volume_mm3"],
            "is_matched": 1,
        }
        for m in matched
    ] + [{"voxel_count": m["voxels"], "volume": m["volume_mm3"], "is_matched": 0} for m in unmatched]
    return out


SUMMARY_FIELDS = (
    "all_instance_tp",
    "all_instance_fp",
    "all_instance_fn",
    "all_instance_f1",
    "lesionwise_dsc_mean",
    "lesionwise_dsc_std",
    "lesionwise_hd95_mean",
    "lesionwise_hd95_std",
    "lesionwise_nsd_mean",
    "lesionwise_nsd_std",
    "small_instance_tp",
    "small_instance_fn",
    "small_instance_fp",
    "small_instance_f1",
)


def brats_summary_values(region: dict) -> dict[str, float]:
    """The summary CSV's fields of one region, from ``brats_region_metrics`` output."""
    instances = region["reference_instances"]
    large_present = any(i["volume"] >= SMALL_VOLUME_MM3 for i in instances)
    large = [i for i in instances if i["is_matched"] and i["volume"] >= SMALL_VOLUME_MM3]
    small = [i for i in instances if i["volume"] < SMALL_VOLUME_MM3]
    out = {
        "all_instance_tp": float(region["tp"]),
        "all_instance_fp": float(region["fp"]),
        "all_instance_fn": float(region["fn"]),
        "all_instance_f1": float(region["rq"]),
    }
    for metric in ("dsc", "hd95", "nsd"):
        values = np.array([i["sq_" + metric] for i in large], dtype=np.float64)
        values = values[np.isfinite(values)] if metric == "hd95" else values
        if region["n_ref_instances"] == 0 or not large_present:
            mean = std = NAN
        elif len(values):
            mean, std = float(values.mean()), float(values.std())
        else:  # large reference lesions, none matched: the parser's value for an empty list
            mean, std = (PENALTY_HD95 if metric == "hd95" else 0.0), 0.0
        out[f"lesionwise_{metric}_mean"], out[f"lesionwise_{metric}_std"] = mean, std
    if small:
        tp = sum(1 for i in small if i["is_matched"] and i["sq_dsc"] >= SMALL_DETECTION_DSC)
        fn = len(small) - tp
        fp = region["fp"]
        denominator = 2 * tp + fp + fn
        out.update(
            small_instance_tp=float(tp),
            small_instance_fn=float(fn),
            small_instance_fp=float(fp),
            small_instance_f1=2 * tp / denominator if denominator else 0.0,
        )
    else:
        out.update(small_instance_tp=NAN, small_instance_fn=NAN, small_instance_fp=NAN, small_instance_f1=NAN)
    return out


def brats_summary_rows(
    cases: list[tuple[str, dict[str, dict]]], regions: list[str], missing: list[str] = ()
) -> tuple[list[str], list[list]]:
    """Header and rows (cases, then a penalty row per missing subject, then mean and std) of the
    evaluator's summary CSV. A missing subject's row holds 0, and 373 in the HD95 columns; without any
    evaluated case the parser has no columns to fill and the row stays empty."""
    header = ["subject_id"] + [f"{name}_{region}" for region in regions for name in SUMMARY_FIELDS]
    table = []
    for subject, by_region in cases:
        row = []
        for region in regions:
            values = brats_summary_values(by_region[region])
            row += [values[name] for name in SUMMARY_FIELDS]
        table.append((subject, row))
    for subject in missing:
        if cases:
            table.append((subject, [PENALTY_HD95 if "hd95" in name else 0.0 for name in header[1:]]))
        else:
            table.append((subject, [NAN] * (len(header) - 1)))
    matrix = np.array([row for _, row in table], dtype=np.float64).reshape(len(table), len(header) - 1)
    rows = [[subject] + row for subject, row in table]
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(matrix), axis=0)
        means = [float(np.nanmean(matrix[:, j])) if counts[j] else NAN for j in range(matrix.shape[1])]
        stds = [float(np.nanstd(matrix[:, j], ddof=1)) if counts[j] > 1 else NAN for j in range(matrix.shape[1])]
    rows.append(["mean"] + means)
    rows.append(["std"] + stds)
    return header, rows


def brats_outputs(results, settings, regions: list[str]) -> tuple[dict, tuple[list[str], list[list]]]:
    """``brats_metrics.json`` content and the summary CSV (header, rows), in the evaluator's layout.

    As the evaluator: evaluated cases go to ``metrics`` under their reference file name, a case whose
    evaluation failed as ``{"subject_name", "error"}`` (left out of the summary), a reference without
    a prediction to ``missings`` (a penalty row in the summary).
    """
    from nnunet_lesionloss.evaluation.metrics import BinaryEvaluation

    spec = settings.reference_lesion_spec
    cases, entries, missing = [], [], []
    for r in results:
        name = Path(r.reference_file).name if r.reference_file else r.case
        if r.error:
            if r.prediction_file is None:
                missing.append(name)
            else:
                entries.append({"subject_name": name, "error": r.error})
            continue
        by_region = {}
        for region in regions:
            evaluation = BinaryEvaluation(
                values=r.metrics[region],
                undefined=r.undefined.get(region, {}),
                reference_lesions=r.reference_lesions.get(region, []),
            )
            by_region[region] = brats_region_metrics(evaluation, spec)
        cases.append((name, by_region))
        entries.append(dict(by_region, subject_name=name))
    return {"metrics": entries, "missings": missing}, brats_summary_rows(cases, regions, missing)


def write_brats_summary_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    """CSV with empty cells for undefined values, as pandas writes NaN; the subject names escaped as every CSV of
    the package (:func:`~nnunet_lesionloss.evaluation.io.csv_text_cell`)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [csv_text_cell(row[0])]
                + ["" if (isinstance(x, float) and math.isnan(x)) else repr(float(x)) for x in row[1:]]
            )
