"""cv-summary and compare of runs trained several times (training repeats, issue 23): cv-summary of a run with
repeats (a repeats.json run folder, or several trainer folders) against its per-repeat values computed by hand,
missing repeats named; compare's runs with repeats (a cv-summary of repeats, or folders grouped by --names),
compare.json's interface, the verdict in the metric's direction, the one-repeat line, the same aggregate for
every run (issue 26 item 5) and run names in Markdown cells (issue 26 item 13)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_evaluation_cv_compare import DATASET, SHAPE, make_results_tree

from conftest_evaluation import cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.repeat_statistics import (
    compare_repeats,
    holm_verdicts,
    resample_case_means,
)
from nnunet_lesionloss.evaluation.settings import EvaluationSettings
from nnunet_lesionloss.evaluation.statistics import case_resample_weights
from nnunet_lesionloss.repeats_layout import record_repeats, repeat_root


def hand_made_run(folder: Path, values: dict[str, dict[str, float | None]]) -> Path:
    """An evaluate output written by hand: summary.json (the keys compare reads) and cases.csv with one value
    per case and metric (None: undefined)."""
    folder.mkdir(parents=True)
    cases = sorted({c for by_case in values.values() for c in by_case})
    means = {m: float(np.mean([v for v in by_case.values() if v is not None])) for m, by_case in values.items()}
    summary = {
        "mean": {"1": means},
        "aggregates": {"1": {m: {"mean": v, "std": None, "median": None, "n": len(cases)} for m, v in means.items()}},
        "across_cases": {"1": {}},
        "n_cases": len(cases),
        "n_failed": 0,
        "settings": EvaluationSettings().to_dict(),
        "preset": "default",
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    with open(folder / "cases.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "label", "error", *values])
        for case in cases:
            writer.writerow([case, "1", ""] + ["" if (v := values[m].get(case)) is None else v for m in values])
    return folder


CASES = [f"c{k:02d}" for k in range(12)]


def repeats_of(tmp_path: Path, name: str, dice_shift: float, fp_shift: float, spread: float, seed: int) -> list[Path]:
    """Three hand-made repeats of a run: per case Dice and FP count, each repeat shifted by its retraining."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).uniform(0.5, 0.8, len(CASES))
    folders = []
    for r in range(3):
        shift = rng.normal(0, spread)
        dice = {c: float(b + dice_shift + shift + rng.normal(0, 0.01)) for c, b in zip(CASES, base, strict=True)}
        fp = {c: float(max(0, round(3 + fp_shift + rng.normal(0, 1)))) for c in CASES}
        folders.append(hand_made_run(tmp_path / f"{name}{r + 1}", {"Dice": dice, "lesion_fp": fp}))
    return folders


def compare(tmp_path: Path, folders, names, *options: str) -> tuple[int, dict, str]:
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, folders), "--names", *names, "-o", str(out), "--overwrite", *options])
    return code, load_strict_json(out / "compare.json"), (out / "compare.md").read_text()


