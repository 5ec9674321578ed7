"""``compare``: runs side by side like Table 1 of Luu et al. 2026 (CATMIL), with paired statistics.

Markdown and CSV, plus PNG figures (lesion detection rate per size bin, predicted vs reference
volume per case, and the detection rate against the reference lesion volume from each run's
``lesions.csv``). What the table guarantees:

- each run is named by its trainer (``TRAINER__PLANS__CONFIG`` in its path), never by a folder name
  that every run shares (``lesion_evaluation``); names are made unique;
- each run shows n (cases evaluated) and how many cases failed or are missing; a run with failed or
  missing cases is marked (†) and never shown as best (**bold**), because its means are over other cases;
- runs evaluated with different settings (preset, connectivity, matching, size bins, ...) are refused,
  or with ``allow_different_settings`` compared under a warning that names each difference;
- paired statistics against a reference run (default: the first): over the cases both runs evaluated
  with the metric defined, the mean paired difference (run − reference), its percentile-bootstrap 95 %
  CI (``bootstrap_resamples`` resamples, seeded) and the two-sided Wilcoxon signed-rank p-value
  (scipy.stats.wilcoxon), Holm-corrected per metric across the runs compared (docs/metrics.md).

The package in stages: :mod:`.runs` loads the runs and says what makes them incomparable or incomplete,
:mod:`.table` computes the comparison table and the paired differences, :mod:`.froc` the FROC comparison of
runs with a FROC analysis; :mod:`.report` writes compare.md, compare.csv and compare_froc.csv, :mod:`.plots`
the figures. :func:`compare_runs` runs the stages in order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.compare.froc import compare_froc, froc_notes, froc_settings_differences
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
    froc_markdown,
    table_csv,
    table_markdown,
    write_froc_csv,
    write_table,
)
from nnunet_lesionloss.evaluation.compare.runs import (
    choose_label,
    completeness_notes,
    load_runs,
    reference_differences,
    resolve_reference,
    settings_differences,
)
from nnunet_lesionloss.evaluation.compare.table import comparison_table
from nnunet_lesionloss.evaluation.froc.cross_validation import load_froc
from nnunet_lesionloss.evaluation.lesion_table import LESION_FILE
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
) -> tuple[list[Path], list[str]]:
    """Write compare.md, compare.csv and the two figures (and, when the runs have a FROC analysis,
    froc.png and compare_froc.csv); returns (files written, warnings)."""
    # load, and refuse what cannot be compared before anything is written
    runs = load_runs(paths, names)
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
    reference_index = resolve_reference(runs, reference)
    notes = [f"evaluated with different settings: {d}" for d in differences]
    notes += completeness_notes(runs, label) + froc_notes(runs, frocs, label)
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
    rows = comparison_table(runs, label, reference_index, bootstrap_resamples, seed)
    sections, written_froc = [], []
    if with_froc:
        froc = compare_froc(runs, frocs, label, reference_index, fp_rate, bootstrap_resamples, seed)
        if froc.entries:
            written_froc = [
                plot_froc_comparison(froc, runs, output / FROC_FIGURE),
                write_froc_csv(froc, runs, output / FROC_CSV),
            ]
        sections.append(froc_markdown(froc, runs))
    markdown = table_markdown(rows, runs, label, reference_index, notes, bootstrap_resamples, seed, sections)
    md, csv_path = write_table(output, markdown, table_csv(rows, runs, reference_index))
    written = [
        md,
        csv_path,
        plot_detection_by_size(runs, label, output / FIGURES[0]),
        plot_volume_agreement(runs, label, output / FIGURES[1]),
        *written_froc,
    ]
    if not without_table:
        written.append(plot_detection_by_lesion_volume(lesion_tables, runs, label, output / DETECTION_BY_VOLUME))
    return written, notes
