"""The trainers users name on the command line (``-tr nnUNetTrainerX``).

Each is a small subclass of :class:`nnUNetTrainerLesionLoss` that names its config and, for the
ablation and weight-grid variants of the papers, a few overrides. They are defined here, inside the
package, so they pickle; ``trainers/`` only re-exports them for ``nnUNet_extTrainer``.

Protocol presets (docs/reproducing.md): ``<trainer>_150epochs`` is the training
length of CATMIL's authors (their nnU-Net base trainer: 150 epochs, everything else nnU-Net's),
for the DC+CE baseline and every trainer of that paper; ``<trainer>_200epochs`` that of Rachmadi et
al. 2024 for its GDF baseline and compounds; ``<trainer>_paper`` is a setting taken literally from
its paper where this package's default differs for safety (docs/formulas.md); ``<trainer>_skipEmpty``
averages the CC term over the lesion-bearing (sample, class) pairs only, as Kundu et al. 2026 (Eq. 4)
and the blob code of that paper's group (Kofler et al., neuronflow/blob_loss) do, where the CC
authors' code, this package's default for CC, scores a lesion-free pair on its whole patch.

Papers (full citations, arXiv ids and the authors' code repositories in docs/references.md):
CATMIL, Luu et al. 2026 (arXiv:2604.08015); instance losses, Rachmadi et al. 2024
(doi:10.1016/j.compbiomed.2024.108414); blob loss, Kofler et al. 2023 (IPMI 2023, arXiv:2205.08209);
Size Penalty, Joshi 2026 (B.Tech. thesis, IIT Bombay); multi-class blob/CC/IWL, Kundu et al. 2026
(arXiv:2604.24276); CC loss, Bouteille et al. 2025 (arXiv:2511.17146); inverse weighting,
Shirokikh et al. 2020 (MICCAI 2020).
"""

from __future__ import annotations

import warnings

import numpy as np

from nnunet_lesionloss.components import group_masks
from nnunet_lesionloss.config import merge
from nnunet_lesionloss.losses.size_penalty import estimate_size_penalty_tau
from nnunet_lesionloss.training.dataset_statistics import draw_training_patches, patch_foreground_volumes
from nnunet_lesionloss.training.trainer import nnUNetTrainerLesionLoss


def _with(parent: type, overrides: dict) -> dict:
    """A variant's overrides on top of its parent's (a preset keeps what the parent changes)."""
    return merge(parent.config_overrides, overrides)


#: the training length of CATMIL's authors (their nnU-Net base trainer, luumsk/SmallLesionMRI; Luu et al. 2026 §3.2)
_CATMIL_PROTOCOL = {"trainer": {"num_epochs": 150}}

# ------------------------------------------------------------------ baselines (CATMIL Table 1)


class nnUNetTrainerDiceCE(nnUNetTrainerLesionLoss):
    """nnU-Net's own loss, unchanged (DC+CE; DC+BCE for regions): the baseline of a comparison
    (CATMIL's nnUNet-DiceCE), watched with the same lesion-wise validation as every trainer here."""

    config_name = "dice_ce"


class nnUNetTrainerTversky(nnUNetTrainerLesionLoss):
    """Tversky α=0.3 β=0.7 on the softmax, background included, instead of DC+CE (CATMIL's authors' baseline)."""

    config_name = "tversky"


class nnUNetTrainerFocalTversky(nnUNetTrainerLesionLoss):
    """(mean Tversky loss)^(1/γ), γ=4/3, background included, instead of DC+CE (CATMIL's authors' baseline)."""

    config_name = "focal_tversky"


# ------------------------------------------------------------------ instance losses (Kundu et al. 2026)


class nnUNetTrainerBlob(nnUNetTrainerLesionLoss):
    """DC+CE + blob Dice+CE, 1:1, one-vs-rest per class (Kundu et al. 2026)."""

    config_name = "blob"


class nnUNetTrainerBlob_b2(nnUNetTrainerBlob):
    """Blob weight β = 2 (the † rows of Kundu et al. 2026; Kofler et al. 2023 Table 1)."""

    config_overrides = {"terms": {"blob": {"weight": 2.0}}}


