"""Training: the LightningModule with the generator/discriminator step, and `train(config)`."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import CombinedLoader, rank_zero_only
from lightning.pytorch.trainer.states import TrainerFn
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader

from . import metrics
from .atomic import atomic_write
from .checkpointing import AtomicCheckpointIO, CheckpointError, load_checkpoint
from . import budget
from .config import Config, parse_duration, validate
from .hardware import describe, resolve_training_precision, training_device
from .data import EpochSampler, MaskEncoding, Pair, SegmentationDataset, find_splits
from .data.classes import ClassStats
from .data.synthetic import MixedBatchSampler, MixedDataset, batch_make_up, read_synthetic, synthetic_encoding
from .losses import AdversarialLoss, SegmentationLoss
from .models import build_discriminator, build_generator, one_hot, output_channels
from .preprocess import (EvalTransform, labels_from_probabilities, network_input, network_layout, padded_logits,
                         probabilities, restore)
from .progress import ProgressPlot, ValidationImages, merge_metrics
from .semi import SemiSupervision, UnlabeledDataset, UnlabeledItem, find_unlabeled, split_labeled
from .transforms import build_train_transform, build_weak_transform

log = logging.getLogger(__name__)

# Consecutive batches with a non-finite loss that are skipped before the run is stopped.
NONFINITE_PATIENCE = 10
# The discriminator "wins outright" when its loss, averaged over recent steps, falls below the
# figure of its loss for "both sides told apart with 95% confidence": vanilla BCE -log(0.95);
# LSGAN (1 - 0.95)^2; hinge has no probabilities, and 0.05 means nearly every patch is beyond its
# margin. Its steps are then skipped until G catches up, since a perfect D gives G gradients that
# only push it off the data.
D_COLLAPSE_LOSS = {"vanilla": 0.05, "lsgan": 0.0025, "hinge": 0.05}
D_LOSS_MOMENTUM = 0.9


class Judgement(NamedTuple):
    """The discriminator's verdict on one batch: its loss, the loss on truth and on the prediction,
    and its logits for each."""

    loss: torch.Tensor
    real_loss: torch.Tensor
    fake_loss: torch.Tensor
    real_logits: torch.Tensor
    fake_logits: torch.Tensor


class SeganModule(L.LightningModule):
    """Generator + discriminator trained by alternating steps (manual optimisation).

    Args:
        config: a `Config` as a plain dict (plain data keeps checkpoints loadable with
            `weights_only=True`).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = Config.from_dict(config)
        data, loss = self.config.data, self.config.loss
        self.automatic_optimization = False
        self.mask_channels = output_channels(data.num_classes)
        self.generator = build_generator(self.config.generator, data.in_channels, data.num_classes)
        # An exponential moving average of the generator's weights (timm's), validated beside them.
        self.generator_ema = moving_average(self.generator, self.config.train.ema_decay)
        self.discriminator = build_discriminator(self.config.discriminator, data.in_channels, self.mask_channels)
        if isinstance(loss.class_weights, str):
            raise ValueError(f"loss.class_weights '{loss.class_weights}' is computed from the training masks by "
                             "train() (segan.training.resolve_class_weights) before the module is built")
        self.segmentation_loss = SegmentationLoss(data.num_classes, data.ignore_index, loss.terms, loss.class_weights,
                                                  loss.ohem_keep, loss.ohem_threshold)
        self.adversarial_loss = AdversarialLoss(loss.adv_mode)
        self.semi = SemiSupervision(self.config, self.discriminate, self.adversarial_loss) \
            if self.config.semi.mode != "none" else None
        # A mean teacher for the pseudo-labels (semi.teacher_decay): never validated or exported.
        self.teacher = moving_average(self.generator, self.config.semi.teacher_decay) if self.semi is not None else None
        self.val_confusion: torch.Tensor | None = None
        self.nonfinite_in_a_row = 0
        self.nonfinite_skipped = 0
        self.d_steps_skipped = 0
        self.d_loss_average: float | None = None
        self.stop_reason: str | None = None
        # 1.0 when the last generator step was skipped on the device (see training_step); a
        # buffer, so it lives on the training device, but not saved: it is counted before any save.
        self.register_buffer("generator_rejected", torch.zeros(()), persistent=False)
        self.uncounted_generator_step: tuple[int, int] | None = None  # (epoch, batch) of that step
        # This epoch's pseudo-labels checked against hidden masks: (correct, checked) pixels.
        self.register_buffer("pseudo_counts", torch.zeros(2, dtype=torch.long), persistent=False)
        # NHWC: oneDNN's CPU convolutions (bf16 above all) and GPU tensor cores run faster in it.
        # The weights go to safetensors through `export_generator`, which builds a fresh model.
        network_layout(self)
        # What the training step calls: the generator, or with train.compile its compiled view. In a
        # tuple, so it is not registered as a child: checkpoints keep the plain network's keys, and
        # validation runs the plain one (each new image size would compile anew). The discriminator
        # stays uncompiled: it takes a small part of a GAN step (docs/benchmarks/profile.md), compiling
        # it too gained no step time where measured, and it compiles twice (its D-step and G-step
        # calls differ in batch size and in what needs gradients), which a user pays from the budget.
        self.step_generator = (torch.compile(self.generator, dynamic=False) if self.config.train.compile is True
                               else self.generator,)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.generator(image)

    @property
    def adversarial(self) -> bool:
        return self.config.loss.adv_weight > 0

    def real_mask(self, mask: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The truth as the discriminator sees it: one-hot, with ignored pixels copied from `fake`
        (so they carry no signal), softened by the input guard."""
        real = one_hot(mask, self.mask_channels)
        guard = self.config.discriminator
        if guard.input_guard == "smooth":
            # Label smoothing: truth no longer sits exactly at 0/1, where a soft prediction never is.
            uniform = 0.5 if self.mask_channels == 1 else 1.0 / self.mask_channels
            real = real * (1 - guard.guard_strength) + uniform * guard.guard_strength
        # Last, so ignored pixels are identical on both sides and tell D nothing.
        ignored = (mask == self.config.data.ignore_index).unsqueeze(1)
        return torch.where(ignored, fake.detach(), real)

    def guarded(self, mask: torch.Tensor) -> torch.Tensor:
        guard = self.config.discriminator
        if guard.input_guard == "noise":
            return mask + guard.guard_strength * torch.randn_like(mask)
        return mask

    def discriminate(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.discriminator(image, self.guarded(mask))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One step of the algorithm, as pix2pix's `optimize_parameters`: the generator predicts;
        the discriminator judges truth against that prediction and learns (D step); the generator
        learns from the masks, from fooling D, and from images without masks (G step)."""
        labeled, unlabeled = (batch["labeled"], batch["unlabeled"]) if "labeled" in batch else (batch, None)
        image, mask = labeled["image"], labeled["mask"]
        logits = self.step_generator[0](image)
        fake = probabilities(logits)
        seg_loss = self.segmentation_loss(logits, mask)
        judged = self.judge(image, mask, fake) if self.adversarial else None
        if not self.synchronise(seg_loss, judged):  # a non-finite loss: the batch is skipped
            return
        if "synthetic" in labeled:
            self.log_sources(logits, mask)
        if judged is not None:
            self.discriminator_step(judged)
        g_loss = self.generator_step(image, fake, seg_loss, unlabeled)
        self.log_dict({"train/seg_loss": seg_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)

    @torch.no_grad()
    def log_sources(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        """The segmentation loss on the batch's real and synthetic pairs apart (data.synthetic).
        Every batch holds its real pairs first (`MixedBatchSampler`): slices, not a boolean index,
        which would make the step wait for the device."""
        real = batch_make_up(self.config.train.batch_size, self.config.data.synthetic_ratio)[0]
        for name, part in (("real", slice(None, real)), ("synthetic", slice(real, None))):
            self.log(f"train/seg_loss_{name}", self.segmentation_loss(logits[part], mask[part]), on_step=False,
                     on_epoch=True)

    def judge(self, image: torch.Tensor, mask: torch.Tensor, fake: torch.Tensor) -> Judgement:
        """D's losses on truth (real) and on the current prediction (fake, detached), computed before
        any decision so that the step's one host synchronisation reads every figure the D step needs.
        Real and fake pairs go through D as one batch: one pass of each layer instead of two (D
        normalises per sample, spectral norm or instance norm, so nothing mixes)."""
        with self.toggled_optimizer(self.optimizers()[1]):
            both = self.discriminate(torch.cat([image, image]), torch.cat([self.real_mask(mask, fake), fake.detach()]))
            real_logits, fake_logits = both.chunk(2)
            real_loss = self.adversarial_loss(real_logits, True)
            fake_loss = self.adversarial_loss(fake_logits, False)
        return Judgement(0.5 * (real_loss + fake_loss), real_loss, fake_loss, real_logits, fake_logits)

    def synchronise(self, seg_loss: torch.Tensor, judged: Judgement | None) -> bool:
        """The step's one host synchronisation: whether any loss is non-finite (this step's, and the
        last generator step's flag, read one step late) and D's loss, which keeps its moving average
        (`d_loss_average`). Under DDP the figures are summed over the ranks first (a flag above 0:
        some rank saw it; D's loss: the sum, divided below), so every rank takes the same decisions,
        or DDP's gradient all-reduce would wait forever. Returns whether the batch is trained on."""
        figures = [~torch.isfinite(seg_loss), self.generator_rejected]
        if judged is not None:
            figures += [~torch.isfinite(judged.loss), judged.loss.detach()]
        summed = self.trainer.strategy.reduce(torch.stack([figure.float() for figure in figures]), reduce_op="sum")
        seg_nonfinite, generator_rejected, *d_figures = summed.tolist()
        self.account_generator_step(generator_rejected > 0)
        if self.stop_reason:  # that was one non-finite batch too many: no more steps
            return False
        if seg_nonfinite > 0:
            self.skip_nonfinite(*self.optimizers(), "segmentation")
            return False
        if judged is not None:
            d_nonfinite, average = d_figures
            if d_nonfinite > 0:
                self.skip_nonfinite(*self.optimizers(), "discriminator")
                return False
            average /= self.trainer.world_size
            if self.d_loss_average is not None:
                average = D_LOSS_MOMENTUM * self.d_loss_average + (1 - D_LOSS_MOMENTUM) * average
            self.d_loss_average = average
        return True

    def discriminator_step(self, judged: Judgement) -> None:
        """D learns that truth is real and the generator's current (detached) prediction is fake,
        unless it already wins outright (its averaged loss under `D_COLLAPSE_LOSS`): then it waits."""
        opt_d = self.optimizers()[1]
        collapsed = self.d_loss_average < D_COLLAPSE_LOSS[self.config.loss.adv_mode]
        with self.toggled_optimizer(opt_d):
            opt_d.zero_grad()
            if collapsed:
                self.d_steps_skipped += 1
            else:
                self.manual_backward(judged.loss)
                opt_d.step()
        self.log_dict({"train/d_loss": judged.loss.detach(), "train/d_loss_real": judged.real_loss.detach(),
                       "train/d_loss_fake": judged.fake_loss.detach(),
                       "train/d_real": torch.sigmoid(judged.real_logits.detach()).mean(),
                       "train/d_fake": torch.sigmoid(judged.fake_logits.detach()).mean(),
                       "train/d_skipped": float(collapsed)})

    def generator_step(self, image: torch.Tensor, fake: torch.Tensor, seg_loss: torch.Tensor,
                       unlabeled: dict | None) -> torch.Tensor:
        """G learns from the masks, plus from fooling D once the supervised warm-up is over, plus
        from images without masks. Returns G's loss."""
        opt_g = self.optimizers()[0]
        with self.toggled_optimizer(opt_g):
            g_loss = seg_loss
            if self.adversarial and self.current_epoch >= self.config.loss.adv_warmup_epochs:
                g_loss = g_loss + self.adversarial_term(image, fake)
            if unlabeled is not None:
                g_loss = g_loss + self.unlabelled_term(unlabeled)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            self.apply_generator_update(opt_g, g_loss)
        return g_loss

    def adversarial_term(self, image: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The weighted loss of D calling the prediction fake."""
        adv_loss = self.adversarial_loss(self.discriminate(image, fake), True, for_discriminator=False)
        self.log("train/adv_loss", adv_loss.detach())
        return self.config.loss.adv_weight * adv_loss

    def unlabelled_term(self, unlabeled: dict) -> torch.Tensor:
        """The weighted loss on images without masks (see `segan.semi`)."""
        gate_open = self.current_epoch >= self.config.semi.gate_warmup_epochs
        step = self.semi.step(self.step_generator[0], unlabeled, gate_open, self.config.data.ignore_index,
                              teacher=self.teacher.module if self.teacher is not None else None)
        self.log("semi/unlabeled_loss", step.loss.detach(), on_epoch=True)
        self.log_dict({f"semi/{name}": value for name, value in step.stats.items()}, on_step=False, on_epoch=True)
        self.pseudo_counts += step.precision_counts
        return self.config.semi.unlabeled_weight * step.loss

    def apply_generator_update(self, opt_g, g_loss: torch.Tensor) -> None:
        """Steps G's optimiser, then its moving averages. G's loss holds terms computed with D after
        its step, so it was not among the figures `synchronise` read. Rather than wait for the host,
        the fused Adam skips its update on the device when the loss or a gradient is not finite; the
        next step's synchronisation reads the flag and counts the skipped batch. (With a gradient
        scaler, 16-mixed, scaled gradients overflow by design and the scaler skips those steps
        itself: only the loss is checked then.)"""
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        self.generator_rejected = rejected(g_loss, [] if scaled else self.generator.parameters())
        opt_g.optimizer.found_inf = self.generator_rejected
        opt_g.step()
        self.uncounted_generator_step = self.batch_position()
        for average in (self.generator_ema, self.teacher):  # a skipped step leaves the weights as they were
            if average is not None:
                average.update(self.generator, step=self.trainer.fit_loop.total_batch_idx + 1)

    def account_generator_step(self, was_rejected: bool) -> None:
        """Counts the last generator step, whose non-finite flag is read one step late."""
        if self.uncounted_generator_step is None:
            return
        where, self.uncounted_generator_step = self.uncounted_generator_step, None
        if was_rejected:
            self.skip_nonfinite(None, None, "generator", where)
        else:
            self.nonfinite_in_a_row = 0

    def batch_position(self) -> tuple[int, int]:
        return self.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def skip_nonfinite(self, opt_g, opt_d, which: str, where: tuple[int, int] | None = None) -> None:
        """Leaves the weights as they are for a batch whose loss is NaN or infinite; stops the run
        after `NONFINITE_PATIENCE` such batches in a row (the best checkpoint stays as it was)."""
        for optimizer in (opt_g, opt_d):
            if optimizer is not None:
                optimizer.zero_grad()
        self.nonfinite_in_a_row += 1
        self.nonfinite_skipped += 1
        epoch, batch = where or self.batch_position()
        log.warning("non-finite %s loss at epoch %d, batch %d: batch skipped (%d in a row)", which, epoch, batch,
                    self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= NONFINITE_PATIENCE:
            self.stop_reason = (f"stopped: the {which} loss was NaN or infinite for {self.nonfinite_in_a_row} batches "
                                "in a row. Lower the learning rate (--lr, --d-lr), check the data with segan data "
                                "check, or try --precision 32-true; the best checkpoint is kept as it was")
            log.error(self.stop_reason)
            self.trainer.should_stop = True

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return apply_to_collection(batch, torch.Tensor, lambda tensor: network_input(tensor) if tensor.ndim == 4
                                   else tensor)

    def on_train_epoch_start(self) -> None:
        # The learning rate is a function of the epoch alone (cosine from lr to 0 over the
        # run's epochs), not a scheduler's state: a resumed run gets exactly the rate the
        # uninterrupted one had, and one resumed with more epochs gets the schedule of the new end.
        # The end is the trainer's last epoch: train.epochs, or what fits a time budget (segan.budget).
        for name, rate in zip(("generator", "discriminator"), set_cosine_rates(self)):
            self.log(f"lr/{name}", rate, on_step=False, on_epoch=True)
        tell_samplers_the_epoch(self.trainer)

    def on_train_epoch_end(self) -> None:
        self.account_generator_step(bool(self.generator_rejected))  # the epoch's last step
        self.log_dict({"train/d_steps_skipped": float(self.d_steps_skipped),
                       "train/nonfinite_skipped": float(self.nonfinite_skipped)})
        if self.semi is not None:
            correct, checked = self.trainer.strategy.reduce(self.pseudo_counts, reduce_op="sum").tolist()
            if checked:  # pixel-weighted over the epoch
                self.log("semi/pseudo_precision", correct / checked)
            self.pseudo_counts.zero_()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.trainer.state.fn == TrainerFn.FITTING:
            self.account_generator_step(bool(self.generator_rejected))
        # Everything besides weights and optimiser state that shapes the rest of the run.
        checkpoint["segan"] = {
            "counters": {"nonfinite_in_a_row": self.nonfinite_in_a_row, "nonfinite_skipped": self.nonfinite_skipped,
                         "d_steps_skipped": self.d_steps_skipped, "d_loss_average": self.d_loss_average},
            "pseudo_counts": self.pseudo_counts.cpu(),  # a mid-epoch resume keeps the epoch's figures whole
            "rng": rng_states(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs saved before the optimisers were fused restore as fused ones (the generator's
        # non-finite check needs found_inf, which only the fused Adam reads).
        for state in checkpoint.get("optimizer_states", []):
            for group in state.get("param_groups", []):
                group.update(fused=True, foreach=None)
        if self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return  # re-scoring the best checkpoint takes its weights, not its counters
        saved = checkpoint.get("segan", {})
        for name, value in saved.get("counters", {}).items():
            setattr(self, name, value)
        if "pseudo_counts" in saved:
            self.pseudo_counts.copy_(saved["pseudo_counts"])
        if "rng" in saved:  # Lightning's sanity check, which comes next, restores its own RNG use
            set_rng_states(saved["rng"])

    def validated(self) -> list[torch.nn.Module]:
        """The weights validated: the generator's, and their moving average when there is one."""
        return [self.generator] + ([self.generator_ema.module] if self.generator_ema is not None else [])

    def on_validation_epoch_start(self) -> None:
        classes = self.config.data.num_classes
        self.val_confusion = torch.zeros(len(self.validated()), classes, classes, dtype=torch.long, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """Scores the batch; returns the raw generator's labels for the pictures
        (`segan.progress.ValidationImages`), which would otherwise run the network again."""
        predicted = []
        height, width = batch["mask"].shape[-2:]
        for index, network in enumerate(self.validated()):
            logits = padded_logits(network, batch["image"])  # what segan predict does
            if index == 0:  # (data.val_native: the loss of the logits resized to the mask)
                loss = self.segmentation_loss(restore(logits, height, width), batch["mask"])
                self.log("val/loss", loss, sync_dist=True, batch_size=len(batch["image"]))
            predicted.append(labels_from_probabilities(restore(probabilities(logits), height, width)))
            confusion = metrics.confusion_matrix(predicted[-1], batch["mask"], self.config.data.num_classes,
                                                 self.config.data.ignore_index)
            self.val_confusion[index] += confusion.sum(dim=0)
        return {"predicted": predicted[0]}

    def on_validation_epoch_end(self) -> None:
        confusion = self.trainer.strategy.reduce(self.val_confusion, reduce_op="sum").cpu()
        # NaN (no foreground anywhere in the split) must not look like a best score.
        scores = [{name: 0.0 if math.isnan(value) else value
                   for name, value in metrics.summary(matrix, self.config.data.binary).items()} for matrix in confusion]
        # The epoch's score is that of the better weights, which export takes (the raw ones on a tie).
        chosen = max(range(len(scores)), key=lambda index: (scores[index]["iou"], -index))
        # `train` re-scores the best checkpoint once after fitting: that row says "best", not "val".
        prefix = "best" if self.trainer.state.fn == TrainerFn.VALIDATING else "val"
        self.log_dict({f"{prefix}/{name}": value for name, value in scores[chosen].items()}, prog_bar=True)
        if len(scores) > 1:
            self.log_dict({f"{prefix}/raw_iou": scores[0]["iou"], f"{prefix}/ema_iou": scores[1]["iou"],
                           f"{prefix}/ema_chosen": float(chosen == 1)})

    def configure_optimizers(self):
        train = self.config.train
        # Fused: one kernel for all parameters, and it can skip a step on the device (found_inf).
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True)
        # beta1 = 0.5 as in pix2pix/DCGAN: momentum destabilises the adversarial game.
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=train.d_lr, betas=(0.5, 0.999), fused=True)
        for optimizer in (opt_g, opt_d):
            for group in optimizer.param_groups:
                group["initial_lr"] = group["lr"]  # the schedule's base (see on_train_epoch_start)
        return [opt_g, opt_d]


def moving_average(generator: torch.nn.Module, decay: float | None) -> torch.nn.Module | None:
    """timm's ModelEmaV3 of `generator` (None without a decay), its decay warmed up over the first
    steps, as short runs need: 1 - (1 + step)^(-3/4), up to `decay`."""
    if decay is None:
        return None
    from timm.utils.model_ema import ModelEmaV3
    average = ModelEmaV3(generator, decay=decay, use_warmup=True, warmup_power=3 / 4)
    average.requires_grad_(False)  # no optimiser or DDP gradient sync touches it
    return average


def set_cosine_rates(module: L.LightningModule) -> list[float]:
    """Sets each optimiser's rate to its base times the cosine factor of the module's epoch (from
    the base to 0 over the trainer's epochs); returns the rates."""
    factor = 0.5 * (1 + math.cos(math.pi * module.current_epoch / max(1, module.trainer.max_epochs)))
    for optimizer in module.optimizers():
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
    return [optimizer.param_groups[0]["lr"] for optimizer in module.optimizers()]


def tell_samplers_the_epoch(trainer: L.Trainer) -> None:
    """Order and augmentation are functions of (seed, epoch): told at each epoch's start, not
    counted, so a resumed run sees the batches of the uninterrupted one. Under DDP Lightning wraps
    the sampler and tells only the wrapper its epoch."""
    loaders = trainer.train_dataloader
    for loader in loaders.values() if isinstance(loaders, dict) else [loaders]:
        sampler = getattr(loader, "sampler", None)
        sampler = getattr(getattr(sampler, "dataset", None), "_sampler", sampler)
        if isinstance(sampler, EpochSampler):
            sampler.set_epoch(trainer.current_epoch)
        if isinstance(getattr(loader, "batch_sampler", None), MixedBatchSampler):  # data.synthetic
            loader.batch_sampler.set_epoch(trainer.current_epoch)


def rejected(loss: torch.Tensor, parameters: Any) -> torch.Tensor:
    """1.0 (on the device, without waiting for it) when `loss` or any gradient is NaN or infinite,
    else 0.0: the `found_inf` a fused optimizer reads to skip its step. Under DDP the ranks agree,
    or their weights would drift apart."""
    flag = (~torch.isfinite(loss.detach())).float()
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if gradients:
        torch._amp_foreach_non_finite_check_and_unscale_(gradients, flag, torch.ones((), device=flag.device))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) random states as tensors and plain data, so that a
    checkpoint holding them still loads with `weights_only=True`."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached)}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(tuple(item if not isinstance(item, list) else tuple(item) for item in states["python"]))
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def build_dataloaders(config: Config, class_stats: ClassStats | None = None) -> tuple[DataLoader | CombinedLoader,
                                                                                     DataLoader]:
    """The training loader (with `semi.mode`, a CombinedLoader of labelled and unlabelled batches,
    as many of each per epoch as the labelled set gives) and the validation loader.
    `class_stats` (the labelled masks', `labelled_class_stats`) steers data.rare_class_crops; counted
    here when not given."""
    data, train = config.data, config.train
    mean, std = data.normalization()
    encoding = MaskEncoding.from_config(data)
    splits, hidden = training_pairs(config)
    if hidden:
        log.info("labelled: %d of the training images (--labeled-fraction %s); the other %d have their masks "
                 "hidden", len(splits["train"]), data.labeled_fraction, len(hidden))
    if data.rare_class_crops and class_stats is None:
        class_stats = labelled_class_stats(config)
    train_set = SegmentationDataset(
        splits["train"],
        build_train_transform(data.augment, data.size, data.resize, mean, std, data.rotations, data.ignore_index,
                              scale_range=data.scale_range),
        data.in_channels, encoding, augment_seed=train.seed,
        class_stats=class_stats if data.rare_class_crops else None,
        rare_class_crops=data.rare_class_crops)
    val_set = SegmentationDataset(splits["val"], EvalTransform(data), data.in_channels, encoding)
    loader_args = dict(num_workers=data.num_workers, persistent_workers=data.num_workers > 0)
    # Masks at their stored sizes, which may differ: one per batch.
    val_batch = 1 if data.validates_native else train.batch_size
    # With train.min_epoch_steps an epoch cycles through a small set, several passes per epoch.
    samples = max(len(train_set), (train.min_epoch_steps or 0) * train.batch_size)
    drop_last = samples > train.batch_size
    sampler = EpochSampler(len(train_set), train.seed, length=samples)
    train_loader = (mixed_loader(config, train_set, samples // train.batch_size, loader_args) if data.synthetic else
                    DataLoader(train_set, batch_size=train.batch_size, sampler=sampler, drop_last=drop_last,
                               **loader_args))
    val_loader = DataLoader(val_set, batch_size=val_batch, shuffle=False, **loader_args)
    items = hidden + (find_unlabeled(data.unlabeled, data.root) if data.unlabeled else [])
    if config.semi.mode == "none" or not items:
        return train_loader, val_loader
    unlabeled_set = UnlabeledDataset(
        items, build_weak_transform(data.augment, data.size, data.resize, data.rotations, data.ignore_index,
                                    data.scale_range),
        data, encoding, augment_seed=train.seed)
    batch_u = config.semi.unlabeled_batch_size or train.batch_size
    # Cycles through the unlabelled images across epochs: each epoch takes as many batches as
    # the labelled set gives, so step budgets compare with labelled-only training.
    unlabeled_sampler = EpochSampler(len(unlabeled_set), train.seed + 1, length=len(train_loader) * batch_u)
    unlabeled_loader = DataLoader(unlabeled_set, batch_size=batch_u, sampler=unlabeled_sampler, drop_last=True,
                                  **loader_args)
    log.info("unlabelled: %d images, %d per step", len(unlabeled_set), batch_u)
    return CombinedLoader({"labeled": train_loader, "unlabeled": unlabeled_loader}, mode="min_size"), val_loader


def mixed_loader(config: Config, real: SegmentationDataset, steps: int, loader_args: dict) -> DataLoader:
    """The training loader with data.synthetic: `steps` batches an epoch, as without synthetic
    pairs, each holding data.synthetic_ratio of them (see `segan.data.synthetic`)."""
    data, train = config.data, config.train
    devices = device_count(train.devices)
    if devices is None and train.accelerator in ("auto", "gpu", "cuda"):  # "auto" takes every GPU there is
        devices = max(1, torch.cuda.device_count())
    if (devices or 1) > 1:
        raise ValueError("--synthetic does not run on more than one device yet; train with --devices 1")
    folder = Path(data.synthetic) if Path(data.synthetic).is_absolute() else Path(data.root) / data.synthetic
    pairs = read_synthetic(folder, data.classes, data.ignore_index)
    synthetic = SegmentationDataset(pairs, real.transform, data.in_channels,
                                    synthetic_encoding(data.num_classes, data.ignore_index), augment_seed=train.seed + 2)
    real_per_batch, synthetic_per_batch = batch_make_up(train.batch_size, data.synthetic_ratio)
    sampler = MixedBatchSampler(EpochSampler(len(real), train.seed, length=max(1, steps) * real_per_batch), len(real),
                                len(synthetic), real_per_batch, synthetic_per_batch, train.seed + 2)
    log.info("synthetic: %d pairs from %s, %d of every %d images a step", len(synthetic), folder, synthetic_per_batch,
             train.batch_size)
    return DataLoader(MixedDataset(real, synthetic), batch_sampler=sampler, **loader_args)


@dataclass
class TrainResult:
    """What `train` returns and writes to `RUN/summary.json`."""

    run_dir: str
    best_val_iou: float
    best_val_dice: float
    best_epoch: int
    epochs: int
    steps: int  # training iterations: batches trained on (one G step and, when adversarial, one D step each)
    wall_time_s: float
    precision: str = "32-true"  # what train.precision resolved to on this machine (auto: segan.hardware)
    stopped: str | None = None  # why training ended before its last epoch, if it did
    nonfinite_batches_skipped: int = 0
    d_steps_skipped: int = 0  # discriminator steps left out while it won outright
    # last epoch's unlabelled figures (semi-supervised runs): pseudo-label share and precision,
    # D's loss on unlabelled and labelled inputs, the unlabelled loss
    semi: dict[str, float] | None = None
    environment: dict[str, Any] | None = None  # versions, processor, threads (segan.hardware.describe)
    time_budget: dict[str, Any] | None = None  # how a train.time_budget was spent (segan.budget.TimeBudget.summary)
    # train.ema_decay: the best epoch's IoU of the raw and the averaged weights, and which was exported
    ema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training: the state was saved to last.ckpt."""


class RunExistsError(ValueError):
    """`train.out` already holds a run that a new run would overwrite."""


class ResumeError(ValueError):
    """A resume that cannot continue the run as it was; nothing in the run folder was changed."""


# What a resume may change: how long and on what the run goes on, and where its data now lies.
# Anything else (model, classes, losses, augmentation, optimiser) would make it another run.
RESUMABLE_SETTINGS = frozenset({"train.epochs", "train.time_budget", "train.accelerator", "train.devices", "train.out",
                                "train.checkpoint_every_n_steps", "train.progress_png", "train.validate_every", "train.compile",
                                "data.num_workers",
                                "data.root"})


class LastCheckpoint(Checkpoint):
    """Keeps `last.ckpt` current: after every epoch whatever its score, every `every_n_steps`
    batches when set, and at the batch where Ctrl-C or an error stopped the run. Written through
    the trainer's `AtomicCheckpointIO`, so a kill at any moment leaves a whole file.

    A `Checkpoint`, so that Lightning calls its epoch end after the module's and after
    `BestCheckpoint`'s (listed before it): the epoch's file then holds the epoch's best score and
    the module's epoch-end state, and a resumed run compares with the right best."""

    def __init__(self, path: Path, every_n_steps: int | None = None) -> None:
        self.path = path
        self.every_n_steps = every_n_steps
        self.trained_this_session = False
        self.epochs_saved = 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.trained_this_session = True
        done = trainer.fit_loop.epoch_loop.batch_progress.total.processed
        if self.every_n_steps and done % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self.epochs_saved += 1

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        # Before this session's first batch the state on disk is already the latest one; saving
        # now would write a model that has not been restored yet over it.
        if self.trained_this_session:
            trainer.save_checkpoint(self.path, weights_only=False)
            log.warning("training state saved to %s", self.path)


class ValidationCadence(Callback):
    """Validates the first epoch, every `every`-th after it, and always the last one: the trainer's
    last epoch, one the time budget will end the run after (`planner`, asked at the epoch's last
    batch, as its plan may shrink), or one stopped inside (the budget ran out, or non-finite
    losses). The first is validated early because a time budget plans with its validation time.

    It sets Lightning's `check_val_every_n_epoch` per epoch: 1 where this epoch validates, else
    a period no epoch reaches. `BestCheckpoint` then saves at the end of validated epochs only
    (Lightning's ModelCheckpoint saves at an epoch's end when that setting is 1, else after a
    validation), so an epoch that was not validated never inherits the last one's score."""

    NEVER = 1 << 30

    def __init__(self, every: int, planner: budget.TimeBudget | None = None) -> None:
        self.every = every
        self.planner = planner

    def validates(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.every == 0 or epoch + 1 >= last_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        validates = self.validates(trainer.current_epoch, trainer.max_epochs)
        trainer.check_val_every_n_epoch = 1 if validates else self.NEVER

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, module)  # a run resumed inside an epoch does not start it again

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.check_val_every_n_epoch == 1 or self.every == 1:
            return
        # should_stop: set by the budget's callback or the non-finite guard, listed before this one
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if trainer.should_stop or (last_batch and self.planner is not None
                                   and self.planner.ends_after_this_epoch(trainer)):
            trainer.check_val_every_n_epoch = 1


class BestCheckpoint(ModelCheckpoint):
    """`best.ckpt` by a validation score (a segmenter's IoU; `segan synth`'s L1, lowest best),
    whose saved state names files relative to the run folder, so that a moved or copied run
    resumes with its best score and file (Lightning stores absolute paths and forgets the best
    score when the folder changed)."""

    PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def __init__(self, dirpath: Path, monitor: str = "val/iou", mode: str = "max") -> None:
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                         save_last=False, enable_version_counter=False)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({key: Path(state[key]).name if state[key] else "" for key in self.PATHS})
        state["best_k_models"] = {Path(path).name: score for path, score in state["best_k_models"].items()}
        state["dirpath"] = "."
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Every file lives in the checkpoint folder: its name is enough, wherever the run was.
        def here(path: str) -> str:
            return os.path.join(self.dirpath, Path(path).name) if path else ""
        state = dict(state_dict, dirpath=self.dirpath)
        state.update({key: here(state.get(key, "")) for key in self.PATHS})
        state["best_k_models"] = {here(path): score for path, score in state.get("best_k_models", {}).items()}
        super().load_state_dict(state)


def epoch_end_callbacks(config: Config, run_dir: Path) -> tuple[BestCheckpoint, LastCheckpoint, list[Callback]]:
    """What a run does at each epoch's end besides validating: `best.ckpt`, `last.ckpt`, and the
    pictures (TensorBoard's validation images, `progress.png`). `segan.plan` times them too."""
    pictures = [ValidationImages(config)] + ([ProgressPlot(run_dir)] if config.train.progress_png else [])
    return (BestCheckpoint(run_dir / "checkpoints"),
            LastCheckpoint(run_dir / "checkpoints" / "last.ckpt", config.train.checkpoint_every_n_steps), pictures)


def device_count(devices: int | str | list[int] | None) -> int | None:
    """How many devices `train.devices` names: a count, a list of indices, or None for "auto"."""
    if devices in ("auto", None):
        return None
    return len(devices) if isinstance(devices, list) else int(devices)


def build_trainer(config: Config, run_dir: Path, callbacks: list[Callback], **trainer_args: Any) -> L.Trainer:
    """The run's Lightning trainer; `trainer_args` override its arguments (`segan.plan`'s probe)."""
    train = config.train
    strategy: Any = "auto"
    devices = train.devices
    if (device_count(devices) or 1) > 1:
        from lightning.pytorch.strategies import DDPStrategy
        # The D step leaves G's parameters unused and vice versa.
        strategy = DDPStrategy(find_unused_parameters=True)
        if train.compile is True:
            # Compile each network whole, as a single process does, rather than split at DDP's
            # gradient buckets: the split only overlaps all-reduce with backward, which segan's small
            # networks on a few devices hardly use, and whole graphs reuse the code that inductor
            # cached on disk for a single-process run of the same networks (tests/test_reliability.py).
            import torch._dynamo
            torch._dynamo.config.optimize_ddp = False
    return L.Trainer(**{**dict(
        default_root_dir=str(run_dir),
        max_epochs=train.epochs if train.time_budget is None else budget.UNPLANNED,
        accelerator=train.accelerator,
        devices=devices,
        strategy=strategy,
        precision=resolve_training_precision(train.precision, train.accelerator),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        # One CSV per session (Lightning deletes an existing metrics.csv); `merge_metrics` joins them.
        logger=[CSVLogger(str(run_dir), name="logs"),
                TensorBoardLogger(str(run_dir), name="tensorboard", version="")],
        log_every_n_steps=10,
        deterministic=False,
        enable_model_summary=False,
    ), **trainer_args})


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds (part of) a segan run: its config or its checkpoints."""
    return (folder / "config.yaml").is_file() or (folder / "checkpoints").is_dir() or (folder / "generator").is_dir()


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Whole epochs a checkpoint has trained (a mid-epoch one does not count its partial epoch)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def check_resume(config: Config, run_dir: Path) -> tuple[dict[str, Any], Config]:
    """Everything a resume needs, read and checked before anything is written; returns last.ckpt
    and the run's own config.

    Raises:
        ResumeError: no checkpoint, an unreadable config.yaml, settings that would change the
            run (each named with its value in the run and the value given), or nothing left to train.
        CheckpointError: a damaged or foreign last.ckpt.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ResumeError(f"cannot resume: {last} does not exist (was the run started with --out {run_dir}?)")
    try:
        saved = Config.load(run_dir / "config.yaml")
    except (OSError, ValueError) as error:
        raise ResumeError(f"cannot resume {run_dir}: its config.yaml cannot be read ({error}); the run folder was "
                          "not changed") from None
    saved.data.mean, saved.data.std = saved.data.normalization()
    given = Config.from_dict(config.to_dict())
    given.data.mean, given.data.std = given.data.normalization()
    if isinstance(given.loss.class_weights, str) and isinstance(saved.loss.class_weights, list):
        given.loss.class_weights = saved.loss.class_weights  # the run recorded what the name gave at its start
    before, after = saved.flat(), given.flat()
    changed = sorted(key for key in before if key not in RESUMABLE_SETTINGS and before[key] != after.get(key))
    if changed:
        details = "; ".join(f"{key}: {before[key]!r} in the run, {after.get(key)!r} given" for key in changed)
        raise ResumeError(f"cannot resume {run_dir} with other settings ({details}). A resume continues the run "
                          f"as it was configured; only {', '.join(sorted(RESUMABLE_SETTINGS))} may change. Drop "
                          "those flags, or start a new run with --out NEW_FOLDER. The run folder was not changed")
    checkpoint = load_checkpoint(last)  # a damaged file is reported here, by name, not deep inside Lightning
    done = epochs_done(checkpoint)
    if config.train.time_budget is not None:
        allowed = parse_duration(config.train.time_budget)
        spent = checkpoint.get("callbacks", {}).get("TimeBudget")
        if spent and spent["epoch_s"] and budget.last_epoch(allowed, spent["spent_s"], spent["epoch_s"],
                                                            spent["validation_s"], done,
                                                            config.train.validate_every) <= done:
            raise ResumeError(f"{run_dir} has already spent {spent['spent_s']:.0f} s of its {allowed:.0f} s time "
                              f"budget, and another epoch (about {budget.epoch_estimate(spent['epoch_s']):.0f} s) "
                              "does not fit: nothing to resume. To train it longer, give a larger --time-budget "
                              "(the schedule is re-planned for it)")
    elif done >= config.train.epochs:
        raise ResumeError(f"{run_dir} has already trained {done} of {config.train.epochs} epochs: nothing to resume. "
                          f"To train it longer, give --epochs with more than {done} (the learning-rate schedule is "
                          "rebuilt for the new end)")
    return checkpoint, saved


def train(config: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Trains a GAN segmenter and writes the run folder `config.train.out`.

    The run folder holds `config.yaml`, `checkpoints/{best,last}.ckpt` (full training state),
    `generator/` (the best generator, loadable by `segmentation_models_pytorch.from_pretrained`),
    `metrics.csv`, TensorBoard logs and `summary.json`. Every check (settings, data, resume,
    existing run) runs before the first file is written.

    Args:
        config: all settings; `config.data.root` and `config.train.out` must be set.
        resume: continue from `out/checkpoints/last.ckpt` (weights, optimiser states, counters,
            random states, epoch); only `RESUMABLE_SETTINGS` may differ from the run's config.
        overwrite: replace a run already in `out`. The old run is set aside and restored if the
            new one fails before its first epoch ends; after that it is deleted.

    Raises:
        RunExistsError: `out` holds a run and neither `resume` nor `overwrite` was given.
        ResumeError, CheckpointError: a resume that cannot go on (the run folder is unchanged).
    """
    started_at = budget.clock()  # a time budget counts the data check and loading too
    run_dir = Path(config.train.out)
    checkpoint_state, saved = check_start(config, run_dir, resume, overwrite)
    first_rank = rank_zero_only.rank == 0
    class_stats = labelled_class_stats(config)
    resolve_class_weights(config, class_stats)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    train_loader, val_loader = build_dataloaders(config, class_stats)
    # Record the normalisation actually used: prediction must apply the same.
    config.data.mean, config.data.std = config.data.normalization()
    module = _module(config, checkpoint_state, run_dir)
    del checkpoint_state

    aside = open_run(config, saved, overwrite)
    if first_rank and class_stats is not None:  # what the class weights and rare-class crops came from
        class_stats.save(run_dir / "class_stats.json", config.loss.class_weights)
    fitted = fit_run(config, module, (train_loader, val_loader), epoch_end_callbacks(config, run_dir), resume, aside,
                     started_at)
    trainer, planner = fitted.trainer, fitted.planner
    semi_figures = _semi_figures(trainer)  # before validating again, which clears the fit's metrics

    # Re-score the best checkpoint: its IoU and Dice come from one and the same pass.
    scores = trainer.validate(module, val_loader, ckpt_path=str(fitted.best_path), weights_only=True,
                              verbose=False)[0]
    # ^ also the last row of metrics.csv, under best/iou and best/dice
    best = load_checkpoint(fitted.best_path)
    result = _result(config, trainer, module, scores, best, run_dir, fitted.wall_s, semi_figures)
    if trainer.is_global_zero:
        merge_metrics(run_dir)
        ema_chosen = scores.get("best/ema_chosen", 0.0) == 1.0
        export_generator(config, best["state_dict"], run_dir / "generator",
                         prefix="generator_ema.module." if ema_chosen else "generator.")
        if planner is not None:
            result.time_budget = planner.summary(result.epochs)
        atomic_write(run_dir / "summary.json", (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return result


@dataclass
class Fitted:
    """What `fit_run` leaves: the trainer, the best checkpoint's file (last.ckpt if no epoch was
    validated), the time budget's callback (None without one) and the fit's wall time."""

    trainer: L.Trainer
    best_path: Path
    planner: budget.TimeBudget | None
    wall_s: float


def open_run(config: Config, saved: Config | None, overwrite: bool) -> Path | None:
    """Creates the run folder and writes its config.yaml (a resume rewrites it only where it
    changed what a resume may change). A run that --overwrite replaces is first set aside; returns
    where (None if nothing was)."""
    run_dir = Path(config.train.out)
    first_rank = rank_zero_only.rank == 0
    aside = _set_aside(run_dir) if first_rank and overwrite and holds_run(run_dir) else None
    run_dir.mkdir(parents=True, exist_ok=True)
    recorded = ("epochs", "time_budget", "validate_every", "compile")  # what a resume may change and the run keeps
    if first_rank and (saved is None or any(getattr(saved.train, key) != getattr(config.train, key) for key in recorded)):
        config.save(run_dir / "config.yaml")
    return aside


def fit_run(config: Config, module: L.LightningModule, loaders: tuple,
            epoch_end: tuple[BestCheckpoint, LastCheckpoint, list[Callback]], resume: bool, aside: Path | None,
            started_at: float, command: str = "segan train") -> Fitted:
    """Fits `module` as every segan run does (`train`, `segan synth train`): the time budget
    counted from `started_at`, the validation cadence, the epoch-end callbacks, resume from
    last.ckpt, and a replaced run restored if this one fails before its first epoch ends."""
    best_checkpoint, last_checkpoint, pictures = epoch_end
    planner = (budget.TimeBudget(parse_duration(config.train.time_budget), started_at, config.train.validate_every)
               if config.train.time_budget is not None else None)
    # The planner goes first, so that last.ckpt holds the epoch it has just measured; the time
    # between two epoch ends still holds one of everything the other callbacks do.
    callbacks = [*([planner] if planner else []), ValidationCadence(config.train.validate_every, planner), best_checkpoint,
                 last_checkpoint, *pictures]
    run_dir = Path(config.train.out)
    trainer = build_trainer(config, run_dir, callbacks)
    started = time.perf_counter()
    _fit(trainer, module, loaders, resume, last_checkpoint, aside, run_dir, command)
    return Fitted(trainer, Path(best_checkpoint.best_model_path or last_checkpoint.path), planner,
                  time.perf_counter() - started)


def check_start(config: Config, run_dir: Path, resume: bool, overwrite: bool) -> tuple[dict | None, Config | None]:
    """Every check before the first file is written: the settings (with the pretrained encoder's
    normalisation filled in), the resume, and a run already in `run_dir`. Returns the checkpoint to
    resume from and the run's saved config (both None without `resume`)."""
    if config.data.mean is None and config.data.std is None:
        from .models.pretrained import normalization
        weights_normalization = normalization(config.generator.encoder_name, config.generator.encoder_weights,
                                              config.data.in_channels)
        if weights_normalization is not None:  # the pretrained encoder's own, before anything reads data
            config.data.mean, config.data.std = weights_normalization
    validate(config)
    checkpoint_state, saved = check_resume(config, run_dir) if resume else (None, None)
    if saved is not None and isinstance(config.loss.class_weights, str):
        config.loss.class_weights = saved.loss.class_weights  # not computed again from today's data
    # Under DDP Lightning starts the other ranks by running this command again, after rank 0 has
    # begun writing the run: the run folder is rank 0's alone.
    if rank_zero_only.rank == 0 and not resume and holds_run(run_dir) and not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a run (config.yaml, checkpoints/); nothing was changed. Continue it with "
            f"--resume --out {run_dir}, write the new run elsewhere with --out NEW_FOLDER, or replace it with "
            "--overwrite (the old run is kept until the new one has finished its first epoch)")
    return checkpoint_state, saved


