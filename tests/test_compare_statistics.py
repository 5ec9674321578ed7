"""compare: runs named by trainer, n and failures shown, incomplete runs never best, settings checked,
and paired statistics (bootstrap CI, Wilcoxon signed-rank, Holm) tested against scipy on hand-made runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_evaluation_cv_compare import SHAPE, reference_case

from conftest_evaluation import load_strict_json, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.settings import EvaluationSettings


def hand_made_run(folder: Path, dice: dict[str, float | None], failed: tuple[str, ...] = (), settings=None) -> Path:
    """An evaluate output written by hand: summary.json (the keys compare reads) and cases.csv with
    one Dice per case (None: undefined), plus cases that failed."""
    folder.mkdir(parents=True)
    defined = [v for v in dice.values() if v is not None]
    mean = float(np.mean(defined)) if defined else None
    summary = {
        "mean": {"1": {"Dice": mean}},
        "aggregates": {"1": {"Dice": {"mean": mean, "std": None, "median": None, "n": len(defined)}}},
        "across_cases": {"1": {}},
        "n_cases": len(dice) + len(failed),
        "n_failed": len(failed),
        "settings": (settings or EvaluationSettings()).to_dict(),
        "preset": "default",
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    with open(folder / "cases.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "label", "error", "Dice"])
        for case, value in dice.items():
            writer.writerow([case, "1", "", "" if value is None else value])
        for case in failed:
            writer.writerow([case, "", "cannot read it", ""])
    return folder


RNG = np.random.default_rng(7)
CASES = [f"c{k:02d}" for k in range(14)]
BASE = {c: float(v) for c, v in zip(CASES, RNG.uniform(0.5, 0.9, len(CASES)))}


def _runs(tmp_path):
    better = {c: v + 0.05 + 0.03 * RNG.standard_normal() for c, v in BASE.items()}
    similar = {c: v + 0.01 * RNG.standard_normal() for c, v in BASE.items()}
    similar["c03"] = None  # undefined Dice in this run: the pair is left out
    partial = {c: v - 0.02 for c, v in list(BASE.items())[:10]}
    return {
        "base": (hand_made_run(tmp_path / "base", BASE), BASE),
        "better": (hand_made_run(tmp_path / "better", better), better),
        "similar": (hand_made_run(tmp_path / "similar", similar), similar),
        "partial": (hand_made_run(tmp_path / "partial", partial), partial),
    }


def test_paired_statistics_against_scipy_on_hand_made_runs(tmp_path):
    runs = _runs(tmp_path)
    out = tmp_path / "cmp"
    names = list(runs)
    code = main(["compare", *[str(runs[n][0]) for n in names], "--names", *names, "-o", str(out), "--seed", "3"])
    assert code == 1  # the runs evaluated different cases: written, with a warning
    with open(out / "compare.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["metric"] == "Dice")
    reference = runs["base"][1]
    expected_p = {}
    for name in names[1:]:
        values = runs[name][1]
        common = sorted(c for c in reference if values.get(c) is not None)
        differences = np.array([values[c] - reference[c] for c in common])
        assert int(row[f"{name}_n_paired"]) == len(common)
        assert float(row[f"{name}_diff"]) == pytest.approx(differences.mean(), abs=1e-12)
        expected_p[name] = stats.wilcoxon(differences).pvalue
        assert float(row[f"{name}_p"]) == pytest.approx(expected_p[name], rel=1e-12)
        # the bootstrap against scipy's percentile bootstrap (other resampling order: agree to Monte Carlo error)
        theirs = stats.bootstrap(
            (differences,), np.mean, n_resamples=10000, method="percentile", random_state=np.random.default_rng(3)
        ).confidence_interval
        width = theirs.high - theirs.low
        assert float(row[f"{name}_ci_low"]) == pytest.approx(theirs.low, abs=0.05 * width)
        assert float(row[f"{name}_ci_high"]) == pytest.approx(theirs.high, abs=0.05 * width)
    # Holm by hand over the three runs compared: sort p ascending, multiply by m, m-1, ..., keep monotone
    order = sorted(expected_p, key=expected_p.get)
    running, holm_expected = 0.0, {}
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * expected_p[name]))
        holm_expected[name] = running
    for name in names[1:]:
        assert float(row[f"{name}_p_holm"]) == pytest.approx(holm_expected[name], rel=1e-12)
    table = (out / "compare.md").read_text()
    assert "## Paired differences against base" in table and "(n = 13)" in table and "(n = 10)" in table
    assert "the runs evaluated different cases (base: 14, better: 14, similar: 14, partial: 10)" in table


def test_reference_run_is_chosen_by_name_or_position(tmp_path):
    runs = _runs(tmp_path)
    out = tmp_path / "cmp"
    args = ["compare", str(runs["base"][0]), str(runs["better"][0]), "--names", "base", "better", "-o", str(out)]
    assert main([*args, "--reference", "better"]) == 0
    with open(out / "compare.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["metric"] == "Dice")
    assert "base_diff" in row and "better_diff" not in row and float(row["base_diff"]) < 0
    assert main([*args, "--reference", "3", "--overwrite"]) == 2


def test_holm_and_bootstrap_by_hand():
    from nnunet_lesionloss.evaluation.statistics import bootstrap_ci, holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3·0.01; max(2·0.03, 0.04 → 0.06)
    adjusted = holm([0.5, None, 0.2])  # None is not in the family: m = 2
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.4)
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert bootstrap_ci(np.full(9, 0.25)) == (0.25, 0.25)
    assert bootstrap_ci(np.array([1.0])) is None
    sample = np.random.default_rng(0).normal(0.1, 1.0, 400)
    low, high = bootstrap_ci(sample, seed=1)
    half = 1.96 * sample.std(ddof=1) / np.sqrt(len(sample))
    assert low == pytest.approx(sample.mean() - half, abs=0.1 * half) and high == pytest.approx(
        sample.mean() + half, abs=0.1 * half
    )
    assert bootstrap_ci(sample, seed=1) == (low, high)  # seeded


def test_a_run_with_failed_cases_is_marked_and_never_best(tmp_path):
    """Observed: a run with a missing case was shown in bold as the best."""
    complete = hand_made_run(tmp_path / "complete", {"a": 0.7, "b": 0.8})
    incomplete = hand_made_run(tmp_path / "incomplete", {"a": 0.9}, failed=("b",))
    out = tmp_path / "cmp"
    assert main(["compare", str(complete), str(incomplete), "--names", "A", "B", "-o", str(out)]) == 1
    table = (out / "compare.md").read_text()
    assert "| metric | A | B † |" in table
    assert "| cases evaluated (n) | 2 | 1 |" in table and "| failed or missing | 0 | 1 |" in table
    assert "| Dice ↑ | **0.7500** | 0.9000 |" in table
    assert "B has 1 failed or missing case(s) of 2" in table
    with open(out / "compare.csv") as handle:
        rows = {r["metric"]: r for r in csv.DictReader(handle)}
    assert rows["Dice"]["best"] == "A" and rows["n_failed_or_missing"]["B"] == "1"


def test_runs_with_different_settings_are_refused_or_named(tmp_path, capsys):
    a = hand_made_run(tmp_path / "a", {"x": 0.5})
    b = hand_made_run(tmp_path / "b", {"x": 0.6}, settings=EvaluationSettings(connectivity=6, size_bins_ml=(1.0,)))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--names", "A", "B", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'connectivity: A="full", B=6' in err and "size_bins_ml: A=[1.0, 5.0], B=[1.0]" in err
    assert main(["compare", str(a), str(b), "--names", "A", "B", "-o", str(out), "--allow-different-settings"]) == 1
    assert 'evaluated with different settings: connectivity: A="full", B=6' in (out / "compare.md").read_text()


def test_runs_are_named_by_trainer_not_by_their_shared_folder_name(tmp_path):
    """Observed: two evaluate outputs, both called lesion_evaluation, collided in the table."""
    gt = tmp_path / "gt"
    folders = []
    for trainer in ("nnUNetTrainer", "nnUNetTrainerCATMIL"):
        pred = tmp_path / "results" / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0" / "validation"
        for k in range(2):
            write_image(gt / f"c{k}.nii.gz", reference_case(k))
            write_image(pred / f"c{k}.nii.gz", reference_case(k))
        assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--quiet", "-np", "1"]) == 0
        folders.append(pred / "lesion_evaluation")
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, folders), "-o", str(out)]) == 0
    assert "| metric | nnUNetTrainer | nnUNetTrainerCATMIL |" in (out / "compare.md").read_text()
    # the same trainer with two configurations: the full trainer folder tells them apart
    other = tmp_path / "results" / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation"
    for k in range(2):
        write_image(other / f"c{k}.nii.gz", reference_case(k))
    assert main(["evaluate", "--gt", str(gt), "--pred", str(other), "--quiet", "-np", "1"]) == 0
    assert main(["compare", str(folders[0]), str(other / "lesion_evaluation"), "-o", str(out), "--overwrite"]) == 0
    table = (out / "compare.md").read_text()
    assert "| metric | nnUNetTrainer__nnUNetPlans__3d_fullres | nnUNetTrainer__nnUNetPlans__2d |" in table
    assert main(["compare", str(folders[0]), str(folders[1]), "--names", "X", "X", "-o", str(out), "--overwrite"]) == 2
    summary = load_strict_json(folders[0] / "summary.json")
    assert summary["pred_dir"].endswith("validation")


def merge_by_volume(small, large, out, *options: str) -> int:
    return main(["merge-by-volume", "--small-model", str(small), "--large-model", str(large), "-o", str(out), *options])


def test_post_processing_keeps_the_label_dtype(tmp_path):
    """Observed: remove-small and merge-by-volume wrote uint16, so label 70000 became 4464."""
    import SimpleITK as sitk

    labels = np.zeros(SHAPE, np.uint32)
    labels[2:5, 2:5, 2:5] = 70000
    labels[9, 9, 9] = 3  # one voxel: removed
    write_image(tmp_path / "in" / "c.nii.gz", labels)
    write_image(tmp_path / "b" / "c.nii.gz", np.zeros(SHAPE, np.uint8))
    assert main(["remove-small", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    written = sitk.ReadImage(str(tmp_path / "out" / "c.nii.gz"))
    array = sitk.GetArrayFromImage(written)
    assert array.dtype == np.uint32 and array.max() == 70000 and array[9, 9, 9] == 0
    code = merge_by_volume(tmp_path / "b", tmp_path / "in", tmp_path / "m", "--volume-ml", "0.01")
    assert code == 0
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m" / "c.nii.gz")))
    assert merged.dtype == np.uint32 and merged.max() == 70000


def test_merge_by_volume_goes_on_past_a_case_of_one_model_only(tmp_path, capsys):
    for folder in ("a", "b"):
        write_image(tmp_path / folder / "c1.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(tmp_path / "a" / "c0.nii.gz", np.zeros(SHAPE, np.uint8))  # only in model A
    code = merge_by_volume(tmp_path / "a", tmp_path / "b", tmp_path / "m")
    assert code == 1 and (tmp_path / "m" / "c1.nii.gz").is_file()
    err = capsys.readouterr().err
    assert "c0: no image of this case in" in err and "exit status 1: 1 case(s) failed" in err
