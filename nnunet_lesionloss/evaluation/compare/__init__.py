"""``compare``: runs side by side like Table 1 of Luu et al. 2026 (CATMIL), with paired statistics that count
the sampling of cases and, for runs trained several times, the variance of training itself.

Markdown, CSV and JSON, plus PNG figures (lesion detection rate per size bin, predicted vs reference
volume per case, and the detection rate against the reference lesion volume from each run's
``lesions.csv``). What the table guarantees:

- each run is named by its trainer (``TRAINER__PLANS__CONFIG`` in its path), never by a folder name
  that every run shares (``lesion_evaluation``); names are made unique; folders given the same display name
  (``--names``) are the repeats of one run, and a cv-summary of a run with repeats is one run of its repeats;
- every run's value is the same aggregate, whatever produced it: per repeat the mean over the cases it
  evaluated (from its per-case values), per run the mean over its repeats with the standard deviation
  between repeats;
- each run shows n (cases evaluated) and how many cases failed or are missing; a run with failed or
  missing cases (or repeats) is marked (†) and never shown as best (**bold**);
- runs evaluated with different settings (preset, connectivity, matching, size bins, ...) are refused,
  or with ``allow_different_settings`` compared under a warning that names each difference;
- paired statistics against a reference run (default: the first): the difference of the runs' values over
  the cases both evaluated with the metric defined, its 95 % interval from the two-level bootstrap
  (repeat_statistics.py: cases paired, retrainings per run; with one repeat each the case bootstrap alone,
  and the table says the interval covers case sampling only), P(better), a verdict read from the interval
  with Holm's step-down across the runs compared, the variance by source and the power of the design; for
  runs of one repeat each also the two-sided Wilcoxon signed-rank p-value, Holm-corrected (docs/metrics.md).

The package in stages: :mod:`.runs` loads one evaluated training and says what makes runs incomparable or
incomplete, :mod:`.groups` groups them into runs with repeats, :mod:`.table` computes the comparison table
and the paired differences, :mod:`.froc` the FROC comparison of runs with a FROC analysis; :mod:`.report`
writes compare.md, compare.csv, compare.json and compare_froc.csv, :mod:`.plots` the figures.
:func:`compare_runs` runs the stages in order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.compare.froc import compare_froc, froc_notes, froc_settings_differences
from nnunet_lesionloss.evaluation.compare.groups import load_groups, repeated_run_notes
from nnunet_lesionloss.evaluation.compare.plots import (
    DETECTION_BY_VOLUME,
    FIGURES,
    FROC_FIGURE,
    plot_detection_by_lesion_volume,
    plot_detection_by_size,
    plot_froc_comparison,
    plot_volume_agreement,
)
from nnunet_lesionloss.evaluation.compare.report import (
    FROC_CSV,
    TABLE_FILES,
    comparison_json,
    froc_markdown,
    table_csv,
    table_markdown,
    write_froc_csv,
    write_table,
)
from nnunet_lesionloss.evaluation.compare.runs import (
    averaged_run,
    choose_label,
    completeness_notes,
    reference_differences,
    resolve_reference,
    settings_differences,
)
from nnunet_lesionloss.evaluation.compare.table import comparison_table
from nnunet_lesionloss.evaluation.froc.cross_validation import load_froc
from nnunet_lesionloss.evaluation.lesion_table import LESION_FILE
from nnunet_lesionloss.evaluation.repeat_statistics import RETRAINING_LEVELS
from nnunet_lesionloss.evaluation.statistics import BOOTSTRAP_RESAMPLES

__all__ = ["compare_runs"]


def compare_runs(
    paths: Sequence[str],
    output_dir: str,
    names: Sequence[str] | None = None,
    label: str | None = None,
    overwrite: bool = False,
    reference: str | int | None = None,
    allow_different_settings: bool = False,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    fp_rate: float = 1.0,
    retraining_level: str = "student-t",
) -> tuple[list[Path], list[str]]:
    """Write compare.md, compare.csv, compare.json and the figures (and, when the runs have a FROC analysis,
    froc.png and compare_froc.csv); returns (files written, warnings)."""
    if retraining_level not in RETRAINING_LEVELS:
        raise ValueError(f"retraining_level must be one of {', '.join(RETRAINING_LEVELS)}, got {retraining_level!r}")
    # load, and refuse what cannot be compared before anything is written
    groups = load_groups(paths, names)
    runs = [run for group in groups for run in group.repeats]  # every evaluated training, named by its repeat
    label = choose_label(runs, label)
    frocs = [load_froc(run.folder) for run in runs]
    differences = (
        settings_differences(runs) + reference_differences(runs) + froc_settings_differences(runs, frocs, label)
    )
    if differences and not allow_different_settings:
        raise ValueError(
            "the runs were evaluated with different settings or references, so their numbers are not comparable: "
            + "; ".join(differences)
            + ". Evaluate them again with the same settings and references, or pass --allow-different-settings"
        )
    reference_index = resolve_reference(groups, reference)
    notes = [f"evaluated with different settings: {d}" for d in differences]
    notes += repeated_run_notes(groups) + completeness_notes(runs, label) + froc_notes(runs, frocs, label)
    without_cases = [run.name for run in runs if run.cases_csv is None]
    if without_cases:
        notes.append(
            f"no cases.csv beside the summary of {', '.join(without_cases)}: its values are its summary's means "
            "(for a cv-summary the mean of fold means, not the mean over cases of the other runs) and it has no "
            "paired differences"
        )
    with_froc = any(d is not None for d in frocs)
    output = Path(output_dir)
    lesion_tables = {run.name: run.folder / LESION_FILE for run in runs}
    without_table = [name for name, path in lesion_tables.items() if not path.is_file()]
    if without_table:  # a missing figure, not a problem of the numbers: a note, not a warning
        print(
            f"note: no {LESION_FILE} in the evaluation of {', '.join(without_table)} (evaluate again with this "
            f"version): {DETECTION_BY_VOLUME} is not drawn",
            file=sys.stderr,
        )
    froc_files = (FROC_FIGURE, FROC_CSV) if with_froc else ()
    io.prepare_output_dir(output, [*TABLE_FILES, *FIGURES, *froc_files, DETECTION_BY_VOLUME], overwrite)

    # compute, then write
    rows = comparison_table(groups, label, reference_index, bootstrap_resamples, seed, retraining_level)
    sections, written_froc, froc_rows = [], [], []
    if with_froc:
        starts = [sum(g.n_repeats for g in groups[:k]) for k in range(len(groups))]
        per_group = [frocs[start : start + g.n_repeats] for start, g in zip(starts, groups, strict=True)]
        froc = compare_froc(
            groups, per_group, label, reference_index, fp_rate, bootstrap_resamples, seed, retraining_level
        )
        if froc.entries:
            written_froc = [
                plot_froc_comparison(froc, groups, output / FROC_FIGURE),
                write_froc_csv(froc, groups, output / FROC_CSV),
            ]
            froc_rows = froc.rows
        sections.append(froc_markdown(froc, groups))
    markdown = table_markdown(
        rows, groups, label, reference_index, notes, bootstrap_resamples, seed, sections, retraining_level, froc_rows
    )
    settings = {
        "level": 0.95,
        "bootstrap_resamples": bootstrap_resamples,
        "seed": seed,
        "retraining_level": retraining_level,
        "fp_rate": fp_rate,
    }
    data = comparison_json([*rows, *froc_rows], groups, label, reference_index, settings, notes)
    written = list(write_table(output, markdown, table_csv([*rows, *froc_rows], groups, reference_index), data))
    views = [group.repeats[0] if group.n_repeats == 1 else averaged_run(group.name, group.repeats) for group in groups]
    written += [
        plot_detection_by_size(views, label, output / FIGURES[0]),
        plot_volume_agreement(views, label, output / FIGURES[1]),
        *written_froc,
    ]
    if not without_table:
        written.append(plot_detection_by_lesion_volume(lesion_tables, views, label, output / DETECTION_BY_VOLUME))
    return written, notes