class nnUNetTrainerBlob_a2(nnUNetTrainerBlob):
    """Global DC+CE weight α = 2, blob 1 (Kofler et al. 2023 §2.3, Table 2)."""

    config_overrides = {"base": {"weight": 2.0}}


class nnUNetTrainerCC(nnUNetTrainerLesionLoss):
    """DC+CE + CC loss (Dice+CE per Voronoi cell), 1:1, a lesion-free (sample, class) scored on its
    whole patch as the CC authors' code does (Bouteille et al. 2025; multi-class: Kundu et al. 2026)."""

    config_name = "cc"


class nnUNetTrainerCC_b2(nnUNetTrainerCC):
    """CC weight β = 2 (the † rows of Kundu et al. 2026)."""

    config_overrides = {"terms": {"cc": {"weight": 2.0}}}


#: Kundu et al. 2026 Eq. 4 (the mean over the classes with at least one instance) and the blob code of
#: that paper's group (Kofler et al., neuronflow/blob_loss): lesion-free (sample, class) pairs add nothing
_SKIP_LESION_FREE_PAIRS = {"terms": {"cc": {"params": {"empty_pairs": "skip"}}}}


class nnUNetTrainerCC_skipEmpty(nnUNetTrainerCC):
    """CC with the mean over the lesion-bearing (sample, class) pairs only (Kundu et al. 2026's setting)."""

    config_overrides = _with(nnUNetTrainerCC, _SKIP_LESION_FREE_PAIRS)


class nnUNetTrainerCC_b2_skipEmpty(nnUNetTrainerCC_b2):
    """CC weight β = 2, lesion-free pairs skipped (the † rows of Kundu et al. 2026, its aggregation)."""

    config_overrides = _with(nnUNetTrainerCC_b2, _SKIP_LESION_FREE_PAIRS)


class nnUNetTrainerIWLBlob(nnUNetTrainerLesionLoss):
    """Blob loss with inverse-size weighting inside each component's domain (Kundu et al. 2026 §2.5)."""

    config_name = "iwl_blob"


class nnUNetTrainerIWLBlob_b2(nnUNetTrainerIWLBlob):
    """IWL-Blob weight β = 2 (the † rows of Kundu et al. 2026)."""

    config_overrides = {"terms": {"blob": {"weight": 2.0}}}


class nnUNetTrainerIWLCC(nnUNetTrainerLesionLoss):
    """CC loss with inverse-size weighting inside each Voronoi cell (Kundu et al. 2026 §2.5)."""

    config_name = "iwl_cc"


class nnUNetTrainerIWLCC_b2(nnUNetTrainerIWLCC):
    """IWL-CC weight β = 2 (the † rows of Kundu et al. 2026)."""

    config_overrides = {"terms": {"cc": {"weight": 2.0}}}


class nnUNetTrainerIWLCC_skipEmpty(nnUNetTrainerIWLCC):
    """IWL-CC with the mean over the lesion-bearing (sample, class) pairs only (Kundu et al. 2026's setting)."""

    config_overrides = _with(nnUNetTrainerIWLCC, _SKIP_LESION_FREE_PAIRS)


class nnUNetTrainerIWLCC_b2_skipEmpty(nnUNetTrainerIWLCC_b2):
    """IWL-CC weight β = 2, lesion-free pairs skipped (the † rows of Kundu et al. 2026, its aggregation)."""

    config_overrides = _with(nnUNetTrainerIWLCC_b2, _SKIP_LESION_FREE_PAIRS)


class nnUNetTrainerInvWeight(nnUNetTrainerLesionLoss):
    """Globally inverse-size-weighted Dice+CE instead of DC+CE, as its authors' current code weighs and
    scores (Shirokikh et al. 2020, neuro-ml/inverse_weighting; the comparator of blob/CC)."""

    config_name = "inv_weight"


# ------------------------------------------------------------------ CATMIL (Luu et al. 2026)


class nnUNetTrainerCATMIL(nnUNetTrainerLesionLoss):
    """DC+CE + λ_CAT(t)·CAT + λ_MIL·MIL; λ_CAT=0.1 warmed up over 50 epochs, λ_MIL=0.2 (CATMIL)."""

    config_name = "catmil"


