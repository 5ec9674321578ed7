"""The trainers users name on the command line (``-tr nnUNetTrainerX``).

Each is a small subclass of :class:`nnUNetTrainerLesionLoss` that names its config and, for the
ablation and weight-grid variants of the papers, a few overrides. They are defined here, inside the
package, so they pickle; ``trainers/`` only re-exports them for ``nnUNet_extTrainer``.

Papers (full citations, arXiv ids and the authors' code repositories in docs/references.md):
CATMIL, Luu et al. 2026 (arXiv:2604.08015); instance losses, Rachmadi et al. 2024
(doi:10.1016/j.compbiomed.2024.108414); blob loss, Kofler et al. 2023 (IPMI 2023, arXiv:2205.08209);
Size Penalty, Joshi 2026 (B.Tech. thesis, IIT Bombay); multi-class blob/CC/IWL, Kundu et al. 2026
(arXiv:2604.24276); CC loss, Bouteille et al. 2025 (arXiv:2511.17146); inverse weighting,
Shirokikh et al. 2020 (MICCAI 2020).
"""

from __future__ import annotations

import warnings

from nnunet_lesionloss.losses.size_penalty import estimate_size_penalty_tau
from nnunet_lesionloss.training.dataset_statistics import component_volumes
from nnunet_lesionloss.training.trainer import nnUNetTrainerLesionLoss

# ------------------------------------------------------------------ baselines (CATMIL Table 1)


class nnUNetTrainerDiceCE(nnUNetTrainerLesionLoss):
    """nnU-Net's own loss, unchanged (DC+CE; DC+BCE for regions): the baseline of a comparison
    (CATMIL's nnUNet-DiceCE), watched with the same lesion-wise validation as every trainer here."""

    config_name = "dice_ce"


class nnUNetTrainerTversky(nnUNetTrainerLesionLoss):
    """Tversky loss, α=0.3 β=0.7 (CATMIL's baseline; pure Tversky, ``base.weight: 1`` adds DC+CE)."""

    config_name = "tversky"


class nnUNetTrainerFocalTversky(nnUNetTrainerLesionLoss):
    """Focal Tversky (1 - TI)^(1/γ), γ=4/3, per class (CATMIL's baseline, Abraham & Khan 2019)."""

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
    """DC+CE + CC loss (Dice+CE per Voronoi cell), 1:1 (Kundu et al. 2026; Bouteille et al. 2025)."""

    config_name = "cc"


class nnUNetTrainerIWLBlob(nnUNetTrainerLesionLoss):
    """Blob loss with inverse-size weighting inside each component's domain (Kundu et al. 2026 §2.5)."""

    config_name = "iwl_blob"


class nnUNetTrainerIWLCC(nnUNetTrainerLesionLoss):
    """CC loss with inverse-size weighting inside each Voronoi cell (Kundu et al. 2026 §2.5)."""

    config_name = "iwl_cc"


class nnUNetTrainerInvWeight(nnUNetTrainerLesionLoss):
    """DC+CE + globally inverse-size-weighted Dice+CE (Shirokikh et al. 2020; comparator of blob/CC)."""

    config_name = "inv_weight"


# ------------------------------------------------------------------ CATMIL (Luu et al. 2026)


class nnUNetTrainerCATMIL(nnUNetTrainerLesionLoss):
    """DC+CE + λ_CAT(t)·CAT + λ_MIL·MIL; λ_CAT=0.1 warmed up over 50 epochs, λ_MIL=0.2 (CATMIL)."""

    config_name = "catmil"


class nnUNetTrainerCAT(nnUNetTrainerCATMIL):
    """CATMIL ablation: DC+CE + λ_CAT(t)·CAT only."""

    config_overrides = {"terms": {"mil": {"weight": 0.0}}}


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


class nnUNetTrainerSizePenaltyAuto(nnUNetTrainerSizePenalty):
    """Size Penalty with τ (and optionally a gate) from the training labels' component volumes.

    Beyond the paper (Joshi 2026 §6.5): at trainer start, the connected components of every loss
    channel of the training cases (preprocessed, i.e. at the resolution the loss sees) are
    measured in voxels, and τ = their ``auto_tau.quantile`` (default: the median); with
    ``auto_tau.gate_quantile`` set, the gate is that quantile. A dataset without foreground falls
    back to the paper's τ = 600 (with a warning in the log). The value is logged and written into
    the effective config.
    """

    config_name = "size_penalty_auto"

    def prepare_terms(self) -> None:
        settings = self.lesion_config["auto_tau"]
        train_keys, _ = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, sorted(train_keys)[: settings["max_cases"]])
        if self.label_manager.has_regions:
            groups = [tuple(r) if isinstance(r, (list, tuple)) else (r,) for r in self.label_manager.foreground_regions]
        else:
            groups = self.label_groups
        volumes = component_volumes(
            (dataset.load_case(key)[1] for key in dataset.identifiers), groups, self.connectivity
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tau = estimate_size_penalty_tau(volumes, quantile=settings["quantile"])
        for warning in caught:
            self.print_to_log_file(f"size penalty auto tau: {warning.message}")
        params = {"tau": tau}
        if settings["gate_quantile"] is not None and volumes.size:
            params["gate"] = estimate_size_penalty_tau(volumes, quantile=settings["gate_quantile"])
        self.update_term_params("size_penalty", params)
        self.print_to_log_file(
            f"size penalty auto: {volumes.size} components in {len(dataset.identifiers)} cases -> "
            + ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        )


__all__ = sorted(
    name
    for name, value in dict(globals()).items()
    if name.startswith("nnUNetTrainer") and isinstance(value, type) and value.__module__ == __name__
)
