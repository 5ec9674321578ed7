"""The FROC analysis of a cross-validation (``cv-summary``): every validation case of every fold, pooled
(:func:`cv_froc`), the headline cv_summary.json repeats under ``froc`` (:func:`cv_froc_section`), its failed cases
and its part of cv_summary.md; and the readers of what a run folder holds (:func:`load_froc`,
:func:`froc_section`), which also read the files and the section an earlier release wrote under the name
"detection".
"""

from __future__ import annotations

import json
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.formatting import format_with_interval
from nnunet_lesionloss.evaluation.froc.analysis import FrocInputs, FrocJob, analyse_and_write
from nnunet_lesionloss.evaluation.froc.settings import FROC_CASES, FROC_MARKER, FrocSettings, output_names
from nnunet_lesionloss.evaluation.io import CaseError
from nnunet_lesionloss.evaluation.probabilities import ProbabilityChannels

#: cv_summary.json's key of the FROC section
CV_SECTION = "froc"
#: what an earlier release (before the FROC analysis had its name) wrote instead of froc.json and
#: froc_cases.json, and under which key of cv_summary.json
EARLIER_FROC_FILES = ("detection.json", "detection_cases.json")
EARLIER_CV_SECTION = "detection"


def cv_froc(plan, label_spec, settings: FrocSettings, num_processes: int = 1, progress: bool = True) -> dict:
    """The FROC analysis of a cross-validation (``cv-summary``): every validation case of every fold,
    pooled, from the ``.npz`` files nnU-Net's final validation writes with ``--npz``.

    Returns ``{"skipped": reason}`` when no fold has probabilities or no dataset.json says what their
    channels are; else the analysis written to the output folder (froc.json and the other files).
    """
    folders = {fold: plan.results_dir / f"fold_{fold}" / "validation" for fold in plan.folds}
    available = {fold: {p.name[:-4]: p for p in sorted(folder.glob("*.npz"))} for fold, folder in folders.items()}
    if not any(available.values()):
        return {
            "skipped": "no .npz probabilities in the fold_*/validation folders (train with nnUNetv2_train ... --npz, "
            "as scripts/run_cv.sh does, or run nnUNetv2_train ... --val --npz)"
        }
    if plan.dataset_json is None:
        return {"skipped": f"no dataset.json in {plan.results_dir} (it says which probability channel is which)"}
    dataset = io.read_dataset_json(plan.dataset_json)
    jobs = []
    for fold in plan.folds:
        for case in plan.cases[fold]:
            reason = None
            if case not in plan.references:
                reason = f"no reference for case {case} in {plan.gt_dir}"
            elif case not in available[fold]:
                reason = f"no probabilities {case}.npz in {folders[fold]}" + (
                    "" if available[fold] else " (this fold was validated without --npz)"
                )
            jobs.append(FrocJob(case, plan.references.get(case), available[fold].get(case), fold, reason))
    if not plan.folds_given:  # as the evaluation: with --folds, the other folds' cases are not expected
        for case in plan.unassigned:
            jobs.append(FrocJob(case, plan.references[case], None, None, "no evaluated fold validated this case"))
    analysed = {(job.fold, job.case) for job in jobs}
    ignored = sorted(
        f"fold {fold}: {case}" for fold, found in available.items() for case in found if (fold, case) not in analysed
    )
    groups = label_spec.groups
    if groups is None:
        groups = {io.label_key(v): v for v in io.labels_from_dataset_json(dataset).values()}
    inputs = FrocInputs(
        groups=dict(groups),
        names=dict(label_spec.names),
        channels=ProbabilityChannels.from_dataset_json(dataset, plan.dataset_json),
        settings=settings,
        ignore_label=label_spec.ignore_label,
        allowed=io.allowed_label_values(dataset) if label_spec.allowed is None else label_spec.allowed,
    )
    inputs.channels.check_groups(inputs.groups)
    io.prepare_output_dir(plan.output_dir, output_names(list(inputs.groups)), True)
    return analyse_and_write(jobs, inputs, plan.output_dir, num_processes, progress, per_fold=True, ignored=ignored)