def _module(config: Config, checkpoint_state: dict | None, run_dir: Path) -> SeganModule:
    """The module, with the resumed checkpoint's weights loaded in memory: a checkpoint of another
    model is refused before anything is written."""
    module = SeganModule(config.to_dict())
    if checkpoint_state is not None:
        try:
            module.load_state_dict(checkpoint_state["state_dict"])
        except RuntimeError as error:
            raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.ckpt'} was written for another model than "
                                  f"{run_dir / 'config.yaml'} describes (architecture, encoder or class count "
                                  f"differ): {str(error).splitlines()[0]}. The run folder was not changed") from None
    return module


def _fit(trainer: L.Trainer, module: L.LightningModule, loaders: tuple, resume: bool, last_checkpoint: LastCheckpoint,
         aside: Path | None, run_dir: Path, command: str = "segan train") -> None:
    """Fits; a run replaced with --overwrite (set `aside`) comes back if the new one fails before
    its first epoch ends, and is deleted once one has; Ctrl-C says how to resume."""
    last = last_checkpoint.path
    try:
        trainer.fit(module, *loaders, ckpt_path=str(last) if resume else None, weights_only=True)
    except BaseException as error:
        if aside is not None and not last_checkpoint.epochs_saved:
            shutil.rmtree(run_dir, ignore_errors=True)
            os.replace(aside, run_dir)
            log.warning("the new run failed before its first epoch ended; the earlier run in %s is restored", run_dir)
            aside = None
        if isinstance(error, SystemExit) and trainer.interrupted:  # Lightning exits on Ctrl-C after on_exception
            raise TrainingInterrupted(f"training interrupted at epoch {trainer.current_epoch}, step "
                                      f"{trainer.global_step}; state saved to {last}. Continue with: {command} "
                                      f"--resume --out {run_dir}") from None
        raise
    finally:
        if aside is not None and last_checkpoint.epochs_saved:
            shutil.rmtree(aside, ignore_errors=True)


