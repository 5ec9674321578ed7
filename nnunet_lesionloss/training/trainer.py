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
* ``on_train_start`` writes the effective config beside nnU-Net's ``debug.json``;
* lesion-wise validation (config ``lesion_validation``, see :mod:`.lesion_validation`): every
  ``validation_step`` also counts lesions on its patches, ``on_validation_epoch_end`` sums the counts
  (over DDP ranks too) and logs the rates to nnU-Net's logger (a further panel of ``progress.png``)
  and the training log, ``on_epoch_end`` keeps ``checkpoint_best_<metric>.pth`` by the EMA of one of
  them (beside nnU-Net's ``checkpoint_best.pth``, which is chosen as before), and
  ``perform_actual_validation`` ends with the lesion-wise evaluation of the fold's validation cases in
  ``fold_X/validation/lesion_evaluation`` (a failure there is logged, never raised).
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_lesionloss.config import ConfigError, load_config_with_sources, loss_terms, merge, resolve_connectivity
from nnunet_lesionloss.evaluation.io import write_json
from nnunet_lesionloss.evaluation.settings import EvaluationSettings
from nnunet_lesionloss.losses.compound import LesionAwareLoss
from nnunet_lesionloss.losses.terms import LossTerm, build_term
from nnunet_lesionloss.targets import TargetLayout, split_target
from nnunet_lesionloss.training import lesion_validation as lv
from nnunet_lesionloss.training.transforms import ComponentMapsTransform

__all__ = ["nnUNetTrainerLesionLoss", "EFFECTIVE_CONFIG_FILE"]

EFFECTIVE_CONFIG_FILE = "lesionloss_config.json"


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
        super().__init__(plans, configuration, fold, dataset_json, device)
        # which file (or class) set what: written into the effective config at train start
        self.lesion_config, self.lesion_config_sources = load_config_with_sources(
            self.config_name, self.config_overrides, trainer=type(self).__name__
        )
        for key, value in self.lesion_config["trainer"].items():
            setattr(self, key, value)
        spatial_dims = len(self.configuration_manager.patch_size)
        self.connectivity = resolve_connectivity(self.lesion_config["connectivity"], spatial_dims)
        self.lesion_terms = [
            self._build_term(name, settings) for name, settings in loss_terms(self.lesion_config).items()
        ]
        # fixed for the trainer's life: the dataset's labels, the config's channels and terms
        self.label_groups = self._label_groups()
        self.region_channels = self._region_channels()
        self.target_layout = self._target_layout()
        self._setup_lesion_validation()

    def _build_term(self, name: str, settings: dict) -> LossTerm:
        if self.label_manager.has_regions and settings.get("params", {}).get("include_background"):
            # sigmoid regions have no background output: as MONAI's losses on sigmoid outputs, every
            # channel is a foreground region and there is no background class to include
            settings = merge(settings, {"params": {"include_background": False}})
            self.print_to_log_file(
                f"terms.{name}.params.include_background: no effect on a region-based dataset "
                "(sigmoid regions, no background output); the term uses the regions only"
            )
        # losses that label the prediction use the ground truth's connectivity and the data's spacing
        context = {
            "connectivity": self.connectivity,
            "spacing": tuple(float(s) for s in self.configuration_manager.spacing),
        }
        return build_term(name, settings, spatial_dims=len(self.configuration_manager.patch_size), context=context)

    # ----------------------------------------------------------------- channels and targets
    def _label_groups(self) -> list[tuple[int, ...]] | None:
        """Label-based: the labels of each loss channel (per class, or their union). Regions: None."""
        if self.label_manager.has_regions:
            return None
        foreground = [int(label) for label in self.label_manager.foreground_labels]
        if self.lesion_config["channels"] == "union":
            return [tuple(foreground)]
        return [(label,) for label in foreground]

    def _region_channels(self) -> list[int] | None:
        """Region-based: the regions the terms see. ``per_class``: every region. ``union``: the region
        that contains every other one (nnU-Net orders regions from the largest, e.g. whole tumour
        first), i.e. the union of all foreground labels, as the binary union of label-based data."""
        if not self.label_manager.has_regions:
            return None
        regions = [set(r) if isinstance(r, (list, tuple)) else {r} for r in self.label_manager.foreground_regions]
        if self.lesion_config["channels"] != "union":
            return list(range(len(regions)))
        everything = set().union(*regions)
        containing = [i for i, region in enumerate(regions) if region == everything]
        if not containing:
            raise ConfigError(
                f"channels: union on a region-based dataset needs a region that contains all the others "
                f"(their union), but the regions are {self.label_manager.foreground_regions}; "
                "set channels: per_class (one term per region) in the config"
            )
        return containing[:1]

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
        self.prepare_terms()
        if self.local_rank == 0:
            self.write_effective_config()

    def write_effective_config(self) -> None:
        """``fold_X/lesionloss_config.json``: the config this run trains with and which file changed
        what. Serialised first and renamed into place, so a run resumed with ``--c`` that fails here
        keeps the previous file whole."""
        effective = {k: v for k, v in self.lesion_config.items() if k != "trainer"}
        effective.update(trainer=type(self).__name__, config_name=self.config_name)
        effective["trainer_settings"] = self.lesion_config["trainer"]
        effective["sources"] = self.lesion_config_sources  # which file changed what
        write_json(os.path.join(self.output_folder, EFFECTIVE_CONFIG_FILE), effective, overwrite=True)

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
    def _setup_lesion_validation(self) -> None:
        settings = self.lesion_config["lesion_validation"]
        self.lesion_validation = settings
        spacing = [float(x) for x in self.configuration_manager.spacing]
        self.lesion_connectivity = resolve_connectivity(settings["connectivity"], len(spacing))
        self.small_lesion_voxels = (
            lv.small_lesion_voxels(EvaluationSettings().small_lesion_ml, spacing)
            if settings["small_lesion_voxels"] == "auto"
            else int(settings["small_lesion_voxels"])
        )
        # the evaluation's channels: every foreground label, or every region (whatever the loss's channels)
        has_regions = self.label_manager.has_regions
        self.lesion_groups = None if has_regions else [(int(x),) for x in self.label_manager.foreground_labels]
        # the batch's reference components are these when the loss labelled the same channels alike
        self._reuse_batch_components = self.connectivity == self.lesion_connectivity and (
            has_regions or self.label_groups == self.lesion_groups
        )
        metric = settings["checkpoint_metric"] if settings["enabled"] else None
        self.lesion_checkpoint_metric = metric
        self._lesion_ema_key = f"ema_{metric}" if metric else None
        self._lesion_counts_epoch = None
        if settings["enabled"]:
            self.logger.local_logger = lv.LesionProgressLogger(
                self.logger.local_logger, lv.RATE_NAMES, self._lesion_ema_key, self.small_lesion_voxels
            )

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
        super().on_epoch_end()

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
