"""Configs: every shipped default loads, overrides merge, bad values fail naming the key."""

from __future__ import annotations

import pytest

from nnunet_lesionloss.config import CONFIG_ENV, ConfigError, load_config, validate_structure
from nnunet_lesionloss.losses.terms import build_term
from nnunet_lesionloss.training import variants


@pytest.mark.parametrize("name", variants.__all__)
def test_every_shipped_trainer_config_builds_its_terms(name):
    trainer = getattr(variants, name)
    config = load_config(trainer.config_name, trainer.config_overrides, env={})
    terms = [build_term(term, settings, spatial_dims=3) for term, settings in config["terms"].items()]
    if trainer.config_name == "dice_ce":  # the baselines: a segmentation loss alone (nnU-Net's, or GDF)
        assert not terms and config["base"]["weight"] == 1.0
        assert config["base"]["loss"] == ("generalized_dice_focal" if "GDF" in name else "nnunet")
    else:
        assert terms, f"{name} adds no term to nnU-Net's loss"
    assert config["base"]["weight"] > 0 or config["terms"], f"{name} trains with no loss at all"
    for term in terms:
        assert term.weight_at(10_000) == pytest.approx(term.weight)


def test_catmil_defaults_and_grid_overrides():
    config = load_config("catmil", variants.nnUNetTrainerCATMIL_0201.config_overrides, env={})
    assert config["terms"]["cat"]["weight"] == 0.2 and config["terms"]["mil"]["weight"] == 0.1
    assert config["terms"]["cat"]["warmup_epochs"] == 50 and config["terms"]["cat"]["params"]["gamma"] == 1.0
    assert config["connectivity"] == "face" and config["channels"] == "union"
    cat = build_term("cat", config["terms"]["cat"])
    assert [cat.weight_at(t) for t in (0, 20, 50, 80)] == pytest.approx([0.0, 0.08, 0.2, 0.2])


@pytest.mark.parametrize("name", [n for n in variants.__all__ if n.endswith(("_150epochs", "_200epochs"))])
def test_protocol_presets_change_only_the_training_length(name):
    # the CATMIL authors' base trainer: 150 epochs; Rachmadi et al. 2024: 200; everything else as
    # the trainer the preset extends
    preset = getattr(variants, name)
    parent = preset.__mro__[1]
    config = load_config(preset.config_name, preset.config_overrides, env={})
    expected = load_config(parent.config_name, parent.config_overrides, env={})
    epochs = 150 if name.endswith("_150epochs") else 200
    assert config["trainer"] == {**expected["trainer"], "num_epochs": epochs}
    assert {k: v for k, v in config.items() if k != "trainer"} == {k: v for k, v in expected.items() if k != "trainer"}


def test_every_catmil_method_has_its_protocol_preset():
    methods = ["DiceCE", "Tversky", "FocalTversky", "CATMIL", "CAT", "MIL"] + [
        f"CATMIL_{grid}" for grid in ("0101", "0102", "0201", "0202")
    ]
    assert all(f"nnUNetTrainer{method}_150epochs" in variants.__all__ for method in methods)


def test_paper_presets_drop_only_the_size_penalty_warm_up():
    for name in ("SizePenalty", "SizePenaltyDTS", "SizePenaltyFSD"):
        preset, parent = getattr(variants, f"nnUNetTrainer{name}_paper"), getattr(variants, f"nnUNetTrainer{name}")
        config = load_config(preset.config_name, preset.config_overrides, env={})
        assert config["terms"]["size_penalty"]["warmup_epochs"] == 0
        shipped = load_config(parent.config_name, parent.config_overrides, env={})
        assert shipped["terms"]["size_penalty"]["warmup_epochs"] == 50
        shipped["terms"]["size_penalty"]["warmup_epochs"] = 0
        assert config == shipped


