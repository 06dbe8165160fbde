"""Settings for a segan run, as dataclasses that round-trip through YAML.

One `Config` holds everything needed to rebuild a run: the data layout and mask encoding, the
generator and discriminator, the losses and the optimisation. `train` writes it to
`RUN/config.yaml`; `predict` reads it back, so a run folder is self-describing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """Where the data is and how to read it.

    Layout (see `segan.data.pairs`; None means detect):
        root: dataset folder; the folders and list files below are relative to it (or absolute).
        train_split: name of the training split.
        val_split: name of the validation split; `None` tries validation, val, valid. Without one,
            a seeded `val_fraction` of the training pairs is held back.
        val_fraction: fraction held back when the dataset has no validation split.
        split_seed: seed of that hold-out; apart from train.seed so that runs with different
            seeds are scored on the same validation images.
        image_dir, mask_dir: image and mask folders; `{split}` stands for the split name
            ("{split}/images", "{split}annot"). Without `{split}` the folders hold every pair and
            the validation split is held back. None detects: {split}/images + {split}/masks (also
            image/label, images/labels, image/mask), {split}/ + {split}annot/, then the same pairs
            of folders at the root.
        roi_dir: optional region-of-interest masks (e.g. a field-of-view mask per image); pixels
            outside are ignored by the loss and the scores.
        image_name, mask_name, roi_name: how file names pair up: a template over the file stem
            with `{id}` for the shared part ("{id}_training" with "{id}_manual1"), or a regular
            expression whose group `id` (or first group) is the key, searched in the stem.
        pairs_file: a list file of image/mask pairs instead of folders ("{split}.txt"): two
            paths per line, whitespace- or comma-separated, a header line allowed; relative to
            the root, or absolute with a foreign prefix that is stripped (`strip_prefix`, or the
            shortest leading part whose removal makes the paths exist under the root).
        strip_prefix: prefix to remove from the paths in `pairs_file`; None detects it.

    Mask encoding (see `segan.data.encoding`):
        classes: class names, background first. Two names mean a binary task (one output channel).
        ignore_index: mask value left out of the loss and the scores.
        threshold: binary masks: grey values above it are foreground (0/1 masks are kept).
        invert: binary masks: the dark value is the foreground.
        value_map: {stored value: class index or ignore_index}, applied first; unlisted values
            are kept.
        colors: colour-coded masks: one [R, G, B] per class, in class order.
        ignore_color: colour-coded masks: the [R, G, B] of ignored pixels.

    Reading and augmentation:
        in_channels: 1 (greyscale) or 3 (RGB); images are converted on reading.
        size: training side length in pixels.
        resize: "resize" scales every image to `size` x `size`; "crop" takes random `size` crops
            for training and validates at full resolution (padded to the network stride).
        augment: albumentations preset: none, light, medium or heavy.
        rotations: whether 90-degree rotations and vertical flips keep the labels valid (true for
            microscopy and endoscopy, false for road scenes). Augmentation and TTA honour it.
        mean, std: input normalisation applied after scaling pixels to [0, 1], one value per
            channel; None means ImageNet's for RGB and their average for greyscale. Training
            records the values it used in the run's config.yaml.
        num_workers: DataLoader worker processes.
    """

    root: str = ""
    train_split: str = "train"
    val_split: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    image_dir: str | None = None
    mask_dir: str | None = None
    roi_dir: str | None = None
    image_name: str = "{id}"
    mask_name: str = "{id}"
    roi_name: str = "{id}"
    pairs_file: str | None = None
    strip_prefix: str | None = None
    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    ignore_index: int = 255
    threshold: int = 127
    invert: bool = False
    value_map: dict[int, int] | None = None
    colors: list[list[int]] | None = None
    ignore_color: list[int] | None = None
    in_channels: int = 3
    size: int = 256
    resize: str = "resize"
    augment: str = "light"
    rotations: bool = True
    mean: list[float] | None = None
    std: list[float] | None = None
    num_workers: int = 2

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def normalization(self) -> tuple[list[float], list[float]]:
        """(mean, std) per channel: the configured values, or defaults for the channel count."""
        mean = self.mean if self.mean is not None else (
            list(IMAGENET_MEAN) if self.in_channels == 3 else [round(sum(IMAGENET_MEAN) / 3, 4)])
        std = self.std if self.std is not None else (
            list(IMAGENET_STD) if self.in_channels == 3 else [round(sum(IMAGENET_STD) / 3, 4)])
        if len(mean) != self.in_channels or len(std) != self.in_channels:
            raise ValueError(f"data.mean and data.std need {self.in_channels} value(s), one per input channel; "
                             f"got {mean} and {std}")
        return list(mean), list(std)


@dataclass
class GeneratorConfig:
    """The segmentation network: any segmentation-models-pytorch architecture and encoder.

    Attributes:
        arch: smp architecture name (unet, unetplusplus, fpn, deeplabv3plus, ...).
        encoder_name: smp encoder name (resnet18, resnet34, efficientnet-b0, tu-..., ...).
        encoder_depth: number of encoder stages (3-5).
        encoder_weights: None (random init, offline), "imagenet" (downloaded by smp/timm), or a
            path to a local encoder state dict.
    """

    arch: str = "unet"
    encoder_name: str = "resnet18"
    encoder_depth: int = 5
    encoder_weights: str | None = None


@dataclass
class DiscriminatorConfig:
    """The conditional PatchGAN that judges (image, mask) pairs.

    Attributes:
        base_channels: channels of the first layer; doubled per layer up to 8x. 16, not pix2pix's
            64: at 192 px a 64-channel D (3.5 GFLOP per image) doubles the U-Net's training
            step, a 16-channel one (0.24 GFLOP) adds about a tenth, with the same 70 px
            receptive field and, on ISBI 2012 over 3 seeds, the same accuracy (BENCHMARKS.md).
        n_layers: stride-2 layers; 3 gives the 70x70 receptive field of pix2pix.
        spectral_norm: wrap every convolution in spectral normalisation.
        input_guard: stops the discriminator telling truth from prediction by value alone
            (one-hot truth is exactly 0/1, predictions are soft): "none", "smooth" (label
            smoothing of the truth by `guard_strength`), or "noise" (Gaussian instance noise of
            std `guard_strength` on both the real and the fake mask).
        guard_strength: amount of smoothing or noise.
    """

    base_channels: int = 16
    n_layers: int = 3
    spectral_norm: bool = True
    input_guard: str = "smooth"
    guard_strength: float = 0.1


@dataclass
class LossConfig:
    """Generator loss = segmentation (Dice + BCE, or Dice + CE) + adv_weight x adversarial.

    Attributes:
        dice_weight, ce_weight: weights of the two segmentation terms.
        adv_mode: vanilla, lsgan or hinge.
        adv_weight: weight of the adversarial term; 0 trains a plain supervised segmenter.
        adv_warmup_epochs: supervised-only epochs before the adversarial term starts.
    """

    dice_weight: float = 1.0
    ce_weight: float = 1.0
    adv_mode: str = "vanilla"
    adv_weight: float = 0.01
    adv_warmup_epochs: int = 2


@dataclass
class TrainConfig:
    """Optimisation and the Lightning trainer.

    Attributes:
        epochs: training epochs.
        batch_size: images per step (per device).
        lr: generator learning rate (Adam).
        d_lr: discriminator learning rate (Adam).
        weight_decay: generator weight decay.
        seed: seeds Python, NumPy, torch and the data split.
        accelerator: auto, cpu, gpu, ...
        devices: number of devices, or "auto"; more than one runs DDP.
        precision: Lightning precision string (32-true, 16-mixed, bf16-mixed).
        out: run folder.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    d_lr: float = 2e-4
    weight_decay: float = 0.0
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "32-true"
    out: str = "weights/run"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        return merge(cls(), values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of sections (data, generator, ...)")
        try:
            return cls.from_dict(values)
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path}: {error}") from None


