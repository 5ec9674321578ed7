"""The loss module of the trainers: probabilities per channel, deep-supervision weighting, schedules,
and the hand-computed Tversky / Focal Tversky values the baselines rely on."""

from __future__ import annotations

import pytest
import torch

from nnunet_lesionloss.losses.compound import LesionAwareLoss, foreground_probabilities
from nnunet_lesionloss.losses.functional import blob_loss, cc_loss, focal_tversky_loss, mil_loss, tversky_loss
from nnunet_lesionloss.losses.terms import build_term
from nnunet_lesionloss.targets import TargetLayout, split_cell_counts, split_target
from nnunet_lesionloss.training.transforms import ComponentMapsTransform


def test_tversky_and_focal_tversky_by_hand():
    probs = torch.tensor([0.9, 0.2, 0.6, 0.0]).reshape(1, 1, 2, 2, 1)
    gt = torch.tensor([1, 0, 1, 0], dtype=torch.bool).reshape(1, 1, 2, 2, 1)
    # TP = 1.5, FP = 0.2, FN = 0.5: TI = 1.5 / (1.5 + 0.3·0.2 + 0.7·0.5) = 1.5 / 1.91
    expected = 1 - (1.5 + 1e-5) / (1.91 + 1e-5)
    assert float(tversky_loss(probs, gt, alpha=0.3, beta=0.7)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_tversky_loss(probs, gt, alpha=0.3, beta=0.7, gamma=4 / 3)) == pytest.approx(
        expected**0.75, rel=1e-6
    )
    # soft Dice = Tversky at α = β = 0.5: 1 - 2·1.5 / (2·1.5 + 0.2 + 0.5)
    dice = build_term("dice", {})
    ids = gt.to(torch.int32)
    assert float(dice(probs, ids)) == pytest.approx(1 - (1.5 + 1e-5) / (1.5 + 0.35 + 1e-5), rel=1e-6)


def test_foreground_probabilities_per_class_and_union():
    logits = torch.randn(2, 3, 4, 4)
    softmax = torch.softmax(logits, 1)
    assert torch.allclose(foreground_probabilities(logits, [(1,), (2,)]), softmax[:, 1:])
    assert torch.allclose(foreground_probabilities(logits, [(1, 2)])[:, 0], 1 - softmax[:, 0], atol=1e-6)
    assert torch.allclose(foreground_probabilities(logits.half(), None), torch.sigmoid(logits.half().float()))
    assert foreground_probabilities(logits.half(), [(1,)]).dtype == torch.float32


def _packed_targets(seg: torch.Tensor, with_maps_at: int | None):
    scales = [seg, seg[:, :, ::2, ::2, ::2].contiguous()]
    transform = ComponentMapsTransform(label_groups=[(1,)], scales_with_maps=with_maps_at)
    return [torch.stack([transform(segmentation=s[b])["segmentation"] for b in range(s.shape[0])]) for s in scales]


def _seg() -> torch.Tensor:
    seg = torch.zeros((2, 1, 8, 8, 8), dtype=torch.int16)
    seg[0, 0, 1:3, 1:3, 1:3] = 1
    seg[0, 0, 5:7, 5:7, 5:7] = 1
    seg[1, 0, 0:4, 4:8, 0:2] = 1
    return seg


def test_full_resolution_terms_are_added_once_and_unweighted():
    seg = _seg()
    targets = _packed_targets(seg, with_maps_at=1)
    outputs = [torch.randn(2, 2, 8, 8, 8, requires_grad=True), torch.randn(2, 2, 4, 4, 4, requires_grad=True)]
    term = build_term("mil", {"weight": 0.2, "scales": "full"})
    layout = TargetLayout(1, torch.int16, 1, False, 1)
    loss = LesionAwareLoss(None, 0.0, [term], [0.6, 0.4], layout, [(1,)])
    value = loss(outputs, targets)
    expected = 0.2 * mil_loss(torch.softmax(outputs[0], 1)[:, 1:], targets[0][:, 1:])
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    value.backward()
    assert outputs[0].grad.abs().sum() > 0 and outputs[1].grad is None


