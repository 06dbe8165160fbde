"""Training: the LightningModule with the generator/discriminator step, and `train(config)`."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from . import metrics
from .checkpointing import AtomicCheckpointIO, CheckpointError, load_checkpoint
from .config import Config, validate
from .data import MaskEncoding, SegmentationDataset, find_splits
from .losses import AdversarialLoss, SegmentationLoss
from .models import build_discriminator, build_generator, labels, one_hot, output_channels, probabilities
from .transforms import build_eval_transform, build_train_transform, seed_worker

log = logging.getLogger(__name__)

INPUT_GUARDS = ("none", "smooth", "noise")
# Consecutive batches with a non-finite loss that are skipped before the run is stopped.
NONFINITE_PATIENCE = 10
# The discriminator "wins outright" when its loss, averaged over recent steps, falls below this
# (vanilla BCE: both sides classified with > 95% confidence). Its steps are then skipped until G
# catches up, since a perfect D gives G gradients that only push it off the data.
D_COLLAPSE_LOSS = 0.05
D_LOSS_MOMENTUM = 0.9


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
        if self.config.discriminator.input_guard not in INPUT_GUARDS:
            raise ValueError(f"unknown input_guard '{self.config.discriminator.input_guard}'; choose one of {INPUT_GUARDS}")
        self.automatic_optimization = False
        self.mask_channels = output_channels(data.num_classes)
        self.generator = build_generator(self.config.generator, data.in_channels, data.num_classes)
        self.discriminator = build_discriminator(self.config.discriminator, data.in_channels, self.mask_channels)
        self.segmentation_loss = SegmentationLoss(data.num_classes, data.ignore_index, loss.dice_weight, loss.ce_weight)
        self.adversarial_loss = AdversarialLoss(loss.adv_mode)
        self.val_confusion: torch.Tensor | None = None
        self.nonfinite_in_a_row = 0
        self.nonfinite_skipped = 0
        self.d_steps_skipped = 0
        self.d_loss_average: float | None = None
        self.stop_reason: str | None = None

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
        opt_g, opt_d = self.optimizers()
        image, mask = batch["image"], batch["mask"]
        logits = self.generator(image)
        fake = probabilities(logits)
        seg_loss = self.segmentation_loss(logits, mask)
        # Every rank must take the same decision, or DDP's gradient all-reduce waits forever.
        if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(seg_loss)), all=False):
            self.skip_nonfinite(opt_g, opt_d, "segmentation")
            return

        if self.adversarial:
            # D step: truth is real, the generator's current (detached) prediction is fake.
            with self.toggled_optimizer(opt_d):
                real_logits = self.discriminate(image, self.real_mask(mask, fake))
                fake_logits = self.discriminate(image, fake.detach())
                d_loss = 0.5 * (self.adversarial_loss(real_logits, True) + self.adversarial_loss(fake_logits, False))
                if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(d_loss)), all=False):
                    self.skip_nonfinite(opt_g, opt_d, "discriminator")
                    return
                average = float(d_loss.detach())
                if self.d_loss_average is not None:
                    average = D_LOSS_MOMENTUM * self.d_loss_average + (1 - D_LOSS_MOMENTUM) * average
                self.d_loss_average = average
                collapsed = self.trainer.strategy.reduce_boolean_decision(average < D_COLLAPSE_LOSS, all=False)
                opt_d.zero_grad()
                if collapsed:
                    self.d_steps_skipped += 1
                else:
                    self.manual_backward(d_loss)
                    opt_d.step()
            self.log_dict({"train/d_loss": d_loss.detach(),
                           "train/d_real": torch.sigmoid(real_logits.detach()).mean(),
                           "train/d_fake": torch.sigmoid(fake_logits.detach()).mean(),
                           "train/d_skipped": float(collapsed)})

        # G step: segmentation loss, plus fooling D once the supervised warm-up is over.
        with self.toggled_optimizer(opt_g):
            g_loss = seg_loss
            if self.adversarial and self.current_epoch >= self.config.loss.adv_warmup_epochs:
                adv_loss = self.adversarial_loss(self.discriminate(image, fake), True, for_discriminator=False)
                g_loss = seg_loss + self.config.loss.adv_weight * adv_loss
                self.log("train/adv_loss", adv_loss.detach())
            opt_g.zero_grad()
            if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(g_loss)), all=False):
                self.skip_nonfinite(opt_g, opt_d, "generator")
                return
            self.manual_backward(g_loss)
            opt_g.step()
        self.nonfinite_in_a_row = 0
        self.log_dict({"train/seg_loss": seg_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)

    def skip_nonfinite(self, opt_g, opt_d, which: str) -> None:
        """Leaves the weights as they are for a batch whose loss is NaN or infinite; stops the run
        after `NONFINITE_PATIENCE` such batches in a row (the best checkpoint stays as it was)."""
        opt_g.zero_grad()
        opt_d.zero_grad()
        self.nonfinite_in_a_row += 1
        self.nonfinite_skipped += 1
        log.warning("non-finite %s loss at epoch %d, batch %d: batch skipped (%d in a row)", which,
                    self.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.ready,
                    self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= NONFINITE_PATIENCE:
            self.stop_reason = (f"stopped: the {which} loss was NaN or infinite for {self.nonfinite_in_a_row} batches "
                                "in a row. Lower the learning rate (--lr, --d-lr), check the data with segan data "
                                "check, or try --precision 32-true; the best checkpoint is kept as it was")
            log.error(self.stop_reason)
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def on_validation_epoch_start(self) -> None:
        classes = self.config.data.num_classes
        self.val_confusion = torch.zeros(classes, classes, dtype=torch.long, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.generator(batch["image"])
        loss = self.segmentation_loss(logits, batch["mask"])
        self.log("val/loss", loss, sync_dist=True, batch_size=len(batch["image"]))
        confusion = metrics.confusion_matrix(labels(logits), batch["mask"], self.config.data.num_classes,
                                             self.config.data.ignore_index)
        self.val_confusion += confusion.sum(dim=0)

    def on_validation_epoch_end(self) -> None:
        confusion = self.trainer.strategy.reduce(self.val_confusion, reduce_op="sum")
        scores = metrics.summary(confusion.cpu(), self.config.data.binary)
        # `train` re-scores the best checkpoint once after fitting: that row says "best", not "val".
        prefix = "best" if self.trainer.state.fn == TrainerFn.VALIDATING else "val"
        # NaN (no foreground anywhere in the split) must not look like a best score.
        self.log_dict({f"{prefix}/{name}": 0.0 if math.isnan(value) else value for name, value in scores.items()},
                      prog_bar=True)

    def configure_optimizers(self):
        train = self.config.train
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        # beta1 = 0.5 as in pix2pix/DCGAN: momentum destabilises the adversarial game.
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=train.d_lr, betas=(0.5, 0.999))
        epochs = max(1, train.epochs)
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers


def build_dataloaders(config: Config) -> tuple[DataLoader, DataLoader]:
    data, train = config.data, config.train
    mean, std = data.normalization()
    encoding = MaskEncoding.from_config(data)
    splits = find_splits(data)
    train_set = SegmentationDataset(
        splits["train"],
        build_train_transform(data.augment, data.size, data.resize, mean, std, data.rotations, data.ignore_index,
                              seed=train.seed),
        data.in_channels, encoding)
    val_set = SegmentationDataset(
        splits["val"], build_eval_transform(data.size, data.resize, mean, std, data.ignore_index),
        data.in_channels, encoding)
    loader_args = dict(num_workers=data.num_workers, persistent_workers=data.num_workers > 0,
                       worker_init_fn=seed_worker)
    # Crop mode validates whole images, whose sizes may differ: one per batch.
    val_batch = train.batch_size if data.resize == "resize" else 1
    drop_last = len(train_set) > train.batch_size
    return (DataLoader(train_set, batch_size=train.batch_size, shuffle=True, drop_last=drop_last, **loader_args),
            DataLoader(val_set, batch_size=val_batch, shuffle=False, **loader_args))


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
    stopped: str | None = None  # why training ended before its last epoch, if it did
    nonfinite_batches_skipped: int = 0
    d_steps_skipped: int = 0  # discriminator steps left out while it won outright

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training: the state was saved to last.ckpt."""


