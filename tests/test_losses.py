import math

import pytest
import torch

from segan.losses import AdversarialLoss, SegmentationLoss


def test_binary_segmentation_loss_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])  # (1, 1, 2, 2)
    mask = torch.tensor([[[0, 1], [255, 1]]])  # one ignored pixel
    p = [0.5, 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-3.0))]  # probabilities of the kept pixels
    y = [0.0, 1.0, 1.0]
    intersection = sum(pi * yi for pi, yi in zip(p, y))
    dice = 1 - 2 * intersection / (sum(p) + sum(y))
    bce = -sum(yi * math.log(pi) + (1 - yi) * math.log(1 - pi) for pi, yi in zip(p, y)) / 3
    loss = SegmentationLoss(num_classes=2, ignore_index=255)
    assert loss(logits, mask).item() == pytest.approx(dice + bce, rel=1e-5)
    weighted = SegmentationLoss(num_classes=2, ignore_index=255, dice_weight=0.5, ce_weight=2.0)
    assert weighted(logits, mask).item() == pytest.approx(0.5 * dice + 2 * bce, rel=1e-5)


def test_multiclass_segmentation_loss_matches_hand_computation():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    mask = torch.tensor([[[0, 1]]])
    probs = torch.softmax(logits, dim=1)[0, :, 0]  # (3 classes, 2 pixels)
    ce = -(math.log(probs[0, 0]) + math.log(probs[1, 1])) / 2
    # smp's multiclass Dice: per class over the batch, classes absent from the truth count zero.
    dices = []
    for c in range(3):
        y = (mask[0, 0] == c).float()
        if y.sum() == 0:
            dices.append(0.0)
            continue
        inter = (probs[c] * y).sum()
        dices.append(1 - (2 * inter / (probs[c].sum() + y.sum())).item())
    dice = sum(dices) / 3
    loss = SegmentationLoss(num_classes=3, ignore_index=255)
    assert loss(logits, mask).item() == pytest.approx(dice + ce, rel=1e-5)


def test_multiclass_loss_ignores_ignore_index():
    logits = torch.randn(2, 4, 8, 8)
    mask = torch.randint(0, 4, (2, 8, 8))
    ignored = mask.clone()
    ignored[:, :4] = 255
    changed = logits.clone()
    changed[:, :, :4] = torch.randn(2, 4, 4, 8) * 10  # logits under ignored pixels must not matter
    loss = SegmentationLoss(num_classes=4, ignore_index=255)
    assert loss(logits, ignored).item() == pytest.approx(loss(changed, ignored).item(), rel=1e-6)


LOGITS = torch.tensor([0.0, 2.0, -1.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("mode, real, fake, generator", [
    ("vanilla",
     (softplus(-0.0) + softplus(-2.0) + softplus(1.0)) / 3,   # -log(sigmoid(x))
     (softplus(0.0) + softplus(2.0) + softplus(-1.0)) / 3,    # -log(1 - sigmoid(x))
     (softplus(-0.0) + softplus(-2.0) + softplus(1.0)) / 3),  # G wants D to say real
    ("lsgan", ((0 - 1) ** 2 + (2 - 1) ** 2 + (-1 - 1) ** 2) / 3, (0 + 4 + 1) / 3, (1 + 1 + 4) / 3),
    ("hinge", (1 + 0 + 2) / 3, (1 + 3 + 0) / 3, -(0 + 2 - 1) / 3),
])
def test_adversarial_loss_matches_hand_computation(mode, real, fake, generator):
    loss = AdversarialLoss(mode)
    assert loss(LOGITS, True).item() == pytest.approx(real, rel=1e-6)
    assert loss(LOGITS, False).item() == pytest.approx(fake, rel=1e-6)
    assert loss(LOGITS, True, for_discriminator=False).item() == pytest.approx(generator, rel=1e-6)


def test_adversarial_loss_rejects_unknown_mode():
    with pytest.raises(ValueError, match="wgan"):
        AdversarialLoss("wgan")
