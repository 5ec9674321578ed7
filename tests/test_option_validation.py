"""Every option of every command is checked where it is parsed: a number is finite and in its range, a list
has no duplicates (bin edges increase), an option the chosen analysis ignores is an error; each error names the
option and its allowed range (issue: no silent wrong number, round four, items 3, 4, 11, 21)."""

from __future__ import annotations

import argparse

import pytest

from nnunet_lesionloss.cli import build_parser, main


def _options():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in commands.choices.items():
        for action in subparser._actions:
            if action.option_strings and action.type is not None and not action.choices:
                yield command, action


NUMERIC = [
    (command, action.option_strings[-1])
    for command, action in _options()
    if action.type not in (str,)
    and getattr(action.type, "__name__", "") not in ("matching_option", "connectivity_option")
]


def test_no_number_option_takes_an_unchecked_int_or_float():
    unchecked = [f"{c} {a.option_strings[-1]}" for c, a in _options() if a.type in (int, float)]
    assert unchecked == []


def test_the_probes_cover_the_number_options():
    assert len(NUMERIC) > 30 and ("froc", "--fp-rates") in NUMERIC and ("compare", "--fp-rate") in NUMERIC


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("command, option", NUMERIC)
def test_nan_and_infinities_are_refused_naming_the_option(command, option, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([command, f"{option}={value}"])  # the = form: "-inf" would read as an option
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "error: argument" in error and option in error


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["froc", "--fp-rates", "1", "1", "0.5"], "--fp-rates: 1.0 listed twice"),
        (["froc", "--fp-rates", "-1"], "--fp-rates"),
        (["froc", "--size-fp-rate", "0"], "--size-fp-rate"),
        (["froc", "--min-overlap", "-0.5"], "--min-overlap"),
        (["froc", "--min-overlap", "7"], "--min-overlap"),
        (["froc", "--dynamic-threshold-factor", "0.5"], "--dynamic-threshold-factor"),
        (["froc", "--bootstrap-resamples", "1"], "--bootstrap-resamples"),
        (["froc", "--size-bins", "5", "1"], "--size-bins"),
        (["compare", "--fp-rate", "-1"], "--fp-rate"),
        (["compare", "--bootstrap-resamples", "1"], "--bootstrap-resamples"),
        (["choose-threshold", "--max-fp-per-case", "-1"], "--max-fp-per-case"),
        (["choose-threshold", "--thresholds", "0.5", "0.5"], "--thresholds"),
        (["choose-threshold", "--thresholds", "1.5"], "--thresholds"),
        (["choose-threshold", "--nested-folds", "1"], "--nested-folds"),
        (["apply-threshold", "--threshold", "0"], "--threshold"),
        (["evaluate", "--labels", "1", "1"], "--labels"),
        (["evaluate", "--matching", "dsc2"], "--matching"),
        (["cv-summary", "x", "--folds", "0", "0"], "--folds"),
        (["cv-summary", "x", "--froc-fp-rates", "nan"], "--froc-fp-rates"),
        (["remove-small", "a", "b", "--min-sizes", "3", "3"], "--min-sizes"),
        (["compare", "a", "--seed", "-1"], "--seed"),
    ],
)
def test_out_of_range_and_repeated_values_are_refused_naming_the_option(arguments, named, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, named",
    [
        (["--matching", "any", "--min-overlap", "0.5"], "--min-overlap has no effect with --matching any"),
        (
            ["--candidates", "static", "--max-candidates", "3"],
            "--max-candidates has no effect with --candidates static",
        ),
        (
            ["--candidates", "static", "--dynamic-threshold-factor", "2"],
            "--dynamic-threshold-factor has no effect with --candidates static",
        ),
        # the default candidates are dynamic: a static threshold alone would be dropped in silence
        (["--threshold", "0.2"], "--threshold has no effect with --candidates dynamic"),
    ],
)
def test_an_option_the_froc_analysis_ignores_is_refused(tmp_path, options, named, capsys):
    arguments = ["froc", "--probabilities", str(tmp_path), "--gt", str(tmp_path), "-o", str(tmp_path / "o")]
    assert main([*arguments, *options]) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, options, named",
    [
        (
            ["choose-threshold"],
            ["--criterion", "dice", "--max-fp-per-case", "1"],
            "--max-fp-per-case has no effect with --criterion dice",
        ),
        (["choose-threshold"], ["--criterion", "sensitivity"], "--criterion sensitivity needs --max-fp-per-case"),
        (["choose-threshold"], ["--hd95", "pooled"], "--hd95 has no effect on choose-threshold"),
        (["choose-threshold"], ["--nsd-tolerance", "2"], "--nsd-tolerance has no effect on choose-threshold"),
        (["choose-threshold"], ["--small-lesion-ml", "0.1"], "--small-lesion-ml has no effect on choose-threshold"),
        (["choose-threshold"], ["--size-bins", "2"], "--size-bins has no effect on choose-threshold"),
        (["choose-threshold"], ["--matching", "iou0.5"], "--matching has no effect on choose-threshold"),
        (["choose-threshold", "results"], ["--nested-folds", "3"], "--nested-folds has no effect on a results folder"),
        (["choose-threshold", "results"], ["--seed", "3"], "--seed has no effect on a results folder"),
        (["apply-threshold"], ["--min-voxels", "3"], "--min-voxels has no effect without --threshold"),
        (["apply-threshold"], ["--connectivity", "6"], "--connectivity has no effect without --threshold"),
        (["apply-threshold", "json"], ["--connectivity", "6"], "--connectivity has no effect with --threshold-json"),
        (
            ["apply-threshold"],
            ["--threshold", "0.5", "--connectivity", "6"],
            "--connectivity has no effect without --min",
        ),
        (
            ["apply-threshold"],
            ["--threshold", "0.5", "--min-voxels", "0", "--connectivity", "6"],
            "--connectivity has no effect without --min-voxels",
        ),
        (["apply-threshold", "json"], ["--threshold", "0.5"], "--threshold has no effect with --threshold-json"),
        (["remove-small"], ["--gt", "{gt}"], "--gt has no effect without --sweep"),
        (["remove-small"], ["--min-sizes", "1", "2"], "--min-sizes has no effect without --sweep"),
        (["remove-small"], ["--preset", "msseg"], "--preset has no effect without --sweep"),
        (["remove-small"], ["-np", "2"], "--num-processes has no effect without --sweep"),
        (["remove-small", "sweep"], ["--min-voxels", "3"], "--min-voxels has no effect with --sweep"),
        (["inspect"], ["-c", "2d"], "--configuration has no effect on a folder of label images"),
        (["inspect"], ["-p", "nnUNetResEncUNetMPlans"], "--plans has no effect on a folder of label images"),
    ],
)
def test_an_option_another_option_makes_meaningless_is_refused(tmp_path, command, options, named, capsys):
    """Cross-option rules: an option the chosen mode ignores is an error naming both, before anything is written."""
    gt, probs, results = tmp_path / "gt", tmp_path / "probs", tmp_path / "results"
    for folder in (gt, probs, results / "fold_0" / "validation"):
        folder.mkdir(parents=True)
    (tmp_path / "point.json").write_text('{"best_threshold": 0.5, "connectivity": 18}')
    out = tmp_path / "out"
    name, *mode = command
    arguments = {
        "choose-threshold": ["--probabilities", str(results if mode else probs), "--gt", str(gt), "-o", str(out / "c")],
        "apply-threshold": ["--probabilities", str(probs), "-o", str(out)]
        + (["--threshold-json", str(tmp_path / "point.json")] if mode else []),
        "remove-small": [str(probs), str(out)] + (["--sweep", "--gt", str(gt)] if mode else []),
        "inspect": [str(gt), "-o", str(out)],
    }[name]
    assert main([name, *arguments, *[o.format(gt=gt) for o in options]]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()
