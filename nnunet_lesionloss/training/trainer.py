"""The trainer base every trainer of this package derives from.

A trainer variant is a subclass that names its config (``config_name``) and, for small named
variants, a few ``config_overrides``; this base does the rest:

* ``_build_loss``: nnU-Net's own loss (DC+CE, or DC+BCE for regions) becomes the base of a
  :class:`~nnunet_lesionloss.losses.compound.LesionAwareLoss` with the config's terms and nnU-Net's
  deep-supervision weights;
* the training and validation transforms get a :class:`ComponentMapsTransform` at their end, so the
  component maps are computed in the augmentation workers and arrive packed in ``batch['target']``;
* nnU-Net's own ``train_step`` moves the packed targets to the device with the batch and gives
  them to the loss unchanged (it is not overridden); ``validation_step`` does the same and strips
  the maps before nnU-Net's online Dice;
* ``on_train_epoch_start`` sets the scheduled term weights from ``self.current_epoch`` alone (so a
  run resumed with ``--c`` gets the same weights) and writes them to the training log;
* ``on_train_start`` writes the effective config beside nnU-Net's ``debug.json`` (with every config
  the run trained with, by epoch: ``history``);
* every checkpoint stores the config (in nnU-Net's ``init_args``, which nnU-Net restores itself); a
  run resumed with ``--c`` continues with it when the current config resolves to the same one, and
  otherwise stops naming the differences unless ``NNUNET_LESIONLOSS_RESUME`` says which to use
  (``checkpoint``: the stored one; ``new``: the current one from the resumed epoch on);
* lesion-wise validation (config ``lesion_validation``, see :mod:`.lesion_validation`): every
  ``validation_step`` also counts lesions on its patches, ``on_validation_epoch_end`` sums the counts
  (over DDP ranks too) and logs the rates to nnU-Net's logger (a further panel of ``progress.png``)
  and the training log, ``on_epoch_end`` keeps ``checkpoint_best_<metric>.pth`` by the EMA of one of
  them (beside nnU-Net's ``checkpoint_best.pth``, which is chosen as before), and
  ``perform_actual_validation`` ends with the lesion-wise evaluation of the fold's validation cases in
  ``fold_X/validation/lesion_evaluation`` (a failure there is logged, never raised).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.logging.nnunet_logger import LocalLogger
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_lesionloss.config import (
    ABSENT,
    CONFIG_ENV,
    ConfigError,
    config_differences,
    load_config_with_sources,
    validate_structure,
)
from nnunet_lesionloss.evaluation.io import write_json
from nnunet_lesionloss.evaluation.settings import EvaluationSettings
from nnunet_lesionloss.losses.compound import LesionAwareLoss
from nnunet_lesionloss.losses.terms import LossTerm
from nnunet_lesionloss.targets import TargetLayout, split_target
from nnunet_lesionloss.training import lesion_validation as lv
from nnunet_lesionloss.training.setup import build_trainer_term, resolve_setup
from nnunet_lesionloss.training.transforms import ComponentMapsTransform

__all__ = [
    "nnUNetTrainerLesionLoss",
    "EFFECTIVE_CONFIG_FILE",
    "RESUME_ENV",
    "RESUME_MODES",
]

EFFECTIVE_CONFIG_FILE = "lesionloss_config.json"

#: how a run resumed with ``--c`` treats a config that differs from the one in its checkpoint
RESUME_ENV = "NNUNET_LESIONLOSS_RESUME"
RESUME_MODES = {
    "checkpoint": "continue with the config stored in the checkpoint (the current one is ignored)",
    "new": "train the remaining epochs with the current config (lesionloss_config.json records both, by epoch)",
}
#: the key of nnU-Net's checkpoint ``init_args`` that holds the configs of the run
CHECKPOINT_CONFIG_KEY = "lesionloss_config"


def _any_finite(values: Sequence[float]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)


def _describe(differences: list[tuple[str, object, object]]) -> list[str]:
    """One line per difference between the checkpoint's config and the current one."""
    return [
        f"{key}: {old if old is not ABSENT else 'not set'} in the checkpoint, {new if new is not ABSENT else 'not set'} now"
        for key, old, new in differences
    ]


