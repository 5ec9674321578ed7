"""The loss module the trainers use: nnU-Net's own loss plus weighted lesion-aware terms, over all
deep-supervision scales.

    L = Σ_s w_s · [ β·L_base(out_s, y_s) + Σ_{terms at all scales} λ_t(epoch) · T(p_s, ids_s, ...) ]
        + Σ_{full-resolution terms} λ_t(epoch) · T(p_0, ids_0, ...)

w_s are nnU-Net's deep-supervision weights (halving per scale, the lowest scale off, normalised),
β the base weight, λ_t(epoch) the scheduled term weights. p are the foreground probabilities of
each channel: softmax summed over the labels of each channel group (label-based, one-vs-rest) or
the sigmoid of each region (region-based), computed in float32 whatever the autocast state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_lesionloss.losses.terms import LossTerm
from nnunet_lesionloss.targets import TargetLayout, split_cell_counts, split_target

__all__ = ["LesionAwareLoss", "foreground_probabilities"]


def foreground_probabilities(logits: torch.Tensor, label_groups: Sequence[Sequence[int]] | None) -> torch.Tensor:
    """Per-channel foreground probabilities [B, G, *spatial] in float32.

    ``label_groups`` (label-based): channel g = Σ_{l ∈ group g} softmax(logits)_l; the groups must
    not share labels. None (region-based): sigmoid of every output channel.
    """
    logits = logits.float()
    if label_groups is None:
        return torch.sigmoid(logits)
    labels = [label for group in label_groups for label in group]
    if all(len(group) == 1 for group in label_groups) and labels == list(range(labels[0], labels[0] + len(labels))):
        return _SoftmaxChannels.apply(logits, labels[0], len(labels))  # one label per channel, in order
    softmax = torch.softmax(logits, dim=1)
    group_of_label = torch.tensor(
        [g for g, group in enumerate(label_groups) for _ in group], device=logits.device, dtype=torch.long
    )
    out = softmax.new_zeros((softmax.shape[0], len(label_groups), *softmax.shape[2:]))
    return out.index_add_(1, group_of_label, softmax[:, labels])


class _SoftmaxChannels(torch.autograd.Function):
    """softmax(logits)[:, first : first + count], a view of the softmax, with the softmax's backward written
    for the channels that have a gradient: ∂L/∂x_k = s_k·(g_k - Σ_c s_c·g_c) with g = 0 outside the
    slice. Autograd would first copy the slice's gradient into a zero-filled tensor of every channel
    (one more allocation of the whole output, a fill and a copy) and then run the softmax's backward."""

    @staticmethod
    def forward(ctx, logits, first: int, count: int):
        softmax = torch.softmax(logits, dim=1)
        ctx.save_for_backward(softmax)
        ctx.first, ctx.count = first, count
        return softmax[:, first : first + count]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (softmax,) = ctx.saved_tensors
        first, count = ctx.first, ctx.count
        inside = softmax[:, first : first + count]
        dot = inside[:, :1] * grad[:, :1]  # Σ_c s_c·g_c over the slice, [B, 1, *spatial]
        for c in range(1, count):
            dot.addcmul_(inside[:, c : c + 1], grad[:, c : c + 1])
        out = torch.empty_like(softmax)
        torch.sub(grad, dot, out=out[:, first : first + count])
        out[:, :first] = dot.neg()
        out[:, first + count :] = dot.neg()
        return out.mul_(softmax), None, None