def _semi_figures(trainer: L.Trainer) -> dict[str, float]:
    """The fit's last epoch's unlabelled figures (pseudo-label share and precision, losses)."""
    figures = {name.removeprefix("semi/").removesuffix("_epoch"): round(float(value), 4)
               for name, value in trainer.callback_metrics.items()
               if name.startswith("semi/") and not name.endswith("_step")}
    if figures and "train/d_loss" in trainer.callback_metrics:
        figures["d_loss_labeled"] = round(float(trainer.callback_metrics["train/d_loss"]), 4)
    return figures


def _result(config: Config, trainer: L.Trainer, module: SeganModule, scores: dict, best: dict, run_dir: Path,
            wall: float, semi_figures: dict[str, float]) -> TrainResult:
    """What the run did: the best checkpoint's re-scored figures, its counters and its last
    epoch's unlabelled figures."""
    return TrainResult(
        run_dir=str(run_dir),
        best_val_iou=round(float(scores["best/iou"]), 4),
        best_val_dice=round(float(scores["best/dice"]), 4),
        best_epoch=int(best["epoch"]),
        epochs=trainer.current_epoch,
        # Lightning's global_step counts optimizer.step() calls (G and D, minus skipped ones);
        # report training iterations: batches trained on, over all sessions of the run.
        steps=trainer.fit_loop.epoch_loop.batch_progress.total.completed,
        wall_time_s=round(wall, 1),
        precision=str(trainer.precision),
        stopped=module.stop_reason,
        nonfinite_batches_skipped=module.nonfinite_skipped,
        d_steps_skipped=module.d_steps_skipped,
        semi=semi_figures or None,
        ema={"decay": config.train.ema_decay, "raw_iou": round(float(scores["best/raw_iou"]), 4),
             "ema_iou": round(float(scores["best/ema_iou"]), 4),
             "exported": "ema" if scores["best/ema_chosen"] == 1.0 else "raw"} if "best/ema_chosen" in scores else None,
        environment=describe(training_device(config.train.accelerator)),
    )