class SaveOnException(Callback):
    """Saves the training state at the batch where Ctrl-C or an error stopped the run, to `path`
    (Lightning's OnExceptionCheckpoint deletes its file at teardown; this one is for resuming)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        trainer.save_checkpoint(self.path)
        log.warning("training state saved to %s", self.path)


def _trainer(config: Config, run_dir: Path, checkpoint: ModelCheckpoint) -> L.Trainer:
    train = config.train
    strategy: Any = "auto"
    devices = train.devices
    if devices not in ("auto", None) and int(devices) > 1:
        from lightning.pytorch.strategies import DDPStrategy
        # The D step leaves G's parameters unused and vice versa.
        strategy = DDPStrategy(find_unused_parameters=True)
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=train.epochs,
        accelerator=train.accelerator,
        devices=devices,
        strategy=strategy,
        precision=train.precision,
        # On Ctrl-C or any error, the state at that batch goes to last.ckpt, so --resume loses nothing.
        callbacks=[checkpoint, SaveOnException(Path(checkpoint.dirpath) / "last.ckpt")],
        plugins=[AtomicCheckpointIO()],
        # One CSV per session (Lightning deletes an existing metrics.csv); `merge_metrics` joins them.
        logger=[CSVLogger(str(run_dir), name="logs"),
                TensorBoardLogger(str(run_dir), name="tensorboard", version="")],
        log_every_n_steps=10,
        deterministic=False,
        enable_model_summary=False,
    )


def train(config: Config, resume: bool = False) -> TrainResult:
    """Trains a GAN segmenter and writes the run folder `config.train.out`.

    The run folder holds `config.yaml`, `checkpoints/{best,last}.ckpt` (full training state),
    `generator/` (the best generator, loadable by `segmentation_models_pytorch.from_pretrained`),
    `metrics.csv`, TensorBoard logs and `summary.json`.

    Args:
        config: all settings; `config.data.root` and `config.train.out` must be set.
        resume: continue from `out/checkpoints/last.ckpt` (epochs, steps, optimiser state).
    """
    run_dir = Path(config.train.out)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"cannot resume: {last} does not exist (was the run started with --out {run_dir}?)")
    if resume:
        load_checkpoint(last)  # a damaged file is reported here, by name, not deep inside Lightning
    if config.data.mean is None and config.data.std is None:
        from .models.pretrained import normalization
        weights_normalization = normalization(config.generator.encoder_name, config.generator.encoder_weights,
                                              config.data.in_channels)
        if weights_normalization is not None:  # the pretrained encoder's own, before anything reads data
            config.data.mean, config.data.std = weights_normalization
    validate(config)
    preflight(config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    train_loader, val_loader = build_dataloaders(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Record the normalisation actually used: prediction must apply the same.
    config.data.mean, config.data.std = config.data.normalization()
    config.save(run_dir / "config.yaml")

    module = SeganModule(config.to_dict())
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/iou", mode="max",
                                 save_last=True, save_top_k=1, enable_version_counter=False)
    trainer = _trainer(config, run_dir, checkpoint)
    started = time.perf_counter()
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None, weights_only=True)
    except SystemExit:
        if trainer.interrupted:  # Lightning saved the state (OnExceptionCheckpoint) and exits on Ctrl-C
            raise TrainingInterrupted(f"training interrupted at epoch {trainer.current_epoch}, step "
                                      f"{trainer.global_step}; state saved to {last}. Continue with: segan train "
                                      f"--resume --out {run_dir}") from None
        raise
    except RuntimeError as error:
        if "state_dict" in str(error) or "size mismatch" in str(error):
            raise CheckpointError(f"{last} was written for another model than {run_dir / 'config.yaml'} describes "
                                  f"(architecture, encoder or class count differ): {str(error).splitlines()[0]}") from None
        raise
    wall = time.perf_counter() - started

    best_path = Path(checkpoint.best_model_path or last)
    # Re-score the best checkpoint: its IoU and Dice come from one and the same pass.
    scores = trainer.validate(module, val_loader, ckpt_path=str(best_path), weights_only=True, verbose=False)[0]
    # ^ also the last row of metrics.csv, under best/iou and best/dice
    best = load_checkpoint(best_path)
    result = TrainResult(
        run_dir=str(run_dir),
        best_val_iou=round(float(scores["best/iou"]), 4),
        best_val_dice=round(float(scores["best/dice"]), 4),
        best_epoch=int(best["epoch"]),
        epochs=trainer.current_epoch,
        # Lightning's global_step counts optimizer.step() calls (G and D, minus skipped ones);
        # report training iterations: batches trained on, over all sessions of the run.
        steps=trainer.fit_loop.epoch_loop.batch_progress.total.completed,
        wall_time_s=round(wall, 1),
        stopped=module.stop_reason,
        nonfinite_batches_skipped=module.nonfinite_skipped,
        d_steps_skipped=module.d_steps_skipped,
    )
    if trainer.is_global_zero:
        merge_metrics(run_dir)
        export_generator(config, best["state_dict"], run_dir / "generator")
        (run_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def preflight(config: Config) -> None:
    """Reads every image and mask once before the first step (what `segan data check` does), so a
    bad file, a size mismatch or a mask value outside the classes stops the run now, not an hour in."""
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
                                 + "\n".join(shown) + more + f"\n(segan data check {config.data.root} shows them all)")
    log.info("data checked: %s in %.1f s", ", ".join(f"{s.name} {s.pairs} pairs" for s in report.splits),
             time.perf_counter() - started)


def merge_metrics(run_dir: Path) -> Path:
    """Joins the per-session `logs/version_*/metrics.csv` into `RUN/metrics.csv`.

    A resumed session restarts from the last checkpoint, so rows an interrupted session logged
    at or after the resumed session's first step are replaced by the resumed session's rows.
    """
    import csv
    rows: list[dict] = []
    header: list[str] = []
    versions = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    for path in versions:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            session = list(reader)
            header += [name for name in reader.fieldnames or [] if name not in header]
        if session:
            first_step = min(int(row["step"]) for row in session)
            rows = [row for row in rows if int(row["step"]) < first_step] + session
    target = run_dir / "metrics.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return target


def export_generator(config: Config, state_dict: dict[str, torch.Tensor], out: Path) -> None:
    """Writes the generator in smp's `save_pretrained` layout (config.json + model.safetensors)."""
    generator = build_generator(config.generator, config.data.in_channels, config.data.num_classes,
                                load_encoder_weights=False)
    prefix = "generator."
    generator.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    generator.save_pretrained(str(out))
