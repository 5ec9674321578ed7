"""The Markdown and console tables show each number as its JSON holds it and keep a case name with a ``|`` in one
cell (issue: no silent wrong number, round four, items 10 and 13): every report module's numbers go through
``formatting.format_number`` (1003275, never 1.00328e+06) and its case names and reasons through
``formatting.markdown_cell``. Each report is made from the outputs of a real run, then given a large value and
a case named ``a|b`` whose reason holds a ``|`` and a line break."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.formatting import format_number
from nnunet_lesionloss.evaluation.settings import EvaluationSettings

SHAPE = (8, 8, 8)
BINARY = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
LARGE = 1003275.0
FAILURE = {"case": "a|b", "reason": "x|y\nz"}


def _cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line)[1:-1]


def check_tables(text: str) -> None:
    """No exponent notation; every row of a table has its header's cells; the case a|b is one cell."""
    assert not re.search(r"\d\.?\d*e[+-]\d", text), text
    assert "1003275" in text
    table: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(_cells(line))
            continue
        if table:
            assert {len(row) for row in table} == {len(table[0])}, table
        table = []
    rows = [_cells(line) for line in text.splitlines() if "a\\|b" in line]
    assert rows and all(any(cell.strip() == "a\\|b" for cell in row) for row in rows), rows
    assert any(any(cell.strip() == "x\\|y z" for cell in row) for row in rows), rows


def test_format_number_writes_what_the_json_holds():
    assert format_number(LARGE) == "1003275" and format_number(LARGE, None) == "1003275"
    assert format_number(0.1, None) == "0.1" and format_number(1e-12, None) == "1e-12"
    assert format_number(2.5, None) == "2.5" and format_number(1.0, None) == "1"
    assert format_number(np.float32(0.25), None) == "0.25" and format_number(float("nan"), None) == "–"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    reference = cube(SHAPE, (2, 2, 2), (3, 3, 3))
    foreground = reference * np.float32(0.9)
    for case in ("c0", "c1"):
        write_image(root / "gt" / f"{case}.nii.gz", reference)
        write_image(root / "pred" / f"{case}.nii.gz", reference)
        (root / "probs").mkdir(exist_ok=True)
        np.savez_compressed(root / "probs" / f"{case}.npz", probabilities=np.stack([1 - foreground, foreground]))
        (root / "probs" / f"{case}.pkl").write_bytes(pickle.dumps({"spacing": [1.0, 1.0, 1.0]}))
    (root / "probs" / "dataset.json").write_text(json.dumps(BINARY))
    return root


def test_froc_md(folders):
    from nnunet_lesionloss.evaluation.froc.report import froc_markdown

    out = folders / "froc"
    assert main(["froc", "--probabilities", str(folders / "probs"), "--gt", str(folders / "gt"), "-o", str(out)]) == 0
    analysis = load_strict_json(out / "froc.json")
    entry = analysis["1"]
    entry["operating_point"]["fp_per_case"] = LARGE
    entry["settings"]["min_overlap"] = 1e-12  # a setting is shown as set, never rounded to 0.0000
    entry["failed_cases"], entry["n_failed"] = [{"fold": None, **FAILURE}], 1
    text = froc_markdown(analysis).replace("1e-12", "")
    check_tables(text)
    assert "IOU >= " in froc_markdown(analysis) and ">= 1e-12" in froc_markdown(analysis)


def test_choose_threshold_console_record(folders):
    from nnunet_lesionloss.evaluation.operating_point import format_record

    out = folders / "choice.json"
    arguments = ["--probabilities", str(folders / "probs"), "--gt", str(folders / "gt"), "-o", str(out)]
    options = ["--criterion", "sensitivity", "--max-fp-per-case", "1003275", "--quiet", "-np", "1"]
    assert main(["choose-threshold", *arguments, *options]) == 0
    text = format_record(load_strict_json(out))
    assert "at most 1003275 FP per case" in text and not re.search(r"\de[+-]\d", text)
    assert "threshold 0.1:" in text  # the grid's thresholds as set (0.1, not 0.1000)


def test_min_size_sweep_md(folders):
    from nnunet_lesionloss.evaluation.min_size_sweep_report import sweep_markdown

    out = folders / "sweep"
    assert main(["remove-small", str(folders / "pred"), str(out), "--sweep", "--gt", str(folders / "gt")]) == 0
    sweep = load_strict_json(out / "min_size_sweep.json")
    sweep["rows"][0]["mean"]["1"]["lesion_fp"] = LARGE
    sweep["errors"], sweep["n_failed"] = {FAILURE["case"]: FAILURE["reason"]}, 1
    check_tables(sweep_markdown(sweep))


def test_summary_md(folders):
    from nnunet_lesionloss.evaluation.summary_report import summary_markdown

    out = folders / "evaluation"
    assert main(["evaluate", "--gt", str(folders / "gt"), "--pred", str(folders / "pred"), "-o", str(out)]) == 0
    summary = load_strict_json(out / "summary.json")
    summary["aggregates"]["1"]["hd95"]["mean"] = LARGE
    summary["errors"], summary["n_failed"] = {FAILURE["case"]: FAILURE["reason"]}, 1
    check_tables(summary_markdown(summary, EvaluationSettings()))


def test_cv_summary_md(tmp_path):
    from test_detection import _cv_run

    from nnunet_lesionloss.evaluation.cv_report import cv_markdown

    results, gt = _cv_run(tmp_path, "nnUNetTrainerDiceCE", False)
    assert main(["cv-summary", str(results), "--gt", str(gt), "--quiet"]) == 0
    result = load_strict_json(results / "lesion_evaluation" / "cv_summary.json")
    result["mean_of_fold_means"]["1"]["hd95"] = LARGE
    result["failures"], result["n_failed"] = [{"fold": 0, **FAILURE}], 1
    check_tables(cv_markdown(result, EvaluationSettings()))


def test_inspect_md(folders):
    from nnunet_lesionloss.inspection_report import markdown_table, run_inspection

    report, _ = run_inspection(str(folders / "gt"), tau=False)
    report["size_penalty_auto"] = {
        "tau": LARGE + 0.25,
        "quantile": 0.9,
        "lesion_positive_volumes": 3,
        "patches": 4,
        "fold": 0,
    }
    report["errors"], report["n_failed"] = {FAILURE["case"]: FAILURE["reason"]}, 1
    text = markdown_table(report)
    check_tables(text)
    assert "tau = 1003275.2 voxels" in text
