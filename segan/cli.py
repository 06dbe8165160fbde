"""The `segan` command line, thin over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .config import (ADVERSARIAL_MODES, AUGMENT_PRESETS, BACKENDS, CLASS_WEIGHTINGS, EXPORT_FORMATS, IN_CHANNELS,
                     INFERENCE_PRECISIONS, INPUT_GUARDS, INT8_CALIBRATION_IMAGES, INT8_MAX_DROP, LOSS_TERMS, PRECISIONS,
                     RESIZE_MODES, SEMI_MODES, STRUCTURE_DEFAULT, STRUCTURE_FAMILIES, STRUCTURE_TOLERANCE, Config,
                     ConfigError, check_setting, merge)

log = logging.getLogger(__name__)

# flag -> (config section, key): flags override the YAML config, which overrides the defaults.
DATA_FLAGS = {
    "data": ("data", "root"),
    "train_split": ("data", "train_split"),
    "val_split": ("data", "val_split"),
    "val_fraction": ("data", "val_fraction"),
    "split_seed": ("data", "split_seed"),
    "image_dir": ("data", "image_dir"),
    "mask_dir": ("data", "mask_dir"),
    "roi_dir": ("data", "roi_dir"),
    "image_name": ("data", "image_name"),
    "mask_name": ("data", "mask_name"),
    "roi_name": ("data", "roi_name"),
    "pairs_file": ("data", "pairs_file"),
    "strip_prefix": ("data", "strip_prefix"),
    "classes": ("data", "classes"),
    "ignore_index": ("data", "ignore_index"),
    "threshold": ("data", "threshold"),
    "invert": ("data", "invert"),
    "value_map": ("data", "value_map"),
    "allow_unknown_values": ("data", "allow_unknown_values"),
    "in_channels": ("data", "in_channels"),
}
TRAIN_FLAGS = {
    **DATA_FLAGS,
    "out": ("train", "out"),
    "size": ("data", "size"),
    "resize": ("data", "resize"),
    "augment": ("data", "augment"),
    "num_workers": ("data", "num_workers"),
    "arch": ("generator", "arch"),
    "encoder": ("generator", "encoder_name"),
    "encoder_weights": ("generator", "encoder_weights"),
    "d_channels": ("discriminator", "base_channels"),
    "d_layers": ("discriminator", "n_layers"),
    "input_guard": ("discriminator", "input_guard"),
    "adv_mode": ("loss", "adv_mode"),
    "adv_weight": ("loss", "adv_weight"),
    "warmup_epochs": ("loss", "adv_warmup_epochs"),
    "loss": ("loss", "terms"),
    "class_weights": ("loss", "class_weights"),
    "ohem_keep": ("loss", "ohem_keep"),
    "ohem_threshold": ("loss", "ohem_threshold"),
    "scale_range": ("data", "scale_range"),
    "rare_class_crops": ("data", "rare_class_crops"),
    "unlabeled": ("data", "unlabeled"),
    "labeled_fraction": ("data", "labeled_fraction"),
    "synthetic": ("data", "synthetic"),
    "synthetic_ratio": ("data", "synthetic_ratio"),
    "semi": ("semi", "mode"),
    "epochs": ("train", "epochs"),
    "time_budget": ("train", "time_budget"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "d_lr": ("train", "d_lr"),
    "seed": ("train", "seed"),
    "accelerator": ("train", "accelerator"),
    "devices": ("train", "devices"),
    "precision": ("train", "precision"),
    "checkpoint_every_n_steps": ("train", "checkpoint_every_n_steps"),
    "min_epoch_steps": ("train", "min_epoch_steps"),
    "validate_every": ("train", "validate_every"),
    "compile": ("train", "compile"),
}
SYNTH_FLAGS = {**TRAIN_FLAGS, "l1_weight": ("loss", "l1_weight")}
_DEFAULTS = Config()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where a flag has a default worth showing.

    Flags that override a config setting default to None, so that an unset flag leaves the config
    file's value alone; their help states the setting's real default instead (`_add_config_flag`).
    Switches default to False, which needs no saying.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _global_flags(default: Any) -> argparse.ArgumentParser:
    """-v and --max-image-pixels, as a parent parser for the top level and for every subcommand, so
    that they work on either side of the subcommand's name.

    Args:
        default: the top level's defaults (None), or argparse.SUPPRESS for a subcommand: argparse
            copies every attribute a subcommand's parser sets onto the result, so a default there
            would overwrite a value given before the subcommand.
    """
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("global options (also accepted before the subcommand)")
    group.add_argument("-v", "--verbose", action="store_true", default=False if default is None else default,
                       help="debug logging")
    group.add_argument("--max-image-pixels", type=int, metavar="N", default=default,
                       help="refuse images declaring more pixels than this before decoding them (default 16384^2 "
                            "= 268435456, or SEGAN_MAX_IMAGE_PIXELS): guards against decompression bombs")
    return parser


def _add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser: takes the global flags, and shows each default once."""
    return subparsers.add_parser(name, parents=[_global_flags(argparse.SUPPRESS)], formatter_class=_HelpFormatter,
                                 **kwargs)


def _setting_type(section: str, key: str) -> Callable[[str], Any]:
    """argparse `type` for a flag that sets `section.key`: the config schema's own check, so a bad
    value gets the message a config file would (`--epochs 0`: "train.epochs: expected an integer >= 1")."""
    def parse(text: str) -> Any:
        try:
            return check_setting(section, key, text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(error.problems[0]) from None
    parse.__name__ = key  # argparse names the type in the messages it writes itself
    return parse


def _add_run_folder_flags(parser: argparse.ArgumentParser) -> None:
    """--resume and --overwrite: what segan train and segan synth train do with a run already in --out."""
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.ckpt with OUT/config.yaml")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run in --out: it is set aside beside it and put back if the new run fails "
                             "before its first epoch ends")