class nnUNetTrainerCAT(nnUNetTrainerCATMIL):
    """CATMIL ablation: DC+CE + λ_CAT(t)·CAT only; one CAT per class above one foreground class (the
    authors' CAT trainer switches to its per-class CAT above two output channels)."""

    config_overrides = {"channels": "per_class", "terms": {"mil": {"weight": 0.0}}}


class nnUNetTrainerMIL(nnUNetTrainerCATMIL):
    """CATMIL ablation: DC+CE + λ_MIL·MIL only."""

    config_overrides = {"terms": {"cat": {"weight": 0.0}}}


def _catmil_grid(lambda_cat: float, lambda_mil: float) -> dict:
    return {"terms": {"cat": {"weight": lambda_cat}, "mil": {"weight": lambda_mil}}}


class nnUNetTrainerCATMIL_0101(nnUNetTrainerCATMIL):
    """CATMIL Table 3 weight grid: λ_CAT = 0.1, λ_MIL = 0.1."""

    config_overrides = _catmil_grid(0.1, 0.1)


class nnUNetTrainerCATMIL_0102(nnUNetTrainerCATMIL):
    """CATMIL Table 3 weight grid: λ_CAT = 0.1, λ_MIL = 0.2 (the default)."""

    config_overrides = _catmil_grid(0.1, 0.2)


class nnUNetTrainerCATMIL_0201(nnUNetTrainerCATMIL):
    """CATMIL Table 3 weight grid: λ_CAT = 0.2, λ_MIL = 0.1."""

    config_overrides = _catmil_grid(0.2, 0.1)


class nnUNetTrainerCATMIL_0202(nnUNetTrainerCATMIL):
    """CATMIL Table 3 weight grid: λ_CAT = 0.2, λ_MIL = 0.2."""

    config_overrides = _catmil_grid(0.2, 0.2)


# CATMIL's protocol: every method of Luu et al. 2026 (Tables 1-3) trained for 150 epochs


class nnUNetTrainerDiceCE_150epochs(nnUNetTrainerDiceCE):
    """nnU-Net's DC+CE, 150 epochs: the nnUNet-DiceCE baseline of CATMIL's authors."""

    config_overrides = _with(nnUNetTrainerDiceCE, _CATMIL_PROTOCOL)


class nnUNetTrainerTversky_150epochs(nnUNetTrainerTversky):
    """The Tversky baseline of CATMIL's authors, 150 epochs."""

    config_overrides = _with(nnUNetTrainerTversky, _CATMIL_PROTOCOL)


class nnUNetTrainerFocalTversky_150epochs(nnUNetTrainerFocalTversky):
    """The Focal Tversky baseline of CATMIL's authors, 150 epochs."""

    config_overrides = _with(nnUNetTrainerFocalTversky, _CATMIL_PROTOCOL)


class nnUNetTrainerCATMIL_150epochs(nnUNetTrainerCATMIL):
    """CATMIL as its authors trained it: 150 epochs, so the 50-epoch warm-up covers a third of training."""

    config_overrides = _with(nnUNetTrainerCATMIL, _CATMIL_PROTOCOL)


class nnUNetTrainerCAT_150epochs(nnUNetTrainerCAT):
    """CATMIL ablation CAT only, 150 epochs."""

    config_overrides = _with(nnUNetTrainerCAT, _CATMIL_PROTOCOL)


class nnUNetTrainerMIL_150epochs(nnUNetTrainerMIL):
    """CATMIL ablation MIL only, 150 epochs."""

    config_overrides = _with(nnUNetTrainerMIL, _CATMIL_PROTOCOL)


class nnUNetTrainerCATMIL_0101_150epochs(nnUNetTrainerCATMIL_0101):
    """CATMIL Table 3, λ_CAT = 0.1, λ_MIL = 0.1, 150 epochs."""

    config_overrides = _with(nnUNetTrainerCATMIL_0101, _CATMIL_PROTOCOL)


