"""choose-threshold / apply-threshold: probability channels from dataset.json, lesion criteria, nested CV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest_evaluation import close, cube, load_strict_json, write_image
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.evaluation.metrics import evaluate_binary, remove_small_components
from nnunet_lesionloss.evaluation.operating_point import grid_counts, per_case_lesion_f1
from nnunet_lesionloss.evaluation.settings import EvaluationSettings, get_preset

SHAPE = (12, 12, 12)


def read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_probabilities(folder: Path, case: str, probabilities: np.ndarray, segmentation: np.ndarray) -> None:
    """What nnUNetv2_predict --save_probabilities writes: CASE.npz (channels first) beside CASE.nii.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{case}.npz", probabilities=probabilities.astype(np.float32))
    write_image(folder / f"{case}.nii.gz", segmentation.astype(np.uint8))


# --------------------------------------------------------------------------- regions (sigmoid channels)
REGIONS_DATASET = {
    "labels": {"background": 0, "whole": [1, 2], "core": 2},
    "regions_class_order": [1, 2],
    "file_ending": ".nii.gz",
}


def region_case(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """Reference labels 1 (4³ cube) with label 2 inside (2³); sigmoid channels: whole 0.65 inside, 0.45 on a
    one-voxel shell; core 0.8 inside, 0.1 elsewhere."""
    reference = cube(SHAPE, (3, 3, 3), (4, 4, 4))
    reference[4:6, 4:6, 4:6] = 2
    whole = reference > 0
    shell = cube(SHAPE, (2, 2, 2), (6, 6, 6)).astype(bool) & ~whole
    p_whole = np.where(whole, 0.65, np.where(shell, 0.45, 0.0))
    p_core = np.where(reference == 2, 0.8, 0.1)
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    write_image(gt / "c0.nii.gz", reference)
    write_probabilities(probs, "c0", np.stack([p_whole, p_core]), reference)
    (probs / "dataset.json").write_text(json.dumps(REGIONS_DATASET))
    return gt, probs, reference


def test_apply_threshold_on_region_probabilities_follows_dataset_json(tmp_path):
    gt, probs, reference = region_case(tmp_path)
    assert (
        main(["apply-threshold", "--probabilities", str(probs), "--threshold", "0.5", "-o", str(tmp_path / "seg")]) == 0
    )
    # nnU-Net's region conversion: each region's sigmoid channel, written in regions_class_order
    assert np.array_equal(read(tmp_path / "seg" / "c0.nii.gz"), reference)


def test_choose_threshold_on_region_probabilities_follows_dataset_json(tmp_path):
    gt, probs, _ = region_case(tmp_path)
    # one region (labels 1 and 2 together): its sigmoid channel is the only channel
    (probs / "dataset.json").write_text(
        json.dumps(
            {"labels": {"background": 0, "lesion": [1, 2]}, "regions_class_order": [1], "file_ending": ".nii.gz"}
        )
    )
    with np.load(probs / "c0.npz") as data:
        np.savez_compressed(probs / "c0.npz", probabilities=data["probabilities"][:1])
    out = tmp_path / "choice.json"
    assert main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out)]) == 0
    result = load_strict_json(out)
    # 0.3 and 0.4 add the shell; 0.5 and 0.6 are exact (the first is kept); 0.7 predicts nothing
    assert result["best_threshold"] == 0.5


def test_choose_threshold_chooses_each_region_on_its_own_channel(tmp_path):
    gt, probs, _ = region_case(tmp_path)
    out = tmp_path / "choice.json"
    assert main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "-o", str(out)]) == 0
    targets = load_strict_json(out)["targets"]
    assert sorted(targets) == ["(1, 2)", "2"]
    whole, core = targets["(1, 2)"], targets["2"]
    assert (whole["channel"], whole["threshold"], whole["optimistic"]["dice"]) == (0, 0.5, 1.0)
    assert (core["channel"], core["threshold"], core["optimistic"]["dice"]) == (1, 0.3, 1.0)
    assert core["probability"] == "sigmoid channel 1 (region core)"


