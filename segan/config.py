"""Settings for a segan run, as dataclasses that round-trip through YAML.

One `Config` holds everything needed to rebuild a run: the data layout and mask encoding, the
generator and discriminator, the losses and the optimisation. `train` writes it to
`RUN/config.yaml`; `predict` reads it back, so a run folder is self-describing.

The dataclass annotations are the schema: `Config.from_dict`, `Config.load`, `merge` and the
command-line flags check every value against them with pydantic (types, ranges, option lists,
unknown keys) plus the rules that relate two settings, and raise one `ConfigError` that lists
every problem, one per line, with its key path, the value found and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence, Union

import yaml
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Every smp encoder downsamples 32x at depth 5 (shallower ones divide it): image sides must be
# multiples of it for the decoder's skip connections to line up.
NETWORK_STRIDE = 32

# The option lists, defined once: the schema checks against the Literal types, and the losses,
# transforms, training loop and command line read the tuples.
AdversarialMode = Literal["vanilla", "lsgan", "hinge"]
InputGuard = Literal["none", "smooth", "noise"]
AugmentPreset = Literal["none", "light", "medium", "heavy"]
ResizeMode = Literal["resize", "crop"]
Precision = Literal["auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"]
InChannels = Literal[1, 3]
SemiMode = Literal["none", "self-training", "adversarial", "adversarial+self-training"]
# Segmentation loss terms, by name (smp's losses; ce is torch's, for class weights and OHEM).
LossTerm = Literal["dice", "ce", "focal", "lovasz", "tversky", "jaccard"]
ClassWeighting = Literal["median-frequency", "inverse-sqrt"]
# segan evaluate --metrics: the structure families (segan.metrics.structure.FAMILIES holds their figures)
STRUCTURE_FAMILIES = ("distance", "boundary", "topology", "regions")
STRUCTURE_DEFAULT = ("distance", "boundary", "topology")  # regions only on request: for membranes
STRUCTURE_TOLERANCE = 2.0  # pixels: NSD and boundary F1 count boundary pixels this close as agreeing
INT8_CALIBRATION_IMAGES = 300  # training images NNCF calibrates an int8 export on (NNCF's default subset)
INT8_MAX_DROP = 0.005  # validation Dice (binary) or mIoU an int8 export may lose before the accuracy-controlled fallback
ADVERSARIAL_MODES: tuple[str, ...] = typing.get_args(AdversarialMode)
INPUT_GUARDS: tuple[str, ...] = typing.get_args(InputGuard)
AUGMENT_PRESETS: tuple[str, ...] = typing.get_args(AugmentPreset)
RESIZE_MODES: tuple[str, ...] = typing.get_args(ResizeMode)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
IN_CHANNELS: tuple[int, ...] = typing.get_args(InChannels)
SEMI_MODES: tuple[str, ...] = typing.get_args(SemiMode)
LOSS_TERMS: tuple[str, ...] = typing.get_args(LossTerm)
CLASS_WEIGHTINGS: tuple[str, ...] = typing.get_args(ClassWeighting)
# Inference (predict, evaluate --model, export): not run settings, so not in Config.
Backend = Literal["torch", "onnxruntime", "openvino"]
InferencePrecision = Literal["auto", "fp32", "bf16"]
ExportFormat = Literal["onnx", "openvino"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
INFERENCE_PRECISIONS: tuple[str, ...] = typing.get_args(InferencePrecision)
EXPORT_FORMATS: tuple[str, ...] = typing.get_args(ExportFormat)


class Allowed:
    """Annotation metadata: how an error message words the values a setting allows, where the
    wording derived from its type would not tell a user enough (e.g. "background first")."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _all_different(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("names repeat")
    return names


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str | float) -> float:
    """Seconds in a duration written as `90s`, `30m`, `1h30m`, `2.5h` or a plain number of seconds.

    Raises:
        ValueError: the text is not such a duration, or it is zero.
    """
    match = _DURATION.fullmatch(str(text).strip().lower().replace(" ", ""))
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (write 90s, 30m, 1h30m or a number of seconds)")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return total


def _duration_text(text: str) -> str:
    parse_duration(text)
    return text


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Colour = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3),
                   Allowed("an [R, G, B] colour of three integers from 0 to 255")]
ClassNames = Annotated[list[str], Field(min_length=2), AfterValidator(_all_different),
                       Allowed("a list of at least 2 different class names, background first")]
