"""The GAN that draws: a U-Net turns a mask into an image, a conditional PatchGAN judges the pair.

pix2pix (Isola et al. 2017) with segan's own parts: the drawing network is an smp U-Net built by
`segan.models.build_generator`'s registry, reading the mask one-hot (one channel per class) and
writing the image's channels through tanh, in [-1, 1]; the discriminator is the one that judges a
segmenter's (image, mask) pairs, `segan.models.PatchDiscriminator`, here judging a drawn image
against the real one under the same mask. The drawing network learns L1 to the real image
(`loss.l1_weight`) plus the adversarial term (`loss.adv_weight`).

Images are normalised with mean = std = 0.5 (the synth run's data section says so), so the
network's target is the image in [-1, 1], as tanh writes it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
import numpy as np
import torch
from torch import nn

from ..config import Config
from ..losses import AdversarialLoss
from ..models import build_discriminator, build_generator, one_hot
from ..preprocess import network_input, network_layout, pad_multiple, pad_to_multiple
from ..training import rng_states, set_cosine_rates, set_rng_states, tell_samplers_the_epoch
from .settings import SHOWN

# The synth run's normalisation, mean and std of every channel: the image in [-1, 1], tanh's range.
HALF = 0.5


def build_drawer(config: Config) -> nn.Module:
    """The mask-to-image network: `config.generator`'s smp model with a mask channel per class in
    and the image's channels out (raw: `draw` applies tanh)."""
    data = config.data
    # build_generator sizes its output by class count; the image's channels are what it must write.
    out = data.in_channels if data.in_channels > 1 else 2  # a one-class "binary" task has one output
    return build_generator(config.generator, data.num_classes, out, load_encoder_weights=False)


def mask_input(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class indices to the network's one-hot input; ignored pixels are all-zero."""
    return network_input(one_hot(mask, num_classes))


def draw(drawer: nn.Module, condition: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] for one-hot masks of any side (padded to the network's stride, cropped back)."""
    height, width = condition.shape[-2:]
    padded = network_input(pad_to_multiple(condition, pad_multiple(drawer)))
    return torch.tanh(drawer(padded)[..., :height, :width].float())


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] to (B, H, W, C) uint8."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class DrawingModule(L.LightningModule):
    """The drawing network and its discriminator, trained by alternating steps as pix2pix is.

    Args:
        config: a `Config` as a plain dict (the synth run's config.yaml).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = Config.from_dict(config)
        data = self.config.data
        self.automatic_optimization = False
        self.drawer = build_drawer(self.config)
        self.discriminator = build_discriminator(self.config.discriminator, data.in_channels, data.num_classes)
        self.adversarial_loss = AdversarialLoss(self.config.loss.adv_mode)
        self.shown: list[dict[str, np.ndarray]] = []  # the pictures' validation images, this epoch
        network_layout(self)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return draw(self.drawer, mask_input(mask, self.config.data.num_classes))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        real, condition = batch["image"], mask_input(batch["mask"], self.config.data.num_classes)
        fake = draw(self.drawer, condition)
        self.discriminator_step(real, fake.detach(), condition)
        self.drawer_step(real, fake, condition)

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, condition: torch.Tensor) -> None:
        _, opt_d = self.optimizers()
        real_loss = self.adversarial_loss(self.discriminator(real, condition), True)
        fake_loss = self.adversarial_loss(self.discriminator(fake, condition), False)
        loss = 0.5 * (real_loss + fake_loss)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_d.step()
        self.log_dict({"train/d_loss": loss, "train/d_loss_real": real_loss, "train/d_loss_fake": fake_loss},
                      on_step=True, on_epoch=True)

    def drawer_step(self, real: torch.Tensor, fake: torch.Tensor, condition: torch.Tensor) -> None:
        opt_g, _ = self.optimizers()
        loss_config = self.config.loss
        l1 = (fake - real).abs().mean()
        adversarial = self.adversarial_loss(self.discriminator(fake, condition), True, for_discriminator=False)
        adv_weight = loss_config.adv_weight if self.current_epoch >= loss_config.adv_warmup_epochs else 0.0
        loss = loss_config.l1_weight * l1 + adv_weight * adversarial
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        self.log_dict({"train/g_loss": loss, "train/l1": l1, "train/adv_loss": adversarial}, on_step=True,
                      on_epoch=True, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        # As the segmenter's: the rate is a function of the epoch alone, so a resume gets it exactly.
        set_cosine_rates(self)
        tell_samplers_the_epoch(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["segan"] = {"rng": rng_states()}  # a resume draws the same numbers as the straight run

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING and "rng" in checkpoint.get("segan", {}):
            set_rng_states(checkpoint["segan"]["rng"])

    def on_validation_epoch_start(self) -> None:
        self.shown = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        fake = self(batch["mask"])
        real = batch["image"]
        if real.shape[-2:] != fake.shape[-2:]:
            raise ValueError("segan synth trains on images resized or cropped to data.size; the validation images "
                             "must be read at that size too (data.val_native false)")
        # `train_synth` re-scores the last network, then the best, after fitting: two rescored/l1 rows, in that order.
        prefix = "rescored" if self.trainer.state.fn == TrainerFn.VALIDATING else "val"
        self.log(f"{prefix}/l1", (fake - real).abs().mean(), on_epoch=True, prog_bar=True, batch_size=len(real))
        for index in range(min(len(real), SHOWN - len(self.shown))):
            self.shown.append({"mask": batch["mask"][index].cpu().numpy(), "real": to_uint8(real[index:index + 1])[0],
                               "drawn": to_uint8(fake[index:index + 1])[0]})

    def configure_optimizers(self):
        train = self.config.train
        # pix2pix's Adam: beta1 = 0.5 for both sides of the game.
        opt_g = torch.optim.Adam(self.drawer.parameters(), lr=train.lr, betas=(0.5, 0.999),
                                 weight_decay=train.weight_decay)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=train.d_lr, betas=(0.5, 0.999))
        for optimizer in (opt_g, opt_d):
            for group in optimizer.param_groups:
                group["initial_lr"] = group["lr"]
        return [opt_g, opt_d]
