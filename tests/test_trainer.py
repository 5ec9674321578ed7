"""The trainer base on real nnU-Net objects: loaders, steps, schedule hooks, label/region/2D/3D."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_lesionloss.config import CONFIG_ENV, ConfigError
from nnunet_lesionloss.training import variants


def make_trainer(
    preprocessed_dataset, monkeypatch, trainer_class, configuration="3d_fullres", dataset_json=None, results=None
):
    """A trainer of the session's preprocessed dataset; ``results``: its own nnUNet_results folder (default: the
    session's, shared by every test that does not give one)."""
    for key, value in preprocessed_dataset["env"].items():
        if key.startswith("nnUNet"):
            monkeypatch.setenv(key, value)
    if results is not None:
        monkeypatch.setenv("nnUNet_results", str(results))
    folder = preprocessed_dataset["root"] / "preprocessed" / preprocessed_dataset["dataset"]
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # nnU-Net 2.8's run_training puts this flag into the plans
    dataset_json = dataset_json or json.loads((folder / "dataset.json").read_text())
    return trainer_class(plans, configuration, 0, dataset_json, device=torch.device("cpu"))


def _dataset_json(preprocessed_dataset, kind):
    """The synthetic dataset's dataset.json as is, as regions, or with an ignore label (label 2)."""
    folder = preprocessed_dataset["root"] / "preprocessed" / preprocessed_dataset["dataset"]
    dataset_json = copy.deepcopy(json.loads((folder / "dataset.json").read_text()))
    if kind == "regions":
        dataset_json["labels"] = {"background": 0, "lesion": [1]}
        dataset_json["regions_class_order"] = [1]
    elif kind == "ignore":
        dataset_json["labels"] = {"background": 0, "lesion": 1, "ignore": 2}
    return dataset_json


@pytest.mark.parametrize(
    "trainer_class, configuration, kind",
    [
        (variants.nnUNetTrainerCATMIL, "3d_fullres", "labels"),
        (variants.nnUNetTrainerBlob, "2d", "labels"),
        (variants.nnUNetTrainerCC, "3d_fullres", "regions"),
        (variants.nnUNetTrainerSizePenaltyFSD, "2d", "regions"),
    ],
)
def test_steps_on_real_batches(preprocessed_dataset, monkeypatch, trainer_class, configuration, kind):
    trainer = make_trainer(
        preprocessed_dataset, monkeypatch, trainer_class, configuration, _dataset_json(preprocessed_dataset, kind)
    )
    trainer.initialize()
    train_loader, val_loader = trainer.get_dataloaders()
    batch = next(train_loader)
    layout = trainer.target_layout
    assert isinstance(batch["target"], list), "deep supervision: one target per scale"
    assert batch["target"][0].shape[1] == layout.packed_channels
    assert batch["target"][0].dtype == torch.int32
    if layout.scales_with_maps == 1:
        assert all(t.shape[1] == layout.seg_channels for t in batch["target"][1:])
    _train_and_validate(trainer, batch, next(val_loader))


def _train_and_validate(trainer, train_batch, val_batch):
    trainer.on_train_epoch_start()
    first = trainer.network.decoder.seg_layers[-1].weight.detach().clone()
    result = trainer.train_step(train_batch)
    assert np.isfinite(result["loss"])
    assert not torch.equal(first, trainer.network.decoder.seg_layers[-1].weight), "the step changed the weights"
    trainer.on_validation_epoch_start()
    validation = trainer.validation_step(val_batch)
    assert np.isfinite(validation["loss"]) and validation["tp_hard"].shape == (1,)
    return validation


