"""Lesion-wise validation inside the trainer at its edges: region-based data whose loss sees fewer
channels than the validation counts, and a checkpoint metric that stays undefined."""

from __future__ import annotations

import numpy as np
import pytest
from test_resume_config import isolated_trainer
from test_trainer import _nested_regions, make_trainer
from test_training_lesion_validation import EPOCH_COUNTS, _FixedOutput, _logits_from, _run_epoch

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.config import CONFIG_ENV
from nnunet_lesionloss.targets import split_target
from nnunet_lesionloss.training import lesion_validation as lv
from nnunet_lesionloss.training import variants


def test_union_of_nested_regions_with_the_validation_connectivity(preprocessed_dataset, monkeypatch, tmp_path):
    """channels: union on regions gives the loss one channel (the region holding the others) while the
    validation counts every region; with the loss's connectivity equal to the validation's, the
    batch's one-channel maps were reused for two regions and the first validation crashed
    ("prediction (2, 2, ...) and reference (2, 1, ...)")."""
    override = tmp_path / "full.yaml"
    override.write_text("connectivity: full\n")
    monkeypatch.setenv(CONFIG_ENV, str(override))
    nested = _nested_regions(preprocessed_dataset, {"background": 0, "whole": [1, 2], "core": [2]})
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL, dataset_json=nested)
    assert trainer.region_channels == [0] and trainer.connectivity == trainer.lesion_connectivity == 26
    trainer.initialize()
    batch = next(trainer.get_dataloaders()[1])
    seg = split_target(batch["target"][0], trainer.target_layout)[0].numpy().astype(bool)
    assert seg.shape[1] == 2
    expected = sum(int(label_components(seg[b, r], 26).max()) for b in range(seg.shape[0]) for r in range(2))
    assert expected > 0
    for keep, detected in [(1, expected), (0, 0)]:
        trainer.network = _FixedOutput([_logits_from(trainer, t, keep) for t in batch["target"]])
        result = trainer.validation_step({"data": batch["data"], "target": [t.clone() for t in batch["target"]]})
        counts = dict(zip(lv.COUNT_FIELDS, result["lesion_counts"].tolist()))
        assert (counts["ref_lesions"], counts["ref_detected"], counts["pred_true"]) == (expected, detected, detected)


def _trainer_with_metric(preprocessed_dataset, monkeypatch, tmp_path, metric):
    override = tmp_path / "metric.yaml"
    override.write_text(f"lesion_validation: {{checkpoint_metric: {metric}}}\n")
    monkeypatch.setenv(CONFIG_ENV, str(override))
    trainer = isolated_trainer(preprocessed_dataset, monkeypatch, tmp_path / "results", variants.nnUNetTrainerDiceCE)
    trainer.initialize()
    trainer.save_every, trainer.num_epochs = 1, 100
    return trainer


#: validation counts without a small reference lesion: small-lesion recall undefined, lesion F1 defined
NO_SMALL_LESION = [2, 4, 2, 0, 0, 4, 2]


def test_an_always_undefined_checkpoint_metric_is_said_every_epoch_and_at_the_end(
    preprocessed_dataset, monkeypatch, tmp_path
):
    trainer = _trainer_with_metric(preprocessed_dataset, monkeypatch, tmp_path, "small_lesion_recall")
    for _ in range(3):
        _run_epoch(trainer, NO_SMALL_LESION)
    trainer.on_train_end()
    folder = tmp_path / "results"
    assert not list(folder.rglob("checkpoint_best_small_lesion_recall.pth"))
    log = open(trainer.log_file).read()
    # every epoch: why there is no checkpoint yet
    assert log.count("checkpoint_best_small_lesion_recall.pth not written yet") == 3
    assert "small-lesion recall has been undefined in every epoch so far" in log
    assert "no reference lesion of <= 50 voxels" in log
    # at the end: that it does not exist, why, and what to use instead
    end = log[log.index("Training done.") :] if "Training done." in log else log
    assert "WARNING: no checkpoint_best_small_lesion_recall.pth was written" in log
    assert "-chk checkpoint_final.pth" in end or "-chk checkpoint_final.pth" in log
    assert "undefined in all 3 epochs" in log


def test_a_metric_defined_later_writes_the_checkpoint_and_says_nothing_at_the_end(
    preprocessed_dataset, monkeypatch, tmp_path
):
    trainer = _trainer_with_metric(preprocessed_dataset, monkeypatch, tmp_path, "small_lesion_recall")
    _run_epoch(trainer, NO_SMALL_LESION)
    _run_epoch(trainer, EPOCH_COUNTS[0])  # small-lesion recall 1/2
    _run_epoch(trainer, NO_SMALL_LESION)  # undefined again: the EMA (and the checkpoint) are kept
    trainer.on_train_end()
    assert list((tmp_path / "results").rglob("checkpoint_best_small_lesion_recall.pth"))
    log = open(trainer.log_file).read()
    assert log.count("not written yet") == 1
    assert "WARNING: no checkpoint_best" not in log
    assert np.isfinite(trainer.logger.get_value("ema_small_lesion_recall", None)[-1])


@pytest.mark.parametrize(
    "metric, counts, reason",
    [
        ("lesion_recall", [2, 0, 0, 0, 0, 3, 0], "no reference lesion on the validation patches"),
        ("lesion_precision", [2, 4, 0, 2, 0, 0, 0], "no predicted lesion on the validation patches"),
        ("lesion_f1", [2, 0, 0, 0, 0, 0, 0], "neither a reference nor a predicted lesion"),
    ],
)
def test_the_reason_names_what_is_missing(preprocessed_dataset, monkeypatch, tmp_path, metric, counts, reason):
    trainer = _trainer_with_metric(preprocessed_dataset, monkeypatch, tmp_path, metric)
    _run_epoch(trainer, counts)
    assert reason in open(trainer.log_file).read()
