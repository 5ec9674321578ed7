"""The FROC analysis of nnU-Net's probabilities: lesion candidates, FROC, average precision, sensitivity at
fixed FP rates (command ``froc``; ``cv-summary`` pools the folds' validation cases; ``compare`` overlays runs).

Definitions are those of ``picai_eval`` (the PI-CAI challenge's evaluation, Saha et al. 2024,
DIAGNijmegen/picai_eval 1.4), and given the same detection maps and references the numbers equal its
``Metrics.AP``, ``lesion_TPR``, ``lesion_FPR`` and ``lesion_TPR_at_FPR`` (tests/test_detection.py), except
where docs/metrics.md ("FROC analysis") lists a difference. The modules, by stage:

- ``settings``: :class:`FrocSettings`, the allowed option values, the names of the files written;
- ``candidates``: static and dynamic candidates (report_guided_annotation's, Bosma et al. 2023) and the
  candidates of a detection map; ``dynamic_extraction``: the dynamic ones in one compiled pass;
- ``matching``: candidates matched one-to-one to the reference lesions of a case (:class:`FrocCase`);
- ``curves``: pooled over cases (:class:`FrocPool`): FROC, AP, sensitivity at FP rates, CPM, case bootstrap;
- ``analysis``: cases and folders (nnU-Net's ``.npz``, in parallel), :func:`froc_folders`;
- ``report``: froc.json, froc.md, the CSV files and figures;
- ``cross_validation``: ``cv-summary``'s analysis and section, :func:`load_froc`;
- ``paired``: the paired per-case and pooled differences ``compare`` reports.

The array-level functions (one probability map, one case, a pool of cases) are apart from the folder-level
ones (:func:`froc_folders`, :func:`load_froc`), as in picai_eval (``evaluate_case`` / ``evaluate`` /
``evaluate_folder``).
"""

from nnunet_lesionloss.evaluation.froc.analysis import froc_folders
from nnunet_lesionloss.evaluation.froc.candidates import (
    Candidates,
    detection_map_candidates,
    dynamic_candidates,
    extract_candidates,
    static_candidates,
)
from nnunet_lesionloss.evaluation.froc.cross_validation import load_froc
from nnunet_lesionloss.evaluation.froc.curves import FrocPool, average_precision, sensitivity_at_rates, summarise
from nnunet_lesionloss.evaluation.froc.matching import FrocCase, match_case, match_probability
from nnunet_lesionloss.evaluation.froc.settings import DEFAULT_FP_RATES, FrocSettings

__all__ = [
    "DEFAULT_FP_RATES",
    "Candidates",
    "FrocCase",
    "FrocPool",
    "FrocSettings",
    "average_precision",
    "detection_map_candidates",
    "dynamic_candidates",
    "extract_candidates",
    "froc_folders",
    "load_froc",
    "match_case",
    "match_probability",
    "sensitivity_at_rates",
    "static_candidates",
    "summarise",
]