class LesionAwareLoss(nn.Module):
    """nnU-Net's loss (``base``) plus lesion-aware terms over deep-supervision outputs.

    Args:
        base: nnU-Net's single-scale loss (DC_and_CE_loss / DC_and_BCE_loss) or None.
        base_weight: β.
        terms: the lesion-aware terms.
        scale_weights: nnU-Net's deep-supervision weights (None: a single output).
        layout: how component maps are packed into the targets.
        label_groups: label-based channel groups (None for region-based).
        ignore_label: label-based ignore label (region-based: the extra last target channel).
        region_channels: region-based: the output channels (regions) the terms see (None: all).
        ignore_region: region-based: whether the target's last channel is the ignore region (None:
            when the target has more channels than the terms see, as without ``region_channels``).
    """

    def __init__(
        self,
        base: nn.Module | None,
        base_weight: float,
        terms: Sequence[LossTerm],
        scale_weights: Sequence[float] | None,
        layout: TargetLayout,
        label_groups: Sequence[Sequence[int]] | None,
        ignore_label: int | None = None,
        region_channels: Sequence[int] | None = None,
        ignore_region: bool | None = None,
    ):
        super().__init__()
        self.base = base
        self.base_weight = float(base_weight)
        self.terms = list(terms)
        self.scale_weights = list(scale_weights) if scale_weights is not None else [1.0]
        self.layout = layout
        self.label_groups = [tuple(g) for g in label_groups] if label_groups is not None else None
        self.ignore_label = ignore_label
        self.region_channels = list(region_channels) if region_channels is not None else None
        self.ignore_region = ignore_region
        self.term_weights = {term.name: term.weight_at(0) for term in self.terms}

    def set_epoch(self, epoch: int) -> dict:
        """Update the scheduled weights from the epoch alone; returns them for logging."""
        self.term_weights = {term.name: term.weight_at(epoch) for term in self.terms}
        return dict(self.term_weights)

    def _ignore_mask(self, seg: torch.Tensor) -> torch.Tensor | None:
        if self.label_groups is not None:
            return (seg[:, :1] == self.ignore_label) if self.ignore_label is not None else None
        has_ignore = seg.shape[1] > self.layout.num_channels if self.ignore_region is None else self.ignore_region
        return seg[:, -1:].bool() if has_ignore else None  # regions: the last channel is the ignore region

    def _terms_at_scale(self, output, seg, ids, cells, cell_counts, full_resolution: bool) -> torch.Tensor | None:
        active = [t for t in self.terms if t.full_resolution_only == full_resolution and self.term_weights[t.name] > 0]
        if not active:
            return None
        if ids is None:
            raise RuntimeError("a lesion-aware term needs component maps at this scale, but the batch carries none")
        if self.region_channels is not None:
            output = output[:, self.region_channels]
        probs = foreground_probabilities(output, self.label_groups)
        ignore_mask = self._ignore_mask(seg)
        return sum(
            self.term_weights[t.name] * t(probs, ids, cells, ignore_mask, cell_counts=cell_counts) for t in active
        )

    def forward(self, outputs, targets) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            outputs, targets = [outputs], [targets]
        if len(outputs) != len(targets):
            raise ValueError(f"{len(outputs)} outputs but {len(targets)} targets")
        weights = self.scale_weights if len(self.scale_weights) == len(outputs) else [1.0] + [0.0] * (len(outputs) - 1)
        total = None
        for scale, (output, target, weight) in enumerate(zip(outputs, targets, weights)):
            seg, ids, cells = split_target(target, self.layout)
            cell_counts = split_cell_counts(target, self.layout)
            if scale == 0:
                extra = self._terms_at_scale(output, seg, ids, cells, cell_counts, full_resolution=True)
                if extra is not None:
                    total = extra if total is None else total + extra
            if weight == 0:
                continue
            scale_loss = (
                self.base_weight * self.base(output, seg) if self.base is not None and self.base_weight > 0 else None
            )
            terms = self._terms_at_scale(output, seg, ids, cells, cell_counts, full_resolution=False)
            if terms is not None:
                scale_loss = terms if scale_loss is None else scale_loss + terms
            if scale_loss is not None:
                total = weight * scale_loss if total is None else total + weight * scale_loss
        if total is None:  # everything weighted zero at this epoch: keep a graph for backward()
            total = outputs[0].float().sum() * 0.0
        return total