def test_ambiguous_probability_channels_are_refused_with_the_choices(tmp_path, capsys):
    gt, probs, _ = region_case(tmp_path)
    # label 1 is part of a region but no region of its own
    assert main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "--label", "1"]) == 2
    err = capsys.readouterr().err
    assert "--label 1 names no region" in err and "channel 0: whole = labels [1, 2]" in err
    assert (
        main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "--label", "whole", "--channel", "1"])
        == 2
    )
    assert "is region channel 0, not --channel 1" in capsys.readouterr().err
    # without dataset.json, sigmoid channels are not taken for a softmax: the case fails with the reason
    (probs / "dataset.json").unlink()
    assert (
        main(["apply-threshold", "--probabilities", str(probs), "--threshold", "0.5", "-o", str(tmp_path / "s")]) == 1
    )
    assert "do not sum to 1" in capsys.readouterr().err
    # ... unless the channel is named
    assert (
        main(
            [
                "apply-threshold",
                "--probabilities",
                str(probs),
                "--threshold",
                "0.5",
                "--channel",
                "1",
                "-o",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert np.array_equal(read(tmp_path / "t" / "c0.nii.gz"), cube(SHAPE, (4, 4, 4), (2, 2, 2)))


def test_softmax_label_channels_follow_dataset_json(tmp_path, capsys):
    """Labels 0, 1, 2: channel k is label k; --label picks its channel, the default is 1 - background."""
    reference = cube(SHAPE, (1, 1, 1), (3, 3, 3)) + 2 * cube(SHAPE, (7, 7, 7), (3, 3, 3))
    probabilities = np.zeros((3, *SHAPE))
    probabilities[0] = 1.0
    for value, p_label in ((1, 0.6), (2, 0.45)):
        probabilities[value][reference == value] = p_label
        probabilities[0][reference == value] = 1 - p_label  # the rest of the voxel's mass is background
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    write_image(gt / "c0.nii.gz", reference)
    write_probabilities(probs, "c0", probabilities, reference)
    (probs / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "edema": 1, "core": 2}, "file_ending": ".nii.gz"})
    )
    out = tmp_path / "seg"
    assert (
        main(
            ["apply-threshold", "--probabilities", str(probs), "--threshold", "0.5", "--label", "core", "-o", str(out)]
        )
        == 0
    )
    assert not read(out / "c0.nii.gz").any()  # core has 0.45 < 0.5
    assert (
        main(["apply-threshold", "--probabilities", str(probs), "--threshold", "0.4", "-o", str(out), "--overwrite"])
        == 0
    )
    # 1 - background >= 0.4 in both lesions; each voxel gets its most probable foreground label
    assert np.array_equal(read(out / "c0.nii.gz"), reference)
    # the JSON of the single-threshold choose-threshold is read too
    (tmp_path / "old.json").write_text(json.dumps({"best_threshold": 0.4, "min_voxels": 0, "connectivity": 18}))
    old = ["apply-threshold", "--probabilities", str(probs), "--threshold-json", str(tmp_path / "old.json")]
    assert main([*old, "-o", str(tmp_path / "old")]) == 0
    assert np.array_equal(read(tmp_path / "old" / "c0.nii.gz"), reference)
    assert (
        main(["apply-threshold", "--probabilities", str(probs), "--threshold", "0.5", "--channel", "0", "-o", str(out)])
        == 2
    )
    assert "channel 0 is the softmax background" in capsys.readouterr().err