def _add_config_flag(group, flag: str, help: str, defaults: Config = _DEFAULTS, **kwargs) -> None:
    """Adds `flag`, which overrides the config setting that SYNTH_FLAGS (TRAIN_FLAGS and the synth
    run's own) maps it to.

    It defaults to None (unset: the config file's value stands). Values are checked by the config
    schema unless `type`, `action` or `nargs` says otherwise, and the help ends with the setting's
    default in `defaults` (the schema's; a synth run's own), where there is one to show.
    """
    section, key = SYNTH_FLAGS[flag.removeprefix("--").replace("-", "_")]
    if not {"type", "action", "nargs"} & set(kwargs):
        kwargs["type"] = _setting_type(section, key)
    default = getattr(getattr(defaults, section), key)
    if not (default is None or default is False or default == ""):
        shown = (" ".join(map(str, default)) if isinstance(default, list)
                 else " ".join(f"{k}={v:g}" for k, v in default.items()) if isinstance(default, dict) else default)
        help = f"{help} (default: {shown})"
    group.add_argument(flag, help=help, **kwargs)


def _loss_term(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    try:
        if name not in LOSS_TERMS:
            raise ValueError
        return name, float(weight or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT with NAME one of {', '.join(LOSS_TERMS)}, "
                                         f"e.g. dice=1 ce=1, got '{text}'") from None


def _class_weight(text: str) -> str | float:
    if text in CLASS_WEIGHTINGS:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {' or '.join(CLASS_WEIGHTINGS)}, or one number per class, "
                                         f"got '{text}'") from None


