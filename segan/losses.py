"""Losses: the segmentation loss (Dice + BCE or Dice + CE) and the adversarial loss on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from .config import ADVERSARIAL_MODES  # the option list lives in the config schema


class SegmentationLoss(nn.Module):
    """dice_weight x Dice + ce_weight x (BCE for one output channel, CE otherwise).

    Pixels equal to `ignore_index` count in neither term. Dice is smp's soft Dice over the batch.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, dice_weight: float = 1.0,
                 ce_weight: float = 1.0) -> None:
        super().__init__()
        self.binary = num_classes == 2
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.dice = DiceLoss(mode="binary" if self.binary else "multiclass", from_logits=True,
                             ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, mask) + self.ce_weight * self.cross_entropy(logits, mask)

    def cross_entropy(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.binary:
            return F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
        valid = mask != self.ignore_index
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], (mask == 1).float(), reduction="none")
        return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


class AdversarialLoss(nn.Module):
    """GAN loss on discriminator logits; hides the real/fake label tensors.

    Call `loss(logits, target_is_real, for_discriminator)`:
    - vanilla: binary cross-entropy with logits against 1 (real) or 0 (fake);
    - lsgan: mean squared error of the logits against 1 or 0;
    - hinge: discriminator mean(relu(1 - x)) on real, mean(relu(1 + x)) on fake; generator -mean(x).
    """

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in ADVERSARIAL_MODES:
            raise ValueError(f"unknown adversarial loss '{mode}'; choose one of {ADVERSARIAL_MODES}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        if self.mode == "hinge":
            if not for_discriminator:
                return -logits.mean()
            return F.relu(1 - logits).mean() if target_is_real else F.relu(1 + logits).mean()
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)