def test_compare_json_holds_the_two_level_statistics_of_runs_grouped_by_names(tmp_path):
    a = repeats_of(tmp_path, "A", 0.0, 0.0, 0.005, 1)
    b = repeats_of(tmp_path, "B", 0.08, -2.0, 0.005, 2)  # clearly better Dice and fewer false positives
    c = repeats_of(tmp_path, "C", 0.002, 0.0, 0.03, 3)  # the same as A, with a large retraining spread
    code, data, table = compare(tmp_path, [*a, *b, *c], ["A"] * 3 + ["B"] * 3 + ["C"] * 3, "--seed", "5")
    assert code == 0
    assert data["reference"] == "A" and data["retraining_level"] == "student-t"
    assert data["directions"] == {"Dice": "higher", "lesion_fp": "lower"}
    dice, fp = data["metrics"]["Dice"], data["metrics"]["lesion_fp"]
    assert set(dice) == {"A", "B", "C"} and "diff" not in dice["A"]
    for name in ("B", "C"):
        for key in ("mean", "sd_between_repeats", "n_repeats", "diff", "ci_low", "ci_high", "p_better", "verdict"):
            assert key in dice[name]
    assert dice["B"]["verdict"] == "better" and fp["B"]["verdict"] == "better"  # lower FP count is better
    assert fp["B"]["diff"] < 0 and fp["B"]["p_better"] > 0.99
    assert dice["C"]["verdict"] == "not separable"
    # by hand: each repeat's mean over cases, their mean and sd; the two-level bootstrap of the difference
    values = {}
    for name, folders in (("A", a), ("B", b), ("C", c)):
        rows = [list(csv.DictReader(open(f / "cases.csv"))) for f in folders]
        values[name] = np.array([[float(r["Dice"]) for r in repeat] for repeat in rows])
        per_repeat = values[name].mean(axis=1)
        assert dice[name]["per_repeat"] == pytest.approx(dict(zip(["1", "2", "3"], per_repeat, strict=True)))
        assert dice[name]["mean"] == pytest.approx(per_repeat.mean())
        assert dice[name]["sd_between_repeats"] == pytest.approx(per_repeat.std(ddof=1))
        assert dice[name]["n_repeats"] == 3
    weights = case_resample_weights(len(CASES), 10000, 5)
    comparisons = [
        compare_repeats(
            resample_case_means(values[name], weights),
            resample_case_means(values["A"], weights),
            higher_is_better=True,
            seed=5,
        )
        for name in ("B", "C")
    ]
    for name, expected, verdict in zip(("B", "C"), comparisons, holm_verdicts(comparisons), strict=True):
        assert dice[name]["diff"] == pytest.approx(expected.difference)
        assert [dice[name]["ci_low"], dice[name]["ci_high"]] == pytest.approx([expected.ci_low, expected.ci_high])
        assert dice[name]["p_better"] == pytest.approx(expected.p_better)
        assert dice[name]["verdict"] == verdict
        assert dice[name]["diff"] == pytest.approx(dice[name]["mean"] - dice["A"]["mean"])
    # the table: values ± sd, the verdict column, the variance by source and the power line
    assert "| repeats | 3 | 3 | 3 |" in table
    assert f"| Dice ↑ | {dice['A']['mean']:.4f} ± {dice['A']['sd_between_repeats']:.4f} |" in table
    assert "| metric | B: difference [95 % CI] | B: P(better) | B: verdict | C: difference" in table
    assert "not separable with these repeats" in table and "| better |" in table
    assert "### Where the variance comes from" in table and "cover case sampling only" not in table
    assert dice["C"]["retraining_share"] > 0.5 and dice["C"]["separable_difference"] > abs(dice["C"]["diff"])
    assert dice["A"]["variance_components"]["retraining"] >= 0
    with open(tmp_path / "cmp" / "compare.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["metric"] == "Dice")
    assert row["B_verdict"] == "better" and float(row["B_sd_between_repeats"]) == pytest.approx(
        dice["B"]["sd_between_repeats"]
    )


def test_the_retraining_level_is_an_option_and_named(tmp_path):
    a, b = repeats_of(tmp_path, "A", 0.0, 0.0, 0.01, 1), repeats_of(tmp_path, "B", 0.01, 0.0, 0.01, 2)
    code, data, table = compare(tmp_path, [*a, *b], ["A"] * 3 + ["B"] * 3, "--retraining-level", "resample")
    assert code == 0 and data["retraining_level"] == "resample" and "resampled with replacement" in table
    with pytest.raises(SystemExit) as refused:
        main(["compare", str(a[0]), "-o", str(tmp_path / "x"), "--retraining-level", "bootstrap"])
    assert refused.value.code == 2


def test_one_repeat_says_its_intervals_cover_case_sampling_only(tmp_path):
    a, b = repeats_of(tmp_path, "A", 0.0, 0.0, 0.01, 1), repeats_of(tmp_path, "B", 0.05, 0.0, 0.01, 2)
    code, data, table = compare(tmp_path, [a[0], b[0]], ["A", "B"])
    assert code == 0 and "**These intervals cover case sampling only**" in table and "| repeats |" not in table
    assert data["metrics"]["Dice"]["B"]["n_repeats"] == 1 and data["metrics"]["Dice"]["B"]["sd_between_repeats"] is None
    assert data["metrics"]["Dice"]["B"]["covers_retraining"] is False
    # a run of one repeat against a run with repeats: compared, and the table says what its intervals cover
    code, data, table = compare(tmp_path, [*a, b[0]], ["A", "A", "A", "B"])
    assert code == 0 and "**B: one repeat**" in table and data["runs"]["A"]["n_repeats"] == 3


def test_run_names_with_a_bar_stay_in_their_markdown_cell(tmp_path):
    """Issue 26 item 13: a '|' in a name broke compare's Markdown table."""
    a, b = repeats_of(tmp_path, "A", 0.0, 0.0, 0.01, 1), repeats_of(tmp_path, "B", 0.05, 0.0, 0.01, 2)
    code, data, table = compare(tmp_path, [a[0], b[0]], ["base|line", "new|loss"])
    assert code == 0
    assert "| metric | base\\|line | new\\|loss |" in table
    assert "| metric | new\\|loss: difference [95 % CI] |" in table
    main_row = next(line for line in table.splitlines() if line.startswith("| Dice ↑ |"))
    assert len(main_row.replace("\\|", "").split("|")) == 5  # the metric and two runs: 3 cells


def _fold_tree(root: Path) -> tuple[Path, Path]:
    """Four predictions in a 2-fold nnU-Net results tree where lesion recall is undefined in one case: the
    mean over cases (0.5) is not the mean of the fold means (0.625); and the same four in one folder."""
    gt = root / "preprocessed" / DATASET / "gt_segmentations"
    run = root / "results" / DATASET / "nnUNetTrainerX__nnUNetPlans__3d_fullres"
    flat = root / "flat"
    lesions = [cube(SHAPE, (1, 1, 1), (2, 2, 2)), cube(SHAPE, (6, 6, 6), (2, 2, 2))]
    references = {"c0": lesions[0], "c1": np.zeros(SHAPE, np.uint8), "c2": lesions[0], "c3": lesions[0] + lesions[1]}
    predictions = {"c0": lesions[0], "c1": np.zeros(SHAPE, np.uint8), "c2": np.zeros(SHAPE, np.uint8), "c3": lesions[0]}
    splits = [{"train": ["c2", "c3"], "val": ["c0", "c1"]}, {"train": ["c0", "c1"], "val": ["c2", "c3"]}]
    (gt.parent).mkdir(parents=True)
    (gt.parent / "splits_final.json").write_text(json.dumps(splits))
    run.mkdir(parents=True)
    (run / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}))
    for fold, split in enumerate(splits):
        for case in split["val"]:
            write_image(gt / f"{case}.nii.gz", references[case])
            write_image(run / f"fold_{fold}" / "validation" / f"{case}.nii.gz", predictions[case])
            write_image(flat / f"{case}.nii.gz", predictions[case])
    return run, flat