class nnUNetTrainerCATMIL_0102_150epochs(nnUNetTrainerCATMIL_0102):
    """CATMIL Table 3, λ_CAT = 0.1, λ_MIL = 0.2, 150 epochs."""

    config_overrides = _with(nnUNetTrainerCATMIL_0102, _CATMIL_PROTOCOL)


class nnUNetTrainerCATMIL_0201_150epochs(nnUNetTrainerCATMIL_0201):
    """CATMIL Table 3, λ_CAT = 0.2, λ_MIL = 0.1, 150 epochs."""

    config_overrides = _with(nnUNetTrainerCATMIL_0201, _CATMIL_PROTOCOL)


class nnUNetTrainerCATMIL_0202_150epochs(nnUNetTrainerCATMIL_0202):
    """CATMIL Table 3, λ_CAT = 0.2, λ_MIL = 0.2, 150 epochs."""

    config_overrides = _with(nnUNetTrainerCATMIL_0202, _CATMIL_PROTOCOL)


# ------------------------------------------------------------------ Size Penalty (Joshi 2026)


class nnUNetTrainerSizePenalty(nnUNetTrainerLesionLoss):
    """DC+CE + 0.3·Size Penalty, τ=600 voxels, cap 10 (Joshi 2026)."""

    config_name = "size_penalty"


class nnUNetTrainerSizePenaltyDTS(nnUNetTrainerLesionLoss):
    """Dice + Tversky + 0.3·Size Penalty (DTS of Joshi 2026)."""

    config_name = "size_penalty_dts"


class nnUNetTrainerSizePenaltyFSD(nnUNetTrainerLesionLoss):
    """Focal + 0.3·Size Penalty + Dice (FSD of Joshi 2026)."""

    config_name = "size_penalty_fsd"


#: Joshi 2026 §3.2-3.3 literally: λ_S = 0.3 from the first epoch (this package ramps it up over 50)
_SIZE_PENALTY_AS_PUBLISHED = {"terms": {"size_penalty": {"warmup_epochs": 0}}}


class nnUNetTrainerSizePenalty_paper(nnUNetTrainerSizePenalty):
    """DC+CE + 0.3·S from epoch 0, without the warm-up (Joshi 2026 as written; unsafe on small lesions)."""

    config_overrides = _with(nnUNetTrainerSizePenalty, _SIZE_PENALTY_AS_PUBLISHED)


class nnUNetTrainerSizePenaltyDTS_paper(nnUNetTrainerSizePenaltyDTS):
    """Dice + Tversky + 0.3·S from epoch 0 (Joshi 2026's DTS as written)."""

    config_overrides = _with(nnUNetTrainerSizePenaltyDTS, _SIZE_PENALTY_AS_PUBLISHED)


class nnUNetTrainerSizePenaltyFSD_paper(nnUNetTrainerSizePenaltyFSD):
    """Focal + 0.3·S + Dice from epoch 0 (Joshi 2026's FSD as written)."""

    config_overrides = _with(nnUNetTrainerSizePenaltyFSD, _SIZE_PENALTY_AS_PUBLISHED)


# ------------------------------------------------------------------ instance family (Rachmadi et al. 2024)


class nnUNetTrainerICI(nnUNetTrainerLesionLoss):
    """0.25·DC+CE + 0.5·L_instance^GT + 0.25·L_center (Rachmadi et al. 2024 eq. 12)."""

    config_name = "ici"


class nnUNetTrainerFalse(nnUNetTrainerLesionLoss):
    """DC+CE + L_false^P + L_false^GT (Rachmadi et al. 2024 eq. 13), with straight-through gradients."""

    config_name = "false"


class nnUNetTrainerProximity(nnUNetTrainerLesionLoss):
    """DC+CE + 0.1·L_proximity (Rachmadi et al. 2024 eq. 14)."""

    config_name = "proximity"


#: Rachmadi et al. 2024 eq. 14 as published: the sums of eqs. 9-10 and the full weight from the first
#: epoch (this package's default: per-side means, ramped up over 50 epochs; docs/formulas.md §3)
_PROXIMITY_AS_PUBLISHED = {"terms": {"instance_family": {"warmup_epochs": 0, "params": {"proximity_reduction": "sum"}}}}

