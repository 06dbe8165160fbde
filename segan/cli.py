"""The `segan` command line, thin over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

# flag -> (config section, key): flags override the YAML config, which overrides the defaults.
TRAIN_FLAGS = {
    "data": ("data", "root"),
    "out": ("train", "out"),
    "classes": ("data", "classes"),
    "in_channels": ("data", "in_channels"),
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
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "d_lr": ("train", "d_lr"),
    "seed": ("train", "seed"),
    "accelerator": ("train", "accelerator"),
    "devices": ("train", "devices"),
    "precision": ("train", "precision"),
}


def _devices(value: str):
    return value if value == "auto" else int(value)


def _add_train(subparsers) -> None:
    from .config import Config
    defaults = Config()
    d, g, dis, loss, t = defaults.data, defaults.generator, defaults.discriminator, defaults.loss, defaults.train
    p = subparsers.add_parser(
        "train", help="train a GAN segmenter", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a U-Net generator against a conditional PatchGAN discriminator. Settings come "
                    "from the defaults, then --config FILE.yaml, then the flags given here.")
    p.add_argument("--data", help="dataset folder: train/{images,masks} (+ validation/ or val/), or images/ + masks/")
    p.add_argument("--out", help=f"run folder to write (default from config: {t.out})")
    p.add_argument("--config", help="YAML file with data/generator/discriminator/loss/train sections")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.ckpt with OUT/config.yaml")
    p.add_argument("--classes", nargs="+", help=f"class names, background first; two = binary ({d.classes})")
    p.add_argument("--in-channels", type=int, choices=(1, 3), help=f"1 greyscale or 3 RGB ({d.in_channels})")
    p.add_argument("--size", type=int, help=f"training image side in pixels ({d.size})")
    p.add_argument("--resize", choices=("resize", "crop"), help=f"resize images to --size or random-crop them ({d.resize})")
    p.add_argument("--augment", choices=("none", "light", "medium", "heavy"), help=f"augmentation preset ({d.augment})")
    p.add_argument("--num-workers", type=int, help=f"data loading processes ({d.num_workers})")
    p.add_argument("--arch", help=f"smp architecture ({g.arch})")
    p.add_argument("--encoder", help=f"smp encoder name ({g.encoder_name})")
    p.add_argument("--encoder-weights", help="none, imagenet (needs internet) or a local state-dict file (none)")
    p.add_argument("--d-channels", type=int, help=f"discriminator base channels ({dis.base_channels})")
    p.add_argument("--d-layers", type=int, help=f"discriminator stride-2 layers; 3 = 70 px receptive field ({dis.n_layers})")
    p.add_argument("--input-guard", choices=("none", "smooth", "noise"),
                   help=f"keeps D from telling truth by its exact 0/1 values ({dis.input_guard})")
    p.add_argument("--adv-mode", choices=("vanilla", "lsgan", "hinge"), help=f"adversarial loss ({loss.adv_mode})")
    p.add_argument("--adv-weight", type=float, help=f"adversarial weight; 0 = plain supervised ({loss.adv_weight})")
    p.add_argument("--warmup-epochs", type=int, help=f"supervised epochs before the adversarial term ({loss.adv_warmup_epochs})")
    p.add_argument("--epochs", type=int, help=f"training epochs ({t.epochs})")
    p.add_argument("--batch-size", type=int, help=f"images per step and device ({t.batch_size})")
    p.add_argument("--lr", type=float, help=f"generator learning rate ({t.lr})")
    p.add_argument("--d-lr", type=float, help=f"discriminator learning rate ({t.d_lr})")
    p.add_argument("--seed", type=int, help=f"random seed ({t.seed})")
    p.add_argument("--accelerator", help=f"auto, cpu, gpu ({t.accelerator})")
    p.add_argument("--devices", type=_devices, help=f"device count or auto; >1 runs DDP ({t.devices})")
    p.add_argument("--precision", help=f"32-true, 16-mixed, bf16-mixed ({t.precision})")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from .config import Config, merge
    from .training import train
    if args.resume:
        if not args.out:
            raise SystemExit("--resume needs --out RUN (the run folder to continue)")
        config = Config.load(Path(args.out) / "config.yaml")
    else:
        config = Config.load(args.config) if args.config else Config()
    overrides: dict = {}
    for flag, (section, key) in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            if key == "encoder_weights" and value.lower() == "none":
                value = None
            overrides.setdefault(section, {})[key] = value
    config = merge(config, overrides)
    result = train(config, resume=args.resume)
    print(f"\nbest validation IoU {result.best_val_iou:.4f}  Dice {result.best_val_dice:.4f}  "
          f"(epoch {result.best_epoch}, {result.steps} steps, {result.wall_time_s:.0f} s)")
    print(f"run written to {result.run_dir}  (summary.json, generator/, checkpoints/)")
    print(json.dumps(result.to_dict()))
    return 0


def _add_data(subparsers) -> None:
    p = subparsers.add_parser("data", help="dataset tools")
    sub = p.add_subparsers(dest="data_command", required=True)
    demo = sub.add_parser("demo", help="write the synthetic demo dataset",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("out", help="folder to write train/ and validation/ into")
    demo.add_argument("--n-train", type=int, default=240, help="training images")
    demo.add_argument("--n-val", type=int, default=60, help="validation images")
    demo.add_argument("--size", type=int, default=128, help="image side in pixels")
    demo.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .data import make_demo_dataset
    out = make_demo_dataset(args.out, args.n_train, args.n_val, args.size, args.seed)
    print(f"demo dataset written to {out}: {args.n_train} train + {args.n_val} validation images of {args.size}x{args.size}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segan", description="GAN-based image segmentation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_data(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .data import DatasetLayoutError, ImageReadError
    try:
        return args.handler(args)
    except (DatasetLayoutError, ImageReadError, FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        print(f"segan: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
