"""What a config file may hold and how it is checked: file errors, duplicate keys, ranges, and the
``nnunet-lesionloss config`` check that runs the trainer's own start-up validation."""

from __future__ import annotations

import json
import re

import pytest

from nnunet_lesionloss.config import CONFIG_ENV, ConfigError, load_config, read_config_file


def _override(tmp_path, text: str, name: str = "override.yaml") -> dict:
    path = tmp_path / name
    path.write_text(text)
    return {CONFIG_ENV: str(path)}


# --------------------------------------------------------------------------- the file itself
def test_a_folder_given_as_the_config_file_is_called_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a config file") as caught:
        load_config("catmil", env={CONFIG_ENV: str(tmp_path)})
    assert "does not exist" not in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("catmil", env={CONFIG_ENV: str(tmp_path / "nope.yaml")})
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError, match="broken symbolic link"):
        load_config("catmil", env={CONFIG_ENV: str(tmp_path / "dangling.yaml")})


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        ("trainer: {num_epochs: 3}\nterms: {cat: {weight: 0.2}}\ntrainer: {num_epochs: 5}\n", "trainer", 3, 1),
        ("terms:\n  cat:\n    weight: 0.2\n    warmup_epochs: 4\n    weight: 0.5\n", "weight", 5, 3),
        ("terms: {cat: {params: {gamma: 1, gamma: 2}}}\n", "gamma", 1, 1),
    ],
)
def test_duplicate_yaml_keys_are_refused_with_key_and_line(tmp_path, text, key, line, first):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"duplicate key '{key}' on line {line} \\(first on line {first}\\)") as e:
        read_config_file(path)
    assert str(path) in str(e.value)