@pytest.mark.parametrize(
    "trainer_class", [variants.nnUNetTrainerICI, variants.nnUNetTrainerTversky, variants.nnUNetTrainerCC]
)
def test_steps_with_an_ignore_label(preprocessed_dataset, monkeypatch, trainer_class):
    """Ignore label 2 painted over half of a real case (nnU-Net's sampler needs a dataset preprocessed
    with the ignore label, so the batch is built here with the trainer's own transforms)."""
    trainer = make_trainer(
        preprocessed_dataset, monkeypatch, trainer_class, "3d_fullres", _dataset_json(preprocessed_dataset, "ignore")
    )
    trainer.initialize()
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset = infer_dataset_class(trainer.preprocessed_dataset_folder)(trainer.preprocessed_dataset_folder)
    data, seg, _, _ = dataset.load_case(sorted(dataset.identifiers)[0])
    patch = [slice(0, s) for s in trainer.configuration_manager.patch_size]
    image = torch.from_numpy(np.asarray(data)[(slice(None), *patch)].copy()).float()
    labels = torch.from_numpy(np.asarray(seg)[(slice(None), *patch)].copy()).to(torch.int16)
    assert (labels[:, : labels.shape[1] // 2] == 1).any(), "the ignored half holds lesions"
    labels[:, : labels.shape[1] // 2] = 2  # ignored half, lesions included
    transforms = trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales(),
        foreground_labels=trainer.label_manager.foreground_labels,
        ignore_label=trainer.label_manager.ignore_label,
    )
    sample = transforms(image=image, segmentation=labels)
    batch = {
        "data": torch.stack([sample["image"]] * 2),
        "target": [torch.stack([t] * 2) for t in sample["segmentation"]],
    }
    ids = batch["target"][0][:, 1:2]
    assert not ids[:, :, : labels.shape[1] // 2].any(), "ignored voxels are never foreground"
    _train_and_validate(
        trainer, batch, {k: [t.clone() for t in v] if isinstance(v, list) else v for k, v in batch.items()}
    )


def test_warmup_schedule_after_resume_through_the_trainer_hook(preprocessed_dataset, monkeypatch):
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL)
    trainer.initialize()
    trainer.current_epoch = 20  # what load_checkpoint restores when resuming with --c at epoch 20
    trainer.on_train_epoch_start()
    assert trainer.loss.term_weights["cat"] == pytest.approx(0.04)  # 0.1 · 20/50
    assert trainer.loss.term_weights["mil"] == pytest.approx(0.2)
    with open(trainer.log_file) as log:
        assert "loss term weights: cat=0.04, mil=0.2" in log.read()
    trainer.current_epoch = 75
    trainer.on_train_epoch_start()
    assert trainer.loss.term_weights["cat"] == pytest.approx(0.1)


def test_union_vs_per_class_channels(preprocessed_dataset, monkeypatch, tmp_path):
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL)
    assert trainer.label_groups == [(1,)]
    per_class = tmp_path / "per_class.yaml"
    per_class.write_text("channels: per_class\n")
    monkeypatch.setenv(CONFIG_ENV, str(per_class))
    assert (
        make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL).lesion_config["channels"]
        == "per_class"
    )


def test_bad_config_fails_at_trainer_start(preprocessed_dataset, monkeypatch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("terms: {cat: {params: {gamma: -1}}}\n")
    monkeypatch.setenv(CONFIG_ENV, str(bad))
    with pytest.raises(ConfigError, match="terms.cat"):
        make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL)
    two_d = tmp_path / "conn.yaml"
    two_d.write_text("connectivity: 26\n")
    monkeypatch.setenv(CONFIG_ENV, str(two_d))
    with pytest.raises(ConfigError, match="connectivity 26 is not valid for 2D"):
        make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerBlob, "2d")