def merge(config: Config, values: Mapping[str, Any]) -> Config:
    """Returns a copy of `config` with `values` ({section: {key: value}}) applied on top.

    Unknown sections or keys raise KeyError naming them, so a typo in a YAML file is caught.
    """
    sections = {}
    for section in dataclasses.fields(config):
        current = getattr(config, section.name)
        updates = dict(values.get(section.name) or {})
        known = {f.name for f in dataclasses.fields(current)}
        unknown = set(updates) - known
        if unknown:
            raise KeyError(f"unknown setting(s) {sorted(unknown)} in section '{section.name}'; "
                           f"known: {sorted(known)}")
        sections[section.name] = dataclasses.replace(current, **updates)
    unknown_sections = set(values) - set(sections)
    if unknown_sections:
        raise KeyError(f"unknown config section(s) {sorted(unknown_sections)}; "
                       f"known: {sorted(sections)}")
    return Config(**sections)


def validate(config: Config) -> None:
    """Raises ValueError naming every setting that cannot work, before any data is read or any
    step is taken (a stride that does not divide the image size fails here, not after an hour)."""
    from .losses import ADVERSARIAL_MODES
    from .transforms import PRESETS
    data, generator, train, loss = config.data, config.generator, config.train, config.loss
    problems = []
    if not data.root:
        problems.append("no dataset: set data.root (--data DIR)")
    if len(data.classes) < 2 or len(set(data.classes)) != len(data.classes):
        problems.append(f"data.classes needs at least two different names, background first; got {data.classes}")
    elif 0 <= data.ignore_index < len(data.classes):
        problems.append(f"data.ignore_index {data.ignore_index} is also class '{data.classes[data.ignore_index]}'; "
                        f"use a value of {len(data.classes)} or more (255 is usual)")
    if data.in_channels not in (1, 3):
        problems.append(f"data.in_channels must be 1 (greyscale) or 3 (RGB), got {data.in_channels}")
    if not 3 <= generator.encoder_depth <= 5:
        problems.append(f"generator.encoder_depth must be 3, 4 or 5, got {generator.encoder_depth}")
    stride = 2 ** 5  # every smp encoder downsamples 32x at depth 5; shallower ones divide it
    if data.size < stride or data.size % stride:
        nearest = max(stride, round(data.size / stride) * stride)
        problems.append(f"data.size {data.size} is not a multiple of the network stride {stride}; use {nearest}")
    if data.resize not in ("resize", "crop"):
        problems.append(f"data.resize must be resize or crop, got {data.resize}")
    if data.augment not in PRESETS:
        problems.append(f"data.augment must be one of {list(PRESETS)}, got {data.augment}")
    if not 0.0 < data.val_fraction < 1.0:
        problems.append(f"data.val_fraction must be between 0 and 1, got {data.val_fraction}")
    if not 0 <= data.threshold < 255:
        problems.append(f"data.threshold must be 0-254, got {data.threshold}")
    if loss.adv_mode not in ADVERSARIAL_MODES:
        problems.append(f"loss.adv_mode must be one of {list(ADVERSARIAL_MODES)}, got {loss.adv_mode}")
    if loss.adv_weight < 0 or loss.adv_warmup_epochs < 0:
        problems.append("loss.adv_weight and loss.adv_warmup_epochs must not be negative")
    if train.epochs < 1 or train.batch_size < 1:
        problems.append(f"train.epochs and train.batch_size must be at least 1, got {train.epochs}, {train.batch_size}")
    if train.lr <= 0 or train.d_lr <= 0:
        problems.append(f"train.lr and train.d_lr must be positive, got {train.lr}, {train.d_lr}")
    try:
        data.normalization()
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise ValueError("the config cannot work:\n  " + "\n  ".join(problems))