def _value_map(text: str) -> dict[int, int]:
    try:
        pairs = (item.split(":") for item in text.split(","))
        return {int(stored): int(target) for stored, target in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STORED:CLASS pairs such as 1:1,2:0,3:255, got '{text}'") from None


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """Layout and mask-encoding flags shared by `train` and `data check` (see DataConfig)."""
    g = p.add_argument_group("dataset layout (default: detected)")
    _add_config_flag(g, "--train-split", "training split name")
    _add_config_flag(g, "--val-split", "validation split name (default: validation, val or valid if present, "
                                       "else --val-fraction of train is held back)")
    _add_config_flag(g, "--val-fraction", "fraction held back without a validation split")
    _add_config_flag(g, "--split-seed", "seed of that hold-out, apart from --seed")
    _add_config_flag(g, "--image-dir", "image folder, relative to --data or absolute; {split} = split name "
                                       "(e.g. '{split}/images', '{split}')")
    _add_config_flag(g, "--mask-dir", "mask folder, as --image-dir (e.g. '{split}annot')")
    _add_config_flag(g, "--roi-dir", "region-of-interest masks, as --image-dir; pixels outside are ignored")
    _add_config_flag(g, "--image-name", "pairing key in image stems: template with {id} (e.g. '{id}_training') "
                                        "or a regex with group id; {id} alone is the whole stem")
    _add_config_flag(g, "--mask-name", "pairing key in mask stems, as --image-name (e.g. '{id}_manual1')")
    _add_config_flag(g, "--roi-name", "pairing key in region-of-interest stems, as --image-name")
    _add_config_flag(g, "--pairs-file", "list file of 'image mask' lines instead of folders (e.g. '{split}.txt')")
    _add_config_flag(g, "--strip-prefix", "prefix to strip from absolute paths in --pairs-file (default: detected)")
    g = p.add_argument_group("mask encoding (colour tables: data.colors in --config)")
    _add_config_flag(g, "--classes", "class names, background first; two = binary", nargs="+")
    _add_config_flag(g, "--ignore-index", "mask value left out of loss and scores")
    _add_config_flag(g, "--threshold", "binary masks: grey values above it are foreground")
    _add_config_flag(g, "--invert", "binary masks: the dark value is the foreground", action="store_true",
                     default=None)
    _add_config_flag(g, "--value-map", "remap stored values first, e.g. 1:1,2:0,3:255", type=_value_map)
    _add_config_flag(g, "--allow-unknown-values", "binary/multi-class masks: pixels whose stored value the mask rule "
                                                  "cannot place are ignored (with a warning) instead of being an error",
                     action="store_true", default=None)
    # type=int: the schema's option list (1, 3) holds numbers, which the text "3" is not.
    _add_config_flag(g, "--in-channels", "1 greyscale or 3 RGB", type=int, choices=IN_CHANNELS)


def _config(args: argparse.Namespace, flags: dict, base=None):
    """The config: `base`, or --config FILE, or the defaults; with the given flags on top."""
    config = base or (Config.load(args.config) if getattr(args, "config", None) else Config())
    overrides: dict = {}
    for flag, (section, key) in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            if key == "encoder_weights" and value.lower() == "none":
                value = None
            elif key == "terms":  # NAME=WEIGHT pairs
                value = dict(value)
            elif key == "class_weights" and len(value) == 1 and isinstance(value[0], str):
                value = value[0]  # a weighting by name
            elif key == "synthetic":
                value = os.path.abspath(value)  # as --unlabeled: relative to the working directory
            elif key == "unlabeled":
                # A path typed on the command line means what it means to every other tool: relative to
                # the working directory. In a config file it stays relative to the dataset root.
                value = [os.path.abspath(path) for path in value]
            overrides.setdefault(section, {})[key] = value
    return merge(config, overrides)


def _add_train(subparsers) -> None:
    p = _add_command(
        subparsers, "train", help="train a GAN segmenter",
        description="Train a U-Net generator against a conditional PatchGAN discriminator. Settings come "
                    "from the defaults, then --config FILE.yaml, then the flags given here.")
    _add_config_flag(p, "--data", "dataset folder (layouts: see 'dataset layout' below and datasets/README.md)")
    _add_config_flag(p, "--out", "run folder to write")
    p.add_argument("--config", help="YAML file with data/generator/discriminator/loss/semi/train sections "
                                    "(e.g. a recipe: datasets/camvid/config.yaml)")
    _add_run_folder_flags(p)
    _add_data_flags(p)
    g = p.add_argument_group("reading and augmentation")
    _add_config_flag(g, "--size", "training image side in pixels, a multiple of 32")
    _add_config_flag(g, "--resize", "resize images to --size or random-crop them", choices=RESIZE_MODES)
    _add_config_flag(g, "--augment", "augmentation preset", choices=AUGMENT_PRESETS)
    _add_config_flag(g, "--scale-range", "crop mode: rescale each training image by a random factor in this "
                                         "range first, e.g. 0.5 2.0", nargs=2, type=float, metavar=("LOW", "HIGH"))
    _add_config_flag(g, "--rare-class-crops", "probability that a training crop is centred on a pixel of a class "
                                              "drawn inverse to its pixel share (segan data check shows the shares)",
                     metavar="P")
    _add_config_flag(g, "--num-workers", "data loading processes")
    g = p.add_argument_group("segmentation loss (rare and thin classes: see docs/how-to/rare-and-thin-classes.md)")
    _add_config_flag(g, "--loss", f"loss terms and their weights: {', '.join(LOSS_TERMS)} (all but ce are smp's), "
                                  "e.g. --loss dice=1 ce=1 lovasz=0.5", nargs="+",
                     type=_loss_term, metavar="NAME=WEIGHT")
    _add_config_flag(g, "--class-weights", "class weights in the ce term, computed from the training masks "
                                           f"({' or '.join(CLASS_WEIGHTINGS)}) or one number per class; "
                                           "config.yaml records the values used", nargs="+", type=_class_weight,
                     metavar="WEIGHTING|W")
    _add_config_flag(g, "--ohem-keep", "OHEM: take the ce term over this share of each batch's pixels, the "
                                       "hardest", metavar="F")
    _add_config_flag(g, "--ohem-threshold", "OHEM: also every pixel whose true class has less probability",
                     metavar="P")
    g = p.add_argument_group("generator")
    _add_config_flag(g, "--arch", "smp architecture")
    _add_config_flag(g, "--encoder", "smp encoder name")
    _add_config_flag(g, "--encoder-weights", "none, imagenet (offline for tu-efficientnet_lite0/1/2 with "
                                             "segan[offline-weights], else downloaded) or a local "
                                             "state-dict file (default: none)")
    g = p.add_argument_group("discriminator and adversarial loss")
    _add_config_flag(g, "--d-channels", "discriminator base channels")
    _add_config_flag(g, "--d-layers", "discriminator stride-2 layers; 3 = 70 px receptive field")
    _add_config_flag(g, "--input-guard", "keeps D from telling truth by its exact 0/1 values", choices=INPUT_GUARDS)
    _add_config_flag(g, "--adv-mode", "adversarial loss", choices=ADVERSARIAL_MODES)
    _add_config_flag(g, "--adv-weight", "adversarial weight; 0 = plain supervised")
    _add_config_flag(g, "--warmup-epochs", "supervised epochs before the adversarial term")
    g = p.add_argument_group("unlabelled images (semi-supervised; more settings: semi section of --config)")
    _add_config_flag(g, "--unlabeled", "folders, files, globs or list files of images without masks (relative "
                     "to the working directory; in a config file, relative to data.root)", nargs="+",
                     metavar="PATH")
    _add_config_flag(g, "--labeled-fraction", "keep this fraction of the training masks (chosen with --split-seed) "
                                              "and use the other training images as unlabelled", metavar="F")
    _add_config_flag(g, "--semi", "how the unlabelled images teach: self-training (confident pseudo-labels on "
                                  "strong views), adversarial (the discriminator picks pseudo-labels), both, "
                                  "or none",
                     choices=SEMI_MODES)
    g = p.add_argument_group("synthetic pairs (experimental: docs/how-to/synthesise-pairs.md)")
    _add_config_flag(g, "--synthetic", "a folder of pairs segan synth sample drew, mixed into every training batch "
                                       "(relative to the working directory; in a config file, to data.root)",
                     metavar="PAIRS")
    _add_config_flag(g, "--synthetic-ratio", "the share of each batch that is synthetic", metavar="R")
    g = p.add_argument_group("optimisation and hardware")
    _add_config_flag(g, "--epochs", "training epochs")
    _add_config_flag(g, "--min-epoch-steps", "an epoch holds at least N steps: a small training set is cycled "
                                             "through, so validation runs less often (segan plan sets it)",
                     metavar="N")
    _add_config_flag(g, "--validate-every", "validate every N epochs, and always after the last one (segan plan "
                                            "sets it on a slow machine)", metavar="N")
    _add_config_flag(g, "--time-budget", "train for this long instead of --epochs (30m, 1h30m, or seconds): "
                                         "the schedule is fitted to the measured epoch time and the run, its final "
                                         "scoring included, ends within the budget", metavar="DURATION")
    _add_config_flag(g, "--batch-size", "images per step and device")
    _add_config_flag(g, "--lr", "generator learning rate")
    _add_config_flag(g, "--d-lr", "discriminator learning rate")
    _add_config_flag(g, "--seed", "random seed")
    _add_config_flag(g, "--accelerator", "auto, cpu, gpu")
    _add_config_flag(g, "--devices", "device count or auto; >1 runs DDP")
    _add_config_flag(g, "--precision", "Lightning precision", choices=PRECISIONS)
    _add_config_flag(g, "--compile", "run the training step's generator through torch.compile: true, false, or auto (only "
                                     "where segan plan measured that it pays)", metavar="{auto,true,false}")
    _add_config_flag(g, "--checkpoint-every-n-steps", "also write last.ckpt every N training steps "
                                                      "(default: at the end of every epoch)", metavar="N")
    p.set_defaults(handler=_train)


def _resumed_config(args: argparse.Namespace) -> Config:
    """--resume's base settings: the run's own OUT/config.yaml."""
    from .training import ResumeError
    if not args.out:
        raise ResumeError("--resume needs --out RUN (the run folder to continue)")
    if args.config:
        raise ResumeError("--resume continues with the run's own OUT/config.yaml; leave out --config")
    if not (Path(args.out) / "config.yaml").exists():
        raise ResumeError(f"cannot resume {args.out}: it holds no segan run (no config.yaml); was the run "
                          f"started with --out {args.out}?")
    try:
        return Config.load(Path(args.out) / "config.yaml")
    except (OSError, ValueError) as error:
        raise ResumeError(f"cannot resume {args.out}: {error}; the run folder was not changed") from None


def _train(args: argparse.Namespace) -> int:
    from .training import train
    config = _config(args, TRAIN_FLAGS, _resumed_config(args) if args.resume else None)
    result = train(config, resume=args.resume, overwrite=bool(getattr(args, "overwrite", False)))
    if result.stopped:
        print(f"\n{result.stopped}")
    print(f"\nbest validation IoU {result.best_val_iou:.4f}  Dice {result.best_val_dice:.4f}  "
          f"(epoch {result.best_epoch}, {result.steps} steps, {result.wall_time_s:.0f} s)")
    if result.time_budget:
        spent = result.time_budget
        print(f"time budget: {spent['spent_s']:.0f} of {spent['budget_s']:.0f} s spent ({spent['epochs']} epochs of "
              f"about {spent['epoch_s']} s; start-up {spent['startup_s']:.0f} s, final scoring "
              f"{spent['after_training_s']:.0f} s)")
    print(f"run written to {result.run_dir}  (summary.json, generator/, checkpoints/)")
    print(json.dumps(result.to_dict()))
    return 0


def _add_synth(subparsers) -> None:
    from .synthesis.settings import synth_config
    defaults = synth_config()
    p = _add_command(subparsers, "synth", help="the GAN that draws: new (image, mask) pairs for small label sets")
    sub = p.add_subparsers(dest="synth_command", required=True)
    t = _add_command(
        sub, "train", help="train a mask-to-image generator on the labelled pairs",
        description="Train a U-Net that draws an image from a mask (pix2pix: L1 to the real image plus a "
                    "conditional PatchGAN) on a dataset's labelled pairs. Settings come from the synth defaults, "
                    "the data section of --config FILE.yaml (a dataset recipe), then the flags given here. "
                    "segan synth sample then draws new pairs from deformed masks.")
    _add_config_flag(t, "--data", "dataset folder (the layouts segan train reads)")
    _add_config_flag(t, "--out", "synth run folder to write", defaults=defaults)
    t.add_argument("--config", help="a dataset recipe (e.g. datasets/camvid/config.yaml): its data section gives "
                                    "the layout and classes; its other sections are the segmenter's and are not read")
    _add_run_folder_flags(t)
    _add_data_flags(t)
    _add_config_flag(t, "--labeled-fraction", "learn from this fraction of the training pairs (chosen with "
                                              "--split-seed, as segan train chooses them)", metavar="F")
    g = t.add_argument_group("reading")
    _add_config_flag(g, "--size", "training image side in pixels, a multiple of 32", defaults=defaults)
    _add_config_flag(g, "--resize", "resize images to --size or random-crop them", choices=RESIZE_MODES,
                     defaults=defaults)
    _add_config_flag(g, "--num-workers", "data loading processes", defaults=defaults)
    g = t.add_argument_group("networks and losses")
    _add_config_flag(g, "--encoder", "smp encoder of the drawing U-Net (untrained)", defaults=defaults)
    _add_config_flag(g, "--d-channels", "discriminator base channels", defaults=defaults)
    _add_config_flag(g, "--l1-weight", "weight of the L1 distance to the real image", defaults=defaults)
    _add_config_flag(g, "--adv-weight", "weight of the adversarial term", defaults=defaults)
    g = t.add_argument_group("optimisation and hardware")
    _add_config_flag(g, "--epochs", "training epochs", defaults=defaults)
    _add_config_flag(g, "--time-budget", "train for this long instead of --epochs (30m, 1h30m, or seconds)",
                     metavar="DURATION", defaults=defaults)
    _add_config_flag(g, "--validate-every", "validate every N epochs, and always after the last one", metavar="N",
                     defaults=defaults)
    _add_config_flag(g, "--batch-size", "images per step and device", defaults=defaults)
    _add_config_flag(g, "--lr", "drawing network learning rate", defaults=defaults)
    _add_config_flag(g, "--d-lr", "discriminator learning rate", defaults=defaults)
    _add_config_flag(g, "--seed", "random seed", defaults=defaults)
    _add_config_flag(g, "--accelerator", "auto, cpu, gpu", defaults=defaults)
    _add_config_flag(g, "--devices", "device count or auto; >1 runs DDP", defaults=defaults)
    _add_config_flag(g, "--precision", "Lightning precision", choices=PRECISIONS, defaults=defaults)
    _add_config_flag(g, "--checkpoint-every-n-steps", "also write last.ckpt every N training steps", metavar="N",
                     defaults=defaults)
    t.set_defaults(handler=_synth_train)
    p = _add_command(
        sub, "sample", help="draw new (image, mask) pairs with a trained synth run",
        description="Deform the training masks (flips, affine, elastic, objects pasted from other masks; never a "
                    "training mask unchanged) and draw an image for each with SYNTH's network. Writes "
                    "OUT/images, OUT/masks, OUT/manifest.json (each pair's source mask, deformations and nearest "
                    "training image), OUT/contact_sheet.png and OUT/memorisation.png.")
    p.add_argument("synth", metavar="SYNTH", help="a synth run folder (segan synth train --out)")
    p.add_argument("--out", required=True, help="folder for the pairs")
    p.add_argument("--count", required=True, type=int, help="pairs to draw")
    p.add_argument("--seed", type=int, default=0, help="seeds the deformations")
    p.set_defaults(handler=_synth_sample)


def _synth_train(args: argparse.Namespace) -> int:
    from .synthesis.settings import synth_config
    from .synthesis.training import train_synth
    base = _resumed_config(args) if args.resume else synth_config(Config.load(args.config) if args.config else None)
    result = train_synth(_config(args, SYNTH_FLAGS, base), resume=args.resume,
                         overwrite=bool(getattr(args, "overwrite", False)))
    print(f"\nvalidation L1 {result.val_l1:.4f} (drawn against real images in [-1, 1]) of the last epoch's network, "
          f"which generator/ holds; lowest {result.best_val_l1:.4f} at epoch {result.best_epoch} ({result.steps} steps, "
          f"{result.wall_time_s:.0f} s)")
    print(f"synth run written to {result.run_dir}  (progress.png, generator/, checkpoints/, summary.json); "
          f"next: segan synth sample {result.run_dir} --out PAIRS --count N")
    print(json.dumps(result.to_dict()))
    return 0


def _synth_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from .synthesis.sampling import sample
    with tqdm(total=args.count, unit="pair", desc="draw") as bar:
        result = sample(args.synth, args.out, args.count, seed=args.seed,
                        progress=lambda done, total: bar.update(done - bar.n))
    memorised = result.memorisation
    print(f"{result.pairs} pairs written to {result.out} (images/, masks/, manifest.json, contact_sheet.png); "
          f"nearest training image: median SSIM {memorised['median_ssim']}, {memorised['copies']} copies "
          f"(SSIM >= {memorised['copy_ssim']}), memorisation.png")
    print(json.dumps(result.to_dict()))
    return 0


def _add_data(subparsers) -> None:
    p = _add_command(subparsers, "data", help="dataset tools")
    sub = p.add_subparsers(dest="data_command", required=True)
    demo = _add_command(sub, "demo", help="write the synthetic demo dataset")
    demo.add_argument("out", help="folder to write train/ and validation/ into")
    demo.add_argument("--n-train", type=int, default=240, help="training images")
    demo.add_argument("--n-val", type=int, default=60, help="validation images")
    demo.add_argument("--size", type=int, default=128, help="image side in pixels")
    demo.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    demo.set_defaults(handler=_demo)
    check = _add_command(
        sub, "check", help="check a dataset folder: layout, pairs, sizes, mask values, class frequencies",
        description="Reads every file once and reports the layout found, the pairs and unmatched files per "
                    "split, unreadable files, image/mask size mismatches, the stored mask values against the "
                    "declared encoding, class pixel frequencies, and the data config training would use. "
                    "Exit code 1 on errors that would stop training, 0 otherwise (warnings included).")
    check.add_argument("data", help="dataset folder")
    check.add_argument("--config", help="YAML config (e.g. a recipe in datasets/) whose data section to check")
    check.add_argument("--report", metavar="FILE", help="also write the full report as JSON")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_flags(check)
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset
    config = _config(args, DATA_FLAGS)
    report = check_dataset(config.data, progress=not args.no_progress)
    print(report.format())
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"report written to {args.report}")
    print(json.dumps({"ok": report.ok, "errors": len(report.errors), "warnings": len(report.warnings),
                      "pairs": {split.name: split.pairs for split in report.splits}}))
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from .data import make_demo_dataset
    out = make_demo_dataset(args.out, args.n_train, args.n_val, args.size, args.seed)
    print(f"demo dataset written to {out}: {args.n_train} train + {args.n_val} validation images of {args.size}x{args.size}")
    return 0