def test_all_scale_terms_use_nnunet_weights_and_schedule():
    seg = _seg()
    targets = _packed_targets(seg, with_maps_at=None)
    outputs = [torch.randn(2, 2, 8, 8, 8), torch.randn(2, 2, 4, 4, 4)]
    term = build_term("blob", {"weight": 1.0, "warmup_epochs": 4, "scales": "all"})
    layout = TargetLayout(1, torch.int16, 1, False, None)
    loss = LesionAwareLoss(None, 0.0, [term], [0.75, 0.25], layout, [(1,)])
    assert float(loss(outputs, targets)) == 0.0  # epoch 0 of a warm-up: weight 0
    assert loss.set_epoch(2) == {"blob": 0.5}
    expected = sum(
        w * 0.5 * blob_loss(torch.softmax(o, 1)[:, 1:], t[:, 1:]) for w, o, t in zip([0.75, 0.25], outputs, targets)
    )
    assert float(loss(outputs, targets)) == pytest.approx(float(expected), rel=1e-6)


def test_ignore_label_reaches_the_terms():
    seg = _seg()
    seg[1, 0, 0, 4, 0] = 2  # ignore label inside the lesion of sample 1
    transform = ComponentMapsTransform(label_groups=[(1,)], ignore_label=2)
    target = torch.stack([transform(segmentation=seg[b])["segmentation"] for b in range(2)])
    output = torch.randn(2, 2, 8, 8, 8)
    term = build_term("tversky", {})
    loss = LesionAwareLoss(
        None, 0.0, [term], None, TargetLayout(1, torch.int16, 1, False, None), [(1,)], ignore_label=2
    )
    probs = torch.softmax(output, 1)[:, 1:]
    ignore = seg == 2
    assert float(loss(output, target)) == pytest.approx(
        float(tversky_loss(probs, target[:, 1:] > 0, ignore_mask=ignore)), rel=1e-6
    )
    assert float(loss(output, target)) != pytest.approx(float(tversky_loss(probs, target[:, 1:] > 0)), rel=1e-6)


def _generalized_dice_loop(probs, gt, smooth=1e-5):
    """Sudre et al. 2017 written out per pair over two classes (the channel and its complement),
    MONAI's rule for absent classes (``background_class=True``)."""
    values = []
    for b in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            p, g = probs[b, c].double().flatten(), gt[b, c].double().flatten()
            classes = [(p, g), (1 - p, 1 - g)]
            weights = [1 / float(t.sum()) ** 2 if t.sum() > 0 else float("inf") for _, t in classes]
            largest = max(w for w in weights if w != float("inf"))
            weights = [largest if w == float("inf") else w for w in weights]
            numerator = 2 * sum(w * float((x * t).sum()) for w, (x, t) in zip(weights, classes)) + smooth
            denominator = sum(w * float((x + t).sum()) for w, (x, t) in zip(weights, classes)) + smooth
            values.append(1 - numerator / denominator)
    return sum(values) / len(values)


def test_generalized_dice_against_the_loop_and_by_hand():
    from nnunet_lesionloss.losses.functional import generalized_dice_loss

    torch.manual_seed(1)
    probs = torch.rand(2, 2, 5, 6)
    gt = torch.rand(2, 2, 5, 6) > 0.7
    gt[1, 1] = False  # an absent foreground class: MONAI's largest-finite-weight rule
    assert float(generalized_dice_loss(probs, gt, background_class=True)) == pytest.approx(
        _generalized_dice_loop(probs, gt), rel=1e-5
    )
    # by hand: 4 voxels, p = (1, 0, 0.5, 0), g = (1, 0, 0, 0): w_fg = 1, w_bg = 1/9
    p = torch.tensor([1.0, 0.0, 0.5, 0.0]).reshape(1, 1, 2, 2)
    g = torch.tensor([1, 0, 0, 0], dtype=torch.bool).reshape(1, 1, 2, 2)
    numerator = 2 * (1 * 1.0 + (1 / 9) * 2.5)
    denominator = 1 * (1.5 + 1) + (1 / 9) * (2.5 + 3)
    assert float(generalized_dice_loss(p, g, smooth=0.0 + 1e-12, background_class=True)) == pytest.approx(
        1 - numerator / denominator, rel=1e-6
    )
    ignore = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    ignore[0, 0, 1, 0] = True  # ignoring the 0.5 voxel: p = (1, 0, 0), perfect
    assert float(generalized_dice_loss(p, g, ignore_mask=ignore, background_class=True)) == pytest.approx(0.0, abs=1e-6)