def test_apply_threshold_refuses_conflicting_or_broken_operating_points_before_writing(tmp_path, capsys):
    """The options and the JSON are read before any image: every refusal is a usage error (exit status 2)
    that names what is wrong, and the output folder is not made."""
    gt, probs, _ = region_case(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[0.5]")
    (tmp_path / "point.json").write_text(json.dumps({"best_threshold": 0.5, "min_voxels": 0, "connectivity": 18}))
    out = tmp_path / "seg"
    base = ["apply-threshold", "--probabilities", str(probs), "-o", str(out)]
    refusals = {
        "give --threshold or --threshold-json": [],
        "--min-voxels has no effect with --threshold-json": [
            "--threshold-json",
            str(tmp_path / "point.json"),
            "--min-voxels",
            "3",
        ],
        "is not valid JSON": ["--threshold-json", str(tmp_path / "broken.json")],
        "not an output of choose-threshold": ["--threshold-json", str(tmp_path / "list.json")],
    }
    for message, options in refusals.items():
        assert main([*base, *options]) == 2, message
        assert message in capsys.readouterr().err
        assert not out.exists()
    with pytest.raises(SystemExit) as refused:  # a threshold out of range is refused where it is parsed
        main([*base, "--threshold", "1.5"])
    assert refused.value.code == 2 and "must be a number in (0, 1]" in capsys.readouterr().err
    assert not out.exists()
    # the points applied are said on the screen: each region's, and the default removal connectivity
    assert main([*base, "--threshold", "0.5", "--min-voxels", "2"]) == 0
    assert "whole: threshold 0.5, min size 2; core: threshold 0.5, min size 2 (18 (3D) / 8 (2D)-connectivity)" in (
        capsys.readouterr().out
    )


# --------------------------------------------------------------------------- lesion criteria, nested estimate
BINARY_DATASET = {"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
LESION = ((2, 2, 2), (3, 3, 3))  # a 27-voxel reference lesion


def lesion_case(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, foreground probability). "A": the lesion at p = 0.4 (found at 0.3, missed at 0.6);
    "B": the lesion at p = 0.8 and two one-voxel false positives at p = 0.4 (gone at 0.6)."""
    reference = cube(SHAPE, *LESION)
    probability = np.where(reference > 0, 0.4 if kind == "A" else 0.8, 0.0)
    if kind == "B":
        probability[9, 9, 9] = probability[11, 4, 10] = 0.4
    return reference, probability


def softmax(probability: np.ndarray) -> np.ndarray:
    return np.stack([1 - probability, probability])


#: fold -> cases (kind = first letter)
FOLDS = {0: ["A0", "A1"], 1: ["B0", "B1"], 2: ["A2", "B2"]}


def write_cv_folder(root: Path, monkeypatch) -> tuple[Path, Path]:
    """A results folder with fold_0..2/validation/*.npz (as nnUNetv2_train --npz writes) and the references."""
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    gt, results = root / "gt", root / "Dataset999_Fake" / "T__P__C"
    for fold, cases in FOLDS.items():
        for case in cases:
            reference, probability = lesion_case(case[0])
            write_image(gt / f"{case}.nii.gz", reference)
            write_probabilities(results / f"fold_{fold}" / "validation", case, softmax(probability), probability >= 0.5)
    (results / "dataset.json").write_text(json.dumps(BINARY_DATASET))
    return gt, results


def test_nested_estimate_is_below_the_optimistic_one_when_the_folds_disagree(tmp_path, monkeypatch):
    """Per case, lesion F1 is 1 (A) or 1/2 (B: P = 1/3, R = 1) at 0.3, and 0 (A) or 1 (B) at 0.6.

    On all six cases 0.3 wins (mean F1 0.75 vs 0.5): the optimistic estimate. Nested: fold 0 (A, A) is
    chosen on B, B, A, B, where 0.6 wins (0.75 vs 0.625), and scores 0; fold 1 (B, B) is chosen on A, A, A, B
    (0.3: 0.875) and scores 0.5; fold 2 (A, B) on A, A, B, B (0.3: 0.75) and scores 0.75. Pooled: 2.5 / 6.
    """
    gt, results = write_cv_folder(tmp_path, monkeypatch)
    out = tmp_path / "choice.json"
    args = ["--probabilities", str(results), "--gt", str(gt), "--criterion", "lesion_f1", "-o", str(out)]
    assert main(["choose-threshold", *args, "--thresholds", "0.3", "0.6", "--min-voxels", "0", "-np", "1"]) == 0
    record = load_strict_json(out)
    choice = record["targets"]["foreground"]
    assert (choice["threshold"], choice["min_size_voxels"], record["best_threshold"]) == (0.3, 0, 0.3)
    assert close(choice["optimistic"]["lesion_f1"], 0.75)
    assert choice["optimistic"]["fp_per_case"] == 1.0 and choice["optimistic"]["sensitivity"] == 1.0
    nested = choice["nested"]
    assert [(f["fold"], f["threshold"]) for f in nested["folds"]] == [(0, 0.6), (1, 0.3), (2, 0.3)]
    assert [f["measured"]["lesion_f1"] for f in nested["folds"]] == [0.0, 0.5, 0.75]
    assert close(nested["folds"][0]["chosen_value"], 0.75) and close(nested["folds"][1]["chosen_value"], 0.875)
    assert close(nested["pooled"]["lesion_f1"], 2.5 / 6) and close(nested["mean_over_folds"], 1.25 / 3)
    # pooled sensitivity: fold 0's two lesions are missed at 0.6
    assert close(nested["pooled"]["sensitivity"], 4 / 6)
    assert record["folds"] == {"0": ["A0", "A1"], "1": ["B0", "B1"], "2": ["A2", "B2"]}
    assert record["settings"]["lesion_rule"] == "one_to_one_dsc" and record["connectivity"] == "full"
    assert record["n_failed"] == 0 and record["cases"] == sorted(c for cs in FOLDS.values() for c in cs)


def test_chosen_operating_point_round_trips_through_apply_threshold_and_evaluate(tmp_path, monkeypatch, capsys):
    gt, results = write_cv_folder(tmp_path, monkeypatch)
    # the predictions of a test set: nnUNetv2_predict --save_probabilities writes .npz, .nii.gz, dataset.json
    predicted = tmp_path / "predicted"
    for cases in FOLDS.values():
        for case in cases:
            _, probability = lesion_case(case[0])
            write_probabilities(predicted, case, softmax(probability), probability >= 0.5)
    (predicted / "dataset.json").write_text(json.dumps(BINARY_DATASET))
    for min_sizes, expected in ((["0"], (0.3, 0, 0.75)), (["0", "2"], (0.3, 2, 1.0))):
        choice, seg = tmp_path / f"choice{len(min_sizes)}.json", tmp_path / f"seg{len(min_sizes)}"
        args = ["--probabilities", str(results), "--gt", str(gt), "--criterion", "lesion_f1", "-o", str(choice)]
        assert main(["choose-threshold", *args, "--thresholds", "0.3", "0.6", "--min-voxels", *min_sizes]) == 0
        record = load_strict_json(choice)["targets"]["foreground"]
        assert (record["threshold"], record["min_size_voxels"], record["optimistic"]["lesion_f1"]) == expected
        apply = ["apply-threshold", "--probabilities", str(predicted), "--threshold-json", str(choice), "-o", str(seg)]
        assert main(apply) == 0
        assert main(["evaluate", "--gt", str(gt), "--pred", str(seg), "--quiet", "-np", "1"]) == 0
        summary = load_strict_json(seg / "lesion_evaluation" / "summary.json")
        assert close(summary["mean"]["1"]["lesion_f1"], record["optimistic"]["lesion_f1"])
        assert close(summary["mean"]["1"]["lesion_fp"], record["optimistic"]["fp_per_case"])
    # with a minimum size of 2 the one-voxel false positives are removed
    assert np.array_equal(read(seg / "B0.nii.gz"), cube(SHAPE, *LESION))
    # a choice made for a label model is refused for region probabilities
    (predicted / "dataset.json").write_text(json.dumps(REGIONS_DATASET))
    apply[-1] = str(tmp_path / "other")
    assert main(apply) == 2
    assert "not for (1, 2), 2" in capsys.readouterr().err


def test_sensitivity_at_a_false_positive_limit_uses_the_minimum_size(tmp_path):
    """Each case: a 27-voxel and a 2-voxel lesion, and four one-voxel false positives, all at p = 0.9.

    Minimum size 0: sensitivity 1 at 4 FP per case; 2: sensitivity 1 at 0 FP; 3: sensitivity 1/2 at 0 FP.
    """
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    for k in range(3):
        reference = cube(SHAPE, *LESION)
        reference[10, 10, 9:11] = 1
        probability = np.where(reference > 0, 0.9, 0.0)
        for corner in ((0, 11, 0), (11, 0, 0), (0, 0, 11), (11, 11, 0)):
            probability[corner] = 0.9
        write_image(gt / f"c{k}.nii.gz", reference)
        write_probabilities(probs, f"c{k}", softmax(probability), probability >= 0.5)
    out = tmp_path / "choice.json"
    args = [
        "--probabilities",
        str(probs),
        "--gt",
        str(gt),
        "-o",
        str(out),
        "--thresholds",
        "0.5",
        "--min-voxels",
        "0",
        "2",
        "3",
    ]
    assert (
        main(["choose-threshold", *args, "--criterion", "sensitivity", "--max-fp-per-case", "1", "--nested-folds", "3"])
        == 0
    )
    record = load_strict_json(out)
    choice = record["targets"]["foreground"]
    assert (choice["threshold"], choice["min_size_voxels"], choice["constraint_met"]) == (0.5, 2, True)
    assert choice["grid"]["fp_per_case"] == [[4.0, 0.0, 0.0]] and choice["grid"]["sensitivity"] == [[1.0, 1.0, 0.5]]
    assert choice["nested"]["pooled"]["sensitivity"] == 1.0 and len(choice["nested"]["folds"]) == 3
    assert "3 folds of the cases drawn with seed 0" in record["fold_source"]
    # no grid point reaches 0 FP per case without the minimum size: the fewest false positives are taken
    args[-4:] = ["--min-voxels", "0"]
    assert (
        main(["choose-threshold", *args, "--criterion", "sensitivity", "--max-fp-per-case", "0.5", "--overwrite"]) == 0
    )
    assert load_strict_json(out)["targets"]["foreground"]["constraint_met"] is False
    assert main(["choose-threshold", *args, "--criterion", "sensitivity", "--overwrite"]) == 2  # no FP limit


# --------------------------------------------------------------------------- counts against the evaluation
COUNT_SETTINGS = {
    "default": EvaluationSettings(),
    "msseg": get_preset("msseg").settings,  # 6-connectivity, lesions > 3 mm³, overlap fraction
    "shifts": get_preset("shifts").settings,  # IoU >= 0.25
    "isles22": get_preset("isles22").settings,  # F1 = 1 when both are empty
    "18-connected, >= 3 voxels": EvaluationSettings(connectivity=18, min_lesion_voxels=3),
}
THRESHOLDS = (0.2, 0.45, 0.7)
MIN_SIZES = (0, 2, 5)


def random_case(seed: int, shape=(9, 11, 10)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random probability map and a reference that partly agrees with it: many small lesions,
    touching and split ones, false positives (and now and then no reference lesion)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    probability = gaussian_filter(rng.random(shape), 0.8)
    probability = ((probability - probability.min()) / (np.ptp(probability) + 1e-12)) ** 3  # mostly low
    noisy = gaussian_filter(probability + rng.normal(0, 0.1, shape), 0.5)
    reference = noisy > np.quantile(noisy, rng.uniform(0.8, 0.97))
    if rng.random() < 0.15:  # sometimes no reference lesion at all
        reference[:] = False
    return probability, reference


def evaluation_counts(values: dict) -> tuple:
    """The grid's counts (in the order of operating_point.grid's count axis) from evaluate_binary's values."""
    names = ("n_ref_lesions", "lesion_tp", "n_pred_lesions", "lesion_tp_pred", "TP", "n_pred", "n_ref")
    return tuple(values[name] for name in names)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(COUNT_SETTINGS)))
def test_grid_counts_equal_the_evaluation_of_each_thresholded_and_cleaned_mask(seed, name):
    """The counts of every (threshold, minimum size), made from one labelling per threshold, against the
    slow way: remove the small components of each mask, then evaluate it with evaluate_binary."""
    evaluation = COUNT_SETTINGS[name]
    probability, reference = random_case(seed)
    spacing = (1.0, 0.8, 1.5)
    counts = grid_counts(probability, reference, spacing, evaluation, THRESHOLDS, MIN_SIZES)
    f1 = per_case_lesion_f1(counts, evaluation.f1_both_empty)
    for ti, threshold in enumerate(THRESHOLDS):
        for mi, min_size in enumerate(MIN_SIZES):
            mask = remove_small_components(
                probability >= threshold, evaluation.connectivity, spacing, min_voxels=min_size
            )
            values = evaluate_binary(reference, mask, spacing, evaluation).values
            assert tuple(counts[ti, mi]) == evaluation_counts(values), (threshold, min_size)
            assert close(None if np.isnan(f1[ti, mi]) else float(f1[ti, mi]), values["lesion_f1"])
            assert counts[ti, mi, 2] - counts[ti, mi, 3] == values["lesion_fp"]


def test_grid_counts_in_2d_with_8_connectivity():
    probability, reference = random_case(5, shape=(1, 30, 30))
    probability, reference = probability[0], reference[0]
    evaluation = EvaluationSettings(connectivity=8)
    counts = grid_counts(probability, reference, (1.0, 1.0), evaluation, THRESHOLDS, MIN_SIZES)
    for ti, threshold in enumerate(THRESHOLDS):
        for mi, min_size in enumerate(MIN_SIZES):
            mask = remove_small_components(probability >= threshold, 8, (1.0, 1.0), min_voxels=min_size)
            values = evaluate_binary(reference, mask, (1.0, 1.0), evaluation).values
            assert tuple(counts[ti, mi, :4]) == (
                values["n_ref_lesions"],
                values["lesion_tp"],
                values["n_pred_lesions"],
                values["lesion_tp_pred"],
            )


def test_benchmark_script_prints_its_table_at_a_tiny_size(monkeypatch, capsys):
    import runpy

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))
    args = ["--shape", "24", "28", "24", "--lesions", "4", "--repeats", "1", "--cases", "10"]
    monkeypatch.setattr("sys.argv", ["benchmark_operating_point.py", *args])
    runpy.run_path(str(scripts / "benchmark_operating_point.py"), run_name="__main__")  # checks both ways agree
    assert "| choose-threshold's counts (1 labelling per threshold, crop included) |" in capsys.readouterr().out


def test_threshold_commands_default_to_a_connectivity_valid_in_2d(tmp_path, capsys):
    """choose-threshold (Dice) and apply-threshold --min-voxels default to Joshi's 18-connectivity, which a 2D
    image does not have: there they use its restriction to the plane (8), never fail every case."""
    reference = np.zeros((16, 16), dtype=np.uint8)
    reference[4:8, 4:8] = 1
    probability = np.where(reference > 0, 0.9, 0.0)
    probability[12, 12] = 0.9  # a one-pixel false positive, removed by --min-voxels 2
    gt, probs = tmp_path / "gt", tmp_path / "probs"
    write_image(gt / "c0.nii.gz", reference)
    write_probabilities(probs, "c0", softmax(probability)[:, None], (probability >= 0.5)[None])
    (probs / "dataset.json").write_text(json.dumps(BINARY_DATASET))
    assert (
        main(["choose-threshold", "--probabilities", str(probs), "--gt", str(gt), "-o", str(tmp_path / "t.json")]) == 0
    )
    assert json.loads((tmp_path / "t.json").read_text())["connectivity"] == "full"
    out = tmp_path / "out"
    assert (
        main(
            [
                "apply-threshold",
                "--probabilities",
                str(probs),
                "-o",
                str(out),
                "--threshold",
                "0.5",
                "--min-voxels",
                "2",
            ]
        )
        == 0
    )
    written = read(out / "c0.nii.gz").reshape(reference.shape)
    assert (written == reference).all()
