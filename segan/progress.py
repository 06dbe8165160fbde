"""A run's log and pictures during training: `RUN/metrics.csv` joined from each session's log,
`RUN/progress.png` after every epoch, and a fixed set of validation images (image, truth,
prediction) in TensorBoard every epoch.

Both are Lightning callbacks that `segan.training.train` adds; they only read what the run
logs and predicts, and write on the first rank alone.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

from .config import Config

log = logging.getLogger(__name__)


def merge_metrics(run_dir: Path) -> Path:
    """Joins the per-session `logs/version_*/metrics.csv` into `RUN/metrics.csv`.

    A resumed session restarts from the last checkpoint, so rows an interrupted session logged
    at or after the resumed session's first step are replaced by the resumed session's rows.
    """
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


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def best_step(rows: list[dict[str, str]]) -> float | None:
    """The step of the epoch with the best validation IoU (the epoch `best.ckpt` holds)."""
    scored = [row for row in rows if row.get("val/iou")]
    return float(max(scored, key=lambda row: float(row["val/iou"]))["step"]) if scored else None


def write_progress(run_dir: Path, rows: list[dict[str, str]]) -> Path:
    """`RUN/progress.png`: the training curves of `segan.plots.training_curves`."""
    from .plots import save, training_curves
    return save(training_curves(rows, best_step(rows), title=f"{run_dir.name}: training progress"),
                run_dir / "progress.png")


class ProgressPlot(Callback):
    """Rewrites `RUN/progress.png` when an epoch's figures have all been logged: at the start of
    the next epoch and at the end of training. Reads the CSV logs of every session of the run, so
    a resumed run's picture covers it from its first step."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def redraw(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()  # the CSV logger buffers rows; the picture wants all of them
        try:
            write_progress(self.run_dir, read_metrics(merge_metrics(self.run_dir)))
        except (OSError, ValueError) as error:  # a picture must never stop training
            log.warning("progress.png not written: %s", error)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.redraw(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.redraw(trainer)


class ValidationImages(Callback):
    """Logs the first `count` validation images to TensorBoard after every validation epoch, one
    row each: the image, its truth and the prediction (class colours), under `val/images`."""

    def __init__(self, config: Config, count: int = 4, height: int = 160) -> None:
        self.config = config
        self.count = count
        self.height = height
        self.images: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.predicted: list[torch.Tensor] = []

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: dict,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        # The validation loader does not shuffle: the first images are the same every epoch.
        taken = sum(len(image) for image in self.images)
        # not the sanity check, nor the re-scoring of the best checkpoint after training
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if trainer.is_global_zero and fitting and taken < self.count:
            self.images.append(batch["image"][: self.count - taken].detach())
            self.masks.append(batch["mask"][: self.count - taken].detach())
            self.predicted.append(outputs["predicted"][: self.count - taken])  # the raw generator's

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        batches = list(zip(self.images, self.masks, self.predicted))
        self.images, self.masks, self.predicted = [], [], []
        board = next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)
        if board is None or not batches:
            return
        rows = []
        for image, mask, predicted in batches:  # (native validation: one whole image each)
            for i in range(len(image)):
                rows.append(self.row(image[i], mask[i], predicted[i]))
        width = max(row.shape[1] for row in rows)
        grid = np.concatenate([np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0))) for row in rows])
        board.experiment.add_image("val/images", grid, global_step=trainer.global_step, dataformats="HWC")

    def row(self, image: torch.Tensor, mask: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
        """image | truth | prediction, `height` pixels high, uint8 RGB."""
        import cv2

        from .batch_predict import colour_mask
        data = self.config.data
        mean, std = (np.asarray(v, np.float32) for v in data.normalization())
        picture = image.float().cpu().numpy().transpose(1, 2, 0) * std + mean
        picture = np.clip(picture * 255, 0, 255).astype(np.uint8)
        if picture.shape[2] != 3:
            picture = np.repeat(picture[:, :, :1], 3, axis=2)
        truth = mask.cpu().numpy()
        truth = np.where(truth == data.ignore_index, 0, truth)
        if picture.shape[:2] != truth.shape:  # data.val_native: the image at `size`, the masks as stored
            picture = cv2.resize(picture, truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
        panels = [picture, colour_mask(truth, data.binary), colour_mask(predicted.cpu().numpy(), data.binary)]
        width = round(picture.shape[1] * self.height / picture.shape[0])
        panels = [cv2.resize(np.ascontiguousarray(p), (width, self.height), interpolation=cv2.INTER_NEAREST)
                  for p in panels]
        return np.concatenate(panels, axis=1).astype(np.uint8)