def _add_segmentation_flags(group) -> None:
    """How a trained run segments images: one set for `predict` and `evaluate --model`, which
    segment with the same code."""
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    group.add_argument("--tta", action="store_true",
                       help="test-time augmentation: average flips (and 90-degree rotations when the run allows them)")
    group.add_argument("--tta-scales", type=float, nargs="+", default=[1.0], metavar="S",
                       help="multi-scale test-time augmentation: also segment the image resized by these factors and "
                            "average (with --tta, each scale's flips too), e.g. 0.75 1 1.25")
    group.add_argument("--threshold", type=float, default=0.5, help="binary foreground probability threshold")
    group.add_argument("--backend", default="torch", choices=BACKENDS,
                       help="what runs the network: torch (the run's generator), or the model segan export wrote, "
                            "in onnxruntime or openvino (optional extras segan[onnx], segan[openvino])")
    group.add_argument("--precision", default="auto", choices=INFERENCE_PRECISIONS,
                       help="fp32, bf16, or auto: bf16 where the processor has native bf16 (onnxruntime: fp32 only)")


def _add_split_flags(group) -> None:
    """Which images a trained run is scored on (`evaluate --model`, `report`)."""
    group.add_argument("--data", metavar="DIR", help="dataset folder (default: the run's own)")
    group.add_argument("--split", default="val", help="val or train as training divided the data, or a split "
                                                      "folder name such as test")


