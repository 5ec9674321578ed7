"""Lesion-wise validation inside the trainers, on real nnU-Net objects: the stock DC+CE trainer's loss,
lesion counts of validation_step, the EMA checkpoint across a resume, progress.png, the fold evaluation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from test_trainer import _dataset_json, make_trainer

from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.targets import split_target
from nnunet_lesionloss.training import lesion_validation as lv
from nnunet_lesionloss.training import variants


def _ignore_batch(trainer):
    """A validation batch of a real case with label 2 (ignore) painted over half of it, through the
    trainer's own validation transforms (nnU-Net's sampler needs data preprocessed with the ignore label)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset = infer_dataset_class(trainer.preprocessed_dataset_folder)(trainer.preprocessed_dataset_folder)
    data, seg, _, _ = dataset.load_case(sorted(dataset.identifiers)[0])
    patch = [slice(0, s) for s in trainer.configuration_manager.patch_size]
    image = torch.from_numpy(np.asarray(data)[(slice(None), *patch)].copy()).float()
    labels = torch.from_numpy(np.asarray(seg)[(slice(None), *patch)].copy()).to(torch.int16)
    labels[:, : labels.shape[1] // 2] = 2
    transforms = trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales(),
        foreground_labels=trainer.label_manager.foreground_labels,
        ignore_label=trainer.label_manager.ignore_label,
    )
    sample = transforms(image=image, segmentation=labels)
    return {
        "data": torch.stack([sample["image"]] * 2),
        "target": [torch.stack([t] * 2) for t in sample["segmentation"]],
    }


def _batch(trainer, kind):
    if kind == "ignore":
        return _ignore_batch(trainer)
    _, val_loader = trainer.get_dataloaders()
    return next(val_loader)


# ----------------------------------------------------------------------------- the stock trainer
@pytest.mark.parametrize("kind", ["labels", "regions", "ignore"])
def test_dice_ce_trainer_loss_is_nnunets_loss(preprocessed_dataset, monkeypatch, kind):
    """nnUNetTrainerDiceCE's loss on the packed target equals nnUNetTrainer's loss on nnU-Net's own
    target, bit for bit, at every deep-supervision scale (DC+CE; DC+BCE for regions; ignore label)."""
    dataset_json = _dataset_json(preprocessed_dataset, kind)
    ours = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE, "3d_fullres", dataset_json)
    stock = make_trainer(preprocessed_dataset, monkeypatch, nnUNetTrainer, "3d_fullres", copy.deepcopy(dataset_json))
    ours.initialize()
    stock.initialize()
    batch = _batch(ours, kind)
    packed = batch["target"]
    assert packed[0].shape[1] == ours.target_layout.packed_channels, "validation batches carry the maps"
    nnunet_target = [split_target(t, ours.target_layout)[0] for t in packed]
    generator = torch.Generator().manual_seed(0)
    heads = ours.label_manager.num_segmentation_heads
    outputs = [torch.randn((t.shape[0], heads, *t.shape[2:]), generator=generator) for t in packed]
    ours_loss = ours.loss(outputs, packed)
    stock_loss = stock.loss(outputs, nnunet_target)
    assert torch.equal(ours_loss, stock_loss), (ours_loss.item(), stock_loss.item())
    # and not by accident: another output gives another loss
    assert not torch.equal(ours.loss([o * 2 for o in outputs], packed), stock_loss)


def test_dice_ce_trainer_trains_without_component_maps(preprocessed_dataset, monkeypatch):
    """No loss term: the training batches stay nnU-Net's own (no cc3d in the training workers)."""
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE)
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    batch = next(train_loader)
    assert batch["target"][0].shape[1] == trainer.target_layout.seg_channels
    trainer.on_train_epoch_start()
    assert np.isfinite(trainer.train_step(batch)["loss"])


