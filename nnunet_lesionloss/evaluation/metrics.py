"""Lesion-wise metrics of one binary mask pair: voxel, lesion (detection), instance (PQ) level.

Every metric is defined in ``docs/metrics.md`` with its paper and equation (full citations in
``docs/references.md``). All physical
quantities use the voxel spacing *in array-axis order* (mm); volumes are in mm³ and mL.

Design:
- lesions are connected components (cc3d) of the binary masks ('full' / 'face' connectivity follows
  the image's dimension);
- one overlap table (``np.unique`` over encoded (reference id, prediction id) pairs) and two
  ``np.bincount`` calls give every per-lesion size and intersection, so no Python loop runs over
  voxels or over pairs of lesions;
- surface distances use the border voxels only (a voxel of the mask with a 6-neighbour outside it,
  the medpy/panoptica definition) and a k-d tree of the other border, which is exact and costs
  O(border) instead of one Euclidean distance transform of the whole volume per pair.

Undefined values are returned as ``None`` together with a reason in ``BinaryEvaluation.undefined``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.evaluation.matching import OverlapTable, lesion_f1, lesion_hits, match_instances
from nnunet_lesionloss.evaluation.settings import EvaluationSettings
from nnunet_lesionloss.evaluation.surface import SurfaceMetrics, SurfacePoints, surface_metrics

MM3_PER_ML = 1000.0


# --------------------------------------------------------------------------- components
def remove_small_components(
    mask: np.ndarray,
    connectivity: int,
    spacing: Sequence[float],
    min_voxels: int = 0,
    min_volume_mm3: float = 0.0,
) -> np.ndarray:
    """Drop components with fewer than ``min_voxels`` voxels or a volume not above ``min_volume_mm3``.

    ``min_volume_mm3`` is exclusive (kept: volume > value) because Anima's MSSEG rule keeps lesions
    "larger than 3 mm³"; ``min_voxels`` is inclusive (kept: size >= value) as in Joshi 2026 (§4.5:
    components smaller than 5 voxels are removed).
    """
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 and min_volume_mm3 <= 0:
        return mask
    labels, count = label_components(mask, connectivity, return_count=True)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    voxel_volume = float(np.prod(spacing))
    keep = (sizes >= max(min_voxels, 1)) & (sizes * voxel_volume > min_volume_mm3)
    keep[0] = False
    return keep[labels]


def foreground_crop(*masks: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the union of ``masks`` grown by one voxel (inside the image).

    Every metric except TN is unchanged by cropping to it: components, overlaps and surface distances
    only involve foreground voxels, and the one-voxel margin (or the image edge, which counts as
    background for the erosion) keeps the border voxels the same. Lesions fill a small part of a scan,
    so this is what makes a case cost milliseconds instead of seconds.
    """
    union = masks[0] != 0
    for mask in masks[1:]:
        union |= mask != 0
    shape = union.shape
    if not union.any():
        return tuple(slice(0, 1) for _ in shape)
    crop = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        crop.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, shape[axis])))
    return tuple(crop)


# --------------------------------------------------------------------------- surfaces


# --------------------------------------------------------------------------- overlap table


# --------------------------------------------------------------------------- detection


# --------------------------------------------------------------------------- matching


# --------------------------------------------------------------------------- results
@dataclass
class LesionMaps:
    """The lesions an evaluation counted, for the per-lesion export (``lesion_table``): component ids
    of both masks in the evaluated crop (after the minimum-size removal), their overlap table and the
    detection result of each lesion (1-based, index 0 unused)."""

    offset: tuple[int, ...]  # image index of the crop's first voxel (array-axis order)
    ref_labels: np.ndarray
    pred_labels: np.ndarray
    table: OverlapTable
    ref_hit: np.ndarray
    pred_hit: np.ndarray