def _add_throughput_flags(group) -> None:
    group.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    group.add_argument("--num-workers", type=int, default=2, help="image decoding processes")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_predict(subparsers) -> None:
    p = _add_command(
        subparsers, "predict", help="segment files and folders of images with a trained run",
        description="Writes OUTPUT/masks/<input tree>/<stem>.png (binary 0/255, or class indices with a "
                    "colour palette) and OUTPUT/manifest.csv with one row per input. Unreadable files are "
                    "reported and skipped; the exit code is 1 if any were.")
    p.add_argument("--model", required=True, help="run folder written by segan train")
    p.add_argument("--input", required=True, nargs="+", help="image files, folders (recursive) or globs")
    p.add_argument("--output", required=True, help="output folder; must not be inside an input folder")
    _add_throughput_flags(p)
    _add_segmentation_flags(p)
    p.add_argument("--tile-size", type=int, default=1024,
                   help="images trained at native scale (--resize crop) and larger than this are tiled")
    p.add_argument("--tile-overlap", type=float, default=0.25, help="fraction of a tile shared with its neighbour")
    p.add_argument("--save-probs", action="store_true",
                   help="also write OUTPUT/probs/<rel>/<stem>.npy (float16, CxHxW)")
    p.add_argument("--overlay", action="store_true",
                   help="also write OUTPUT/overlays/<rel>/<stem>.jpg, the mask over the image")
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose mask exists (resume a job)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in the output folder")
    p.add_argument("--shard", help="K/N: take the K-th of N deterministic parts (K from 0); under torchrun, "
                                   "RANK/WORLD_SIZE choose it (default: everything)")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from .batch_predict import parse_shard, predict_folder
    from .inference import Predictor
    predictor = Predictor.from_pretrained(args.model, device=args.device, tile_size=args.tile_size,
                                          tile_overlap=args.tile_overlap, tta=args.tta, tta_scales=args.tta_scales,
                                          threshold=args.threshold,
                                          backend=args.backend, precision=args.precision)
    log.info("segmenting with %s in %s on %s", args.backend, predictor.precision, predictor.device)
    summary = predict_folder(predictor, args.input, args.output, batch_size=args.batch_size,
                             num_workers=args.num_workers, save_probs=args.save_probs, overlay=args.overlay,
                             skip_existing=args.skip_existing, shard=parse_shard(args.shard),
                             progress=not args.no_progress, overwrite=args.overwrite)
    print(f"\n{summary.written} written, {summary.skipped_existing} already there, {summary.failed} failed "
          f"of {summary.inputs} inputs in {summary.seconds:.1f} s ({summary.images_per_s:.1f} images/s)")
    if summary.ignored_non_images:
        print(f"{summary.ignored_non_images} files in the input folders are not images and were ignored")
    for failure in summary.failures[:20]:
        print(f"  failed: {failure}")
    if len(summary.failures) > 20:
        print(f"  ... and {len(summary.failures) - 20} more (see the manifest)")
    print(f"masks in {Path(args.output) / 'masks'}; manifest {summary.manifest}")
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "failures"}))
    return 1 if summary.failed else 0