def test_trainers_and_transforms_pickle_after_nnunet_lookup(preprocessed_dataset, monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for key, value in preprocessed_dataset["env"].items():
        monkeypatch.setenv(key, value)
    found = recursive_find_trainer_class_by_name("nnUNetTrainerCC")
    assert found is variants.nnUNetTrainerCC
    assert pickle.loads(pickle.dumps(found)) is variants.nnUNetTrainerCC
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCC)
    transform = pickle.loads(pickle.dumps(trainer.component_transform()))
    seg = torch.zeros((1, 6, 6, 6), dtype=torch.int16)
    seg[0, 1, 1, 1] = 1
    out = transform(segmentation=seg)["segmentation"]
    assert out.shape[0] == trainer.target_layout.packed_channels == 4  # seg, ids, cells, cell counts


def test_size_penalty_auto_estimates_tau_from_training_patches(preprocessed_dataset, monkeypatch):
    """τ = the median lesion-positive V_g of training patches drawn by nnU-Net's own loader (with
    this trainer's batch size and foreground oversampling), re-derived here with the loader itself
    and a plain count per patch."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    from nnunet_lesionloss.training.trainer import EFFECTIVE_CONFIG_FILE

    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerSizePenaltyAuto)
    trainer.on_train_start()
    try:
        patches = trainer.lesion_config["auto_tau"]["patches"]
        initial = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[2]
        final = list(trainer.configuration_manager.patch_size)
        loader = nnUNetDataLoader(
            trainer.get_tr_and_val_datasets()[0],
            trainer.batch_size,
            initial,
            final,
            trainer.label_manager,
            oversample_foreground_percent=trainer.oversample_foreground_percent,
        )
        np.random.seed(0)
        volumes = []
        while len(volumes) < patches:
            for seg in loader.generate_train_batch()["target"].numpy():
                lower = [(i - f) // 2 for i, f in zip(seg.shape[1:], final)]
                centre = seg[0][tuple(slice(a, a + f) for a, f in zip(lower, final))]
                volumes.append(int((centre == 1).sum()))
        volumes = np.array(volumes[:patches])
        expected = float(np.median(volumes[volumes > 0]))
        term = next(t for t in trainer.loss.terms if t.name == "size_penalty")
        assert term.params["tau"] == pytest.approx(expected)
        written = json.loads((Path(trainer.output_folder) / EFFECTIVE_CONFIG_FILE).read_text())
        assert written["terms"]["size_penalty"]["params"]["tau"] == pytest.approx(expected)
    finally:
        trainer.on_train_end()


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_component_transform_runs_in_a_fresh_worker_process(start_method):
    """What nnU-Net's augmentation workers do under spawn/forkserver: unpickle the transform in a
    new interpreter (which can only import it from the installed package) and apply it."""
    import multiprocessing

    from nnunet_lesionloss.training.transforms import ComponentMapsTransform

    seg = torch.zeros((1, 6, 6, 6), dtype=torch.int16)
    seg[0, 0, 0, 0] = seg[0, 4, 4, 4] = 1
    transform = ComponentMapsTransform(label_groups=[(1,)], with_cells=True)
    with multiprocessing.get_context(start_method).Pool(1) as pool:
        out = pool.apply(transform, kwds={"segmentation": seg})["segmentation"]
    assert out.shape == (4, 6, 6, 6) and int(out[1].max()) == 2 and int(out[2].min()) == 1


def test_nnunet_train_step_carries_the_packed_target_to_the_loss(preprocessed_dataset, monkeypatch):
    """The trainer base does not override nnU-Net's train_step: what it relies on is that nnU-Net's
    step moves every scale of ``batch['target']`` to the device and hands it to ``self.loss`` as is,
    so the component maps reach the loss packed in the target."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_lesionloss.training.trainer import nnUNetTrainerLesionLoss

    assert nnUNetTrainerLesionLoss.train_step is nnUNetTrainer.train_step
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL)
    trainer.initialize()
    batch = next(trainer.get_dataloaders()[0])
    seen = []
    loss = trainer.loss

    def recording_loss(output, target):
        seen.append(target)
        return loss(output, target)

    monkeypatch.setattr(trainer, "loss", recording_loss)
    trainer.train_step(batch)
    (target,) = seen
    assert [t.shape for t in target] == [t.shape for t in batch["target"]]
    assert all(torch.equal(t, b) for t, b in zip(target, batch["target"])), "the packed target arrives unchanged"
    assert target[0].shape[1] == trainer.target_layout.packed_channels
    assert trainer.target_layout is trainer.target_layout, "computed once, not per access"