@dataclass
class BinaryEvaluation:
    """Metric values of one binary mask pair; ``None`` values have a reason in ``undefined``."""

    values: dict[str, float | int | None] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)
    reference_lesions: list[dict] = field(default_factory=list)  # per reference lesion details
    lesion_maps: LesionMaps | None = None  # the labelled lesions behind the values (keep_lesion_maps=True)

    def set(self, name: str, value, reason_if_none: str | None = None) -> None:
        if value is not None and isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {name} is not finite ({value}); give it None and a reason")
        self.values[name] = value
        if value is None:
            self.undefined[name] = reason_if_none or "undefined"


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator) / float(denominator)


def size_bin_labels(edges_ml: Sequence[float]) -> list[str]:
    """Readable names of the bins cut at ``edges_ml`` (mL): '<1mL', '1-5mL', '>=5mL'."""
    edges = list(edges_ml)
    if not edges:
        return ["all"]
    names = [f"<{edges[0]:g}mL"]
    names += [f"{a:g}-{b:g}mL" for a, b in zip(edges[:-1], edges[1:])]
    names.append(f">={edges[-1]:g}mL")
    return names


def evaluate_binary(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    settings: EvaluationSettings | None = None,
    total_voxels: int | None = None,
    keep_lesion_maps: bool = False,
) -> BinaryEvaluation:
    """All metrics of one binary reference/prediction pair (see docs/metrics.md).

    ``spacing`` is the voxel size in mm in the order of the array axes. ``total_voxels`` is the size of
    the whole image when the arrays are a crop of it (only TN needs it). ``keep_lesion_maps`` keeps the
    labelled lesions in ``lesion_maps`` (for the per-lesion export).
    """
    settings = settings or EvaluationSettings()
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs prediction {prediction.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != reference.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} does not fit an array of {reference.ndim} dimensions")
    total_voxels = reference.size if total_voxels is None else int(total_voxels)
    crop = foreground_crop(reference, prediction)
    reference, prediction = reference[crop], prediction[crop]
    connectivity = settings.connectivity
    reference = remove_small_components(
        reference, connectivity, spacing, settings.min_lesion_voxels, settings.min_lesion_volume_mm3
    )
    prediction = remove_small_components(
        prediction, connectivity, spacing, settings.min_lesion_voxels, settings.min_lesion_volume_mm3
    )

    out = BinaryEvaluation()
    ref_labels, n_ref = label_components(reference, connectivity, return_count=True)
    pred_labels, n_pred = label_components(prediction, connectivity, return_count=True)
    table = OverlapTable.build(ref_labels, n_ref, pred_labels, n_pred)
    surfaces = None
    if reference.any() and prediction.any():
        surfaces = (SurfacePoints.from_labels(ref_labels, n_ref), SurfacePoints.from_labels(pred_labels, n_pred))
    voxel_volume = float(np.prod(spacing))

    _voxel_metrics(out, reference, prediction, spacing, total_voxels, surfaces, settings)
    ref_hit, pred_hit = _detection_metrics(out, table, voxel_volume, settings)
    matched_dsc, pred_matched = _instance_metrics(out, table, surfaces, ref_hit, spacing, voxel_volume, settings)
    _size_bin_metrics(out, table, ref_hit, matched_dsc, pred_matched, voxel_volume, settings)
    if keep_lesion_maps:
        offset = tuple(c.start for c in crop)
        out.lesion_maps = LesionMaps(offset, ref_labels, pred_labels, table, ref_hit, pred_hit)
    return out