def _add_evaluate(subparsers) -> None:
    p = _add_command(
        subparsers, "evaluate", help="score a trained run on a split, or predicted masks against ground-truth masks",
        description="Scores the masks in --pred against those in --gt, paired by relative path and file stem "
                    "(a/b.png pairs with a/b.jpg), prints a table and writes OUT/metrics.json (every figure "
                    "with its definition; null where undefined) and OUT/per_image.csv (worst images first). "
                    "Per class: IoU, Dice, precision, recall pooled over all pixels of the split (micro), and "
                    "IoU, Dice per image then averaged; macro means over classes with and without the "
                    "background. A class absent from both truth and prediction is undefined, not 0 or 1, and "
                    "left out of the means. Binary tasks report the foreground class.")
    g = p.add_argument_group("scoring a trained run (--model): segment --data's --split with the same code as "
                             "segan predict, then score")
    g.add_argument("--model", metavar="RUN", help="run folder written by segan train (instead of --pred/--gt)")
    _add_split_flags(g)
    _add_segmentation_flags(g)
    g.add_argument("--sweep-threshold", action="store_true",
                   help="binary: choose the threshold with the best validation Dice, then score --split (not val) "
                        "with it; never chosen on the split it scores")
    g = p.add_argument_group("scoring mask folders (--pred, --gt)")
    g.add_argument("--pred", metavar="DIR", help="predicted masks (searched recursively; a segan predict output "
                                                 "folder works: its masks/ are used)")
    g.add_argument("--gt", metavar="DIR", help="ground-truth masks in the same layout (a dataset split folder with "
                                               "images/ + masks/ works: its masks/ are used)")
    g.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class names, background first; two = binary (0/1 or 0/255 masks). Default: the names a "
                        "segan predict output records, else background foreground")
    g.add_argument("--config", metavar="YAML", help="take classes and the ground truth's mask encoding (invert, "
                                                    "value_map, colors, ...) from this config's data section")
    g.add_argument("--ignore-index", type=int, default=255,
                   help="ground-truth value not scored (multi-class masks); -1 = none")
    g.add_argument("--roi", metavar="DIR", help="optional region-of-interest masks in the same layout; pixels where "
                                                "it is 0 are not scored")
    g.add_argument("--allow-missing", action="store_true",
                   help="score only the ground truth that has a prediction; without it a missing prediction is an "
                        "error")
    g.add_argument("--allow-unknown-values", action="store_true",
                   help="ground-truth values the mask rule cannot place are not scored (a warning names the files) "
                        "instead of an error; predictions must always hold classes")
    _add_structure_flags(p)
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json and per_image.csv; when not given, "
                                                "RUN/evaluation/SPLIT for --model, else 'evaluation' beside the "
                                                "prediction masks folder (PRED/evaluation for a segan predict output)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in the output folder")
    p.set_defaults(handler=_evaluate)


