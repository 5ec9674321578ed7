"""Folder-level driver behind ``nnunet-lesionloss evaluate``: pairing, labels, outputs, presets."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.brats import brats_region_metrics, brats_summary_rows, write_brats_summary_csv
from nnunet_lesionloss.evaluation.evaluate import LabelSpec, evaluate_pairs, write_outputs
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, Preset, get_preset


def resolve_labels(
    preset: Preset, dataset_json: str | None, gt_dir: Path, labels: Sequence[int] | None
) -> tuple[LabelSpec, dict | None]:
    """Which labels/regions to evaluate: preset regions, else --labels, else dataset.json, else all found."""
    dataset = None
    if dataset_json is None and (gt_dir.parent / "dataset.json").is_file():
        dataset_json = str(gt_dir.parent / "dataset.json")
    if dataset_json is not None:
        dataset = io.read_dataset_json(dataset_json)
    if preset.regions is not None:
        allowed = {0} | {v for values in preset.regions.values() for v in values}
        return LabelSpec.from_regions(preset.regions, allowed), dataset
    if labels:
        spec = LabelSpec(groups={str(v): (int(v),) for v in labels}, allowed=None)
        if dataset is not None:
            full = LabelSpec.from_dataset_json(dataset)
            spec.allowed, spec.ignore_label = full.allowed, full.ignore_label
            spec.names = {k: full.names.get(k, k) for k in spec.groups}
        return spec, dataset
    if dataset is not None:
        return LabelSpec.from_dataset_json(dataset), dataset
    return LabelSpec(groups=None), None


def evaluate_folders(
    gt_dir,
    pred_dir,
    output_dir=None,
    settings: EvaluationSettings | None = None,
    preset: Preset | str = "default",
    dataset_json: str | None = None,
    labels: Sequence[int] | None = None,
    file_ending: str | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    write: bool = True,
    cases: Sequence[str] | None = None,
    return_results: bool = False,
    check_panoptica: bool = False,
    pairing: str | None = None,
):
    """Evaluate every reference case of ``gt_dir`` (or only ``cases``) against ``pred_dir``; write outputs.

    Returns the summary, or (summary, case results) with ``return_results``.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    settings = settings or preset.settings
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    # nnU-Net writes its own summary.json into validation folders: never share a folder with it by default
    output_dir = Path(output_dir) if output_dir else pred_dir / "lesion_evaluation"
    label_spec, dataset = resolve_labels(preset, dataset_json, gt_dir, labels)
    if file_ending is None and dataset is not None:
        file_ending = dataset.get("file_ending")
    references = io.list_images(gt_dir, file_ending)
    if not references:
        raise FileNotFoundError(
            f"no reference images in {gt_dir}" + (f" ending in {file_ending}" if file_ending else "")
        )
    predictions = io.list_images(pred_dir, file_ending)
    pairing = pairing or ("brats" if preset.brats_outputs else "name")
    pairs = io.pair_cases(references, predictions, pairing)
    if cases is not None:
        wanted = set(cases)
        missing_references = sorted(wanted - set(references))
        if missing_references:
            raise FileNotFoundError(f"no reference in {gt_dir} for cases: {', '.join(missing_references[:10])}")
        pairs = [p for p in pairs if p[0] in wanted]
    paired = {str(p) for _, _, p in pairs if p is not None}
    unused = sorted(name for name, path in predictions.items() if str(path) not in paired)
    if unused and progress:
        print(
            f"note: {len(unused)} predictions without a reference are ignored: {', '.join(unused[:5])}"
            + (" ..." if len(unused) > 5 else ""),
            file=sys.stderr,
        )
    if write:  # fail before the work, not after it
        for name in ("summary.json", "cases.csv", "summary.md"):
            io.check_writable(output_dir / name, overwrite)
    results = evaluate_pairs(
        pairs,
        label_spec,
        settings,
        num_processes,
        keep_lesions=preset.brats_outputs,
        progress=progress,
        check_panoptica=check_panoptica,
    )
    if not write:
        from nnunet_lesionloss.evaluation.evaluate import build_summary

        summary = build_summary(results, settings, label_spec, preset.name)
    else:
        summary = write_outputs(output_dir, results, settings, label_spec, preset.name, overwrite)
        if preset.brats_outputs:
            write_brats_outputs(output_dir, results, settings, list(preset.regions), overwrite)
    return (summary, results) if return_results else summary


def write_brats_outputs(
    output_dir: Path, results, settings: EvaluationSettings, regions: list[str], overwrite: bool
) -> None:
    """``brats_metrics.json`` and ``brats_summary.csv`` in the official evaluator's layout (cases without errors)."""
    from nnunet_lesionloss.evaluation.metrics import BinaryEvaluation

    spec = settings.reference_lesion_spec
    cases = []
    for r in results:
        if r.error:
            continue
        by_region = {}
        for region in regions:
            evaluation = BinaryEvaluation(
                values=r.metrics[region],
                undefined=r.undefined.get(region, {}),
                reference_lesions=r.reference_lesions.get(region, []),
            )
            by_region[region] = brats_region_metrics(evaluation, spec)
        cases.append((Path(r.reference_file).name, by_region))
    metrics = {
        "metrics": [dict(by_region, subject_name=name) for name, by_region in cases],
        "missings": [r.case for r in results if r.error],
    }
    io.write_json(output_dir / "brats_metrics.json", metrics, overwrite=overwrite)
    if cases:
        header, rows = brats_summary_rows(cases, regions)
        write_brats_summary_csv(output_dir / "brats_summary.csv", header, rows)