def _voxel_metrics(
    out: BinaryEvaluation,
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: tuple[float, ...],
    total_voxels: int,
    surfaces: tuple[SurfacePoints, SurfacePoints] | None,
    settings: EvaluationSettings,
) -> None:
    """Overlap, volumes and surface distances of the whole masks (CATMIL eqs. 3.1-3.3, 3.8-3.12; Joshi 2026)."""
    voxel_volume = float(np.prod(spacing))
    n_ref_vox = int(np.count_nonzero(reference))
    n_pred_vox = int(np.count_nonzero(prediction))
    tp_vox = int(np.count_nonzero(reference & prediction))
    fp_vox = n_pred_vox - tp_vox
    fn_vox = n_ref_vox - tp_vox
    both_empty = "reference and prediction are both empty"
    # nnU-Net's own keys first, so tools that read nnU-Net summaries keep working
    out.set("TP", tp_vox)
    out.set("FP", fp_vox)
    out.set("FN", fn_vox)
    out.set("TN", int(total_voxels - tp_vox - fp_vox - fn_vox))
    out.set("n_ref", n_ref_vox)
    out.set("n_pred", n_pred_vox)
    out.set("Dice", _ratio(2 * tp_vox, n_ref_vox + n_pred_vox), both_empty)
    out.set("IoU", _ratio(tp_vox, tp_vox + fp_vox + fn_vox), both_empty)
    ref_ml = n_ref_vox * voxel_volume / MM3_PER_ML
    pred_ml = n_pred_vox * voxel_volume / MM3_PER_ML
    out.set("ref_volume_ml", ref_ml)
    out.set("pred_volume_ml", pred_ml)
    out.set("volume_difference_ml", pred_ml - ref_ml)
    out.set("abs_volume_error_ml", abs(pred_ml - ref_ml))
    out.set("rve", _ratio(abs(pred_ml - ref_ml), ref_ml), "reference is empty (relative volume error divides by it)")
    out.set("fp_volume_mm3", fp_vox * voxel_volume)
    out.set("fn_volume_fraction", _ratio(fn_vox, n_ref_vox), "reference is empty")

    if surfaces is None:
        reason = (
            both_empty
            if n_ref_vox == n_pred_vox == 0
            else ("reference is empty" if n_ref_vox == 0 else "prediction is empty")
        )
        for name in ("hd95", "assd", "nsd"):
            out.set(name, None, reason)
        return
    distance_spacing = settings.global_distance_spacing(spacing)
    tolerance = settings.nsd_tolerance(distance_spacing, in_voxels=settings.global_distances_in_voxels)
    whole = surface_metrics(surfaces[0].of(), surfaces[1].of(), distance_spacing, tolerance, settings.hd95)
    out.set("hd95", whole.hd95)
    out.set("assd", whole.assd)
    out.set("nsd", whole.nsd)


