"""A run resumed with ``nnUNetv2_train --c`` keeps the loss config it trained with: the checkpoint
stores it, a different config stops the run naming the differences unless NNUNET_LESIONLOSS_RESUME
says which one to use, and ``lesionloss_config.json`` keeps every config of the run by epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnunet_lesionloss.config import CONFIG_ENV, ConfigError
from nnunet_lesionloss.training import variants
from nnunet_lesionloss.training.trainer import EFFECTIVE_CONFIG_FILE, RESUME_ENV


def isolated_trainer(preprocessed_dataset, monkeypatch, results, trainer_class, *, resume=False, dataset_json=None):
    """A trainer writing into its own ``results`` folder (make_trainer's folder is the session's);
    ``resume``: built as nnUNetv2_train --c builds it (nnU-Net's run_training puts the flag into the
    plans, the trainer's __init__ reads it)."""
    for key, value in preprocessed_dataset["env"].items():
        if key.startswith("nnUNet"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(results))
    folder = preprocessed_dataset["root"] / "preprocessed" / preprocessed_dataset["dataset"]
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = resume
    dataset_json = dataset_json or json.loads((folder / "dataset.json").read_text())
    return trainer_class(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))


def _trainer(preprocessed_dataset, monkeypatch, tmp_path, config_text, *, resume=False, cls=None):
    """A CATMIL trainer (or ``cls``) under an override (None: no override)."""
    if config_text is None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
    else:
        path = tmp_path / f"config_{len(list(tmp_path.glob('config_*')))}.yaml"
        path.write_text(config_text)
        monkeypatch.setenv(CONFIG_ENV, str(path))
    return isolated_trainer(
        preprocessed_dataset, monkeypatch, tmp_path / "results", cls or variants.nnUNetTrainerCATMIL, resume=resume
    )


FIRST = "terms: {cat: {weight: 0.5}}\n"


def _first_run(preprocessed_dataset, monkeypatch, tmp_path, config_text=FIRST, epochs=2, cls=None) -> str:
    """A run that trained ``epochs`` epochs under ``config_text`` and saved checkpoint_latest.pth."""
    trainer = _trainer(preprocessed_dataset, monkeypatch, tmp_path, config_text, cls=cls)
    trainer.initialize()
    trainer.current_epoch = epochs - 1  # nnU-Net saves current_epoch + 1: the next epoch to train
    path = str(Path(trainer.output_folder) / "checkpoint_latest.pth")
    trainer.save_checkpoint(path)
    return path


def test_resuming_under_another_config_stops_and_names_the_differences(preprocessed_dataset, monkeypatch, tmp_path):
    """The observed case: a run started with λ_CAT = 0.5 resumed without the override (the defaults,
    λ_CAT = 0.1) continued with the other loss in silence."""
    checkpoint = _first_run(preprocessed_dataset, monkeypatch, tmp_path)
    monkeypatch.delenv(RESUME_ENV, raising=False)
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, None, resume=True)
    with pytest.raises(ConfigError) as caught:
        resumed.load_checkpoint(checkpoint)
    message = str(caught.value)
    assert "terms.cat.weight: 0.5 in the checkpoint, 0.1 now" in message
    assert "epoch 2" in message and f"{CONFIG_ENV} is not set" in message
    assert f"{RESUME_ENV}=checkpoint" in message and f"{RESUME_ENV}=new" in message
    assert "ERROR: nnUNetv2_train --c: the loss config now" in open(resumed.log_file).read()
    # the record of the first run is untouched (the trainer stops before it writes anything)
    assert not (Path(resumed.output_folder) / EFFECTIVE_CONFIG_FILE).exists()


def test_resuming_with_the_same_config_continues_with_the_stored_one(preprocessed_dataset, monkeypatch, tmp_path):
    checkpoint = _first_run(preprocessed_dataset, monkeypatch, tmp_path)
    monkeypatch.delenv(RESUME_ENV, raising=False)
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, FIRST, resume=True)
    resumed.load_checkpoint(checkpoint)
    assert resumed.current_epoch == 2 and resumed.lesion_config["terms"]["cat"]["weight"] == 0.5
    resumed.write_effective_config()
    written = json.loads((Path(resumed.output_folder) / EFFECTIVE_CONFIG_FILE).read_text())
    assert [(p["first_epoch"], p["terms"]["cat"]["weight"]) for p in written["history"]] == [(0, 0.5)]
    assert "continues with the loss config stored in the checkpoint" in open(resumed.log_file).read()


def test_resume_checkpoint_mode_restores_the_stored_config_and_schedule(preprocessed_dataset, monkeypatch, tmp_path):
    checkpoint = _first_run(
        preprocessed_dataset,
        monkeypatch,
        tmp_path,
        FIRST + "trainer: {num_epochs: 40, initial_lr: 0.02}\n",
    )
    monkeypatch.setenv(RESUME_ENV, "checkpoint")
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, None, resume=True)
    assert resumed.num_epochs == 1000 and resumed.lesion_config["terms"]["cat"]["weight"] == 0.1
    resumed.load_checkpoint(checkpoint)
    assert resumed.lesion_config["terms"]["cat"]["weight"] == 0.5
    assert (resumed.num_epochs, resumed.initial_lr) == (40, 0.02)
    # the loss and the learning-rate schedule are those of the stored config
    resumed.on_train_epoch_start()
    assert resumed.loss.term_weights["cat"] == pytest.approx(0.5 * 2 / 50)  # warm-up of 50 epochs, epoch 2
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * (1 - 2 / 40) ** 0.9)
    log = open(resumed.log_file).read()
    assert f"{RESUME_ENV}=checkpoint" in log and "terms.cat.weight" in log