def test_size_penalty_auto_tau_is_validated_like_a_config_value(preprocessed_dataset, monkeypatch):
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerSizePenaltyAuto)
    trainer.initialize()
    with pytest.raises(ConfigError, match="terms.size_penalty: tau must be a finite number > 0"):
        trainer.update_term_params("size_penalty", {"tau": float("nan")})
    trainer.update_term_params("size_penalty", {"tau": 42.0})
    term = next(t for t in trainer.loss.terms if t.name == "size_penalty")
    assert term.params["tau"] == 42.0 and trainer.lesion_config["terms"]["size_penalty"]["params"]["tau"] == 42.0


def _nested_regions(preprocessed_dataset, labels):
    dataset_json = _dataset_json(preprocessed_dataset, "labels")
    dataset_json["labels"] = labels
    dataset_json["regions_class_order"] = list(range(1, len(labels)))
    return dataset_json


def test_union_on_region_based_data_is_the_region_that_contains_the_others(preprocessed_dataset, monkeypatch):
    # nnU-Net orders regions from the largest (BraTS: whole tumour ⊃ tumour core ⊃ ...): CATMIL's
    # union channel is the region holding every label, MIL and CAT see it alone; per_class sees all
    nested = _nested_regions(preprocessed_dataset, {"background": 0, "whole": [1, 2], "core": [2]})
    catmil = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL, dataset_json=nested)
    assert catmil.region_channels == [0]
    assert catmil.target_layout.num_channels == 1 and catmil.target_layout.seg_channels == 2
    cat = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCAT, dataset_json=nested)
    assert cat.region_channels == [0, 1] and cat.target_layout.num_channels == 2
    catmil.initialize()
    batch = next(catmil.get_dataloaders()[0])
    ids = batch["target"][0][:, catmil.target_layout.seg_channels :]
    whole = batch["target"][0][:, :1] > 0
    assert ids.shape[1] == 1 and torch.equal(ids > 0, whole), "the maps are those of the union region"
    catmil.on_train_epoch_start()
    assert np.isfinite(catmil.train_step(batch)["loss"])
    disjoint = _nested_regions(preprocessed_dataset, {"background": 0, "a": [1, 3], "b": [2, 3]})
    with pytest.raises(ConfigError, match="channels: union on a region-based dataset"):
        make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL, dataset_json=disjoint)


def test_cat_is_per_class_and_catmil_the_union_for_several_classes(preprocessed_dataset, monkeypatch):
    # the authors' CATMIL and MIL trainers use the union of the foreground classes whatever their
    # number; their CAT trainer switches to one CAT per class above two output channels
    dataset_json = _dataset_json(preprocessed_dataset, "labels")
    dataset_json["labels"] = {"background": 0, "a": 1, "b": 2}
    groups = {
        trainer: make_trainer(preprocessed_dataset, monkeypatch, getattr(variants, trainer), dataset_json=dataset_json)
        for trainer in ("nnUNetTrainerCATMIL", "nnUNetTrainerMIL", "nnUNetTrainerCAT")
    }
    assert groups["nnUNetTrainerCATMIL"].label_groups == [(1, 2)]
    assert groups["nnUNetTrainerMIL"].label_groups == [(1, 2)]
    assert groups["nnUNetTrainerCAT"].label_groups == [(1,), (2,)]


def test_include_background_has_no_effect_on_regions(preprocessed_dataset, monkeypatch):
    nested = _nested_regions(preprocessed_dataset, {"background": 0, "whole": [1, 2], "core": [2]})
    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerTversky, dataset_json=nested)
    (term,) = trainer.lesion_terms
    assert term.params["include_background"] is False
    labels = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerTversky)
    assert labels.lesion_terms[0].params["include_background"] is True