class nnUNetTrainerLesionLoss(nnUNetTrainer):
    """Base of every trainer of this package (see module docstring). Not meant to be trained itself."""

    config_name: ClassVar[str] = "dice_ce"
    config_overrides: ClassVar[dict] = {}

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's own signature)
    ):
        # nnU-Net's run_training puts --c into the plans, and its __init__ takes it out again
        continue_training = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._continue_training = continue_training
        self._resume_checked = False
        self._trainer_defaults: dict = {}  # trainer settings as they were before a config set them
        # which file (or class) set what: written into the effective config at train start
        config, sources = load_config_with_sources(self.config_name, self.config_overrides, trainer=type(self).__name__)
        self.apply_lesion_config(config, sources)
        # the configs of this run before the current one (from the checkpoint), oldest first
        self._earlier_configs: list[dict] = []
        self._config_first_epoch = 0  # the first epoch the current config trains
        # whether on_train_start derives term settings from the data (not when a checkpoint stores them)
        self.needs_prepare_terms = True

    def apply_lesion_config(self, config: dict, sources: list[dict], requested: dict | None = None) -> None:
        """Make ``config`` the one this trainer trains with: everything it fixes for the trainer's life
        (trainer settings, terms, channels, component maps, lesion validation). All checks run before
        anything changes, so a refused config leaves the trainer as it was. ``requested``: the config
        as its files resolved it, before :meth:`prepare_terms` derived settings (default: ``config``)."""
        setup = resolve_setup(
            config,
            spatial_dims=len(self.configuration_manager.patch_size),
            spacing=self.configuration_manager.spacing,
            label_manager=self.label_manager,
        )
        previous = getattr(self, "lesion_config", None)
        for key in previous["trainer"] if previous else ():
            if key not in config["trainer"]:  # back to the value it had before a config set it
                setattr(self, key, self._trainer_defaults[key])
        for key, value in config["trainer"].items():
            self._trainer_defaults.setdefault(key, getattr(self, key))
            setattr(self, key, value)
        self.lesion_config, self.lesion_config_sources = config, sources
        self._requested_config = copy.deepcopy(requested if requested is not None else config)
        self.connectivity = setup.connectivity
        self.lesion_terms = setup.terms
        for note in setup.notes:
            self.print_to_log_file(note)
        # fixed for the config's life: the dataset's labels, the config's channels and terms
        self.label_groups = setup.label_groups
        self.region_channels = setup.region_channels
        self.target_layout = self._target_layout()
        self._setup_lesion_validation(setup.lesion_connectivity)

    def _build_term(self, name: str, settings: dict) -> LossTerm:
        term, note = build_trainer_term(
            name,
            settings,
            spatial_dims=len(self.configuration_manager.patch_size),
            spacing=self.configuration_manager.spacing,
            connectivity=self.connectivity,
            has_regions=self.label_manager.has_regions,
        )
        if note:
            self.print_to_log_file(note)
        return term

    # ----------------------------------------------------------------- channels and targets
    def _target_layout(self) -> TargetLayout:
        has_regions = self.label_manager.has_regions
        num_channels = len(self.region_channels) if has_regions else len(self.label_groups)
        if has_regions:  # region channels, then the ignore region if the dataset has an ignore label
            seg_channels = len(self.label_manager.foreground_regions) + (
                1 if self.label_manager.has_ignore_label else 0
            )
        else:
            seg_channels = 1
        needs_all_scales = any(not term.full_resolution_only for term in self.lesion_terms)
        return TargetLayout(
            seg_channels=seg_channels,
            seg_dtype=torch.bool if has_regions else torch.int16,
            num_channels=num_channels,
            with_cells=any(term.needs_cells for term in self.lesion_terms),
            scales_with_maps=None if needs_all_scales else 1,
        )

    def component_transform(self) -> ComponentMapsTransform:
        layout = self.target_layout
        if self.label_manager.has_regions:
            grouping = {
                "num_regions": len(self.label_manager.foreground_regions),
                "region_channels": self.region_channels,
            }
        else:
            grouping = {"label_groups": self.label_groups, "ignore_label": self.label_manager.ignore_label}
        return ComponentMapsTransform(
            **grouping,
            connectivity=self.connectivity,
            with_cells=layout.with_cells,
            scales_with_maps=layout.scales_with_maps,
        )

    def get_training_transforms(self, *args, **kwargs):
        transforms = super().get_training_transforms(*args, **kwargs)
        if self.lesion_terms:  # a loss without lesion terms (nnU-Net's own) needs no maps to train
            transforms.transforms.append(self.component_transform())
        return transforms

    def get_validation_transforms(self, *args, **kwargs):
        transforms = super().get_validation_transforms(*args, **kwargs)
        transforms.transforms.append(self.component_transform())
        return transforms

    # ----------------------------------------------------------------- loss and schedule
    def _build_loss(self):
        nnunet_loss = super()._build_loss()
        if isinstance(nnunet_loss, DeepSupervisionWrapper):
            base, scale_weights = nnunet_loss.loss, nnunet_loss.weight_factors
        else:
            base, scale_weights = nnunet_loss, None
        return LesionAwareLoss(
            base=base,
            # nnU-Net's own loss only when it is the base; another base loss is part of the terms
            base_weight=self.lesion_config["base"]["weight"] if self.lesion_config["base"]["loss"] == "nnunet" else 0.0,
            terms=self.lesion_terms,
            scale_weights=scale_weights,
            layout=self.target_layout,
            label_groups=self.label_groups,
            ignore_label=self.label_manager.ignore_label,
            region_channels=self.region_channels,
            ignore_region=self.label_manager.has_regions and self.label_manager.has_ignore_label,
        )

    def prepare_terms(self) -> None:
        """Hook for variants that derive term settings from the training data (after the loaders
        exist, before the effective config is written); they apply them with
        :meth:`update_term_params`. Default: nothing."""

    def update_term_params(self, name: str, params: dict) -> None:
        """Set params of term ``name`` after the loss exists. The term is rebuilt through
        ``build_term``, so a derived value passes the same validation as a config value, and the
        effective config records it."""
        settings = self.lesion_config["terms"][name]
        changes = {
            f"terms.{name}.params.{key}": {"from": settings["params"][key], "to": value}
            if key in settings["params"]
            else {"to": value}
            for key, value in params.items()
        }
        self.lesion_config_sources.append({"source": f"{type(self).__name__}.prepare_terms", "changes": changes})
        settings["params"] = {**settings["params"], **params}
        term = self._build_term(name, settings)
        self.lesion_terms = [term if t.name == name else t for t in self.lesion_terms]
        self.loss.terms = [term if t.name == name else t for t in self.loss.terms]

    def on_train_start(self):
        super().on_train_start()
        if self.needs_prepare_terms:  # a resumed run keeps the settings its checkpoint stores
            self.prepare_terms()
            self.needs_prepare_terms = False
        if self.local_rank == 0:
            self.write_effective_config()

    def _effective_record(self, config: dict | None, sources: list[dict] | None) -> dict:
        """A config as ``lesionloss_config.json`` shows it: its keys, the trainer, its trainer settings
        and which file changed what."""
        if config is None:
            return {"config": None, "note": "not recorded: the checkpoint was written without its loss config"}
        record = {k: v for k, v in config.items() if k != "trainer"}
        record.update(trainer=type(self).__name__, config_name=self.config_name)
        record["trainer_settings"] = config["trainer"]
        record["sources"] = sources  # which file changed what
        return record

    def _config_periods(self) -> list[dict]:
        """Every config of this run, oldest first: ``first_epoch``, ``requested`` (as the files resolved
        it), ``config`` (as trained, with derived settings) and ``sources``; the last is the current one."""
        current = {
            "first_epoch": self._config_first_epoch,
            "requested": self._requested_config,
            "config": self.lesion_config,
            "sources": self.lesion_config_sources,
        }
        return copy.deepcopy([*self._earlier_configs, current])

    def write_effective_config(self) -> None:
        """``fold_X/lesionloss_config.json``: the config this run trains with and which file changed
        what, and under ``history`` every config the run trained with, by epoch (``first_epoch``,
        ``last_epoch``). Serialised first and renamed into place, so a run resumed with ``--c`` that
        fails here keeps the previous file whole."""
        periods = self._config_periods()
        history = []
        for k, period in enumerate(periods):
            epochs = {"first_epoch": period["first_epoch"]}
            if k + 1 < len(periods):
                epochs["last_epoch"] = periods[k + 1]["first_epoch"] - 1
            history.append({**epochs, **self._effective_record(period["config"], period["sources"])})
        effective = self._effective_record(self.lesion_config, self.lesion_config_sources)
        effective["history"] = history
        write_json(os.path.join(self.output_folder, EFFECTIVE_CONFIG_FILE), effective, overwrite=True)

    # ----------------------------------------------------------------- checkpoints and --c
    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net saves init_args in every checkpoint and restores them in load_checkpoint: the configs
        # of the run travel there as plain data (nnUNetv2_predict needs no class of this package)
        self.my_init_kwargs[CHECKPOINT_CONFIG_KEY] = {"periods": self._config_periods()}
        super().save_checkpoint(filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        if self._continue_training and not self._resume_checked:  # --c, before the first resumed epoch
            self._resume_checked = True
            stored = (self.my_init_kwargs or {}).get(CHECKPOINT_CONFIG_KEY)
            self._resume_config(stored["periods"] if stored else None)

    def _resume_config(self, periods: list[dict] | None) -> None:
        """Continue with the checkpoint's config, or stop naming the differences (module docstring)."""
        epoch = self.current_epoch
        mode = os.environ.get(RESUME_ENV, "")
        if mode and mode not in RESUME_MODES:
            raise self._refuse_resume(
                f"{RESUME_ENV}={mode} is not a resume mode; use "
                + " or ".join(f"{RESUME_ENV}={name} ({what})" for name, what in RESUME_MODES.items())
            )
        if periods is None:
            if mode != "new":
                raise self._refuse_resume(
                    f"the checkpoint to resume (epoch {epoch}) records no lesion-loss config (it was written by a "
                    f"version that did not store it), so nothing shows which config epochs 0-{epoch - 1} trained "
                    f"with. Set {RESUME_ENV}=new to train the remaining epochs with the current config "
                    f"({EFFECTIVE_CONFIG_FILE} then records epochs 0-{epoch - 1} as not recorded)"
                )
            self._switch_to_current_config([{"first_epoch": 0, "requested": None, "config": None, "sources": None}])
            return
        stored = periods[-1]
        differences = config_differences(stored["requested"], self.lesion_config)
        if differences and mode == "new":
            self.print_to_log_file(
                f"{RESUME_ENV}=new: from epoch {epoch} on, the run trains with the current loss config; "
                "changed: " + "; ".join(_describe(differences))
            )
            self._switch_to_current_config(periods)
            return
        if differences and mode != "checkpoint":
            override = os.environ.get(CONFIG_ENV)
            current = f"{CONFIG_ENV}={override}" if override else f"{CONFIG_ENV} is not set (the trainer's defaults)"
            raise self._refuse_resume(
                f"nnUNetv2_train --c: the loss config now ({current}) differs from the one this run trained with "
                f"until epoch {epoch} (stored in its checkpoint):\n  "
                + "\n  ".join(_describe(differences))
                + f"\nSet {RESUME_ENV}=checkpoint to {RESUME_MODES['checkpoint']}, or {RESUME_ENV}=new to "
                f"{RESUME_MODES['new']}; or resume with the config the run started with."
            )
        # the same config (or the checkpoint's, on request): exactly the stored one, derived settings included
        if differences:
            self.print_to_log_file(
                f"{RESUME_ENV}=checkpoint: the run continues with the loss config stored in the checkpoint; "
                "ignored from the current config: " + "; ".join(_describe(differences))
            )
        else:
            self.print_to_log_file(
                f"Resumed at epoch {epoch}: the run continues with the loss config stored in the checkpoint"
            )
        before = self.lesion_config
        config = validate_structure(stored["config"])
        self.apply_lesion_config(config, stored["sources"], requested=stored["requested"])
        self._earlier_configs = periods[:-1]
        self._config_first_epoch = stored["first_epoch"]
        self.needs_prepare_terms = False
        if config != before:
            self._rebuild_loss_and_optimizer()

    def _refuse_resume(self, message: str) -> ConfigError:
        """The error that stops a resumed run, also written to the training log nnU-Net opened for it."""
        self.print_to_log_file(f"ERROR: {message}", also_print_to_console=False)
        return ConfigError(message)

    def _switch_to_current_config(self, earlier: list[dict]) -> None:
        """The current config trains from the resumed epoch on; the checkpoint's configs stay in the record."""
        self._earlier_configs = earlier
        self._config_first_epoch = self.current_epoch

    def _rebuild_loss_and_optimizer(self) -> None:
        """After the config changed on a trainer nnU-Net already initialised: the loss, and the optimizer
        and schedule (learning rate, epochs) with the optimizer's state kept."""
        self.loss = self._build_loss()
        state = self.optimizer.state_dict()
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
        self.optimizer.load_state_dict(state)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        weights = self.loss.set_epoch(self.current_epoch)
        if weights:
            self.print_to_log_file("loss term weights: " + ", ".join(f"{k}={v:.4g}" for k, v in weights.items()))

    # ----------------------------------------------------------------- steps
    def _to_device(self, target):
        if isinstance(target, list):
            return [t.to(self.device, non_blocking=True) for t in target]
        return target.to(self.device, non_blocking=True)

    def _autocast(self):
        # as nnU-Net: autocast on CUDA only (slow on CPU, unsupported on MPS); the terms cast to float32 themselves
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        host_target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        target = self._to_device(batch["target"])
        with self._autocast():
            output = self.network(data)
            del data
            loss = self.loss(output, target)
        if self.enable_deep_supervision:
            output, target = output[0], target[0]
        seg, _, _ = split_target(target, self.target_layout)
        tp, fp, fn = self._online_dice_counts(output, seg)
        result = {"loss": loss.detach().cpu().numpy(), "tp_hard": tp, "fp_hard": fp, "fn_hard": fn}
        if self.lesion_validation["enabled"]:
            # the batch's own (host) copy of the target: no copy back from the device
            result["lesion_counts"] = self._lesion_counts(output, host_target)
        return result

    def _online_dice_counts(self, output: torch.Tensor, seg: torch.Tensor):
        """nnU-Net's online ("pseudo") Dice counts, on the segmentation without component maps."""
        axes = [0] + list(range(2, output.ndim))
        if self.label_manager.has_regions:
            prediction = (torch.sigmoid(output) > 0.5).long()
        else:
            prediction = torch.zeros(output.shape, device=output.device, dtype=torch.float16)
            prediction.scatter_(1, output.argmax(1)[:, None], 1)
        mask = None
        if self.label_manager.has_ignore_label:
            if self.label_manager.has_regions:
                mask = ~seg[:, -1:].bool()
                seg = seg[:, :-1]
            else:
                mask = (seg != self.label_manager.ignore_label).float()
                seg = torch.where(seg == self.label_manager.ignore_label, torch.zeros_like(seg), seg)
        tp, fp, fn, _ = get_tp_fp_fn_tn(prediction, seg, axes=axes, mask=mask)
        tp, fp, fn = (x.detach().cpu().numpy() for x in (tp, fp, fn))
        if not self.label_manager.has_regions:  # drop the background class, as nnU-Net does
            tp, fp, fn = tp[1:], fp[1:], fn[1:]
        return tp, fp, fn

    # ----------------------------------------------------------------- lesion-wise validation
    def _setup_lesion_validation(self, lesion_connectivity: int) -> None:
        settings = self.lesion_config["lesion_validation"]
        self.lesion_validation = settings
        spacing = [float(x) for x in self.configuration_manager.spacing]
        self.lesion_connectivity = lesion_connectivity
        self.small_lesion_voxels = (
            lv.small_lesion_voxels(EvaluationSettings().small_lesion_ml, spacing)
            if settings["small_lesion_voxels"] == "auto"
            else int(settings["small_lesion_voxels"])
        )
        # the evaluation's channels: every foreground label, or every region (whatever the loss's channels)
        has_regions = self.label_manager.has_regions
        self.lesion_groups = None if has_regions else [(int(x),) for x in self.label_manager.foreground_labels]
        # the batch's reference components are these when the loss labelled the same channels alike
        # (regions: all of them, not only the union region of channels: union)
        same_channels = (
            self.region_channels == list(range(len(self.label_manager.foreground_regions)))
            if has_regions
            else self.label_groups == self.lesion_groups
        )
        self._reuse_batch_components = self.connectivity == self.lesion_connectivity and same_channels
        metric = settings["checkpoint_metric"] if settings["enabled"] else None
        self.lesion_checkpoint_metric = metric
        self._lesion_ema_key = f"ema_{metric}" if metric else None
        self._lesion_counts_epoch = None
        local_logger = self.logger.local_logger
        if isinstance(local_logger, lv.LesionProgressLogger):  # set up again for another config: unwrap first
            plain = LocalLogger(local_logger.verbose)
            plain.my_fantastic_logging = local_logger.my_fantastic_logging
            local_logger = plain
        if settings["enabled"]:
            local_logger = lv.LesionProgressLogger(
                local_logger, lv.RATE_NAMES, self._lesion_ema_key, self.small_lesion_voxels
            )
        self.logger.local_logger = local_logger

    @property
    def lesion_checkpoint_name(self) -> str | None:
        """File name of the lesion-aware best checkpoint (``nnUNetv2_predict -chk``), None when off."""
        return f"checkpoint_best_{self.lesion_checkpoint_metric}.pth" if self.lesion_checkpoint_metric else None

    def _lesion_counts(self, output: torch.Tensor, host_target: torch.Tensor) -> np.ndarray:
        """Lesion counts of one validation batch: prediction as at inference (argmax / sigmoid > 0.5) on
        the device, components on the host."""
        seg, ids, _ = split_target(host_target, self.target_layout)
        prediction = lv.predicted_masks(output.detach(), self.lesion_groups).cpu().numpy()
        seg = seg.numpy()
        if self.lesion_groups is not None:
            labels = seg[:, 0]
            ignore = self.label_manager.ignore_label
            valid = labels != ignore if ignore is not None else None
            references = np.stack([np.isin(labels, group) for group in self.lesion_groups], 1)
        else:
            regions = prediction.shape[1]
            valid = ~seg[:, regions].astype(bool) if seg.shape[1] > regions else None
            references = seg[:, :regions].astype(bool)
        reference = (
            {"ref_ids": ids.numpy()} if self._reuse_batch_components and ids is not None else {"ref_masks": references}
        )
        return lv.patch_lesion_counts(
            prediction,
            **reference,
            connectivity=self.lesion_connectivity,
            small_lesion_voxels=self.small_lesion_voxels,
            valid=valid,
        )

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        if not self.lesion_validation["enabled"]:
            return
        counts = np.zeros(len(lv.COUNT_FIELDS), dtype=np.int64)
        for output in val_outputs:
            counts += output["lesion_counts"]
        counts = lv.sum_over_ranks(counts, self.device)  # DDP: counts of all ranks, before any rate
        rates = lv.lesion_rates(counts)
        for name in lv.RATE_NAMES:
            self.logger.log(name, rates[name], self.current_epoch)
        if self._lesion_ema_key:
            history = self.logger.get_value(self._lesion_ema_key, None)
            previous = history[self.current_epoch - 1] if 0 < self.current_epoch <= len(history) else None
            ema = lv.ema_update(previous, rates[self.lesion_checkpoint_metric])
            self.logger.log(self._lesion_ema_key, ema, self.current_epoch)
        self._lesion_counts_epoch = counts

    def on_epoch_end(self):
        if self.lesion_validation["enabled"] and self._lesion_counts_epoch is not None:
            rates = {name: self.logger.get_value(name, self.current_epoch) for name in lv.RATE_NAMES}
            self.print_to_log_file(
                "Lesions on validation patches (patch-level estimate): "
                + lv.format_rates(rates, self._lesion_counts_epoch, self.small_lesion_voxels)
            )
            if self._lesion_ema_key:
                history = self.logger.get_value(self._lesion_ema_key, None)[: self.current_epoch + 1]
                if lv.is_new_best(history):
                    self.print_to_log_file(
                        f"New best EMA {self.lesion_checkpoint_metric}: {history[-1]:.4f} -> {self.lesion_checkpoint_name}"
                    )
                    self.save_checkpoint(os.path.join(self.output_folder, self.lesion_checkpoint_name))
                elif not _any_finite(history):
                    self.print_to_log_file(
                        f"{self.lesion_checkpoint_name} not written yet: "
                        f"{lv.METRIC_NAMES[self.lesion_checkpoint_metric]} has been undefined in every epoch so far "
                        f"({lv.undefined_reason(self.lesion_checkpoint_metric, self.small_lesion_voxels)})"
                    )
        super().on_epoch_end()

    def on_train_end(self):
        super().on_train_end()
        if not self._lesion_ema_key:
            return
        history = self.logger.get_value(self._lesion_ema_key, None)
        if not _any_finite(history):  # say it where the run ends, not first in nnUNetv2_predict -chk
            metric = self.lesion_checkpoint_metric
            self.print_to_log_file(
                f"WARNING: no {self.lesion_checkpoint_name} was written: {lv.METRIC_NAMES[metric]} was undefined in "
                f"all {len(history)} epochs ({lv.undefined_reason(metric, self.small_lesion_voxels)}), so no epoch "
                f"was best by it. nnUNetv2_predict -chk {self.lesion_checkpoint_name} will not find it: predict with "
                "-chk checkpoint_final.pth (nnU-Net's default) or -chk checkpoint_best.pth (best pseudo Dice), or "
                "choose another lesion_validation.checkpoint_metric"
            )

    def perform_actual_validation(self, save_probabilities: bool = False):
        super().perform_actual_validation(save_probabilities)
        if self.local_rank == 0 and self.lesion_validation["fold_evaluation"]:
            self.evaluate_fold()

    def evaluate_fold(self) -> dict | None:
        """Lesion-wise evaluation of the fold's validation predictions, with the settings ``cv-summary``
        uses, into ``fold_X/validation/lesion_evaluation``. Never raises: a failure is logged."""
        preset = self.lesion_validation["fold_evaluation"]
        validation = os.path.join(self.output_folder, "validation")
        try:
            _, val_keys = self.do_split()
            dataset_json = os.path.join(self.output_folder_base, "dataset.json")
            summary = lv.evaluate_fold(
                validation,
                os.path.join(self.preprocessed_dataset_folder_base, "gt_segmentations"),
                sorted(val_keys),
                preset=preset,
                dataset_json=dataset_json if os.path.isfile(dataset_json) else None,
            )
        except Exception as error:  # never fail the training: its checkpoints and nnU-Net's validation are done
            self.print_to_log_file(
                f"WARNING: the lesion-wise evaluation of fold {self.fold} failed ({type(error).__name__}: {error}); "
                "training and nnU-Net's validation are unaffected. Retry with: nnunet-lesionloss evaluate "
                f"--gt <gt_segmentations> --pred {validation} or nnunet-lesionloss cv-summary {self.output_folder_base}"
            )
            return None
        mean = summary["foreground_mean"]
        shown = ", ".join(
            f"{name} {mean[name]:.4f}"
            for name in ("Dice", "lesion_f1", "lesion_recall", "small_lesion_recall")
            if mean.get(name) is not None
        )
        self.print_to_log_file(
            f"Lesion-wise evaluation of fold {self.fold} ({summary['n_cases']} cases, {summary['n_failed']} failed, "
            f"preset {preset}): {shown}; written to {os.path.join(validation, 'lesion_evaluation')}"
        )
        return summary