def test_environment_file_overrides_key_by_key(tmp_path):
    override = tmp_path / "mine.yaml"
    override.write_text("terms: {cat: {params: {eps: 2.0}}}\ntrainer: {num_epochs: 3}\n")
    config = load_config("catmil", env={CONFIG_ENV: str(override)})
    assert config["terms"]["cat"]["params"] == {
        "alpha": 0.3,
        "beta": 0.7,
        "gamma": 1.0,
        "eps": 2.0,
        "w_bg": 0.01,
        "reduction": "batch",
    }
    assert config["terms"]["mil"]["weight"] == 0.2
    assert config["trainer"] == {"num_epochs": 3}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"colour": 1}, r"unknown config key\(s\) \['colour'\]"),
        ({"channels": "both"}, "channels must be"),
        ({"connectivity": 7}, "connectivity must be"),
        ({"base": {"weight": -1}}, "base.weight must be >= 0"),
        ({"terms": {"blob": {"weight": "a lot"}}}, "terms.blob.weight must be a number"),
        ({"terms": {"blob": {"scales": "some"}}}, "terms.blob.scales must be"),
        ({"terms": {"blob": {"lr": 1}}}, r"unknown key\(s\) \['lr'\] in terms.blob"),
        ({"terms": {"cat": {"warmup_epochs": 2.5}}}, "terms.cat.warmup_epochs must be an integer"),
        ({"trainer": {"num_epochs": 0}}, "trainer.num_epochs must be >= 1"),
        ({"trainer": {"batch_size": 4}}, "unknown key trainer.batch_size"),
    ],
)
def test_structure_errors_name_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        validate_structure(config)


