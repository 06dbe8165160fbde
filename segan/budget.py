"""Training to a time budget (`train.time_budget`, `segan train --time-budget 30m`).

The budget is spent in whole epochs. After every epoch `TimeBudget` measures how long an epoch
takes (training and checkpoints: everything between two epoch ends but validation, which it
measures apart) and sets the trainer's last epoch to the last one that fits, counting a
validation every `train.validate_every` epochs and keeping back the time the run needs after its
last epoch (validating it, re-scoring and exporting the best checkpoint). The cosine
learning-rate schedule reads that last epoch (`SeganModule.on_train_epoch_start`), so the rate
reaches its end when the budget does; the first epoch needs no plan, as the schedule starts at
its full rate whatever the end.

The budget counts from the moment `train` starts (the data check and loading included) and
carries across `--resume` through the checkpoint; the time between sessions is not counted.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)

# Read through this name, so that tests can run a budgeted training on a clock of their own
# (a test must not pass or fail by how fast the machine is).
clock = time.monotonic
# An epoch count no budget reaches: the trainer's limit until the first epoch has been measured.
UNPLANNED = 1_000_000
# Epoch times averaged for the plan: recent ones, so that a run that slows down (a busy
# machine) plans with what epochs take now.
RECENT = 5
# Under DDP, batches between two checks of the budget inside an epoch (each check is a broadcast).
CUT_CHECK_EVERY = 20


def epoch_estimate(epoch_s: list[float]) -> float:
    """Seconds the next epoch will take, from those measured."""
    # The first epoch also pays for warm-ups (allocations, worker start, first checkpoint).
    steady = epoch_s[1:] or epoch_s
    return statistics.fmean(steady[-RECENT:])


def reserve(validation_s: list[float], validations: float = 1.5) -> float:
    """Seconds kept for after the last epoch, where the best checkpoint is validated once more
    (0 before a validation has been timed)."""
    return validations * statistics.fmean(validation_s[-RECENT:]) if validation_s else 0.0


def last_epoch(budget_s: float, spent_s: float, epoch_s: list[float], validation_s: list[float], done: int,
               every: int = 1) -> int:
    """The last whole epoch that ends within the budget, counting `done` epochs trained so far
    (`done` itself when not one more fits). `epoch_s` are epochs without their validation; one in
    `every` epochs is validated, and the last one always is."""
    validation = statistics.fmean(validation_s[-RECENT:]) if validation_s else 0.0
    left = budget_s - spent_s - reserve(validation_s) - (1 - 1 / every) * validation
    return done + max(0, math.floor(left / (epoch_estimate(epoch_s) + validation / every)))


class TimeBudget(Callback):
    """Plans the number of epochs from their measured length so that the run, its final scoring
    included, ends within `budget_s` seconds.

    Args:
        budget_s: the budget in seconds.
        origin: `clock()` when this training session started (before the data check).
        every: `train.validate_every`: one epoch in `every` is validated, and the last one.
    """

    def __init__(self, budget_s: float, origin: float, every: int = 1) -> None:
        self.budget_s = budget_s
        self.origin = origin
        self.every = every
        self.spent_before = 0.0  # earlier sessions of a resumed run
        self.epoch_s: list[float] = []  # whole epochs without their validation: what plans the next ones
        self.in_epochs_s = 0.0  # all time inside epochs, cut or resumed ones included
        self.validation_s: list[float] = []
        self.startup_s = 0.0
        self.planned_epochs: int | None = None
        self.stopped_early = False  # an epoch was cut short because the budget ran out inside it
        self._partial = False  # this session started inside an epoch: its length is not an epoch's
        self._mark = 0.0
        self._validation_started: float | None = None
        self._validated_s = 0.0  # validating, in the current epoch
        self._fitting = False

    def elapsed(self) -> float:
        return self.spent_before + clock() - self.origin

    def plan(self, trainer: L.Trainer, done: int) -> None:
        """Sets the trainer's last epoch to the last whole epoch that fits in the budget."""
        if not self.epoch_s:
            return
        # Every rank must take rank 0's decision, or DDP would hang at the next collective.
        planned = int(trainer.strategy.broadcast(
            last_epoch(self.budget_s, self.elapsed(), self.epoch_s, self.validation_s, done, self.every), src=0))
        if planned != self.planned_epochs:
            log.info("time budget: %d epochs of about %.1f s fit in %.0f s (%.0f s spent)", planned,
                     self.epoch_seconds(), self.budget_s, self.elapsed())
        self.planned_epochs = planned
        trainer.fit_loop.max_epochs = max(planned, done)
        if planned <= done:
            trainer.should_stop = True

    def epoch_seconds(self) -> float:
        """An epoch with its share of the validations."""
        validation = statistics.fmean(self.validation_s[-RECENT:]) if self.validation_s else 0.0
        return epoch_estimate(self.epoch_s) + validation / self.every

    def ends_after_this_epoch(self, trainer: L.Trainer) -> bool:
        """At an epoch's last batch: whether the budget will end the run after it, if it is not
        validated (so that `segan.training.ValidationCadence` validates the run's last epoch). A
        twentieth of an epoch of margin: validating one epoch too many costs less than leaving the
        last one unvalidated."""
        if not self.epoch_s:
            return False
        so_far = clock() - self._mark - self._validated_s
        measured = self.epoch_s + ([] if self._partial else [so_far])
        done = trainer.current_epoch + 1
        margin = 0.05 * epoch_estimate(measured)
        planned = last_epoch(self.budget_s, self.elapsed() + margin, measured, self.validation_s, done, self.every)
        return bool(trainer.strategy.broadcast(planned <= done, src=0))

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.startup_s += clock() - self.origin
        self._mark = clock()
        self._partial = trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0
        trainer.fit_loop.max_epochs = UNPLANNED
        self.plan(trainer, trainer.current_epoch)  # a resumed run plans with what it measured before

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Validation during training only: the final re-scoring is counted after the last epoch.
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        self._validation_started = clock() if fitting else None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._validation_started is not None:
            self.validation_s.append(clock() - self._validation_started)
            self._validated_s += self.validation_s[-1]
            self._validation_started = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # An epoch longer than what is left of the budget (a large dataset, a short budget) stops
        # where the budget ends; Lightning still validates it, so its weights can become the best.
        # Kept back: that validation, the final one and the checkpoints.
        if trainer.world_size > 1 and batch_idx % CUT_CHECK_EVERY:
            return  # under DDP the ranks agree through a broadcast: not on every step
        cut = trainer.strategy.broadcast(self.elapsed() >= self.budget_s - reserve(self.validation_s, 2.5), src=0)
        if cut and not trainer.should_stop:
            self.stopped_early = True
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        now = clock()
        self.in_epochs_s += now - self._mark
        if not (self._partial or self.stopped_early):  # only whole epochs tell how long one takes
            self.epoch_s.append(now - self._mark - self._validated_s)
        self._mark, self._partial, self._validated_s = now, False, 0.0
        if not self.stopped_early:
            self.plan(trainer, trainer.current_epoch + 1)

    def summary(self, epochs: int) -> dict[str, Any]:
        """How the budget was spent, for `summary.json`: call when the run's work is all done."""
        spent = self.elapsed()
        validation = sum(self.validation_s)
        return {"budget_s": round(self.budget_s, 1), "spent_s": round(spent, 1),
                "spent_share": round(spent / self.budget_s, 3), "epochs": epochs,
                "epoch_s": round(self.epoch_seconds(), 2) if self.epoch_s else None,
                "startup_s": round(self.startup_s, 1), "validation_s": round(validation, 1),
                "training_s": round(self.in_epochs_s - validation, 1),
                "after_training_s": round(max(0.0, spent - self.startup_s - self.in_epochs_s), 1),
                "ended_by": "budget, inside an epoch" if self.stopped_early else "budget"}

    def state_dict(self) -> dict[str, Any]:
        return {"spent_s": self.elapsed(), "epoch_s": list(self.epoch_s), "in_epochs_s": self.in_epochs_s,
                "validation_s": list(self.validation_s),
                "startup_s": self.startup_s, "planned_epochs": self.planned_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._fitting:  # re-scoring the best checkpoint restores callbacks too: not its clock
            return
        self.spent_before = float(state_dict["spent_s"])
        self.epoch_s = list(state_dict["epoch_s"])
        self.in_epochs_s = float(state_dict["in_epochs_s"])
        self.validation_s = list(state_dict["validation_s"])
        self.startup_s = float(state_dict["startup_s"])
        self.planned_epochs = state_dict["planned_epochs"]