# ----------------------------------------------------------------------------- validation_step
class _FixedOutput(torch.nn.Module):
    """A network that answers with given logits (one tensor per deep-supervision scale)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, data):
        return self.outputs


def _logits_from(trainer, target, keep):
    """Logits that segment ``keep`` of the reference: label maps one-hot, regions ±10."""
    seg, _, _ = split_target(target, trainer.target_layout)
    if trainer.label_manager.has_regions:
        regions = seg[:, : len(trainer.label_manager.foreground_regions)].float()
        return (regions * keep * 2 - 1) * 10
    labels = seg[:, 0].long()
    labels = torch.where(labels == (trainer.label_manager.ignore_label or -1), 0, labels) * keep
    heads = trainer.label_manager.num_segmentation_heads
    return torch.nn.functional.one_hot(labels, heads).movedim(-1, 1).float() * 10


def _reference_lesions(trainer, target, connectivity):
    seg, _, _ = split_target(target, trainer.target_layout)
    seg = seg.numpy()
    if trainer.label_manager.has_regions:
        masks = seg[:, :1].astype(bool)
        if seg.shape[1] > 1:
            masks &= ~seg[:, 1:2].astype(bool)
    else:
        masks = (seg[:, :1] == 1)[:, :1]
    return sum(int(label_components(m, connectivity).max()) for m in masks[:, 0])


@pytest.mark.parametrize(
    "trainer_class, kind",
    [
        (variants.nnUNetTrainerDiceCE, "labels"),  # per class, 26: the batch's maps are reused
        (variants.nnUNetTrainerCATMIL, "labels"),  # union, 6-connectivity: relabelled at 26
        (variants.nnUNetTrainerCC, "regions"),
        (variants.nnUNetTrainerBlob, "ignore"),
    ],
)
def test_validation_step_counts_lesions_of_a_perfect_and_an_empty_prediction(
    preprocessed_dataset, monkeypatch, trainer_class, kind
):
    trainer = make_trainer(
        preprocessed_dataset, monkeypatch, trainer_class, "3d_fullres", _dataset_json(preprocessed_dataset, kind)
    )
    trainer.initialize()
    assert trainer.lesion_connectivity == 26
    assert trainer._reuse_batch_components == (trainer.connectivity == 26)
    batch = _batch(trainer, kind)
    n_ref = _reference_lesions(trainer, batch["target"][0], 26)
    assert n_ref > 0
    for keep, expected in [(1, (n_ref, n_ref, n_ref, n_ref)), (0, (n_ref, 0, 0, 0))]:
        outputs = [_logits_from(trainer, t, keep) for t in batch["target"]]
        trainer.network = _FixedOutput(outputs)
        result = trainer.validation_step({"data": batch["data"], "target": [t.clone() for t in batch["target"]]})
        counts = dict(zip(lv.COUNT_FIELDS, result["lesion_counts"].tolist()))
        assert counts["patches"] == batch["data"].shape[0]
        assert (counts["ref_lesions"], counts["ref_detected"], counts["pred_lesions"], counts["pred_true"]) == expected


# ----------------------------------------------------------------------------- epochs, checkpoint, resume
#: lesion counts per epoch giving lesion F1 0.5, 1.0, 0.0, NaN (no lesion at all), 0.8, 1.0
EPOCH_COUNTS = [
    [2, 4, 2, 2, 1, 4, 2],
    [2, 4, 4, 2, 2, 4, 4],
    [2, 4, 0, 2, 0, 3, 0],
    [2, 0, 0, 0, 0, 0, 0],
    [2, 5, 4, 2, 2, 5, 4],
    [2, 4, 4, 2, 2, 4, 4],
]


def _run_epoch(trainer, counts):
    """One epoch through the trainer's hooks with given validation outputs (no data, no network step)."""
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([{"loss": np.array(0.5)}])
    trainer.on_validation_epoch_start()
    output = {
        "loss": np.array(0.4),
        "tp_hard": np.array([5.0]),
        "fp_hard": np.array([1.0]),
        "fn_hard": np.array([1.0]),
        "lesion_counts": np.array(counts, dtype=np.int64),
    }
    trainer.on_validation_epoch_end([output])
    trainer.on_epoch_end()


def test_lesion_checkpoint_ema_survives_a_resume(preprocessed_dataset, monkeypatch, tmp_path):
    """Six epochs in one go, and the same six interrupted after the third and resumed from nnU-Net's
    checkpoint_latest.pth as --c does: the same EMA, the same best epochs, the same checkpoint."""
    rates = [lv.lesion_rates(np.array(c)) for c in EPOCH_COUNTS]
    assert [r["lesion_f1"] for r in rates][:3] == pytest.approx([0.5, 1.0, 0.0]) and math.isnan(rates[3]["lesion_f1"])
    expected_ema = [0.5, 0.55, 0.495, 0.495, 0.5255, 0.57295]

    def fresh(name):
        trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE, results=tmp_path / name)
        trainer.initialize()
        trainer.save_every = 1
        trainer.num_epochs = 100
        return trainer

    whole = fresh("whole")
    for counts in EPOCH_COUNTS:
        _run_epoch(whole, counts)
    assert whole.logger.get_value("ema_lesion_f1", None) == pytest.approx(expected_ema)
    log = open(whole.log_file).read()
    assert log.count("New best EMA lesion_f1") == 3  # epochs 0, 1 and 5
    assert "small-lesion recall (<= 50 voxels)" in log and "(2/4)" in log
    best = torch.load(f"{whole.output_folder}/checkpoint_best_lesion_f1.pth", weights_only=False)
    assert best["current_epoch"] == 6  # saved at the end of epoch 5 (nnU-Net stores epoch + 1)

    first = fresh("resumed")
    for counts in EPOCH_COUNTS[:3]:
        _run_epoch(first, counts)
    second = fresh("resumed")
    second.load_checkpoint(f"{first.output_folder}/checkpoint_latest.pth")
    assert second.current_epoch == 3
    for counts in EPOCH_COUNTS[3:]:
        _run_epoch(second, counts)
    for key in (*lv.RATE_NAMES, "ema_lesion_f1"):
        assert second.logger.get_value(key, None) == pytest.approx(whole.logger.get_value(key, None), nan_ok=True)
    resumed_best = torch.load(f"{second.output_folder}/checkpoint_best_lesion_f1.pth", weights_only=False)
    assert resumed_best["current_epoch"] == 6
    assert "New best EMA lesion_f1" in open(second.log_file).read()
    # nnU-Net's own best checkpoint is still chosen by its pseudo Dice
    assert Path(whole.output_folder).is_relative_to(tmp_path / "whole")
    assert Path(second.output_folder).is_relative_to(tmp_path / "resumed")
    assert list((tmp_path / "resumed").rglob("checkpoint_best.pth"))