_PROXIMITY_AS_PUBLISHED_WARNING = (
    "WARNING: L_proximity as published (Rachmadi et al. 2024 eqs. 9-10 as sums, full weight from epoch 0). "
    "Made trainable, 0.1·L_proximity has a gradient 10^3-10^6 times that of the segmentation loss early in "
    "training and lowers the lesions' probabilities (docs/formulas.md §3: 1.8·10^6× DC+CE on a fresh network); "
    "in a short run on small lesions this setting learnt no foreground (validation Dice 0.07). It reproduces "
    "the paper's equation, not a safe default: nnUNetTrainerProximity uses per-side means and a warm-up."
)


class _ProximityAsPublished:
    """Logs at train start that eq. 14 as published swamps the segmentation loss."""

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(_PROXIMITY_AS_PUBLISHED_WARNING)


class nnUNetTrainerProximity_paper(_ProximityAsPublished, nnUNetTrainerProximity):
    """DC+CE + 0.1·L_proximity with eqs. 9-10 as sums and no warm-up (Rachmadi et al. 2024 eq. 14 as
    written; unsafe: it swamps DC+CE, docs/formulas.md §3)."""

    config_overrides = _with(nnUNetTrainerProximity, _PROXIMITY_AS_PUBLISHED)


#: the instance-loss paper's own L_seg (Generalized Dice + Focal) in place of nnU-Net's DC+CE, at the
#: compound's L_seg weight (``base.weight`` of the parent's config)
_PAPER_SEGMENTATION_LOSS = {"base": {"loss": "generalized_dice_focal"}}


class nnUNetTrainerICI_GDF(nnUNetTrainerICI):
    """ICI with the paper's L_seg: 0.25·GDF + 0.5·L_instance^GT + 0.25·L_center (Rachmadi et al. 2024 eq. 12)."""

    config_overrides = _PAPER_SEGMENTATION_LOSS


class nnUNetTrainerFalse_GDF(nnUNetTrainerFalse):
    """False with the paper's L_seg: GDF + L_false^P + L_false^GT (Rachmadi et al. 2024 eq. 13)."""

    config_overrides = _PAPER_SEGMENTATION_LOSS


class nnUNetTrainerProximity_GDF(nnUNetTrainerProximity):
    """Proximity with the paper's L_seg: GDF + 0.1·L_proximity (Rachmadi et al. 2024 eq. 14)."""

    config_overrides = _PAPER_SEGMENTATION_LOSS


class nnUNetTrainerGDF(nnUNetTrainerDiceCE):
    """Generalized Dice + Focal alone (MONAI's GeneralizedDiceFocalLoss on one channel): the baseline
    and L_seg of Rachmadi et al. 2024."""

    config_overrides = _PAPER_SEGMENTATION_LOSS


#: the training length of Rachmadi et al. 2024 §3.2 (200 epochs; their network, 2D SwinUNETR with Adam, is not nnU-Net's)
_INSTANCE_LOSS_PROTOCOL = {"trainer": {"num_epochs": 200}}


class nnUNetTrainerGDF_200epochs(nnUNetTrainerGDF):
    """GDF alone, 200 epochs (Rachmadi et al. 2024's baseline and training length)."""

    config_overrides = _with(nnUNetTrainerGDF, _INSTANCE_LOSS_PROTOCOL)


class nnUNetTrainerICI_GDF_200epochs(nnUNetTrainerICI_GDF):
    """ICI with GDF, 200 epochs (Rachmadi et al. 2024)."""

    config_overrides = _with(nnUNetTrainerICI_GDF, _INSTANCE_LOSS_PROTOCOL)


class nnUNetTrainerFalse_GDF_200epochs(nnUNetTrainerFalse_GDF):
    """False with GDF, 200 epochs (Rachmadi et al. 2024)."""

    config_overrides = _with(nnUNetTrainerFalse_GDF, _INSTANCE_LOSS_PROTOCOL)