def test_compare_shows_the_same_aggregate_for_an_evaluate_and_a_cv_summary_output(tmp_path, monkeypatch):
    """Issue 26 item 5: the same four predictions, evaluated by evaluate (mean over cases) and by cv-summary
    (mean of fold means), were shown with lesion recall 0.375 vs 0.583, one in bold, and a paired difference
    of 0.000. Every run's value is now its mean over cases, so the table and the difference agree."""
    run, flat = _fold_tree(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    assert main(["cv-summary", str(run), "--quiet", "-np", "1"]) == 0
    gt = tmp_path / "preprocessed" / DATASET / "gt_segmentations"
    assert (
        main(["evaluate", "--gt", str(gt), "--pred", str(flat), "--quiet", "-np", "1", "-o", str(tmp_path / "ev")]) == 0
    )
    cv = load_strict_json(run / "lesion_evaluation" / "cv_summary.json")
    assert cv["mean_of_fold_means"]["1"]["lesion_recall"] == pytest.approx(0.625)  # (1 + 0.25) / 2: what it was
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "ev"), str(run), "--names", "evaluate", "cv-summary", "-o", str(out)]) == 0
    table = (out / "compare.md").read_text()
    assert "| Lesion recall (SEN) ↑ | **0.5000** | **0.5000** |" in table
    assert "| Lesion recall (SEN) ↑ | 0.0000 [0.0000, 0.0000], p = 1.000 (n = 3) |" in table
    recall = load_strict_json(out / "compare.json")["metrics"]["lesion_recall"]
    assert recall["evaluate"]["mean"] == pytest.approx(0.5) and recall["cv-summary"]["mean"] == pytest.approx(0.5)
    assert recall["cv-summary"]["diff"] == 0.0