def test_duplicate_json_keys_are_refused(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"trainer": {"num_epochs": 3, "num_epochs": 5}}')
    with pytest.raises(ConfigError, match="duplicate key 'num_epochs'"):
        read_config_file(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    """A YAML merge (<<) followed by an explicit key is not a duplicate: the explicit key wins by design."""
    path = tmp_path / "merge.yaml"
    path.write_text("common: &c {weight: 0.1, warmup_epochs: 4}\nterms: {cat: {<<: *c, weight: 0.3}}\n")
    assert read_config_file(path)["terms"]["cat"] == {"weight": 0.3, "warmup_epochs": 4}


@pytest.mark.parametrize(
    "text, message",
    [
        ("trainer: {initial_lr: 0}\n", "trainer.initial_lr must be > 0, got 0"),
        ("trainer: {initial_lr: -0.01}\n", "trainer.initial_lr must be > 0"),
        ("trainer: {num_epochs: 0}\n", "trainer.num_epochs must be >= 1"),
        ("trainer: {num_iterations_per_epoch: -2}\n", "trainer.num_iterations_per_epoch must be >= 1"),
        ("trainer: {num_val_iterations_per_epoch: 0}\n", "trainer.num_val_iterations_per_epoch must be >= 1"),
        ("trainer: {save_every: 0}\n", "trainer.save_every must be >= 1"),
    ],
)
def test_non_positive_trainer_numbers_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config("catmil", env=_override(tmp_path, text))


# --------------------------------------------------------------------------- nnunet-lesionloss config
def _config_command(capsys, *args) -> tuple[int, str, str]:
    from nnunet_lesionloss.cli import main

    status = main(["config", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    "trainer, text, message",
    [
        ("nnUNetTrainerCATMIL", "add_terms: {bogus: {weight: 1}}\n", "unknown loss term 'bogus'"),
        ("nnUNetTrainerCATMIL", "terms: {cat: {params: {gama: 2}}}\n", r"unknown param\(s\) \['gama'\] in terms.cat"),
        ("nnUNetTrainerTversky", "terms: {tversky: {params: {alpha: -1}}}\n", "terms.tversky: .*alpha"),
        ("nnUNetTrainerCATMIL", "terms: {cat: {subterms: {x: 1}}}\n", "the term 'cat' has no sub-terms"),
    ],
)
def test_config_check_refuses_what_the_trainer_refuses_at_start(
    preprocessed_dataset, monkeypatch, tmp_path, capsys, trainer, text, message
):
    """Each override passed the check run_cv.sh runs before fold 0 and then stopped every fold at
    start: the check and the trainer now run the same validation."""
    from test_trainer import make_trainer

    from nnunet_lesionloss.training import variants

    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "override.yaml"))
    (tmp_path / "override.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        make_trainer(preprocessed_dataset, monkeypatch, getattr(variants, trainer))
    status, out, err = _config_command(capsys, trainer)
    assert status == 2, out
    assert re.search(message, err), err
    # and against the dataset's own plans, as run_cv.sh calls it
    status, _, err = _config_command(capsys, trainer, str(preprocessed_dataset["dataset_id"]), "3d_fullres")
    assert status == 2 and "error:" in err


def test_config_check_uses_the_dataset_plans_for_the_patch_dimension(preprocessed_dataset, monkeypatch, capsys):
    """connectivity 26 is valid for 3D patches and refused for the dataset's 2d configuration, as the
    trainer refuses it there."""
    for key, value in preprocessed_dataset["env"].items():
        if key.startswith("nnUNet"):
            monkeypatch.setenv(key, value)
    override = preprocessed_dataset["root"] / "conn26.yaml"
    override.write_text("connectivity: 26\n")
    monkeypatch.setenv(CONFIG_ENV, str(override))
    dataset = str(preprocessed_dataset["dataset_id"])
    status, out, _ = _config_command(capsys, "nnUNetTrainerBlob", dataset, "3d_fullres")
    assert status == 0 and "3d_fullres" in out
    status, _, err = _config_command(capsys, "nnUNetTrainerBlob", dataset, "2d")
    assert status == 2 and "connectivity 26 is not valid for 2D" in err
    status, _, err = _config_command(capsys, "nnUNetTrainerBlob", dataset, "3d_lowres")
    assert status == 2 and "3d_lowres" in err
    status, _, err = _config_command(capsys, "nnUNetTrainerBlob", "999", "3d_fullres")
    assert status == 2 and "999" in err


USER_TRAINER = """
from nnunet_lesionloss.training.variants import nnUNetTrainerCATMIL


class nnUNetTrainerMyCATMIL(nnUNetTrainerCATMIL):
    pass
"""


def test_config_check_applies_to_a_users_subclass_of_a_package_trainer(tmp_path, monkeypatch, capsys):
    """A trainer of the user's own nnUNet_extTrainer folder that derives from one of ours reads the
    config like ours: the check shows it (and refuses a bad override), never "does not apply"."""
    folder = tmp_path / "my_trainers"
    folder.mkdir()
    (folder / "my_trainers.py").write_text(USER_TRAINER)
    from nnunet_lesionloss.installation import trainer_folder

    monkeypatch.setenv("nnUNet_extTrainer", f"{trainer_folder()}:{folder}")
    good = tmp_path / "good.yaml"
    good.write_text("terms: {mil: {weight: 1.0}}\n")
    monkeypatch.setenv(CONFIG_ENV, str(good))
    status, out, _ = _config_command(capsys, "nnUNetTrainerMyCATMIL")
    assert status == 0 and "does not apply" not in out
    shown = json.loads(out[out.index("{") :])
    assert shown["trainer"] == "nnUNetTrainerMyCATMIL" and shown["terms"]["mil"]["weight"] == 1.0
    good.write_text("terms: {mil: {params: {wrong: 1}}}\n")
    status, _, err = _config_command(capsys, "nnUNetTrainerMyCATMIL")
    assert status == 2 and "wrong" in err
    # nnU-Net's own trainer still reads no config, and a trainer nobody defines is an error
    status, out, _ = _config_command(capsys, "nnUNetTrainer")
    assert status == 0 and "does not apply" in out
    status, _, err = _config_command(capsys, "nnUNetTrainerNobodyWrote")
    assert status == 2 and "nnUNetTrainerNobodyWrote" in err and "nnUNet_extTrainer" in err


def test_config_check_knows_the_evaluation_presets(capsys):
    status, _, err = _config_command(capsys, "nnUNetTrainerCATMIL", "--preset", "bogus")
    assert status == 2 and "bogus" in err and "default" in err
    status, out, _ = _config_command(capsys, "nnUNetTrainerCATMIL", "--preset", "brats-mets")
    assert status == 0 and "brats-mets" in out