def _set_aside(run_dir: Path) -> Path:
    """Moves a run that `--overwrite` replaces beside it, to be restored if the new run fails early."""
    aside = run_dir.with_name(f".{run_dir.name}.replaced")
    if aside.exists():
        raise RunExistsError(f"{aside} is left from an earlier --overwrite that did not finish; it holds the run "
                             f"that was to be replaced. Move it back to {run_dir} or delete it, then try again")
    os.replace(run_dir, aside)
    return aside


def preflight(config: Config) -> ClassStats | None:
    """Reads every image and mask once before the first step (what `segan data check` does), so a
    bad file, a size mismatch or a mask value outside the classes stops the run now, not an hour in.
    Returns the training split's class statistics, counted in that pass."""
    from .data import DatasetLayoutError
    from .data.check import check_dataset
    started = time.perf_counter()
    report = check_dataset(config.data, progress=False)
    for warning in report.warnings:
        log.warning(warning)
    if not report.ok:
        shown = report.errors[:20]
        more = f"\n... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise DatasetLayoutError(f"the dataset has {len(report.errors)} problem(s); nothing was trained:\n"
                                 + "\n".join(shown) + more
                                 + f"\n(segan data check {config.data.root} --report FILE lists them all)")
    log.info("data checked: %s in %.1f s", ", ".join(f"{s.name} {s.pairs} pairs" for s in report.splits),
             time.perf_counter() - started)
    return next((split.class_stats for split in report.splits if split.class_stats is not None), None)