class nnUNetTrainerProximity_GDF_200epochs(nnUNetTrainerProximity_GDF):
    """Proximity with GDF, 200 epochs (Rachmadi et al. 2024)."""

    config_overrides = _with(nnUNetTrainerProximity_GDF, _INSTANCE_LOSS_PROTOCOL)


class nnUNetTrainerProximity_GDF_paper(_ProximityAsPublished, nnUNetTrainerProximity_GDF):
    """GDF + 0.1·L_proximity with eqs. 9-10 as sums and no warm-up (Rachmadi et al. 2024 eq. 14 with
    its L_seg, as written; unsafe: it swamps GDF, docs/formulas.md §3)."""

    config_overrides = _with(nnUNetTrainerProximity_GDF, _PROXIMITY_AS_PUBLISHED)


class nnUNetTrainerProximity_GDF_paper_200epochs(nnUNetTrainerProximity_GDF_paper):
    """Rachmadi et al. 2024's protocol with eq. 14 as published: GDF + 0.1·L_proximity, eqs. 9-10 as
    sums, no warm-up, 200 epochs."""

    config_overrides = _with(nnUNetTrainerProximity_GDF_paper, _INSTANCE_LOSS_PROTOCOL)


class nnUNetTrainerSizePenaltyAuto(nnUNetTrainerSizePenalty):
    """Size Penalty with τ (and optionally a gate) from the lesion volume of the training patches.

    Beyond the paper (Joshi 2026 §6.5, "estimate τ_s from each dataset's object-size distribution").
    The penalty acts on V_g, the total foreground volume of one loss channel of one training patch
    (Joshi 2026 §3.2), so τ is estimated from that quantity: at trainer start ``auto_tau.patches``
    label patches are drawn exactly as nnU-Net's loader draws them (its ``nnUNetDataLoader``, this
    trainer's batch size and foreground oversampling, centre crop to the patch size), V_g is
    measured per patch and loss channel, and τ = the ``auto_tau.quantile`` (default: the median) of
    the lesion-positive V_g, the only ones the penalty sees. With ``auto_tau.gate_quantile`` set,
    the gate is that quantile. Without any lesion-positive patch τ falls back to the paper's 600
    (with a warning in the log). The value is logged and written into the effective config.
    """

    config_name = "size_penalty_auto"

    def _loss_channel_masks(self, label_map: np.ndarray) -> np.ndarray:
        """Boolean masks [C, *spatial] of the loss channels (label groups, or the regions the terms see)."""
        if not self.label_manager.has_regions:
            return group_masks(label_map, self.label_groups)
        regions = self.label_manager.foreground_regions
        labels = [regions[r] if isinstance(regions[r], (list, tuple)) else (regions[r],) for r in self.region_channels]
        return group_masks(label_map, labels)

    def prepare_terms(self) -> None:
        settings = self.lesion_config["auto_tau"]
        dataset_tr, _ = self.get_tr_and_val_datasets()
        initial_patch_size = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[2]
        patches = draw_training_patches(
            dataset_tr,
            self.label_manager,
            batch_size=self.batch_size,
            initial_patch_size=initial_patch_size,
            patch_size=self.configuration_manager.patch_size,
            oversample_foreground_percent=self.oversample_foreground_percent,
            probabilistic_oversampling=self.probabilistic_oversampling,
            num_patches=settings["patches"],
        )
        volumes = patch_foreground_volumes(patches, self._loss_channel_masks)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tau = estimate_size_penalty_tau(volumes, quantile=settings["quantile"])
        for warning in caught:
            self.print_to_log_file(f"size penalty auto tau: {warning.message}")
        params = {"tau": tau}
        positive = volumes[volumes > 0]
        if settings["gate_quantile"] is not None and positive.size:
            params["gate"] = estimate_size_penalty_tau(volumes, quantile=settings["gate_quantile"])
        self.update_term_params("size_penalty", params)
        self.print_to_log_file(
            f"size penalty auto: {len(patches)} training patches, {positive.size} lesion-positive (patch, channel) "
            f"volumes V_g -> " + ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        )


__all__ = sorted(
    name
    for name, value in dict(globals()).items()
    if name.startswith("nnUNetTrainer") and isinstance(value, type) and value.__module__ == __name__
)