def _add_structure_flags(p) -> None:
    g = p.add_argument_group("structure metrics (per image and foreground class; conventions: "
                             "docs/reference/metrics.md)")
    g.add_argument("--metrics", nargs="+", default=list(STRUCTURE_DEFAULT), choices=[*STRUCTURE_FAMILIES, "none"],
                   help="families: distance (Hausdorff, HD95, ASSD), boundary (NSD, boundary F1, Boundary IoU), "
                        "topology (clDice for binary tasks, Betti errors), regions (binary: adapted Rand error and "
                        "variation of information of the regions the background forms, as for membranes); none")
    g.add_argument("--tolerance", type=float, default=STRUCTURE_TOLERANCE, metavar="PX",
                   help="NSD and boundary F1: boundary pixels within this many pixels agree")


def _families(chosen: Sequence[str]) -> list[str]:
    """--metrics as structure families, in their own order; `none` alone turns them off."""
    if "none" in chosen and len(chosen) > 1:
        raise ValueError("--metrics none cannot be combined with a family; give none alone, or the families")
    return [family for family in STRUCTURE_FAMILIES if family in chosen]


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folders, format_table, refuse_earlier_report, write_report
    from .metrics import json_safe
    if args.model:
        from .evaluation import evaluate_model
        if args.pred or args.gt:
            raise ValueError("give either --model RUN (with --data/--split) or --pred DIR --gt DIR, not both")
        out = Path(args.out) if args.out else Path(args.model) / "evaluation" / args.split
        result = evaluate_model(args.model, args.data, args.split, out, tta=args.tta, tta_scales=args.tta_scales,
                                device=args.device,
                                threshold=args.threshold, sweep_threshold_on_val=args.sweep_threshold,
                                overwrite=args.overwrite, backend=args.backend, precision=args.precision,
                                structure_families=_families(args.metrics), tolerance=args.tolerance)
        if result.threshold_sweep:
            sweep = result.threshold_sweep
            print(f"threshold {sweep['best_threshold']} chosen on val (Dice {sweep['best']['dice']:.4f}; "
                  f"at 0.5: {sweep['at_0.5']['dice']:.4f}); sweep in {sweep['file']}")
    elif args.pred and args.gt:
        from .data import MaskEncoding
        encoding = None
        classes = args.classes
        if args.config:
            from .config import Config
            data = Config.load(args.config).data
            classes = classes or data.classes
            encoding = MaskEncoding.from_config(data)
        out = Path(args.out) if args.out else None
        if out is not None:  # checked before the work, not after it
            refuse_earlier_report(out, args.overwrite)
        manifest = Path(args.pred) / "manifest.json"
        if classes is None and manifest.is_file():
            classes = json.loads(manifest.read_text()).get("classes") or None
        result = evaluate_folders(args.pred, args.gt, class_names=classes or ["background", "foreground"],
                                  ignore_index=None if args.ignore_index < 0 else args.ignore_index,
                                  roi_dir=args.roi, allow_missing=args.allow_missing, encoding=encoding,
                                  allow_unknown_values=args.allow_unknown_values,
                                  structure_families=_families(args.metrics), tolerance=args.tolerance)
        out = out or result.pred_dir.parent / "evaluation"
        write_report(result, out, overwrite=args.overwrite)
    else:
        raise ValueError("segan evaluate needs --model RUN, or --pred DIR (predicted masks) and --gt DIR "
                         "(ground-truth masks)")
    print(format_table(result))
    print(f"written {out / 'metrics.json'} and {out / 'per_image.csv'}")
    head = result.report["headline"]
    print(json.dumps(json_safe({"images": result.report["images"], "scope": head["scope"], "iou": head["iou"],
                                "dice": head["dice"], "out": str(out)})))
    return 0


def _add_export(subparsers) -> None:
    p = _add_command(
        subparsers, "export", help="write a run's generator as ONNX or OpenVINO for fast inference",
        description="Writes RUN/export/model.onnx (and RUN/export/openvino/model.xml with --format openvino) with "
                    "dynamic batch and image size, and RUN/export/predict.json with what a predictor needs "
                    "(normalisation, size policy, pad multiple, threshold, classes, palette). The export is "
                    "checked against the torch generator on a real image; segan predict --backend onnxruntime "
                    "or openvino then uses it.")
    p.add_argument("run", help="run folder written by segan train")
    p.add_argument("--format", default="onnx", choices=EXPORT_FORMATS, help="what to write")
    p.add_argument("--image", help="image to check the export on (default: the run's first validation image)")
    p.add_argument("--threshold", type=float, default=0.5, help="binary threshold recorded in predict.json")
    g = p.add_argument_group("int8 (OpenVINO; needs segan[int8])")
    g.add_argument("--int8", action="store_true",
                   help="quantise the OpenVINO model to int8 with NNCF, calibrated on training images and checked on "
                        "the validation split; falls back to accuracy-controlled quantisation when it loses more "
                        "than --max-drop")
    g.add_argument("--calibration-images", type=int, default=INT8_CALIBRATION_IMAGES, metavar="N",
                   help="training images NNCF calibrates on")
    g.add_argument("--max-drop", type=float, default=INT8_MAX_DROP,
                   help="largest loss of validation Dice (binary) or mIoU accepted from plain quantisation")
    g.add_argument("--data", metavar="DIR", help="dataset folder (default: the run's own)")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from .export import export_run
    settings = export_run(args.run, args.format, image=args.image, threshold=args.threshold, int8=args.int8,
                          data_root=args.data, calibration_images=args.calibration_images, max_drop=args.max_drop)
    out = Path(args.run) / "export"
    for name, rel in settings["files"].items():
        print(f"written {out / rel}")
    check = settings["check"]
    for name, difference in check["max_abs_logit_difference"].items():
        print(f"{name}: largest logit difference from the torch generator {difference:.2e} on {check['image']} "
              f"(tolerance {check['tolerance']})")
    if "int8" in settings:
        int8 = settings["int8"]["check"]
        print(f"int8 ({settings['int8']['method']}, {settings['int8']['calibration']['images']} calibration images): "
              f"{int8['score']} {int8['int8']:.4f} against float32's {int8['float32']:.4f} on {int8['images']} "
              f"validation images; {int8['pixel_agreement']:.4f} of pixels agree")
    from .backends import EXPORTS
    backend = next(name for name, (format_name, _) in EXPORTS.items() if format_name == args.format)
    print(f"predictor settings in {out / 'predict.json'}; segment with: segan predict --model {args.run} "
          f"--backend {backend} --input ... --output ...")
    print(json.dumps({"files": [str(out / rel) for rel in settings["files"].values()],
                      "max_abs_logit_difference": check["max_abs_logit_difference"]}))
    return 0


