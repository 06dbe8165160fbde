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
    weighted = SegmentationLoss(num_classes=2, ignore_index=255, terms={"dice": 0.5, "ce": 2.0})
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


def test_terms_by_name_are_smps_losses_weighted():
    """Each term is smp's loss of that name (ce torch's), in binary mode for two classes."""
    from segmentation_models_pytorch import losses as smp_losses
    torch.manual_seed(0)
    logits, mask = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    mask[0, 0] = 255
    loss = SegmentationLoss(num_classes=4, ignore_index=255, terms={"lovasz": 0.5, "focal": 2.0, "dice": 0.0})
    expected = 0.5 * smp_losses.LovaszLoss("multiclass", ignore_index=255)(logits, mask) \
        + 2.0 * smp_losses.FocalLoss("multiclass", ignore_index=255)(logits, mask)
    assert list(loss.terms) == ["lovasz", "focal"]  # a term of weight 0 is left out
    assert loss(logits, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    binary = SegmentationLoss(num_classes=2, ignore_index=255, terms={"tversky": 1.0})
    tversky = smp_losses.TverskyLoss("binary", ignore_index=255, alpha=0.3, beta=0.7)
    one = logits[:, :1]
    assert binary(one, mask.clamp(max=1)).item() == pytest.approx(tversky(one, mask.clamp(max=1)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss term"):
        SegmentationLoss(num_classes=2, terms={"hinge": 1.0})


def test_class_weights_weigh_each_pixel_by_its_true_class():
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]], [[0.0, 0.0, 3.0]]]])  # (1, 3, 1, 3)
    mask = torch.tensor([[[0, 1, 2]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, mask, reduction="none")[0, 0]
    weights = [0.5, 1.0, 4.0]
    expected = (0.5 * per_pixel[0] + 1.0 * per_pixel[1] + 4.0 * per_pixel[2]) / 5.5
    loss = SegmentationLoss(num_classes=3, terms={"ce": 1.0}, class_weights=weights)
    assert loss(logits, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    # binary: one channel, the pixel's weight is its class's
    one = torch.tensor([[[[1.0, -2.0, 0.5]]]])
    truth = torch.tensor([[[1, 0, 255]]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(one[0, 0, 0, :2], torch.tensor([1.0, 0.0]),
                                                               reduction="none")
    binary = SegmentationLoss(num_classes=2, terms={"ce": 1.0}, class_weights=[1.0, 3.0])
    assert binary(one, truth).item() == pytest.approx(((3 * bce[0] + bce[1]) / 4).item(), rel=1e-6)


def test_ohem_keeps_the_hardest_share_and_every_pixel_below_the_threshold():
    from segan.losses import CrossEntropy
    # true-class probabilities 0.9, 0.6, 0.3, 0.2, 0.95 (binary logits), one ignored pixel
    probabilities = torch.tensor([0.9, 0.6, 0.3, 0.2, 0.95, 0.1])
    logits = torch.log(probabilities / (1 - probabilities)).reshape(1, 1, 1, 6)
    mask = torch.tensor([[[1, 1, 1, 1, 1, 255]]])
    per_pixel = -torch.log(probabilities[:5])
    hardest_two = CrossEntropy(binary=True, ohem_keep=0.4)  # 40% of 5 valid pixels: 2, the ignored one never
    kept = hardest_two.hard_pixels(torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, 0], torch.ones(1, 1, 6), reduction="none"), mask != 255)
    assert (kept & (mask != 255)).flatten().tolist() == [False, False, True, True, False, False]
    assert hardest_two(logits, mask).item() == pytest.approx(per_pixel[2:4].mean().item(), rel=1e-5)
    # below 0.65 counts as hard: 0.6, 0.3, 0.2 (more than the floor of 2)
    threshold = CrossEntropy(binary=True, ohem_keep=0.4, ohem_threshold=0.65)
    assert threshold(logits, mask).item() == pytest.approx(per_pixel[1:4].mean().item(), rel=1e-5)
    # the floor wins when fewer pass the threshold: only 0.2 is below 0.25, the two hardest are kept
    floor = CrossEntropy(binary=True, ohem_keep=0.4, ohem_threshold=0.25)
    assert floor(logits, mask).item() == pytest.approx(per_pixel[2:4].mean().item(), rel=1e-5)


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