def test_resume_new_mode_switches_and_records_both_configs_by_epoch(preprocessed_dataset, monkeypatch, tmp_path):
    checkpoint = _first_run(preprocessed_dataset, monkeypatch, tmp_path)
    monkeypatch.setenv(RESUME_ENV, "new")
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, "terms: {cat: {weight: 0.004}}\n", resume=True)
    resumed.load_checkpoint(checkpoint)
    assert resumed.lesion_config["terms"]["cat"]["weight"] == 0.004
    resumed.write_effective_config()
    written = json.loads((Path(resumed.output_folder) / EFFECTIVE_CONFIG_FILE).read_text())
    assert written["terms"]["cat"]["weight"] == 0.004  # the config in effect now, at the top as before
    history = [(p["first_epoch"], p.get("last_epoch"), p["terms"]["cat"]["weight"]) for p in written["history"]]
    assert history == [(0, 1, 0.5), (2, None, 0.004)]
    assert written["history"][0]["sources"][-1]["source"] == CONFIG_ENV
    # the next checkpoint carries both, so a later resume keeps the whole record
    resumed.current_epoch = 4
    path = str(Path(resumed.output_folder) / "checkpoint_latest.pth")
    resumed.save_checkpoint(path)
    monkeypatch.delenv(RESUME_ENV)
    again = _trainer(preprocessed_dataset, monkeypatch, tmp_path, "terms: {cat: {weight: 0.004}}\n", resume=True)
    again.load_checkpoint(path)
    again.write_effective_config()
    written = json.loads((Path(again.output_folder) / EFFECTIVE_CONFIG_FILE).read_text())
    assert [(p["first_epoch"], p["terms"]["cat"]["weight"]) for p in written["history"]] == [(0, 0.5), (2, 0.004)]


def test_an_unknown_resume_mode_and_a_checkpoint_without_a_config_are_refused(
    preprocessed_dataset, monkeypatch, tmp_path
):
    checkpoint = _first_run(preprocessed_dataset, monkeypatch, tmp_path)
    monkeypatch.setenv(RESUME_ENV, "whatever")
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, None, resume=True)
    with pytest.raises(ConfigError, match=f"{RESUME_ENV}=whatever"):
        resumed.load_checkpoint(checkpoint)
    # a checkpoint written before configs were stored: nothing to compare with
    old = torch.load(checkpoint, weights_only=False)
    del old["init_args"]["lesionloss_config"]
    torch.save(old, tmp_path / "old.pth")
    monkeypatch.delenv(RESUME_ENV)
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, FIRST, resume=True)
    with pytest.raises(ConfigError, match="records no lesion-loss config"):
        resumed.load_checkpoint(str(tmp_path / "old.pth"))
    monkeypatch.setenv(RESUME_ENV, "new")
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, FIRST, resume=True)
    resumed.load_checkpoint(str(tmp_path / "old.pth"))
    resumed.write_effective_config()
    written = json.loads((Path(resumed.output_folder) / EFFECTIVE_CONFIG_FILE).read_text())
    assert written["history"][0]["first_epoch"] == 0 and written["history"][0]["config"] is None
    assert written["history"][1]["first_epoch"] == 2


def test_validation_only_and_prediction_are_not_affected(preprocessed_dataset, monkeypatch, tmp_path):
    """--val (no --c) loads the final checkpoint under any config: it trains nothing."""
    checkpoint = _first_run(preprocessed_dataset, monkeypatch, tmp_path)
    monkeypatch.delenv(RESUME_ENV, raising=False)
    trainer = _trainer(preprocessed_dataset, monkeypatch, tmp_path, None)
    trainer.load_checkpoint(checkpoint)
    assert trainer.current_epoch == 2
    stored = torch.load(checkpoint, weights_only=False)["init_args"]["lesionloss_config"]
    json.dumps(stored)  # plain data: nnUNetv2_predict unpickles checkpoints without this package's classes


def test_derived_term_params_are_kept_not_re_estimated(preprocessed_dataset, monkeypatch, tmp_path):
    """SizePenaltyAuto derives τ at train start: a resumed run keeps the stored τ (prepare_terms is
    not run again), which an unchanged config does not count as a difference."""
    cls = variants.nnUNetTrainerSizePenaltyAuto
    trainer = _trainer(preprocessed_dataset, monkeypatch, tmp_path, None, cls=cls)
    trainer.initialize()
    trainer.update_term_params("size_penalty", {"tau": 123.0})  # as prepare_terms does
    trainer.current_epoch = 1
    path = str(Path(trainer.output_folder) / "checkpoint_latest.pth")
    trainer.save_checkpoint(path)
    resumed = _trainer(preprocessed_dataset, monkeypatch, tmp_path, None, resume=True, cls=cls)
    calls = []
    monkeypatch.setattr(resumed, "prepare_terms", lambda: calls.append(1))
    resumed.load_checkpoint(path)
    assert resumed.lesion_config["terms"]["size_penalty"]["params"]["tau"] == 123.0
    term = next(t for t in resumed.loss.terms if t.name == "size_penalty")
    assert term.params["tau"] == 123.0
    assert not resumed.needs_prepare_terms and calls == []
