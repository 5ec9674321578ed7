"""``lesions.csv``: one row per reference lesion and per predicted lesion of an evaluation.

Written by ``evaluate`` (and per fold, then merged with a ``fold`` column, by ``cv-summary``) from the
lesions the evaluation itself counted (:class:`~nnunet_lesionloss.evaluation.metrics.LesionMaps`:
the same components, after the same minimum-size removal, with the detection result the lesion
metrics were computed from), so a row never disagrees with ``cases.csv``. Columns: docs/metrics.md,
"Per-lesion table". ``compare`` draws the detection rate against the reference lesion volume from it.

Physical coordinates follow ITK/SimpleITK: the centroid of a lesion's voxel indices (i, j, k) (i along
x, the last numpy axis) is mapped through the image's origin, spacing and direction,
``origin + direction · (spacing ∘ index)``, in the image's physical frame (LPS for DICOM-derived and
NIfTI images read by SimpleITK).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_lesionloss.components import component_statistics
from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.matching import match_instances
from nnunet_lesionloss.evaluation.metrics import MM3_PER_ML, LesionMaps, size_bin_labels
from nnunet_lesionloss.evaluation.plotting import pyplot, save_figure
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

__all__ = [
    "LESION_FILE",
    "LESION_COLUMNS",
    "lesion_rows",
    "physical_points",
    "write_lesion_table",
    "merge_fold_lesion_tables",
    "read_lesion_table",
    "detection_by_volume",
    "plot_detection_by_volume",
]

LESION_FILE = "lesions.csv"
#: index axis names in ITK order (i along x = the last numpy axis)
_INDEX_AXES = ("i", "j", "k")
_PHYSICAL_AXES = ("x", "y", "z")
LESION_COLUMNS = [
    "case",
    "label",
    "side",
    "lesion_id",
    "voxels",
    "volume_mm3",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "bbox_i_min",
    "bbox_i_max",
    "bbox_j_min",
    "bbox_j_max",
    "bbox_k_min",
    "bbox_k_max",
    "overlapping_ids",
    "matching",
    "matched_id",
    "matched_dsc",
    "matched_iou",
    "best_dsc",
    "detected",
    "small",
    "size_bin",
]


def physical_points(
    index_zyx: np.ndarray, spacing_zyx: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """Physical coordinates (x, y, z) of continuous voxel indices given in numpy's (z, y, x) order.

    SimpleITK's ``TransformContinuousIndexToPhysicalPoint``: origin + D · (spacing ∘ index), with the
    index, spacing and origin in ITK's (x, y, z) order and D the row-major direction matrix.
    """
    index_xyz = np.asarray(index_zyx, dtype=np.float64)[:, ::-1]
    dims = index_xyz.shape[1]
    matrix = np.asarray(direction, dtype=np.float64).reshape(dims, dims)
    scaled = index_xyz * np.asarray(spacing_zyx, dtype=np.float64)[::-1]
    return np.asarray(origin, dtype=np.float64) + scaled @ matrix.T


def _statistics(labels: np.ndarray, count: int, offset: Sequence[int]):
    """Voxel counts, centroid indices and inclusive boxes (numpy axis order, image indices) of ids 1..count."""
    counts, sums, lower, upper = component_statistics(labels[None], count + 1)
    counts = counts[1:]
    shift = np.asarray(offset, dtype=np.int64)
    centroids = sums[1:] / np.maximum(counts, 1)[:, None] + shift
    return counts, centroids, lower[1:] + shift, upper[1:] + shift


def _best_dsc(ids: np.ndarray, dsc: np.ndarray, count: int) -> np.ndarray:
    best = np.full(count + 1, np.nan)
    if len(ids):
        best[np.unique(ids)] = 0.0
        np.fmax.at(best, ids, dsc)
    return best


def lesion_rows(
    case: str,
    label: str,
    maps: LesionMaps,
    spacing_zyx: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    settings: EvaluationSettings,
) -> list[list]:
    """The rows of one case and label: reference lesions first, then predicted lesions (by id).

    ``matched_id`` / ``matched_dsc`` / ``matched_iou``: the partner in the one-to-one matching that the
    evaluation's per-lesion details use (``settings.reference_lesion_spec``, named in ``matching``);
    ``overlapping_ids``: every lesion of the other side that shares a voxel, by decreasing overlap;
    ``best_dsc``: the largest DSC with one of them; ``detected``: the evaluation's detection result
    (``settings.lesion_rule``) of this lesion (for a predicted lesion: counted as a true positive).
    """
    table = maps.table
    spec = next(m for m in settings.matchings if m.name == settings.reference_lesion_spec)
    matched_ref, matched_pred, _ = match_instances(table, spec, settings.matching_algorithm)
    pair_dsc, pair_iou = table.pair_dsc(), table.pair_iou()
    pair_index = {(int(r), int(q)): k for k, (r, q) in enumerate(zip(table.pair_ref, table.pair_pred))}
    partner = {
        "reference": dict(zip(matched_ref.tolist(), matched_pred.tolist())),
        "prediction": dict(zip(matched_pred.tolist(), matched_ref.tolist())),
    }
    order = np.argsort(-table.pair_intersection, kind="stable")
    overlapping: dict[str, dict[int, list[int]]] = {"reference": {}, "prediction": {}}
    for k in order:  # loop over overlapping pairs (about one per lesion), not over voxels
        r, q = int(table.pair_ref[k]), int(table.pair_pred[k])
        overlapping["reference"].setdefault(r, []).append(q)
        overlapping["prediction"].setdefault(q, []).append(r)
    voxel_volume = float(np.prod(spacing_zyx))
    bins = size_bin_labels(settings.size_bins_ml)
    rows = []
    sides = (
        ("reference", maps.ref_labels, table.n_ref, maps.ref_hit, table.pair_ref),
        ("prediction", maps.pred_labels, table.n_pred, maps.pred_hit, table.pair_pred),
    )
    for side, labels, count, hits, pair_ids in sides:
        if count == 0:
            continue
        counts, centroids, lower, upper = _statistics(labels, count, maps.offset)
        points = physical_points(centroids, spacing_zyx, origin, direction)
        volumes_ml = counts * voxel_volume / MM3_PER_ML
        small = settings.is_small(volumes_ml)
        size_bin = np.digitize(volumes_ml, np.asarray(settings.size_bins_ml, dtype=np.float64), right=False)
        best = _best_dsc(pair_ids, pair_dsc, count)
        for lesion in range(1, count + 1):
            k = lesion - 1
            other = partner[side].get(lesion)
            key = None if other is None else ((lesion, other) if side == "reference" else (other, lesion))
            pair = None if key is None else pair_index[key]
            box = []
            for axis in reversed(range(labels.ndim)):  # ITK order: i (x) first
                box += [int(lower[k, axis]), int(upper[k, axis])]
            centroid = list(points[k]) + [""] * (3 - len(points[k]))
            box += [""] * (6 - len(box))
            rows.append(
                [case, label, side, lesion, int(counts[k]), float(counts[k] * voxel_volume)]
                + [float(c) if c != "" else "" for c in centroid]
                + box
                + [
                    ";".join(str(i) for i in overlapping[side].get(lesion, [])),
                    spec.name,
                    "" if other is None else other,
                    "" if pair is None else float(pair_dsc[pair]),
                    "" if pair is None else float(pair_iou[pair]),
                    "" if np.isnan(best[lesion]) else float(best[lesion]),
                    int(bool(hits[lesion])),
                    int(bool(small[k])),
                    bins[int(size_bin[k])],
                ]
            )
    return rows


def write_lesion_table(path: str | Path, rows: list[list], extra_columns: dict[str, str] | None = None) -> Path:
    """``lesions.csv`` (atomically); ``extra_columns`` (e.g. the fold) go first."""
    extra_columns = extra_columns or {}
    return io.write_csv(path, list(extra_columns) + LESION_COLUMNS, [list(extra_columns.values()) + r for r in rows])


def merge_fold_lesion_tables(path: str | Path, fold_folders: dict[int, Path]) -> list[int]:
    """One ``lesions.csv`` of all folds (the fold as first column) from each fold's own file; returns
    the folds whose folder has none (an evaluation written by an older version): they are absent."""
    rows, missing = [], []
    for fold, folder in fold_folders.items():
        source = Path(folder) / LESION_FILE
        if not source.is_file():
            missing.append(fold)
            continue
        with open(source, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != LESION_COLUMNS:
                missing.append(fold)
                continue
            rows += [[str(fold)] + row for row in reader]
    io.write_csv(path, ["fold"] + LESION_COLUMNS, rows)
    return missing


def read_lesion_table(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- detection against volume
def volume_bin_edges(volumes_mm3: np.ndarray, max_bins: int = 12) -> np.ndarray:
    """Edges in mm³ at powers of 2 (of 4 when the volumes span more than ``max_bins`` octaves) around
    the volumes; the first edge is below the smallest volume, the last above the largest."""
    volumes = np.asarray(volumes_mm3, dtype=np.float64)
    low = np.floor(np.log2(volumes.min()))
    high = np.floor(np.log2(volumes.max())) + 1
    step = 1 if high - low <= max_bins else 2
    return 2.0 ** np.arange(low, high + step, step)


def detection_by_volume(rows: list[dict[str, str]], label: str, edges: np.ndarray) -> list[dict]:
    """Per volume bin [edge_k, edge_k+1) of the reference lesions of ``label``: lesions, detected, rate
    and its Wilson 95 % interval."""
    volumes = np.array([float(r["volume_mm3"]) for r in rows if r["side"] == "reference" and r["label"] == label])
    detected = np.array([r["detected"] == "1" for r in rows if r["side"] == "reference" and r["label"] == label])
    which = np.digitize(volumes, edges) - 1
    out = []
    for b in range(len(edges) - 1):
        n = int(np.count_nonzero(which == b))
        hits = int(np.count_nonzero(detected[which == b]))
        low, high = _wilson(hits, n)
        out.append(
            {"low_mm3": edges[b], "high_mm3": edges[b + 1], "n": n, "detected": hits, "rate": hits / n if n else None}
            | {"ci_low": low, "ci_high": high}
        )
    return out


def _wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """Wilson score interval of a binomial proportion (Wilson 1927)."""
    if n == 0:
        return None, None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def plot_detection_by_volume(tables: dict[str, Path], label: str, path: Path, small_lesion_ml: float | None) -> Path:
    """Detection rate of the reference lesions against their volume (log axis), one line per run, with
    Wilson 95 % intervals and the number of lesions per bin."""

    plt = pyplot()
    rows = {name: read_lesion_table(file) for name, file in tables.items()}
    volumes = [
        float(r["volume_mm3"]) for rs in rows.values() for r in rs if r["side"] == "reference" and r["label"] == label
    ]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if volumes:
        edges = volume_bin_edges(np.array(volumes))
        for k, (name, run_rows) in enumerate(rows.items()):
            bins = detection_by_volume(run_rows, label, edges)
            shown = [b for b in bins if b["n"]]
            centres = np.array([np.sqrt(b["low_mm3"] * b["high_mm3"]) for b in shown]) * (1 + 0.04 * k)
            rates = np.array([b["rate"] for b in shown])
            # the Wilson bounds contain the rate; clip the rounding of a rate of 0 or 1
            errors = np.clip(np.array([[b["rate"] - b["ci_low"], b["ci_high"] - b["rate"]] for b in shown]).T, 0, None)
            total = sum(b["n"] for b in shown)
            ax.errorbar(centres, rates, yerr=errors, marker="o", capsize=3, label=f"{name} ({total} lesions)")
        first = detection_by_volume(next(iter(rows.values())), label, edges)
        for b in first:
            if b["n"]:
                ax.annotate(f"n={b['n']}", (np.sqrt(b["low_mm3"] * b["high_mm3"]), 1.02), ha="center", fontsize=7)
    if small_lesion_ml is not None:
        ax.axvline(small_lesion_ml * MM3_PER_ML, color="black", linestyle=":", linewidth=1, label="small lesion limit")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("reference lesion volume (mm³, log scale; bins of a factor 2 or 4)")
    ax.set_ylabel("detection rate (Wilson 95 % CI)")
    return save_figure(fig, ax, f"Detection by lesion volume, label {label}", path)