def _detection_metrics(
    out: BinaryEvaluation, table: OverlapTable, voxel_volume: float, settings: EvaluationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Lesion counts, precision, recall, F1, small-lesion recall (CATMIL eqs. 3.4-3.7, 3.10) with the
    settings' detection rule (:func:`lesion_hits`); returns the hits of the reference and of the
    predicted lesions."""
    n_ref, n_pred = table.n_ref, table.n_pred
    ref_hit, pred_hit = lesion_hits(table, settings)
    n_ref_hit = int(ref_hit.sum())
    n_pred_hit = int(pred_hit.sum())
    lesion_fn = n_ref - n_ref_hit
    lesion_fp = n_pred - n_pred_hit
    out.set("n_ref_lesions", n_ref)
    out.set("n_pred_lesions", n_pred)
    out.set("lesion_tp", n_ref_hit)
    out.set("lesion_tp_pred", n_pred_hit)
    out.set("lesion_fp", lesion_fp)
    out.set("lesion_fn", lesion_fn)
    out.set("lesion_count_difference", abs(n_pred - n_ref))
    precision = _ratio(n_pred_hit, n_pred)
    recall = _ratio(n_ref_hit, n_ref)
    out.set("lesion_precision", precision, "no predicted lesion")
    out.set("lesion_recall", recall, "no reference lesion")
    out.set("lesion_fdr", None if precision is None else 1.0 - precision, "no predicted lesion")
    out.set("lesion_fnr", None if recall is None else 1.0 - recall, "no reference lesion")
    f1 = lesion_f1(n_ref_hit, n_pred_hit, n_ref, n_pred, settings.f1_both_empty)
    out.set("lesion_f1", f1, "no lesion in reference or prediction")
    # ISLES'22 counts F1 from lesion counts: tp / (tp + (fp + fn) / 2)
    count_denominator = n_ref_hit + 0.5 * (lesion_fp + lesion_fn)
    count_f1 = settings.f1_both_empty if count_denominator == 0 else n_ref_hit / count_denominator
    out.set("lesion_f1_count", count_f1, "no lesion in reference or prediction")
    small = settings.is_small(table.ref_sizes[1:] * voxel_volume / MM3_PER_ML)
    out.set("n_small_ref_lesions", int(small.sum()))
    out.set(
        "small_lesion_recall",
        _ratio(int(ref_hit[1:][small].sum()), int(small.sum())),
        f"no reference lesion of {settings.small_lesion_ml:g} mL or less",
    )
    return ref_hit, pred_hit


def _instance_metrics(
    out: BinaryEvaluation,
    table: OverlapTable,
    surfaces: tuple[SurfacePoints, SurfacePoints] | None,
    ref_hit: np.ndarray,
    spacing: tuple[float, ...],
    voxel_volume: float,
    settings: EvaluationSettings,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """PQ = SQ · RQ per one-to-one matching.

    Sources: panoptica; Rachmadi et al. 2024 eq. 15; Joshi 2026 App. A.2; Kundu et al. 2026.

    Returns, for the matching used by the size bins, the DSC of each reference lesion (NaN when
    unmatched) and which predicted lesions are matched (both 1-based).
    """
    n_ref, n_pred = table.n_ref, table.n_pred
    pair_index = {(int(r), int(q)): k for k, (r, q) in enumerate(zip(table.pair_ref, table.pair_pred))}
    pair_cache: dict[tuple[int, int], SurfaceMetrics] = {}  # matchings share most pairs
    instance_spacing = settings.instance_distance_spacing(spacing)
    tolerance = settings.nsd_tolerance(instance_spacing)
    no_lesions = "no lesion in reference or prediction"
    bin_outputs: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    for spec in settings.matchings:
        p = spec.name + "_"
        m_ref, m_pred, _ = match_instances(table, spec, settings.matching_algorithm)
        tp = len(m_ref)
        fp, fn = n_pred - tp, n_ref - tp
        inter = np.array(
            [table.pair_intersection[pair_index[(int(r), int(q))]] for r, q in zip(m_ref, m_pred)], dtype=np.float64
        )
        sizes = table.ref_sizes[m_ref].astype(np.float64) + table.pred_sizes[m_pred].astype(np.float64)
        dsc = 2 * inter / sizes
        iou = inter / (sizes - inter)
        out.set(p + "tp", tp)
        out.set(p + "fp", fp)
        out.set(p + "fn", fn)
        out.set(p + "precision", _ratio(tp, n_pred), "no predicted lesion")
        out.set(p + "recall", _ratio(tp, n_ref), "no reference lesion")
        rq = _ratio(tp, tp + 0.5 * fp + 0.5 * fn)
        out.set(p + "rq", rq, no_lesions)
        no_pair = "no matched lesion pair" if rq is not None else no_lesions
        pair_surfaces = []
        for r, q in zip(m_ref, m_pred):
            key = (int(r), int(q))
            if key not in pair_cache:
                pair_cache[key] = surface_metrics(
                    surfaces[0].of(key[0]), surfaces[1].of(key[1]), instance_spacing, tolerance, settings.hd95
                )
            pair_surfaces.append(pair_cache[key])
        sq = float(iou.mean()) if tp else None
        sq_dsc = float(dsc.mean()) if tp else None
        out.set(p + "sq", sq, no_pair)
        out.set(p + "sq_std", float(iou.std()) if tp else None, no_pair)
        out.set(p + "sq_dsc", sq_dsc, no_pair)
        out.set(p + "sq_dsc_std", float(dsc.std()) if tp else None, no_pair)
        for metric in ("assd", "hd95", "nsd"):
            per_pair = np.array([getattr(s, metric) for s in pair_surfaces])
            out.set(p + "sq_" + metric, float(per_pair.mean()) if tp else None, no_pair)
            out.set(p + "sq_" + metric + "_std", float(per_pair.std()) if tp else None, no_pair)
        # PQ is 0, not undefined, when lesions exist but none is matched
        out.set(p + "pq", None if rq is None else (0.0 if tp == 0 else sq * rq), no_lesions)
        out.set(p + "pq_dsc", None if rq is None else (0.0 if tp == 0 else sq_dsc * rq), no_lesions)

        if spec.name == settings.size_bin_matching:
            ref_dsc = np.full(n_ref + 1, np.nan)
            ref_dsc[m_ref] = dsc
            pred_matched = np.zeros(n_pred + 1, dtype=bool)
            pred_matched[m_pred] = True
            bin_outputs = (ref_dsc, pred_matched)
        if spec.name == settings.reference_lesion_spec:
            pair_of_ref = np.full(n_ref + 1, -1)
            pair_of_ref[m_ref] = np.arange(tp)
            for r in range(1, n_ref + 1):
                k = int(pair_of_ref[r])
                entry = {
                    "id": r,
                    "voxels": int(table.ref_sizes[r]),
                    "volume_mm3": float(table.ref_sizes[r] * voxel_volume),
                    "detected": bool(ref_hit[r]),
                    "matched": k >= 0,
                }
                if k >= 0:
                    s = pair_surfaces[k]
                    entry.update(dsc=float(dsc[k]), iou=float(iou[k]), hd95=s.hd95, assd=s.assd, nsd=s.nsd)
                out.reference_lesions.append(entry)
    return bin_outputs


def _size_bin_metrics(
    out: BinaryEvaluation,
    table: OverlapTable,
    ref_hit: np.ndarray,
    matched_dsc: np.ndarray | None,
    pred_matched: np.ndarray | None,
    voxel_volume: float,
    settings: EvaluationSettings,
) -> None:
    """Per lesion-volume bin: recall, and RQ / SQ-DSC / PQ-DSC (Joshi 2026 Table 5.4, Kundu et al. 2026 Table 2)."""
    edges = np.asarray(settings.size_bins_ml, dtype=np.float64)
    ref_bin = np.digitize(table.ref_sizes[1:] * voxel_volume / MM3_PER_ML, edges, right=False)
    pred_bin = np.digitize(table.pred_sizes[1:] * voxel_volume / MM3_PER_ML, edges, right=False)
    for b, name in enumerate(size_bin_labels(edges)):
        p = f"bin{name}_"
        in_bin = ref_bin == b
        n_in = int(in_bin.sum())
        out.set(p + "n_ref_lesions", n_in)
        out.set(
            p + "lesion_recall", _ratio(int(ref_hit[1:][in_bin].sum()), n_in), "no reference lesion in this size bin"
        )
        if matched_dsc is None:
            continue
        dsc = matched_dsc[1:][in_bin]
        dsc = dsc[~np.isnan(dsc)]
        tp = len(dsc)
        fn = n_in - tp
        fp = int(((pred_bin == b) & ~pred_matched[1:]).sum())  # unmatched predictions, binned by their own volume
        rq = _ratio(tp, tp + 0.5 * fp + 0.5 * fn)
        out.set(p + "rq", rq, "no lesion of this size in reference or prediction")
        out.set(p + "sq_dsc", float(dsc.mean()) if tp else None, "no matched lesion pair in this size bin")
        out.set(
            p + "pq_dsc",
            None if rq is None else (0.0 if tp == 0 else float(dsc.mean()) * rq),
            "no lesion of this size in reference or prediction",
        )


# --------------------------------------------------------------------------- across cases
def concordance_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Lin's concordance correlation coefficient (Joshi 2026 §4.6): 2·cov / (var_x + var_y + (mean_x - mean_y)²).

    Population moments (1/n), as in Lin (1989). None when fewer than 2 pairs or zero total variance.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return None
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    denominator = x.var() + y.var() + (mx - my) ** 2
    return None if denominator == 0 else float(2 * cov / denominator)


def volume_weighted_dice(dice: Sequence[float | None], reference_volumes: Sequence[float]) -> float | None:
    """Mean of per-case Dice weighted by the reference volume (Joshi 2026 §4.6); cases without a Dice are skipped."""
    pairs = [(d, v) for d, v in zip(dice, reference_volumes) if d is not None]
    total = sum(v for _, v in pairs)
    return None if total == 0 else float(sum(d * v for d, v in pairs) / total)