def test_a_failure_while_writing_the_effective_config_keeps_the_previous_file(preprocessed_dataset, monkeypatch):
    """A run resumed with --c rewrites lesionloss_config.json: a failure half-way (here a value that
    JSON cannot hold) must leave the previous file whole, not truncated, and no partial file beside it."""
    from nnunet_lesionloss.training.trainer import EFFECTIVE_CONFIG_FILE

    trainer = make_trainer(preprocessed_dataset, monkeypatch, variants.nnUNetTrainerCATMIL)
    folder = Path(trainer.output_folder)
    folder.mkdir(parents=True, exist_ok=True)
    trainer.write_effective_config()
    previous = (folder / EFFECTIVE_CONFIG_FILE).read_text()
    assert json.loads(previous)["trainer"] == "nnUNetTrainerCATMIL"
    trainer.lesion_config_sources = [*trainer.lesion_config_sources, {"source": object()}]
    with pytest.raises(TypeError):
        trainer.write_effective_config()
    assert (folder / EFFECTIVE_CONFIG_FILE).read_text() == previous
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".partial")) == []


def test_trainers_of_the_published_settings():
    """The _paper / _skipEmpty trainers change exactly what their papers write (no training needed)."""
    from nnunet_lesionloss.config import load_config

    def config(trainer):
        return load_config(trainer.config_name, trainer.config_overrides, env={})

    for trainer in (
        variants.nnUNetTrainerProximity_paper,
        variants.nnUNetTrainerProximity_GDF_paper,
        variants.nnUNetTrainerProximity_GDF_paper_200epochs,
    ):
        family = config(trainer)["terms"]["instance_family"]
        assert family["warmup_epochs"] == 0 and family["params"]["proximity_reduction"] == "sum"
        assert family["subterms"] == {"proximity": 0.1}  # eq. 14
    assert config(variants.nnUNetTrainerProximity_GDF_paper_200epochs)["base"]["loss"] == "generalized_dice_focal"
    assert config(variants.nnUNetTrainerProximity_GDF_paper_200epochs)["trainer"]["num_epochs"] == 200
    defaults = config(variants.nnUNetTrainerProximity)["terms"]["instance_family"]
    assert defaults["warmup_epochs"] == 50 and defaults["params"]["proximity_reduction"] == "mean"

    for trainer, weight in (
        (variants.nnUNetTrainerCC_skipEmpty, 1.0),
        (variants.nnUNetTrainerCC_b2_skipEmpty, 2.0),
        (variants.nnUNetTrainerIWLCC_skipEmpty, 1.0),
        (variants.nnUNetTrainerIWLCC_b2_skipEmpty, 2.0),
    ):
        cc = config(trainer)["terms"]["cc"]
        assert cc["params"]["empty_pairs"] == "skip" and cc["weight"] == weight, trainer.__name__
    for trainer in (variants.nnUNetTrainerCC, variants.nnUNetTrainerIWLCC):
        assert config(trainer)["terms"]["cc"]["params"]["empty_pairs"] == "whole_patch"  # the CC authors' code
    assert config(variants.nnUNetTrainerIWLCC)["terms"]["cc"]["params"]["iwl_reading"] == "clamp"


def test_proximity_as_published_warns_in_the_training_log():
    logged = []

    class Trainer:
        def on_train_start(self):
            logged.append("started")

        def print_to_log_file(self, *args):
            logged.append(" ".join(str(a) for a in args))

    class Published(variants._ProximityAsPublished, Trainer):
        pass

    Published().on_train_start()
    assert logged[0] == "started" and logged[1].startswith("WARNING: L_proximity as published")
    assert variants.nnUNetTrainerProximity_paper.__mro__[1] is variants._ProximityAsPublished