def test_cv_summary_of_several_folders_as_repeats_against_a_loop(tmp_path, monkeypatch):
    runs = make_results_tree(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    folders = [str(runs["nnUNetTrainerPerfect"]), str(runs["nnUNetTrainerMissesSmall"])]
    assert main(["cv-summary", *folders, "--quiet", "-np", "1"]) == 2  # several folders: -o is required
    out = tmp_path / "repeats"
    assert main(["cv-summary", *folders, "-o", str(out), "--quiet", "-np", "1"]) == 0
    result = load_strict_json(out / "cv_summary.json")
    assert result["kind"] == "cv-summary of training repeats" and result["n_repeats_summarised"] == 2
    # by hand: case k has 1 + (k % 3 + 1) lesions; repeat 1 finds all, repeat 2 only the large one
    missed = [1 / (k % 3 + 2) for k in range(10)]
    recall = result["metrics"]["1"]["lesion_recall"]
    assert recall["per_repeat"] == pytest.approx({"1": 1.0, "2": float(np.mean(missed))})
    assert recall["mean"] == pytest.approx((1 + np.mean(missed)) / 2)
    assert recall["sd_between_repeats"] == pytest.approx(np.std([1, np.mean(missed)], ddof=1))
    for r in ("1", "2"):  # each repeat's own summary, in its own folder
        own = load_strict_json(out / f"repeat_{r}" / "cv_summary.json")
        assert recall["per_repeat"][r] == pytest.approx(own["pooled"]["mean"]["1"]["lesion_recall"])
    with open(out / "cases.csv") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    for k in range(10):
        assert rows[f"case_{k:02d}"]["n_repeats"] == "2"
        assert float(rows[f"case_{k:02d}"]["lesion_recall"]) == pytest.approx((1 + missed[k]) / 2)
    assert "| lesion_recall | 1.0000 |" in (out / "cv_summary.md").read_text()
    # compare recognises it as one run of two repeats, as the two repeat summaries grouped by --names
    assert main(["cv-summary", folders[0], "--quiet", "-np", "1"]) == 0
    code, data, _ = compare(tmp_path, [out, runs["nnUNetTrainerPerfect"]], ["R", "P"])
    assert code == 0 and data["runs"]["R"]["n_repeats"] == 2
    grouped = [out / "repeat_1", out / "repeat_2", runs["nnUNetTrainerPerfect"]]
    code, again, _ = compare(tmp_path, grouped, ["R", "R", "P"])
    assert code == 0 and again["metrics"] == data["metrics"]
    # a run with repeats of its own cannot also be given the name of other folders
    assert main(["compare", str(out), str(out / "repeat_1"), "--names", "R", "R", "-o", str(tmp_path / "c")]) == 2


def test_cv_summary_of_a_run_with_a_missing_repeat_names_it(tmp_path, monkeypatch, capsys):
    """A run trained with repeats 1-3 whose repeat 2 never trained: summarised over repeats 1 and 3, with
    repeat 2 named (status 1), never averaged away; compare warns about it."""
    results = tmp_path / "results"
    source = make_results_tree(tmp_path)["nnUNetTrainerMissesSmall"]
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(results))
    trainer, plans, configuration = source.name.split("__")
    for repeat in (1, 3):
        target = repeat_root(results, repeat) / DATASET / source.name
        target.parent.mkdir(parents=True)
        os.symlink(source, target)
    manifest, _, _ = record_repeats(results, DATASET, trainer, plans, configuration, 3, None)
    run_folder = manifest.parent
    assert main(["cv-summary", str(run_folder), "--quiet", "-np", "1"]) == 1
    assert "repeat 2 missing: repeat 2 was never trained" in capsys.readouterr().err
    result = load_strict_json(run_folder / "lesion_evaluation" / "cv_summary.json")
    assert [m["repeat"] for m in result["missing_repeats"]] == ["2"]
    assert result["metrics"]["1"]["Dice"]["n_repeats"] == 2 and set(result["metrics"]["1"]["Dice"]["per_repeat"]) == {
        "1",
        "3",
    }
    assert "**Repeat 2 is missing**" in (run_folder / "lesion_evaluation" / "cv_summary.md").read_text()
    out = tmp_path / "cmp"
    assert main(["cv-summary", str(source), "--quiet", "-np", "1"]) == 0
    assert main(["compare", str(run_folder), str(source), "-o", str(out), "--names", "R", "S"]) == 1
    assert "R: repeat 2 is missing" in (out / "compare.md").read_text()


def test_a_run_folder_with_repeats_but_no_summary_is_refused_naming_the_command(tmp_path, capsys):
    results = tmp_path / "results"
    manifest, _, _ = record_repeats(results, DATASET, "T", "P", "C", 2, None)
    other = tmp_path / "x"
    other.mkdir()
    assert main(["compare", str(manifest.parent), str(other), "-o", str(tmp_path / "cmp")]) == 2
    assert f"nnunet-lesionloss cv-summary {manifest.parent} first" in capsys.readouterr().err


def test_the_same_folder_twice_in_one_run_is_refused(tmp_path, capsys):
    a = repeats_of(tmp_path, "A", 0.0, 0.0, 0.01, 1)
    assert main(["compare", *map(str, a), "--names", "A", "A", "B", "-o", str(tmp_path / "c1")]) == 0
    assert main(["compare", str(a[0]), str(a[0]), "--names", "A", "A", "-o", str(tmp_path / "c2")]) == 2
    assert "the same folder is given twice" in capsys.readouterr().err