def test_the_loss_package_does_not_import_the_data_loading_package():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import nnunet_lesionloss.losses.compound, nnunet_lesionloss.losses.terms, nnunet_lesionloss.losses.functional\n"
        "print(sorted(m for m in sys.modules if m.startswith(('batchgeneratorsv2', 'nnunet_lesionloss.training', 'nnunetv2'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_terms_are_validated_once_at_build_and_not_on_every_step():
    from nnunet_lesionloss.config import ConfigError
    from nnunet_lesionloss.losses.terms import TERM_FUNCTIONS

    assert all(callable(function) for function in TERM_FUNCTIONS.values())
    with pytest.raises(ConfigError, match="terms.cat: gamma must be a finite number >= 0"):
        build_term("cat", {"params": {"gamma": -1.0}})
    term = build_term("cat", {"weight": 1.0})
    calls = []
    function = term.function

    def recording(*args, **kwargs):
        calls.append(kwargs["validate"])
        return function(*args, **kwargs)

    term.function = recording
    layout = TargetLayout(1, torch.int16, 1, False, None)
    loss = LesionAwareLoss(None, 0.0, [term], None, layout, [(1,)])
    seg = _seg()
    loss(torch.randn(2, 2, 8, 8, 8), _packed_targets(seg, with_maps_at=None)[0])
    assert calls == [False], "a training step calls the term without re-validating its parameters"


def test_cc_term_reads_the_cell_counts_packed_by_the_loader():
    seg = _seg()
    transform = ComponentMapsTransform(label_groups=[(1,)], with_cells=True)
    packed = torch.stack([transform(segmentation=seg[b])["segmentation"] for b in range(seg.shape[0])])
    layout = TargetLayout(1, torch.int16, 1, True, None)
    loss = LesionAwareLoss(None, 0.0, [build_term("cc", {"scales": "all"})], None, layout, [(1,)])
    output = torch.randn(2, 2, 8, 8, 8)
    _, ids, cells = split_target(packed, layout)
    expected = cc_loss(torch.softmax(output, 1)[:, 1:], ids, cells)  # counts its cells itself
    assert float(loss(output, packed)) == pytest.approx(float(expected), rel=1e-6)
    # the loss reads the packed table: a wrong count changes the value
    tampered = packed.clone()
    split_cell_counts(tampered, layout).reshape(2, 1, -1)[0, 0, 3] += 5  # |C_1 ∩ Ω_1| of sample 0
    assert float(loss(output, tampered)) != pytest.approx(float(expected), rel=1e-3)


@pytest.mark.parametrize(
    "groups, channels", [([(1,), (2,)], 3), ([(1,)], 2), ([(2,), (3,)], 4), ([(1,), (2,), (3,)], 4)]
)
def test_the_softmax_channels_have_the_gradient_of_the_softmax(groups, channels):
    """foreground_probabilities' slice of the softmax has its own backward (no zero-filled gradient of
    every channel): the values and the gradient of autograd's softmax and slice."""
    logits = torch.randn(2, channels, 5, 6, 7, requires_grad=True)
    weights = torch.randn(2, len(groups), 5, 6, 7)
    first = groups[0][0]
    probs = foreground_probabilities(logits, groups)
    expected = torch.softmax(logits, dim=1)[:, first : first + len(groups)]
    assert torch.equal(probs, expected)
    (grad,) = torch.autograd.grad((probs * weights).sum(), logits)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-7)