def test_a_checkpoint_without_lesion_keys_resumes_with_nan(preprocessed_dataset, monkeypatch, tmp_path):
    """A checkpoint from before lesion validation existed: the lesion curves start at the resume."""
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE, results=tmp_path)
    trainer.initialize()
    trainer.save_every, trainer.num_epochs = 1, 100
    for counts in EPOCH_COUNTS[:2]:
        _run_epoch(trainer, counts)
    checkpoint = torch.load(f"{trainer.output_folder}/checkpoint_latest.pth", weights_only=False)
    for key in (*lv.RATE_NAMES, "ema_lesion_f1"):
        del checkpoint["logging"][key]
    torch.save(checkpoint, tmp_path / "old.pth")
    resumed = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE, results=tmp_path)
    resumed.load_checkpoint(str(tmp_path / "old.pth"))
    resumed.save_every, resumed.num_epochs = 1, 100
    _run_epoch(resumed, EPOCH_COUNTS[4])
    ema = resumed.logger.get_value("ema_lesion_f1", None)
    assert len(ema) == 3 and math.isnan(ema[0]) and math.isnan(ema[1]) and ema[2] == pytest.approx(0.8)


def test_progress_png_gets_a_lesion_panel(preprocessed_dataset, monkeypatch, tmp_path):
    """nnU-Net's three panels, plus one: the figure is 4/3 as tall as nnU-Net's own for the same log."""
    import matplotlib.image
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL, results=tmp_path)
    trainer.initialize()
    for counts in EPOCH_COUNTS:
        _run_epoch(trainer, counts)
    ours = matplotlib.image.imread(f"{trainer.output_folder}/progress.png")
    plain = LocalLogger()
    plain.my_fantastic_logging = {
        k: v for k, v in trainer.logger.local_logger.my_fantastic_logging.items() if k in plain.my_fantastic_logging
    }
    (tmp_path / "plain").mkdir()
    plain.plot_progress_png(str(tmp_path / "plain"))
    theirs = matplotlib.image.imread(str(tmp_path / "plain" / "progress.png"))
    assert Path(trainer.output_folder).is_relative_to(tmp_path)
    assert ours.shape[1] == theirs.shape[1] and ours.shape[0] == pytest.approx(theirs.shape[0] * 4 / 3, abs=2)
    # the extra panel is drawn (not blank) and nnU-Net's pyplot is restored afterwards
    assert ours[theirs.shape[0] :].std() > 0.01
    from nnunetv2.training.logging import nnunet_logger

    assert nnunet_logger.plt is __import__("matplotlib.pyplot").pyplot


def test_lesion_validation_can_be_switched_off(preprocessed_dataset, monkeypatch, tmp_path):
    override = tmp_path / "off.yaml"
    override.write_text("lesion_validation: {enabled: false}\n")
    monkeypatch.setenv("NNUNET_LESIONLOSS_CONFIG", str(override))
    trainer = make_trainer(
        preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE, results=tmp_path / "results"
    )
    trainer.initialize()
    assert trainer.lesion_checkpoint_name is None
    assert type(trainer.logger.local_logger) is not lv.LesionProgressLogger
    _, val_loader = trainer.get_dataloaders()
    assert "lesion_counts" not in trainer.validation_step(next(val_loader))


def test_fold_evaluation_failure_is_logged_not_raised(preprocessed_dataset, monkeypatch, tmp_path):
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE, results=tmp_path)
    assert trainer.evaluate_fold() is None  # no validation folder: nothing predicted yet
    log = open(trainer.log_file).read()
    assert "WARNING: the lesion-wise evaluation of fold 0 failed" in log and "unaffected" in log