ImageSize = Annotated[int, Field(ge=NETWORK_STRIDE, multiple_of=NETWORK_STRIDE),
                      Allowed(f"a multiple of the network stride {NETWORK_STRIDE}")]
Duration = Annotated[str, AfterValidator(_duration_text),
                     Allowed("a duration such as 90s, 30m, 1h30m, or a number of seconds")]
# left_to_right: "2" from the command line is a device count, not a device string.
Devices = Annotated[int | list[int] | str, Field(union_mode="left_to_right"),
                    Allowed("a device count, a list of device indices, or 'auto'")]

# One set of parsing rules for every section. Lax mode converts what YAML and the command line
# give as text ("3", "1e-3", which YAML 1.1 reads as a string); numbers become strings where a
# name is expected (`train_split: 2012`); infinities and NaN are never a sensible setting.
SCHEMA_RULES = ConfigDict(extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)


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
        allow_unknown_values: binary/multi-class masks: pixels whose stored value the mask rule
            cannot place are ignored (with a warning) instead of being an error.

    Images without masks (see the `semi` section):
        unlabeled: folders, files, globs or list files of images without masks; in a config file
            relative to `root` (or absolute), on the command line (--unlabeled) relative to the
            working directory.
        labeled_fraction: keep the masks of only this seeded fraction of the training images and
            use the rest as unlabelled images (to measure what unlabelled images add); None keeps all.

    Synthetic pairs (experimental; see docs/how-to/synthesise-pairs.md):
        synthetic: a folder of pairs `segan synth sample` drew, mixed into every training batch;
            in a config file relative to `root` (or absolute), on the command line (--synthetic)
            relative to the working directory. None: real pairs only.
        synthetic_ratio: the share of each training batch that is synthetic (at least one pair,
            and at least one real pair). Not yet chosen by measurement: 0.5 is the one-to-one mix
            most published generate-then-train results use.

    Reading and augmentation:
        in_channels: 1 (greyscale) or 3 (RGB); images are converted on reading.
        size: training side length in pixels, a multiple of the network stride (32).
        resize: "resize" scales every image to `size` x `size`; "crop" takes random `size` crops
            for training and validates at full resolution (padded to the network stride).
        val_native: resize mode: validation scores each prediction resized back to its image's own
            size, against the mask as stored (what `segan predict` gives and `segan evaluate
            --model` scores), rather than at `size`; one image a batch. Crop mode always does.
        augment: albumentations preset: none, light, medium or heavy.
        rotations: whether 90-degree rotations and vertical flips keep the labels valid (true for
            microscopy and endoscopy, false for road scenes). Augmentation and TTA honour it.
        scale_range: crop mode: each training image is first rescaled by a random factor from
            [low, high] (e.g. [0.5, 2.0], as road-scene recipes do); None keeps the stored scale.
        rare_class_crops: probability that a training sample is a crop centred on a pixel of a
            class drawn inverse to its pixel share, from an image holding it (crop mode; in
            resize mode only the image is chosen so). The class statistics come from the data
            check's pass over the training masks (`segan data check` shows them).
        mean, std: input normalisation applied after scaling pixels to [0, 1], one value per
            channel; None means ImageNet's for RGB and their average for greyscale. Training
            records the values it used in the run's config.yaml.
        num_workers: DataLoader worker processes.
    """

    __pydantic_config__ = SCHEMA_RULES

    root: str = ""
    train_split: str = "train"
    val_split: str | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    split_seed: int = 0
    image_dir: str | None = None
    mask_dir: str | None = None
    roi_dir: str | None = None
    image_name: str = "{id}"
    mask_name: str = "{id}"
    roi_name: str = "{id}"
    pairs_file: str | None = None
    strip_prefix: str | None = None
    classes: ClassNames = field(default_factory=lambda: ["background", "foreground"])
    ignore_index: int = 255
    # Below 255, so that a 0/255 mask always has a foreground.
    threshold: Annotated[int, Field(ge=0, le=254)] = 127
    invert: bool = False
    value_map: dict[int, int] | None = None
    colors: Annotated[list[Colour] | None,
                      Allowed("a list of [R, G, B] colours of three integers from 0 to 255, or null")] = None
    ignore_color: Colour | None = None
    allow_unknown_values: bool = False
    unlabeled: list[str] | None = None
    labeled_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    synthetic: str | None = None
    synthetic_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    in_channels: InChannels = 3
    size: ImageSize = 256
    resize: ResizeMode = "resize"
    val_native: bool = False
    augment: AugmentPreset = "light"
    rotations: bool = True
    scale_range: Annotated[list[PositiveFloat] | None, Field(min_length=2, max_length=2)] = None
    rare_class_crops: Annotated[float, Field(ge=0, le=1)] = 0.0
    mean: list[float] | None = None
    std: list[PositiveFloat] | None = None
    num_workers: NonNegativeInt = 2

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def validates_native(self) -> bool:
        """Whether validation scores masks at their stored size (whole images of any size: one a
        batch): crop mode, or `val_native`."""
        return self.resize == "crop" or self.val_native

    @property
    def has_unlabeled(self) -> bool:
        """Whether training gets images without masks: `unlabeled` folders, or the training images
        whose masks `labeled_fraction` hides."""
        return bool(self.unlabeled) or self.labeled_fraction is not None

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


# smp architectures whose decoder has one block per encoder stage, so that its channels follow the depth.
PER_STAGE_DECODERS = ("unet", "unetplusplus", "manet")


@dataclass
class GeneratorConfig:
    """The segmentation network: any segmentation-models-pytorch architecture and encoder.

    Attributes:
        arch: smp architecture name (unet, unetplusplus, fpn, deeplabv3plus, ...).
        encoder_name: smp encoder name (resnet18, resnet34, efficientnet-b0, tu-..., ...).
        encoder_depth: number of encoder stages (3-5).
        encoder_weights: None (random init, offline), "imagenet" (downloaded by smp/timm), or a
            path to a local encoder state dict.
        decoder_width: the decoder's channels are (width, width / 2, ..., width / 16), the last
            `encoder_depth` of them, for the decoders with one block per encoder stage
            (`PER_STAGE_DECODERS`); 256 is smp's default. With a light encoder such as
            EfficientNet-Lite0 the decoder holds most of the FLOPs (about 5/6 of the U-Net's at
            224 px, 4.4 against 1.8 GFLOP an image with 128); on resized images half the width
            fitted more steps in the same time and scored higher, on native crops it gained
            nothing (docs/benchmarks/plan.md), so `segan plan` sets 128 where it resizes.
    """

    __pydantic_config__ = SCHEMA_RULES

    arch: str = "unet"
    encoder_name: str = "resnet18"
    encoder_depth: Annotated[int, Field(ge=3, le=5)] = 5
    encoder_weights: str | None = None
    decoder_width: Annotated[int, Field(ge=16, multiple_of=16)] = 256

    def decoder_width_problem(self) -> str | None:
        """What is wrong with `decoder_width` for this architecture, or None: the config check and
        `build_generator` (for a config built in code) give the same reason."""
        if self.arch.lower() in PER_STAGE_DECODERS or self.decoder_width == GeneratorConfig.decoder_width:
            return None
        return (f"applies to the decoders with one block per encoder stage ({', '.join(PER_STAGE_DECODERS)}), "
                f"not to '{self.arch}'; leave it at {GeneratorConfig.decoder_width} or choose one of those")


@dataclass
class DiscriminatorConfig:
    """The conditional PatchGAN that judges (image, mask) pairs.

    Attributes:
        base_channels: channels of the first layer; doubled per layer up to 8x. 16, not pix2pix's
            64: at 192 px a 64-channel D (3.5 GFLOP per image) doubles the U-Net's training
            step, a 16-channel one (0.24 GFLOP) adds about a tenth, with the same 70 px
            receptive field and the same accuracy (docs/benchmarks/accuracy.md, train.md).
        n_layers: stride-2 layers; 3 gives the 70x70 receptive field of pix2pix.
        spectral_norm: wrap every convolution in spectral normalisation.
        input_guard: stops the discriminator telling truth from prediction by value alone
            (one-hot truth is exactly 0/1, predictions are soft): "none", "smooth" (label
            smoothing of the truth by `guard_strength`), or "noise" (Gaussian instance noise of
            std `guard_strength` on both the real and the fake mask).
        guard_strength: amount of smoothing or noise.
    """

    __pydantic_config__ = SCHEMA_RULES

    base_channels: PositiveInt = 16
    n_layers: PositiveInt = 3
    spectral_norm: bool = True
    input_guard: InputGuard = "smooth"
    guard_strength: NonNegativeFloat = 0.1


@dataclass
class LossConfig:
    """Generator loss = the weighted segmentation terms + adv_weight x adversarial.

    Attributes:
        terms: segmentation loss terms and their weights, by name: dice, ce (BCE for a binary
            task), focal, lovasz, tversky (alpha 0.3, beta 0.7: misses cost more than false
            alarms), jaccard; all but ce are smp's losses. Replaces the whole mapping when given.
            smp's focal and lovasz pick pixels by boolean indexing, which makes a GPU step wait
            for the device a few times more.
        class_weights: weights of the classes in the ce term: median-frequency (SegNet: the
            median class frequency over each class's, a class's frequency counted over the images
            that hold it), inverse-sqrt (1 / sqrt(pixel share), scaled so the average pixel
            weighs 1), or one number per class. Computed from the training masks; the run's
            config.yaml records the values used. None = every class 1.
        ohem_keep: online hard example mining in the ce term: the loss is taken over this share
            of each batch's pixels, the hardest (lowest probability of their true class), plus
            any below `ohem_threshold`. None = every pixel.
        ohem_threshold: with ohem_keep: pixels whose true class has less than this probability
            always count (MMSegmentation's OHEM sampler, `ohem_keep` being its floor).
        adv_mode: vanilla, lsgan or hinge.
        adv_weight: weight of the adversarial term; 0 trains a plain supervised segmenter.
        adv_warmup_epochs: supervised-only epochs before the adversarial term starts.
        l1_weight: `segan synth train` only, where the generator draws images from masks: weight
            of the L1 distance between the drawn and the real image (pix2pix's 100), beside
            adv_weight x the adversarial term.
    """

    __pydantic_config__ = SCHEMA_RULES

    terms: dict[LossTerm, NonNegativeFloat] = field(default_factory=lambda: {"dice": 1.0, "ce": 1.0})
    class_weights: ClassWeighting | list[NonNegativeFloat] | None = None
    ohem_keep: Annotated[float, Field(gt=0, le=1)] | None = None
    ohem_threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    adv_mode: AdversarialMode = "vanilla"
    adv_weight: NonNegativeFloat = 0.01
    adv_warmup_epochs: NonNegativeInt = 2
    l1_weight: NonNegativeFloat = 100.0


@dataclass
class SemiConfig:
    """Learning from unlabelled images (`data.unlabeled`, or the images `data.labeled_fraction`
    leaves without their masks); see docs/explanation/unlabelled-images.md. Without unlabelled images nothing
    here applies.

    Attributes:
        mode: how unlabelled images teach, when there are any: none (they are not used);
            self-training (UniMatch-style: pseudo-labels from a weak view where the prediction is
            at least `confidence` sure, learnt on a strong view with CutMix and on a
            feature-perturbed view; no discriminator); adversarial (Hung et al.: the
            discriminator's per-patch confidence selects the pseudo-labels of the prediction
            itself, plus the adversarial term on unlabelled predictions); adversarial+self-training
            (self-training whose pseudo-labels must also pass the discriminator once its gate
            opens). The default is the mode that measured best over both benchmark datasets
            (docs/explanation/unlabelled-images.md); self-training needs no discriminator and did slightly
            better on thin membranes (ISBI 2012).
        confidence: self-training: least probability of the predicted class for a pixel to
            become a pseudo-label.
        d_confidence: adversarial modes: least discriminator probability of "real" (per patch,
            upsampled to pixels) for a pixel to become a pseudo-label.
        gate_warmup_epochs: adversarial modes: epochs before the discriminator gates anything
            (an untrained one would pass everything).
        unlabeled_weight: weight of the unlabelled loss against the supervised one.
        cutmix: self-training: probability that a strong view gets a box pasted from another.
        feature_dropout: self-training: Dropout2d rate on the encoder features of the perturbed view.
        unlabeled_batch_size: unlabelled images per step; None = train.batch_size.
        teacher_decay: self-training modes: the pseudo-labels come from an exponential moving
            average of the generator with this decay (a mean teacher, e.g. 0.99), in eval mode,
            rather than from the generator itself; None = the generator.
    """

    __pydantic_config__ = SCHEMA_RULES

    mode: SemiMode = "adversarial+self-training"
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.95
    d_confidence: Annotated[float, Field(ge=0, le=1)] = 0.2
    gate_warmup_epochs: NonNegativeInt = 2
    unlabeled_weight: NonNegativeFloat = 1.0
    cutmix: Annotated[float, Field(ge=0, le=1)] = 0.5
    feature_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    unlabeled_batch_size: PositiveInt | None = None
    teacher_decay: Annotated[float, Field(gt=0, lt=1)] | None = None

    @property
    def uses_discriminator(self) -> bool:
        """Whether the discriminator judges the unlabelled images (the adversarial modes)."""
        return self.mode.startswith("adversarial")


@dataclass
class TrainConfig:
    """Optimisation and the Lightning trainer.

    Attributes:
        epochs: training epochs; with `time_budget` set, the budget decides their number instead.
        time_budget: train for this long (`30m`, `1h30m`, or seconds) rather than for `epochs`:
            the epoch length is measured, the cosine schedule is set to end with the budget, and
            the run stops at the last epoch that fits, the time to re-score and export the best
            model included (segan.budget). None trains for `epochs`.
        batch_size: images per step (per device).
        lr: generator learning rate (Adam).
        d_lr: discriminator learning rate (Adam).
        weight_decay: generator weight decay.
        ema_decay: keep an exponential moving average of the generator's weights with this decay
            (e.g. 0.999; warmed up over the first steps), validate it beside the weights every
            epoch, and export whichever of the two scores better at the best epoch. None: off.
            Costs one more validation pass per epoch.
        seed: seeds Python, NumPy, torch and the data split.
        accelerator: auto, cpu, gpu, ...
        devices: number of devices, a list of device indices, or "auto"; more than one runs DDP.
        precision: Lightning precision string (32-true, 16-mixed, bf16-mixed, ...), or auto:
            bf16-mixed where the training device has native bf16, else 32-true (segan.hardware).
        checkpoint_every_n_steps: also write last.ckpt every N training steps; None writes it at
            the end of every epoch only.
        min_epoch_steps: an epoch holds at least this many steps: a smaller training set is
            cycled through (each pass in a new order, each sample augmented anew), so that
            validation, checkpoints and pictures, which come once an epoch, take a smaller share
            of the time (nnU-Net's epochs are a fixed number of steps too). None: one pass.
        compile: run the training step's generator through `torch.compile` (inductor): true, false,
            or auto, which trains uncompiled unless `segan plan` measured that compiling pays for
            itself within the time budget on this machine (it then writes true). Checkpoints and the
            exported generator hold the plain networks' weights; validation runs them uncompiled
            (whole images of many sizes would each compile anew). The compile time, a minute or
            more on a small CPU, counts in the time budget.
        validate_every: validate the first epoch, every N-th after it, and always the last one (the
            one a time budget plans, or one the budget cuts short), so that a large validation set does not eat
            a slow machine's budget; the best checkpoint is chosen among the validated epochs and
            re-scored on the whole validation split at the end. `segan plan` sets it from its
            measured times. 1: every epoch.
        progress_png: redraw RUN/progress.png (the training curves) after every epoch; about a
            second of plotting each time (runs of many tiny epochs: see min_epoch_steps).
        out: run folder.
    """

    __pydantic_config__ = SCHEMA_RULES

    epochs: PositiveInt = 20
    time_budget: Duration | None = None
    batch_size: PositiveInt = 8
    lr: PositiveFloat = 1e-3
    d_lr: PositiveFloat = 2e-4
    weight_decay: NonNegativeFloat = 0.0
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    seed: int = 0
    accelerator: str = "auto"
    devices: Devices = 1
    precision: Precision = "auto"
    checkpoint_every_n_steps: PositiveInt | None = None
    min_epoch_steps: PositiveInt | None = None
    validate_every: PositiveInt = 1
    compile: bool | Literal["auto"] = "auto"
    progress_png: bool = True
    out: str = "weights/run"


@dataclass
class Config:
    """All settings of a run, one section per part (see each section's class for its settings)."""

    __pydantic_config__ = SCHEMA_RULES

    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted name ("train.epochs": 20, ...)."""
        return {f"{section}.{key}": value for section, entries in self.to_dict().items()
                for key, value in entries.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """The defaults with `values` ({section: {key: value}}) on top; see `merge`."""
        return merge(cls(), values)

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write
        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False).encode())

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Reads a YAML config: every section and key is optional, missing ones keep their defaults.

        Raises:
            FileNotFoundError: no file at `path`.
            ConfigError: the file is not YAML, or its values break the schema (every problem listed).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError([f"not valid YAML: {str(error).splitlines()[0]}"], f"cannot read {path}") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(error.problems, f"invalid config in {path}") from None


class ConfigError(ValueError):
    """Settings that break the schema, all of them: one line per problem, each starting with the
    setting's key path (`train.epochs: expected an integer >= 1, got 'ten'`).

    Attributes:
        problems: the lines: settings invalid on their own in section and key order, then
            unknown keys, then settings that contradict each other.
        context: what was being checked ("invalid config in run/config.yaml").
    """

    def __init__(self, problems: Sequence[str], context: str = "invalid config") -> None:
        self.problems = list(problems)
        self.context = context
        super().__init__(f"{context}:\n  " + "\n  ".join(self.problems))

    def __reduce__(self):
        # An exception pickles as its class and `args` (here the message alone), which this
        # __init__ would misread; DDP and DataLoader workers pickle exceptions.
        return type(self), (self.problems, self.context)


# {section name: its dataclass}, in the order of `Config`'s fields.
SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def merge(config: Config, values: Mapping[str, Any]) -> Config:
    """Returns a copy of `config` with `values` ({section: {key: value}}) applied on top.

    Every value is checked against the schema, together with `config`'s own.

    Raises:
        ConfigError: listing every unknown section or key (with the nearest known name), every
            value of the wrong type or out of range, and every pair of settings that contradict
            each other.
    """
    if not isinstance(values, Mapping):
        raise ConfigError([f"expected a mapping of sections ({', '.join(SECTIONS)}), got {values!r}"])
    values = _renamed(values)
    merged: dict[str, Any] = config.to_dict()
    for section, updates in values.items():
        if section in SECTIONS and isinstance(updates, Mapping):
            merged[section] = {**merged[section], **updates}
        elif section in SECTIONS and updates is None:
            continue  # an empty section in YAML (`train:`) changes nothing
        else:
            merged[section] = updates
    return _checked(merged)


def _renamed(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Settings of earlier versions in today's names, so their run folders still load: segan 0.1
    wrote loss.dice_weight and loss.ce_weight where loss.terms now holds both."""
    loss = values.get("loss")
    if not isinstance(loss, Mapping) or not {"dice_weight", "ce_weight"} & set(loss):
        return values
    loss = dict(loss)
    terms = {"dice": loss.pop("dice_weight", 1.0), "ce": loss.pop("ce_weight", 1.0)}
    return {**values, "loss": {"terms": terms, **loss}}


def check_setting(section: str, key: str, value: Any) -> Any:
    """Returns `value` as setting `section.key` holds it (the command line's "3" becomes 3).

    Raises:
        ConfigError: the value breaks the setting's type or range, with the message a config
            file would get.
    """
    try:
        return _value_adapter(section, key).validate_python(value)
    except ValidationError as error:
        raise ConfigError([_value_problem(section, key, value, error.errors())]) from None


def validate(config: Config) -> None:
    """Raises ConfigError naming every setting that cannot work, before any data is read or any
    step is taken (a stride that does not divide the image size fails here, not after an hour).

    The schema's checks run again (code may have changed the dataclasses since they were built),
    and training needs a dataset.
    """
    problems = [] if config.data.root else ["data.root: no dataset; set data.root (--data DIR)"]
    try:
        _checked(config.to_dict())
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems, "the config cannot work")


def _checked(values: dict[str, Any]) -> Config:
    """The `Config` that `values` describe, or ConfigError with every problem."""
    try:
        return _relations_checked(_config_adapter().validate_python(values), invalid=set())
    except ValidationError as error:
        problems, invalid = _problems(values, error.errors())
    # Relations between settings are checked too, among the settings that are valid on their own;
    # the invalid ones fall back to their defaults for that.
    valid = {section: {key: value for key, value in settings.items() if f"{section}.{key}" not in invalid}
             for section, settings in values.items()
             if section in SECTIONS and isinstance(settings, Mapping) and f"{section}.*" not in invalid}
    try:
        _relations_checked(_config_adapter().validate_python(valid), invalid)
    except ConfigError as relations:
        problems += relations.problems
    raise ConfigError(problems)


def _relations_checked(config: Config, invalid: set[str]) -> Config:
    """`config`, or ConfigError naming settings that are valid alone but contradict each other;
    rules that involve a setting in `invalid` ("section.key") are skipped."""
    data, problems = config.data, []
    if invalid.isdisjoint({"data.classes", "data.ignore_index"}) and 0 <= data.ignore_index < data.num_classes:
        problems.append(f"data.ignore_index: {data.ignore_index} is also class '{data.classes[data.ignore_index]}'; "
                        f"use a value of {data.num_classes} or more (255 is usual)")
    for name in ("mean", "std"):
        values = getattr(data, name)
        if invalid.isdisjoint({f"data.{name}", "data.in_channels"}) and values is not None \
                and len(values) != data.in_channels:
            problems.append(f"data.{name}: expected {data.in_channels} value(s), one per input channel "
                            f"(data.in_channels is {data.in_channels}), got {values}")
    semi = config.semi
    if invalid.isdisjoint({"semi.mode", "loss.adv_weight"}) and semi.uses_discriminator \
            and config.loss.adv_weight == 0 and data.has_unlabeled:
        problems.append(f"semi.mode: '{semi.mode}' needs a trained discriminator, but loss.adv_weight is 0; "
                        "give loss.adv_weight > 0 (--adv-weight 0.01), or semi.mode self-training "
                        "(--semi self-training) to learn from them without one")
    if invalid.isdisjoint({"data.scale_range", "data.resize"}) and data.scale_range is not None:
        if data.resize != "crop":
            problems.append("data.scale_range: rescaling applies to crops; set data.resize crop, or no scale_range "
                            "(resize mode scales every image to data.size)")
        elif data.scale_range[0] > data.scale_range[1]:
            problems.append(f"data.scale_range: {data.scale_range} runs backwards; give [low, high]")
    loss = config.loss
    if invalid.isdisjoint({"loss.class_weights", "data.classes"}) and isinstance(loss.class_weights, list) \
            and len(loss.class_weights) != len(data.classes):
        problems.append(f"loss.class_weights: {len(loss.class_weights)} value(s) for {len(data.classes)} classes "
                        f"({', '.join(data.classes)}); give one per class, or median-frequency or inverse-sqrt")
    decoder_problem = config.generator.decoder_width_problem()
    if invalid.isdisjoint({"generator.arch", "generator.decoder_width"}) and decoder_problem:
        problems.append(f"generator.decoder_width: {decoder_problem}")
    if "loss.terms" not in invalid and not any(loss.terms.values()):
        problems.append(f"loss.terms: {loss.terms or '{}'} leaves no segmentation loss; give at least one term a "
                        f"weight above 0, e.g. {{dice: 1.0, ce: 1.0}} (terms: {', '.join(LOSS_TERMS)})")
    if invalid.isdisjoint({"loss.ohem_threshold", "loss.ohem_keep"}) and loss.ohem_threshold is not None \
            and loss.ohem_keep is None:
        problems.append("loss.ohem_threshold: OHEM also needs loss.ohem_keep, the least share of pixels that "
                        "always counts (e.g. 0.1)")
    if invalid.isdisjoint({"loss.terms", "loss.class_weights", "loss.ohem_keep"}) \
            and (loss.class_weights is not None or loss.ohem_keep is not None) and not loss.terms.get("ce"):
        problems.append("loss.class_weights, loss.ohem_keep: they act on the ce term, which loss.terms leaves "
                        "out; add ce to loss.terms or drop them")
    train = config.train
    for key, decay in (("train.ema_decay", train.ema_decay), ("semi.teacher_decay", semi.teacher_decay)):
        if invalid.isdisjoint({key, "train.precision"}) and decay is not None \
                and train.precision in ("16-true", "bf16-true"):
            problems.append(f"{key}: a moving average needs float32 weights to move (its updates round to nothing "
                            f"in {train.precision}); use train.precision bf16-mixed or 32-true, or no {key.split('.')[1]}")
    if invalid.isdisjoint({"semi.teacher_decay", "semi.mode"}) and semi.teacher_decay is not None \
            and semi.mode == "adversarial":
        problems.append(f"semi.teacher_decay: semi.mode '{semi.mode}' makes no pseudo-labels from a teacher; "
                        "use semi.mode self-training or adversarial+self-training, or no teacher_decay")
    if problems:
        raise ConfigError(problems)
    return config


def _problems(values: Mapping[str, Any], errors: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """One line per setting named in pydantic's `errors`, and the settings ("section.key", or
    "section.*" for a whole section) that they make invalid."""
    problems, invalid = [], set()
    for error in errors:
        section, key = error["loc"][0], error["loc"][1] if len(error["loc"]) > 1 else None
        unknown = error["type"] in ("unexpected_keyword_argument", "extra_forbidden")
        path = f"{section}.*" if key is None else f"{section}.{key}"
        if path in invalid:
            continue  # one line per setting, however many parts of its value are wrong
        invalid.add(path)
        if key is None and unknown:
            problems.append(f"{section}: unknown section{_nearest(section, SECTIONS)}; known: {', '.join(SECTIONS)}")
        elif key is None:
            problems.append(f"{section}: expected a mapping of settings, got {values[section]!r}")
        elif unknown:
            known = [setting.name for setting in dataclasses.fields(SECTIONS[section])]
            problems.append(f"{section}.{key}: unknown setting{_nearest(key, known)}; known: {', '.join(known)}")
        else:
            problems.append(_value_problem(section, key, values[section][key], [error]))
    return problems, invalid


def _value_problem(section: str, key: str, value: Any, errors: list[dict[str, Any]]) -> str:
    annotation = _annotations(SECTIONS[section])[key]
    problem = f"{section}.{key}: expected {_describe(annotation)}, got {value!r}"
    multiple = _constraints(annotation).get("multiple_of")
    if multiple and any(error["type"] in ("multiple_of", "greater_than_equal") for error in errors):
        # Only numbers reach these checks, but from the command line as text ("100").
        problem += f"; use {max(multiple, round(float(value) / multiple) * multiple)}"
    return problem


def _nearest(name: Any, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(annotation: Any, plural: bool = False) -> str:
    """What a type allows, in words: "an integer >= 1", "one of 'resize', 'crop'", ..."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        allowed = [item.text for item in arguments[1:] if isinstance(item, Allowed)]
        if allowed:
            return allowed[0]
        return _describe(arguments[0], plural) + _bounds(_constraints(annotation))
    if origin in (Union, types.UnionType):
        options = [option for option in arguments if option is not type(None)]
        text = " or ".join(_describe(option, plural) for option in options)
        return text + " or null" if len(options) < len(arguments) else text
    if origin is Literal:
        return "one of " + ", ".join(repr(option) for option in arguments)
    if origin is list:
        return "a list of " + _describe(arguments[0], plural=True)
    if origin is dict:
        return f"a mapping of {_describe(arguments[0], plural=True)} to {_describe(arguments[1], plural=True)}"
    singular, many = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
                      bool: ("true or false", "true or false")}.get(annotation, ("any value", "any values"))
    return many if plural else singular


def _bounds(constraints: dict[str, Any]) -> str:
    """" >= 1", " from 3 to 5", " > 0 and < 1", " >= 16 and a multiple of 16", or "" for no bounds."""
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    if "ge" in constraints and "le" in constraints:
        parts = [f"from {constraints['ge']} to {constraints['le']}"]
    else:
        parts = [f"{symbols[name]} {constraints[name]}" for name in symbols if name in constraints]
    if "multiple_of" in constraints:
        parts.append(f"a multiple of {constraints['multiple_of']}")
    return " " + " and ".join(parts) if parts else ""


def _constraints(annotation: Any) -> dict[str, Any]:
    """The numeric constraints (ge, gt, le, lt, multiple_of) of an Annotated type's metadata."""
    if typing.get_origin(annotation) is not Annotated:
        return {}
    constraints = {}
    for item in typing.get_args(annotation)[1:]:
        for constraint in item.metadata if isinstance(item, FieldInfo) else [item]:
            for name in ("ge", "gt", "le", "lt", "multiple_of"):
                if getattr(constraint, name, None) is not None:
                    constraints[name] = getattr(constraint, name)
    return constraints


@functools.cache
def _annotations(section_type: type) -> dict[str, Any]:
    return typing.get_type_hints(section_type, include_extras=True)


@functools.cache
def _config_adapter() -> TypeAdapter:
    # Built on first use: it costs tens of milliseconds that `segan --help` need not pay.
    return TypeAdapter(Config)


@functools.cache
def _value_adapter(section: str, key: str) -> TypeAdapter:
    return TypeAdapter(_annotations(SECTIONS[section])[key], config=SCHEMA_RULES)