def _add_report(subparsers) -> None:
    p = _add_command(
        subparsers, "report", help="a page to look at: one run's report, or a comparison of runs",
        description="One run: writes RUN/report/index.html (opens from disk, no network): the run's settings, "
                    "versions and hardware, training curves, per-class scores and confusion matrix (multi-class), "
                    "a reliability diagram, the worst and best images with error maps, and every image's scores "
                    "(the per_image.csv of segan evaluate --model, also written there). Several runs: scores each "
                    "on the same split and compares them image by image against the first (paired differences "
                    "of Dice and of each structure metric with a bootstrap interval, and the images where they "
                    "differ most).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by segan train")
    _add_split_flags(p)
    p.add_argument("--out", metavar="DIR", help="report folder (default RUN/report, or FIRST_RUN/report/compare-... "
                                                "for several runs)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output folder")
    _add_segmentation_flags(p)
    _add_throughput_flags(p)
    _add_structure_flags(p)
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from .report import compare_runs, report_run
    predict = dict(tta=args.tta, tta_scales=args.tta_scales, device=args.device, threshold=args.threshold,
                   backend=args.backend,
                   precision=args.precision, batch_size=args.batch_size, num_workers=args.num_workers,
                   progress=not args.no_progress, structure_families=_families(args.metrics),
                   tolerance=args.tolerance)
    if len(args.runs) == 1:
        page = report_run(args.runs[0], args.data, args.split, args.out, args.overwrite, **predict)
    else:
        page = compare_runs(args.runs, args.data, args.split, args.out, args.overwrite, **predict)
    print(f"report written to {page}; open it in a browser (file://{page.resolve()})")
    print(json.dumps({"report": str(page), "data": str(page.parent / "report.json")}))
    return 0


def _add_plan(subparsers) -> None:
    p = _add_command(
        subparsers, "plan", help="choose training settings from the data and a time budget",
        description="Reads the training split once (image sizes, channels, bit depth, class shares, object sizes "
                    "and widths), measures a training step on this machine, and writes a config that trains "
                    "within the time budget: resize or native-resolution crops, image size, encoder, batch size, "
                    "augmentation, precision, the adversarial term (off unless the discriminator judges unlabelled "
                    "images) and the epochs that fit, each with its reason. Train with: "
                    "segan train --config PLAN.yaml --out RUN (flags given there override the plan).")
    p.add_argument("data", help="dataset folder")
    p.add_argument("--config", help="YAML config whose settings the plan starts from and keeps where it chooses "
                                    "nothing (e.g. a recipe's mask encoding and data.rotations)")
    p.add_argument("--time-budget", default="1h", metavar="DURATION",
                   help="how long training may take: 30m, 1h30m, or seconds")
    p.add_argument("--out", default="plan.yaml", metavar="FILE", help="plan file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan file")
    _add_data_flags(p)
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from .atomic import atomic_write
    from .config import parse_duration
    import yaml

    from .plan import make_plan
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; nothing was changed. Give --out ANOTHER.yaml, or --overwrite to "
                              "replace it")
    parse_duration(args.time_budget)  # a typo fails before the data is read
    plan = make_plan(_config(args, DATA_FLAGS), args.time_budget)
    print("fingerprint of the training split:")
    print("  " + yaml.safe_dump(plan.fingerprint, sort_keys=False).strip().replace("\n", "\n  "))
    print("\nsettings chosen:")
    print("\n".join(f"  - {reason}" for reason in plan.reasons))
    atomic_write(out, plan.to_yaml().encode())
    print(f"\nplan written to {out}; train with: segan train --config {out} --out RUN")
    print(json.dumps({"plan": str(out), "size": plan.config.data.size, "resize": plan.config.data.resize,
                      "batch_size": plan.config.train.batch_size, "epochs": plan.config.train.epochs,
                      "time_budget": plan.config.train.time_budget, "step_s": round(plan.step_seconds, 3)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segan", description="GAN-based image segmentation.",
                                     parents=[_global_flags(None)], formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"segan {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_plan(subparsers)
    _add_train(subparsers)
    _add_predict(subparsers)
    _add_data(subparsers)
    _add_evaluate(subparsers)
    _add_export(subparsers)
    _add_report(subparsers)
    _add_synth(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.max_image_pixels:
        from .data.io import set_max_image_pixels
        set_max_image_pixels(args.max_image_pixels)
    from .data import DatasetLayoutError, ImageReadError
    # All bad-input errors derive from ValueError/OSError/RuntimeError: a message and exit code 2,
    # never a stack trace.
    from .training import TrainingInterrupted
    try:
        return args.handler(args)
    except TrainingInterrupted as interrupted:
        print(f"segan: {interrupted}", file=sys.stderr)
        return 130  # the shell's code for "ended by Ctrl-C"
    except (DatasetLayoutError, ImageReadError, OSError, ValueError, KeyError, RuntimeError) as error:
        print(f"segan: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
