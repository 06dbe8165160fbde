"""Losses: the segmentation loss (weighted terms by name) and the adversarial loss on logits."""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from .config import ADVERSARIAL_MODES, LOSS_TERMS  # the option lists live in the config schema


class CrossEntropy(nn.Module):
    """Cross-entropy (BCE for one output channel) with class weights and OHEM.

    Args:
        binary: one output channel (BCE on class 1) rather than one per class (CE).
        ignore_index: target value left out.
        class_weights: one weight per class, applied to each pixel by its target class; None = 1.
        ohem_keep: the share of valid pixels kept, the hardest first (lowest probability of their
            target class); None keeps every pixel.
        ohem_threshold: with `ohem_keep`, pixels whose target class has less probability than
            this are kept too (MMSegmentation's OHEM sampler with `ohem_keep` as its floor).

    The loss is the weighted mean over the kept pixels.
    """

    def __init__(self, binary: bool, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 ohem_keep: float | None = None, ohem_threshold: float | None = None) -> None:
        super().__init__()
        self.binary = binary
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        self.ohem_keep = ohem_keep
        self.ohem_threshold = ohem_threshold

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        valid = mask != self.ignore_index
        target = torch.where(valid, mask, 0)
        logits = logits.float()
        if self.binary:
            per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).float(), reduction="none")
        else:
            per_pixel = F.cross_entropy(logits, target, reduction="none")
        kept = valid if self.ohem_keep is None else valid & self.hard_pixels(per_pixel, valid)
        weight = kept.float() if self.class_weights is None else kept * self.class_weights.float()[target]
        return (per_pixel * weight).sum() / weight.sum().clamp(min=1e-6)

    def hard_pixels(self, per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The OHEM selection: the `ohem_keep` share of valid pixels with the largest loss (the
        lowest probability of their target class, exp(-loss)), and every pixel below the threshold."""
        hardness = torch.where(valid, per_pixel.detach(), -1.0).flatten()
        count = (self.ohem_keep * valid.sum()).ceil().long().clamp(min=1)
        # The count'th largest loss, found without reading `count` back to the host.
        ordered = hardness.sort(descending=True).values
        floor = ordered.gather(0, (count - 1).clamp(max=hardness.numel() - 1).reshape(1))
        hard = hardness.reshape(per_pixel.shape) >= floor
        if self.ohem_threshold is not None:
            hard |= per_pixel.detach() > -math.log(self.ohem_threshold)
        return hard


# name -> (mode, ignore_index, class weights, OHEM settings) -> the term's module. Only ce takes
# class weights and OHEM: the others are smp's region losses, already balanced over classes.
LOSS_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dice": lambda mode, ignore_index, **_: smp_losses.DiceLoss(mode, from_logits=True, ignore_index=ignore_index),
    "jaccard": lambda mode, ignore_index, **_: smp_losses.JaccardLoss(mode, from_logits=True, ignore_index=ignore_index),
    "tversky": lambda mode, ignore_index, **_: smp_losses.TverskyLoss(mode, from_logits=True, ignore_index=ignore_index,
                                                                      alpha=0.3, beta=0.7),
    "lovasz": lambda mode, ignore_index, **_: smp_losses.LovaszLoss(mode, per_image=False, ignore_index=ignore_index),
    "focal": lambda mode, ignore_index, **_: smp_losses.FocalLoss(mode, ignore_index=ignore_index),
    "ce": lambda mode, ignore_index, **options: CrossEntropy(mode == "binary", ignore_index, **options),
}
assert set(LOSS_BUILDERS) == set(LOSS_TERMS), "every loss term named in the config schema has a builder"


class SegmentationLoss(nn.Module):
    """The weighted sum of the segmentation terms named in `terms` (see `LOSS_BUILDERS`).

    Pixels equal to `ignore_index` count in no term. A binary task (two classes) has one output
    channel: the terms run in smp's binary mode.

    Args:
        num_classes: classes, background included.
        ignore_index: target value left out.
        terms: term name -> weight; terms of weight 0 are left out.
        class_weights, ohem_keep, ohem_threshold: the ce term's (see `CrossEntropy`).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 terms: Mapping[str, float] | None = None, class_weights: Sequence[float] | None = None,
                 ohem_keep: float | None = None, ohem_threshold: float | None = None) -> None:
        super().__init__()
        terms = {"dice": 1.0, "ce": 1.0} if terms is None else terms
        unknown = set(terms) - set(LOSS_BUILDERS)
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)}; choose from {LOSS_TERMS}")
        mode = "binary" if num_classes == 2 else "multiclass"
        options = dict(class_weights=class_weights, ohem_keep=ohem_keep, ohem_threshold=ohem_threshold)
        self.weights = {name: float(weight) for name, weight in terms.items() if weight}
        self.terms = nn.ModuleDict({name: LOSS_BUILDERS[name](mode, ignore_index, **options) for name in self.weights})

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the autocast around: smp's Lovász mixes the logits' dtype with its own.
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.float()
            return sum(weight * self.terms[name](logits, mask) for name, weight in self.weights.items())


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