def test_term_params_are_checked_against_the_loss_function():
    with pytest.raises(ConfigError, match=r"unknown param\(s\) \['delta'\] in terms.tversky.params"):
        build_term("tversky", {"params": {"delta": 1.0}})
    with pytest.raises(ConfigError, match="terms.tversky: .*alpha"):
        build_term("tversky", {"params": {"alpha": -0.5}})
    with pytest.raises(ConfigError, match="unknown loss term 'dicey'"):
        build_term("dicey", {})
    with pytest.raises(ConfigError, match=r"unknown param\(s\) \['alpha'\] in terms.dice"):
        build_term("dice", {"params": {"alpha": 0.3}})  # Dice is Tversky at α = β = 0.5, fixed


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("catmil", env={CONFIG_ENV: str(tmp_path / "nope.yaml")})
    broken = tmp_path / "broken.yaml"
    broken.write_text("terms: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config("catmil", env={CONFIG_ENV: str(broken)})
    with pytest.raises(ConfigError, match="no default config named 'nothing'"):
        load_config("nothing", env={})


# --------------------------------------------------------------------------- override scoping
CATMIL_OVERRIDE = "terms:\n  cat: {weight: 0.2}\n  mil: {weight: 1.0}\n"


def _override(tmp_path, text: str, name: str = "override.yaml") -> dict:
    path = tmp_path / name
    path.write_text(text)
    return {CONFIG_ENV: str(path)}


def test_a_catmil_override_does_not_add_its_terms_to_another_trainer(tmp_path):
    """Observed: an override exported once for CATMIL was merged into Blob (which then trained
    Blob + CAT + MIL, MIL at weight 1.0). It must stop, naming the key and the trainer."""
    env = _override(tmp_path, CATMIL_OVERRIDE)
    with pytest.raises(ConfigError, match=r"sets terms\.(cat|mil), but nnUNetTrainerBlob has no term"):
        load_config("blob", env=env, trainer="nnUNetTrainerBlob")
    with pytest.raises(ConfigError, match="nnUNetTrainerTversky has no term"):
        load_config("tversky", env=env, trainer="nnUNetTrainerTversky")
    config = load_config("catmil", env=env, trainer="nnUNetTrainerCATMIL")  # the trainer it was written for
    assert config["terms"]["mil"]["weight"] == 1.0 and set(config["terms"]) == {"cat", "mil"}


def test_a_term_is_added_only_on_purpose_under_add_terms(tmp_path):
    env = _override(tmp_path, "add_terms:\n  mil: {weight: 0.2, scales: full}\n")
    config = load_config("blob", env=env, trainer="nnUNetTrainerBlob")
    assert set(config["terms"]) == {"blob", "mil"} and config["terms"]["mil"]["weight"] == 0.2
    with pytest.raises(ConfigError, match="add_terms.blob: nnUNetTrainerBlob already has the term"):
        load_config("blob", env=_override(tmp_path, "add_terms: {blob: {weight: 2}}\n"), trainer="nnUNetTrainerBlob")


def test_applies_to_limits_a_file_to_the_trainers_it_names(tmp_path):
    env = _override(tmp_path, "applies_to: [nnUNetTrainerCATMIL, 'nnUNetTrainerCATMIL_0*']\nchannels: per_class\n")
    assert load_config("catmil", env=env, trainer="nnUNetTrainerCATMIL_0102")["channels"] == "per_class"
    with pytest.raises(ConfigError, match=r"applies_to \[.*\], not to nnUNetTrainerBlob"):
        load_config("blob", env=env, trainer="nnUNetTrainerBlob")
    with pytest.raises(ConfigError, match="applies_to must be"):
        load_config("blob", env=_override(tmp_path, "applies_to: {a: 1}\n"), trainer="nnUNetTrainerBlob")


def test_auto_tau_only_for_the_trainer_that_estimates_tau(tmp_path):
    env = _override(tmp_path, "auto_tau: {quantile: 0.7}\n")
    with pytest.raises(ConfigError, match="sets auto_tau, but nnUNetTrainerSizePenalty does not estimate"):
        load_config("size_penalty", env=env, trainer="nnUNetTrainerSizePenalty")
    assert load_config("size_penalty_auto", env=env)["auto_tau"]["quantile"] == 0.7


@pytest.mark.parametrize("name", variants.__all__)
def test_short_run_overrides_keep_working_for_every_trainer(name, tmp_path):
    """scripts/demo_short.yaml and the tests' short_run_config set only trainer: keys."""
    from conftest import REPO

    trainer = getattr(variants, name)
    for env in (
        {CONFIG_ENV: str(REPO / "scripts" / "demo_short.yaml")},
        _override(tmp_path, "trainer: {num_epochs: 2, num_iterations_per_epoch: 2, num_val_iterations_per_epoch: 1}\n"),
    ):
        config = load_config(trainer.config_name, trainer.config_overrides, env=env, trainer=name)
        assert config["trainer"]["num_epochs"] in (2, 3)


def test_sources_record_which_file_changed_what(tmp_path):
    from nnunet_lesionloss.config import load_config_with_sources

    env = _override(tmp_path, "terms: {cat: {weight: 0.3, params: {gamma: 0.5}}}\ntrainer: {num_epochs: 7}\n")
    grid = variants.nnUNetTrainerCATMIL_0201
    config, sources = load_config_with_sources("catmil", grid.config_overrides, env, trainer=grid.__name__)
    assert [s["source"] for s in sources] == [
        "default config of nnUNetTrainerCATMIL_0201",
        "nnUNetTrainerCATMIL_0201.config_overrides",
        CONFIG_ENV,
    ]
    assert sources[0]["path"].endswith("catmil.yaml")
    assert sources[1]["changes"] == {
        "terms.cat.weight": {"from": 0.1, "to": 0.2},
        "terms.mil.weight": {"from": 0.2, "to": 0.1},
    }
    assert sources[2]["path"] == str((tmp_path / "override.yaml").resolve())
    assert sources[2]["changes"] == {
        "terms.cat.weight": {"from": 0.2, "to": 0.3},
        "terms.cat.params.gamma": {"from": 1.0, "to": 0.5},
        "trainer.num_epochs": {"to": 7},
    }
    assert config["terms"]["cat"]["weight"] == 0.3


def test_a_blob_trainer_given_a_catmil_override_stops_at_start_and_sources_are_written(
    preprocessed_dataset, monkeypatch, tmp_path
):
    from test_trainer import make_trainer

    from nnunet_lesionloss.training.trainer import EFFECTIVE_CONFIG_FILE

    override = tmp_path / "my_catmil.yaml"
    override.write_text(CATMIL_OVERRIDE)
    monkeypatch.setenv(CONFIG_ENV, str(override))
    # a private results folder: the session's is where the end-to-end tests train these trainers
    dataset = dict(preprocessed_dataset, env=dict(preprocessed_dataset["env"], nnUNet_results=str(tmp_path / "r")))
    with pytest.raises(ConfigError, match=r"terms\.(cat|mil).*nnUNetTrainerBlob"):
        make_trainer(dataset, monkeypatch, variants.nnUNetTrainerBlob)
    trainer = make_trainer(dataset, monkeypatch, variants.nnUNetTrainerCATMIL)
    assert str(trainer.output_folder).startswith(str(tmp_path / "r"))
    trainer.on_train_start()
    try:
        import json
        from pathlib import Path

        written = json.loads((Path(trainer.output_folder) / EFFECTIVE_CONFIG_FILE).read_text())
    finally:
        trainer.on_train_end()
    assert written["sources"][-1]["source"] == CONFIG_ENV
    assert written["sources"][-1]["changes"]["terms.mil.weight"] == {"from": 0.2, "to": 1.0}


# --------------------------------------------------------------------------- numbers
def test_yaml_exponent_without_a_dot_is_a_number(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; the config loader reads it as YAML 1.2 does."""
    env = _override(tmp_path, "trainer: {initial_lr: 1e-3}\nterms: {cat: {params: {eps: 5E0}}}\n")
    config = load_config("catmil", env=env)
    assert config["trainer"]["initial_lr"] == 0.001 and config["terms"]["cat"]["params"]["eps"] == 5.0
    assert load_config("catmil", env=_override(tmp_path, "trainer: {num_epochs: 12}\n"))["trainer"]["num_epochs"] == 12


@pytest.mark.parametrize("text", ["trainer: {initial_lr: .nan}\n", "trainer: {initial_lr: .inf}\n"])
def test_non_finite_learning_rates_are_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="trainer.initial_lr must be a finite number"):
        load_config("blob", env=_override(tmp_path, text))


def test_non_finite_numbers_in_json_are_refused(tmp_path):
    env = _override(tmp_path, '{"trainer": {"initial_lr": NaN}}', name="override.json")
    with pytest.raises(ConfigError, match="trainer.initial_lr must be a finite number"):
        load_config("blob", env=env)


def test_a_config_that_trains_nothing_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="every term has weight 0"):
        load_config("tversky", env=_override(tmp_path, "terms: {tversky: {weight: 0}}\n"))
    with pytest.raises(ConfigError, match="every term has weight 0"):
        load_config(
            "catmil", env=_override(tmp_path, "base: {weight: 0}\nterms: {cat: {weight: 0}, mil: {weight: 0}}\n")
        )
    assert load_config("catmil", env=_override(tmp_path, "base: {weight: 0}\nterms: {cat: {weight: 0}}\n"))


def test_config_command_shows_the_effective_config_or_the_refusal(tmp_path, monkeypatch, capsys):
    import json

    from nnunet_lesionloss.cli import main

    override = tmp_path / "my_catmil.yaml"
    override.write_text(CATMIL_OVERRIDE)
    monkeypatch.setenv(CONFIG_ENV, str(override))
    assert main(["config", "nnUNetTrainerCATMIL"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{CONFIG_ENV}={override}"
    shown = json.loads(out[out.index("{") :])
    assert shown["terms"]["mil"]["weight"] == 1.0 and shown["sources"][-1]["path"] == str(override.resolve())
    assert main(["config", "nnUNetTrainerBlob"]) == 2
    assert "nnUNetTrainerBlob has no term" in capsys.readouterr().err
    assert main(["config", "nnUNetTrainer"]) == 0  # nnU-Net's own trainer reads no config: said so
    assert "does not apply to it" in capsys.readouterr().out
