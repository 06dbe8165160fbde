"""The `segan` command line, thin over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

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


def _value_map(text: str) -> dict[int, int]:
    try:
        pairs = (item.split(":") for item in text.split(","))
        return {int(stored): int(target) for stored, target in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STORED:CLASS pairs such as 1:1,2:0,3:255, got '{text}'") from None


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """Layout and mask-encoding flags shared by `train` and `data check` (see DataConfig)."""
    from .config import DataConfig
    d = DataConfig()
    g = p.add_argument_group("dataset layout (default: detected)")
    g.add_argument("--train-split", help=f"training split name ({d.train_split})")
    g.add_argument("--val-split", help="validation split name (default: validation, val or valid if present, "
                                       "else --val-fraction of train is held back)")
    g.add_argument("--val-fraction", type=float, help=f"fraction held back without a validation split ({d.val_fraction})")
    g.add_argument("--split-seed", type=int, help=f"seed of that hold-out, apart from --seed ({d.split_seed})")
    g.add_argument("--image-dir", help="image folder, relative to --data or absolute; {split} = split name "
                                       "(e.g. '{split}/images', '{split}')")
    g.add_argument("--mask-dir", help="mask folder, as --image-dir (e.g. '{split}annot')")
    g.add_argument("--roi-dir", help="region-of-interest masks, as --image-dir; pixels outside are ignored")
    g.add_argument("--image-name", help="pairing key in image stems: template with {id} (e.g. '{id}_training') "
                                        "or a regex with group id (default: the whole stem)")
    g.add_argument("--mask-name", help="pairing key in mask stems, as --image-name (e.g. '{id}_manual1')")
    g.add_argument("--roi-name", help="pairing key in region-of-interest stems, as --image-name")
    g.add_argument("--pairs-file", help="list file of 'image mask' lines instead of folders (e.g. '{split}.txt')")
    g.add_argument("--strip-prefix", help="prefix to strip from absolute paths in --pairs-file (default: detected)")
    g = p.add_argument_group("mask encoding (colour tables: data.colors in --config)")
    g.add_argument("--classes", nargs="+", help=f"class names, background first; two = binary ({d.classes})")
    g.add_argument("--ignore-index", type=int, help=f"mask value left out of loss and scores ({d.ignore_index})")
    g.add_argument("--threshold", type=int, help=f"binary masks: grey values above it are foreground ({d.threshold})")
    g.add_argument("--invert", action="store_true", default=None,
                   help="binary masks: the dark value is the foreground")
    g.add_argument("--value-map", type=_value_map, help="remap stored values first, e.g. 1:1,2:0,3:255")
    g.add_argument("--in-channels", type=int, choices=(1, 3), help=f"1 greyscale or 3 RGB ({d.in_channels})")


def _config(args: argparse.Namespace, flags: dict, base=None):
    """The config: `base`, or --config FILE, or the defaults; with the given flags on top."""
    from .config import Config, merge
    config = base or (Config.load(args.config) if getattr(args, "config", None) else Config())
    overrides: dict = {}
    for flag, (section, key) in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            if key == "encoder_weights" and value.lower() == "none":
                value = None
            overrides.setdefault(section, {})[key] = value
    return merge(config, overrides)


def _add_train(subparsers) -> None:
    from .config import Config
    defaults = Config()
    d, g, dis, loss, t = defaults.data, defaults.generator, defaults.discriminator, defaults.loss, defaults.train
    p = subparsers.add_parser(
        "train", help="train a GAN segmenter", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a U-Net generator against a conditional PatchGAN discriminator. Settings come "
                    "from the defaults, then --config FILE.yaml, then the flags given here.")
    p.add_argument("--data", help="dataset folder (layouts: see 'dataset layout' below and datasets/README.md)")
    p.add_argument("--out", help=f"run folder to write (default from config: {t.out})")
    p.add_argument("--config", help="YAML file with data/generator/discriminator/loss/train sections "
                                    "(e.g. a recipe: datasets/camvid/config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.ckpt with OUT/config.yaml")
    _add_data_flags(p)
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
    from .config import Config
    from .training import train
    base = None
    if args.resume:
        if not args.out:
            raise SystemExit("--resume needs --out RUN (the run folder to continue)")
        base = Config.load(Path(args.out) / "config.yaml")
    config = _config(args, TRAIN_FLAGS, base)
    result = train(config, resume=args.resume)
    if result.stopped:
        print(f"\n{result.stopped}")
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
    check = sub.add_parser(
        "check", help="check a dataset folder: layout, pairs, sizes, mask values, class frequencies",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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


def _add_predict(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="segment files and folders of images with a trained run",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes OUTPUT/masks/<input tree>/<stem>.png (binary 0/255, or class indices with a "
                    "colour palette) and OUTPUT/manifest.csv with one row per input. Unreadable files are "
                    "reported and skipped; the exit code is 1 if any were.")
    p.add_argument("--model", required=True, help="run folder written by segan train")
    p.add_argument("--input", required=True, nargs="+", help="image files, folders (recursive) or globs")
    p.add_argument("--output", required=True, help="output folder; must not be inside an input folder")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--num-workers", type=int, default=2, help="image decoding processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--tta", action="store_true",
                   help="average flips (and 90-degree rotations when the run allows them)")
    p.add_argument("--threshold", type=float, default=0.5, help="binary foreground probability threshold")
    p.add_argument("--tile-size", type=int, default=1024,
                   help="images trained at native scale (--resize crop) and larger than this are tiled")
    p.add_argument("--tile-overlap", type=float, default=0.25, help="fraction of a tile shared with its neighbour")
    p.add_argument("--save-probs", action="store_true", help="also write OUTPUT/probs/<stem>.npy (float16, CxHxW)")
    p.add_argument("--overlay", action="store_true", help="also write OUTPUT/overlays/<stem>.jpg, the mask over the image")
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose mask exists (resume a job)")
    p.add_argument("--shard", help="K/N: take the K-th of N deterministic parts (K from 0); under torchrun, "
                                   "RANK/WORLD_SIZE choose it (default: everything)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from .batch_predict import parse_shard, predict_folder
    from .inference import Predictor
    predictor = Predictor.from_pretrained(args.model, device=args.device, tile_size=args.tile_size,
                                          tile_overlap=args.tile_overlap, tta=args.tta, threshold=args.threshold)
    summary = predict_folder(predictor, args.input, args.output, batch_size=args.batch_size,
                             num_workers=args.num_workers, save_probs=args.save_probs, overlay=args.overlay,
                             skip_existing=args.skip_existing, shard=parse_shard(args.shard),
                             progress=not args.no_progress)
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
    p = subparsers.add_parser(
        "evaluate", help="score a trained run on a split, or predicted masks against ground-truth masks",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Scores the masks in --pred against those in --gt, paired by relative path and file stem "
                    "(a/b.png pairs with a/b.jpg), prints a table and writes OUT/metrics.json (every figure "
                    "with its definition; null where undefined) and OUT/per_image.csv (worst images first). "
                    "Per class: IoU, Dice, precision, recall pooled over all pixels of the split (micro), and "
                    "IoU, Dice per image then averaged; macro means over classes with and without the "
                    "background. A class absent from both truth and prediction is undefined, not 0 or 1, and "
                    "left out of the means. Binary tasks report the foreground class.")
    p.add_argument("--model", metavar="RUN", help="score a trained run: segment --data's --split with the same code "
                                                  "as segan predict, then score (instead of --pred/--gt)")
    p.add_argument("--data", metavar="DIR", help="dataset folder for --model (default: the run's own)")
    p.add_argument("--split", default="val", help="with --model: val or train as training divided the data, or a "
                                                  "split folder name such as test")
    p.add_argument("--tta", action="store_true", help="with --model: test-time augmentation, as in segan predict")
    p.add_argument("--device", default="auto", help="with --model: auto, cpu, cuda")
    p.add_argument("--threshold", type=float, default=0.5, help="with --model: binary foreground threshold")
    p.add_argument("--sweep-threshold", action="store_true",
                   help="with --model, binary: choose the threshold with the best validation Dice, then score "
                        "--split (not val) with it; never chosen on the split it scores")
    p.add_argument("--pred", metavar="DIR", help="predicted masks (searched recursively; a segan predict output folder works: "
                                  "its masks/ are used)")
    p.add_argument("--gt", metavar="DIR", help="ground-truth masks in the same layout (a dataset split folder with images/ + "
                                "masks/ works: its masks/ are used)")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class names, background first; two = binary (0/1 or 0/255 masks). Default: the names a "
                        "segan predict output records, else background foreground")
    p.add_argument("--config", metavar="YAML", help="with --gt: take classes and the ground truth's mask encoding "
                                                    "(invert, value_map, colors, ...) from this config's data section")
    p.add_argument("--ignore-index", type=int, default=255,
                   help="ground-truth value not scored (multi-class masks); -1 = none")
    p.add_argument("--roi", metavar="DIR", help="optional region-of-interest masks in the same layout; pixels where it is 0 "
                                 "are not scored")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the ground truth that has a prediction; without it a missing prediction is an error")
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json and per_image.csv; when not given, "
                                                "'evaluation' beside the prediction masks folder (PRED/evaluation "
                                                "for a segan predict output)")
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folders, format_table, write_report
    from .metrics import json_safe
    if args.model:
        from .evaluation import evaluate_model
        if args.pred or args.gt:
            raise ValueError("give either --model RUN (with --data/--split) or --pred DIR --gt DIR, not both")
        out = Path(args.out) if args.out else Path(args.model) / "evaluation" / args.split
        threshold = args.threshold
        if args.sweep_threshold:
            from .evaluation import sweep_threshold
            if args.split == "val":
                raise ValueError("--sweep-threshold chooses the threshold on val, so it cannot also score val; "
                                 "give --split test (or another held-out split)")
            sweep = sweep_threshold(args.model, args.data, out.parent / "val", tta=args.tta, device=args.device)
            threshold = sweep["best_threshold"]
            print(f"threshold {threshold} chosen on val (Dice {sweep['best']['dice']:.4f}; "
                  f"at 0.5: {sweep['at_0.5']['dice']:.4f}); sweep in {out.parent / 'val' / 'threshold_sweep.json'}")
        result = evaluate_model(args.model, args.data, args.split, out, tta=args.tta, device=args.device,
                                threshold=threshold)
    elif args.pred and args.gt:
        from .data import MaskEncoding
        encoding = None
        classes = args.classes
        if args.config:
            from .config import Config
            data = Config.load(args.config).data
            classes = classes or data.classes
            encoding = MaskEncoding.from_config(data)
        manifest = Path(args.pred) / "manifest.json"
        if classes is None and manifest.is_file():
            classes = json.loads(manifest.read_text()).get("classes") or None
        result = evaluate_folders(args.pred, args.gt, class_names=classes or ["background", "foreground"],
                                  ignore_index=None if args.ignore_index < 0 else args.ignore_index,
                                  roi_dir=args.roi, allow_missing=args.allow_missing, encoding=encoding)
        out = Path(args.out) if args.out else result.pred_dir.parent / "evaluation"
        write_report(result, out)
    else:
        raise ValueError("segan evaluate needs --model RUN, or --pred DIR (predicted masks) and --gt DIR "
                         "(ground-truth masks)")
    print(format_table(result))
    print(f"written {out / 'metrics.json'} and {out / 'per_image.csv'}")
    head = result.report["headline"]
    print(json.dumps(json_safe({"images": result.report["images"], "scope": head["scope"], "iou": head["iou"],
                                "dice": head["dice"], "out": str(out)})))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segan", description="GAN-based image segmentation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="refuse images declaring more pixels than this before decoding them (default 16384^2 "
                             "= 268435456, or SEGAN_MAX_IMAGE_PIXELS): guards against decompression bombs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_predict(subparsers)
    _add_data(subparsers)
    _add_evaluate(subparsers)
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