def headline(analysis: dict) -> dict:
    """The part of an analysis cv_summary.json repeats: per label the statistics and counts, no curves."""
    if "skipped" in analysis:
        return analysis
    keep = (
        "name",
        "ap",
        "cpm",
        "sensitivity_at_fp",
        "n_cases",
        "n_lesions",
        "n_candidates",
        "n_failed",
        "failed_cases",
        "ci",
    )
    return {key: {name: entry[name] for name in keep} for key, entry in analysis.items()}


def load_froc(folder: Path) -> tuple[dict, dict] | None:
    """(froc.json, froc_cases.json) of a run folder, or None when it has no FROC analysis; a folder an earlier
    release wrote holds them as (detection.json, detection_cases.json)."""
    folder = Path(folder)
    for analysis_file, cases_file in ((FROC_MARKER, FROC_CASES), EARLIER_FROC_FILES):
        if not (folder / analysis_file).is_file():
            continue  # the earlier names only where froc.json is absent
        if not (folder / cases_file).is_file():
            return None
        with open(folder / analysis_file) as handle:
            analysis = json.load(handle)
        with open(folder / cases_file) as handle:
            raw = json.load(handle)
        return analysis, raw
    return None


def froc_section(summary: dict) -> dict | None:
    """The FROC section of a cv_summary.json (``froc``; ``detection`` in a summary an earlier release wrote)."""
    for key in (CV_SECTION, EARLIER_CV_SECTION):
        if key in summary:
            return summary[key]
    return None


def cv_froc_section(
    plan,
    label_spec,
    evaluation_settings,
    froc_settings: FrocSettings | None = None,
    num_processes: int = 1,
    progress: bool = True,
) -> dict:
    """What ``cv-summary`` records under ``froc``: the headline of :func:`cv_froc` (the lesion
    definition of the evaluation: its connectivity, size bins and minimum lesion size), ``{"skipped": reason}``
    or ``{"error": reason}``; the full analysis is in the output folder's froc.json."""
    base = froc_settings or FrocSettings()
    settings = base.replace(
        connectivity=evaluation_settings.connectivity,
        size_bins_ml=tuple(evaluation_settings.size_bins_ml),
        min_lesion_voxels=evaluation_settings.min_lesion_voxels,
        min_lesion_volume_mm3=evaluation_settings.min_lesion_volume_mm3,
    )
    try:
        return headline(cv_froc(plan, label_spec, settings, num_processes, progress))
    except (OSError, ValueError, CaseError) as error:
        return {"error": f"the FROC analysis failed: {error}"}


def froc_failures(section: dict | None) -> list[dict]:
    """The failed cases of a cv-summary FROC section (the same for every label)."""
    if not section or "skipped" in section or "error" in section:
        return []
    return next(iter(section.values()), {}).get("failed_cases", [])


def froc_cv_markdown_lines(section: dict | None) -> list[str]:
    """The FROC part of cv_summary.md."""
    if not section:
        return []
    lines = ["## FROC analysis (pooled over the validation cases of all folds)", ""]
    if "skipped" in section or "error" in section:
        return lines + [f"Not analysed: {section.get('skipped') or section.get('error')}.", ""]
    lines += ["Details, curves and per-case values: froc.json, froc_<label>.png, froc_cases.csv.", ""]
    for key, entry in section.items():
        ci = entry["ci"]
        rates = list(entry["sensitivity_at_fp"])
        lines += [
            f"### {entry['name']} ({key}): {entry['n_cases']} cases, {entry['n_lesions']} lesions, "
            f"{entry['n_candidates']} candidates",
            "",
            "| AP | CPM | " + " | ".join(f"sens. at {r} FP/case" for r in rates) + " |",
            "|---|---|" + "---|" * len(rates),
            f"| {format_with_interval(entry['ap'], ci['ap'])} | {format_with_interval(entry['cpm'], ci['cpm'])} | "
            + " | ".join(format_with_interval(entry["sensitivity_at_fp"][r], ci["sensitivity_at_fp"][r]) for r in rates)
            + " |",
            "",
        ]
        if entry["n_failed"]:
            lines += [f"{entry['n_failed']} case(s) could not be analysed (froc.json lists them).", ""]
    return lines
