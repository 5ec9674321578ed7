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
    assert terms or trainer.config_name == "dice_ce", f"{name} adds no term to nnU-Net's loss"
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