def test_small_lesion_threshold_follows_the_spacing(preprocessed_dataset, monkeypatch):
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerDiceCE)
    spacing = trainer.configuration_manager.spacing
    assert trainer.small_lesion_voxels == lv.small_lesion_voxels(0.05, spacing)
    assert json.dumps(trainer.lesion_config["lesion_validation"])  # written into the effective config


# ----------------------------------------------------------------------------- through nnU-Net's CLI
@pytest.mark.slow
def test_catmil_training_shows_lesions_and_evaluates_its_fold(preprocessed_dataset, short_run_config, tmp_path):
    """A short real nnUNetv2_train with CATMIL: lesion lines in the log, the lesion panel in
    progress.png, checkpoint_best_lesion_f1.pth that nnUNetv2_predict -chk uses, the fold's lesion-wise
    evaluation in fold_0/validation/lesion_evaluation, and cv-summary reusing it."""
    import matplotlib.image
    import SimpleITK as sitk

    from conftest import run_cli
    from nnunet_lesionloss.evaluation.cv import cv_summary
    from nnunet_lesionloss.evaluation.settings import get_preset

    results = tmp_path / "results"
    env = dict(preprocessed_dataset["env"], nnUNet_results=str(results), NNUNET_LESIONLOSS_CONFIG=str(short_run_config))
    dataset_id = str(preprocessed_dataset["dataset_id"])
    trainer = "nnUNetTrainerCATMIL"
    run_cli(["nnUNetv2_train", dataset_id, "3d_fullres", "0", "-tr", trainer, "-device", "cpu"], env)
    run_dir = results / preprocessed_dataset["dataset"] / f"{trainer}__nnUNetPlans__3d_fullres"
    fold = run_dir / "fold_0"

    log = next(fold.glob("training_log_*.txt")).read_text()
    assert log.count("Lesions on validation patches (patch-level estimate): lesion recall") == 2  # 2 epochs
    assert "New best EMA lesion_f1" in log and "Lesion-wise evaluation of fold 0 (1 cases, 0 failed" in log
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    for key in (*lv.RATE_NAMES, "ema_lesion_f1"):
        assert len(checkpoint["logging"][key]) == 2
    assert matplotlib.image.imread(fold / "progress.png").shape[0] == 7200  # nnU-Net's 5400 px + a panel
    assert (fold / "checkpoint_best.pth").is_file(), "nnU-Net's own best checkpoint is still written"

    evaluation = json.loads((fold / "validation" / "lesion_evaluation" / "summary.json").read_text())
    assert evaluation["settings"] == get_preset("default").settings.to_dict()
    assert [entry["case"] for entry in evaluation["metric_per_case"]] == ["case_005"]
    assert evaluation["n_failed"] == 0 and evaluation["mean"]["1"]["lesion_f1"] is not None
    assert (fold / "validation" / "summary.json").is_file(), "nnU-Net's own summary is untouched"

    # the lesion-aware checkpoint through the stock CLI
    inputs, predictions = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    case = preprocessed_dataset["root"] / "raw" / preprocessed_dataset["dataset"] / "imagesTr" / "case_005_0000.nii.gz"
    (inputs / case.name).write_bytes(case.read_bytes())
    run_cli(
        ["nnUNetv2_predict", "-i", str(inputs), "-o", str(predictions), "-d", dataset_id, "-c", "3d_fullres"]
        + ["-f", "0", "-tr", trainer, "-chk", "checkpoint_best_lesion_f1.pth", "-device", "cpu", "--disable_tta"]
        + ["-npp", "1", "-nps", "1"],
        env,
    )
    assert sitk.ReadImage(str(predictions / "case_005.nii.gz")).GetSize() == sitk.ReadImage(str(case)).GetSize()

    # cv-summary takes the fold's evaluation as it is, and gets what evaluating again gives
    gt = preprocessed_dataset["root"] / "preprocessed" / preprocessed_dataset["dataset"] / "gt_segmentations"
    reused = cv_summary(run_dir, gt_dir=gt, output_dir=tmp_path / "cv_reused", progress=False)
    assert reused["folds_reused_from_training"] == [0]
    assert (tmp_path / "cv_reused" / "fold_0" / "summary.json").is_file()
    fresh = cv_summary(
        run_dir, gt_dir=gt, output_dir=tmp_path / "cv_fresh", preset="isles22", progress=False
    )  # other settings: evaluated again
    assert fresh["folds_reused_from_training"] == []
    (fold / "validation" / "case_005.nii.gz").touch()  # a prediction newer than the evaluation
    again = cv_summary(run_dir, gt_dir=gt, output_dir=tmp_path / "cv_again", progress=False)
    assert again["folds_reused_from_training"] == []
    assert again["per_fold_mean"] == reused["per_fold_mean"]
    assert again["pooled"] == reused["pooled"]
