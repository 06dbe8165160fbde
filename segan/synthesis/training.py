"""`segan synth train`: trains the drawing GAN (`segan.synthesis.drawing`) in a run folder, with
everything `segan train` gives a run: config.yaml, checkpoints, exact resume, a time budget,
pictures, and the same checks before the first file is written.

Its own pictures: SYNTH/progress.png, redrawn after every validated epoch, shows four validation
masks with the real image and the drawn one beside each. The drawing network of the last epoch is
exported to SYNTH/generator in smp's layout, which `segan synth sample` reads: pix2pix's practice,
since L1 rewards a blurred image, and the checkpoint closest to the real images in L1
(checkpoints/best.ckpt, kept as a figure) can be the network after its first step drawing flat
grey (ISBI 2012, docs/benchmarks/synth.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from .. import budget
from ..atomic import atomic_write
from ..checkpointing import CheckpointError, load_checkpoint
from ..config import Config
from ..hardware import describe, training_device
from ..progress import merge_metrics
from ..training import BestCheckpoint, LastCheckpoint, build_dataloaders, check_start, fit_run, open_run, preflight
from .drawing import HALF, DrawingModule, build_drawer

log = logging.getLogger(__name__)

@dataclass
class SynthResult:
    """What `train_synth` did: the validation L1 (drawn against real images in [-1, 1]) of the last
    epoch, whose network generator/ holds, and of the best epoch, re-scored; epochs, training
    steps, wall time and the time budget's account."""

    run_dir: str
    val_l1: float
    best_val_l1: float
    best_epoch: int
    epochs: int
    steps: int
    wall_time_s: float
    environment: dict[str, Any]
    time_budget: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DrawingProgress(Callback):
    """Rewrites SYNTH/progress.png after each validated epoch: mask | real | drawn for the first
    validation images."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_validation_end(self, trainer: L.Trainer, module: DrawingModule) -> None:  # the epoch's L1 is logged by now
        if not trainer.is_global_zero or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking \
                or not module.shown:
            return
        from ..plots import drawing_panels, save
        score = trainer.callback_metrics.get("val/l1")
        title = f"{self.run_dir.name}: epoch {trainer.current_epoch}" + (
            f", validation L1 {float(score):.3f}" if score is not None else "")
        save(drawing_panels(module.shown, module.config.data.classes, title=title), self.run_dir / "progress.png")


def train_synth(config: Config, resume: bool = False, overwrite: bool = False) -> SynthResult:
    """Trains the drawing GAN on the labelled pairs and writes the synth run folder `config.train.out`.

    The folder holds config.yaml, checkpoints/{best,last}.ckpt, generator/ (the last epoch's drawing
    network, smp's `save_pretrained` layout), metrics.csv, progress.png and summary.json.

    Args:
        config: all settings (`segan.synthesis.settings.synth_config` gives the defaults); data.root
            and train.out set.
        resume: continue from `out/checkpoints/last.ckpt`, as `segan.training.train` does.
        overwrite: replace a run already in `out` (set aside until this one's first epoch ends).

    Raises:
        RunExistsError, ResumeError, CheckpointError: as `segan.training.train`.
        DatasetLayoutError: the data check found problems (nothing was written).
    """
    started_at = budget.clock()
    run_dir = Path(config.train.out)
    # The image in [-1, 1], the range tanh draws in: not a setting of a synth run.
    config.data.mean, config.data.std = [HALF] * config.data.in_channels, [HALF] * config.data.in_channels
    unused = [name for name, used in (("train.ema_decay", config.train.ema_decay is not None),
                                      ("train.compile", config.train.compile is True),
                                      ("data.synthetic", config.data.synthetic is not None),
                                      ("semi.mode", config.semi.mode != "none")) if used]
    if unused:
        raise ValueError(f"segan synth train does not use {', '.join(unused)}; leave it unset (the drawing network "
                         "learns from the labelled pairs alone)")
    checkpoint_state, saved = check_start(config, run_dir, resume, overwrite)
    preflight(config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    loaders = build_dataloaders(config)
    module = DrawingModule(config.to_dict())
    if checkpoint_state is not None:
        _load(module, checkpoint_state, run_dir)
    del checkpoint_state
    aside = open_run(config, saved, overwrite)
    epoch_end = (BestCheckpoint(run_dir / "checkpoints", monitor="val/l1", mode="min"),
                 LastCheckpoint(run_dir / "checkpoints" / "last.ckpt", config.train.checkpoint_every_n_steps),
                 [DrawingProgress(run_dir)] if config.train.progress_png else [])
    fitted = fit_run(config, module, loaders, epoch_end, resume, aside, started_at, command="segan synth train")
    trainer = fitted.trainer
    last = {key: value.detach().clone() for key, value in module.state_dict().items()}
    last_l1 = trainer.validate(module, loaders[1], verbose=False)[0]["rescored/l1"]
    scores = trainer.validate(module, loaders[1], ckpt_path=str(fitted.best_path), weights_only=True,
                              verbose=False)[0]
    best = load_checkpoint(fitted.best_path)
    result = SynthResult(run_dir=str(run_dir), val_l1=round(float(last_l1), 4),
                         best_val_l1=round(float(scores["rescored/l1"]), 4),
                         best_epoch=int(best["epoch"]), epochs=trainer.current_epoch,
                         steps=trainer.fit_loop.epoch_loop.batch_progress.total.completed,
                         wall_time_s=round(fitted.wall_s, 1),
                         environment=describe(training_device(config.train.accelerator)))
    if trainer.is_global_zero:
        merge_metrics(run_dir)
        export_drawer(config, last, run_dir / "generator")
        if fitted.planner is not None:
            result.time_budget = fitted.planner.summary(result.epochs)
        atomic_write(run_dir / "summary.json", (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return result


def _load(module: DrawingModule, checkpoint: dict[str, Any], run_dir: Path) -> None:
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.ckpt'} was written for another model than "
                              f"{run_dir / 'config.yaml'} describes: {str(error).splitlines()[0]}. The run folder "
                              "was not changed") from None


def export_drawer(config: Config, state_dict: dict[str, Any], out: Path) -> None:
    """Writes the drawing network held under "drawer." in a checkpoint's state_dict in smp's
    `save_pretrained` layout (config.json + model.safetensors)."""
    drawer = build_drawer(config)
    drawer.load_state_dict({key.removeprefix("drawer."): value for key, value in state_dict.items()
                            if key.startswith("drawer.")})
    drawer.save_pretrained(str(out))