def labelled_class_stats(config: Config) -> ClassStats | None:
    """Checks the data (`preflight`) and returns the class statistics of the masks training may
    learn from: data.labeled_fraction hides the others."""
    stats = preflight(config)
    return None if stats is None else stats.subset([pair.image for pair in training_pairs(config)[0]["train"]])


def training_pairs(config: Config) -> tuple[dict[str, list[Pair]], list[UnlabeledItem]]:
    """The dataset's splits with the training one cut to its labelled part (data.labeled_fraction),
    and the training images whose masks that hides."""
    data = config.data
    splits = find_splits(data)
    hidden: list[UnlabeledItem] = []
    if data.labeled_fraction is not None and data.labeled_fraction < 1:
        splits["train"], hidden = split_labeled(splits["train"], data.labeled_fraction, data.split_seed)
    return splits, hidden


def resolve_class_weights(config: Config, stats: ClassStats | None) -> None:
    """Turns loss.class_weights given by name into the values computed from `stats` (the labelled
    training masks), in `config`, so the run's config.yaml records the values used."""
    method = config.loss.class_weights
    if not isinstance(method, str):
        return
    if stats is None or not stats.pixels.sum():
        raise ValueError(f"loss.class_weights {method}: the training masks hold no labelled pixels to count")
    config.loss.class_weights = stats.weights(method)
    log.info("class weights (%s): %s", method,
             ", ".join(f"{name} {weight}" for name, weight in zip(stats.classes, config.loss.class_weights)))


def export_generator(config: Config, state_dict: dict[str, torch.Tensor], out: Path,
                     prefix: str = "generator.") -> None:
    """Writes the generator whose weights are under `prefix` in a checkpoint's `state_dict` (the
    moving average's: "generator_ema.module.") in smp's `save_pretrained` layout (config.json +
    model.safetensors)."""
    generator = build_generator(config.generator, config.data.in_channels, config.data.num_classes,
                                load_encoder_weights=False)
    generator.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    generator.save_pretrained(str(out))
