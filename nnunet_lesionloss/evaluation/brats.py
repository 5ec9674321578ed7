"""Outputs in the layout of the official BraTS 2025 lesion-wise evaluator (``--preset brats-mets``).

``brats_case_metrics`` turns our per-region results into the evaluator's per-case dictionary
(``metrics.json``: panoptica's names), ``brats_summary_rows`` into the rows of its summary CSV.
Summary conventions (read from the evaluator's sample output, see tests):
- ``all_instance_f1`` = RQ of the one-to-one matching; undefined when a region is absent from both;
- ``lesionwise_{dsc,hd95,nsd}_{mean,std}``: over matched reference lesions that are not small
  (volume >= 20 mm³), population std;
- ``small_instance_*``: small reference lesions (< 20 mm³) are tp when matched with DSC >= 0.1, else fn;
  fp = all unmatched predicted lesions; all four undefined when the reference has no small lesion;
- the ``mean``/``std`` rows skip undefined values, std with n - 1.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation.metrics import BinaryEvaluation

SMALL_VOLUME_MM3 = 20.0
SMALL_DETECTION_DSC = 0.1
NAN = float("nan")


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
    out.update(
        {
            "rq": get(p + "rq"),
            # the evaluator's convention with lesions but no match: DSC and NSD 0, HD95 infinite
            "sq_dsc": 0.0 if zero_tp else get(p + "sq_dsc"),
            "sq_dsc_std": 0.0 if zero_tp else get(p + "sq_dsc_std"),
            "pq_dsc": get(p + "pq_dsc"),
            "sq_hd95": math.inf if zero_tp else get(p + "sq_hd95"),
            "sq_hd95_std": 0.0 if zero_tp else get(p + "sq_hd95_std"),
            "sq_nsd": 0.0 if zero_tp else get(p + "sq_nsd"),
            "sq_nsd_std": 0.0 if zero_tp else get(p + "sq_nsd_std"),
            "instance_voxel_count_ref": float(np.mean([m["voxels"] for m in matched])) if matched else NAN,
            "instance_volume_ref": float(np.mean([m["volume_mm3"] for m in matched])) if matched else NAN,
            "global_bin_volume_pred": v["n_pred"],
            "global_bin_volume_ref": v["n_ref"],
            "global_bin_dsc": get("Dice"),
            "global_bin_hd95": get("hd95"),
            "global_bin_nsd": get("nsd"),
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
        out[f"lesionwise_{metric}_mean"] = float(values.mean()) if len(values) else NAN
        out[f"lesionwise_{metric}_std"] = float(values.std()) if len(values) else NAN
    if small:
        tp = sum(1 for i in small if i["is_matched"] and i["sq_dsc"] >= SMALL_DETECTION_DSC)
        fn = len(small) - tp
        fp = region["fp"]
        out.update(
            small_instance_tp=float(tp),
            small_instance_fn=float(fn),
            small_instance_fp=float(fp),
            small_instance_f1=tp / (tp + 0.5 * (fp + fn)),
        )
    else:
        out.update(small_instance_tp=NAN, small_instance_fn=NAN, small_instance_fp=NAN, small_instance_f1=NAN)
    return out


def brats_summary_rows(cases: list[tuple[str, dict[str, dict]]], regions: list[str]) -> tuple[list[str], list[list]]:
    """Header and rows (cases, then mean and std) of the evaluator's summary CSV."""
    header = ["subject_id"] + [f"{name}_{region}" for region in regions for name in SUMMARY_FIELDS]
    table = []
    for subject, by_region in cases:
        row = []
        for region in regions:
            values = brats_summary_values(by_region[region])
            row += [values[name] for name in SUMMARY_FIELDS]
        table.append((subject, row))
    matrix = np.array([row for _, row in table], dtype=np.float64).reshape(len(table), len(header) - 1)
    rows = [[subject] + row for subject, row in table]
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(matrix), axis=0)
        means = [float(np.nanmean(matrix[:, j])) if counts[j] else NAN for j in range(matrix.shape[1])]
        stds = [float(np.nanstd(matrix[:, j], ddof=1)) if counts[j] > 1 else NAN for j in range(matrix.shape[1])]
    rows.append(["mean"] + means)
    rows.append(["std"] + stds)
    return header, rows


def write_brats_summary_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    """CSV with empty cells for undefined values, as pandas writes NaN."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [row[0]] + ["" if (isinstance(x, float) and math.isnan(x)) else repr(float(x)) for x in row[1:]]
            )
