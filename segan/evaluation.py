"""Scoring folders of predicted masks against ground-truth masks (`segan evaluate --pred --gt`).

Files pair by their path relative to each folder, without the suffix (`a/b.png` pairs with
`a/b.jpg`). Every ground-truth mask needs a prediction unless `allow_missing` is set: an
evaluation that silently drops images would report the wrong figures. Predictions without ground
truth are listed and left out. The figures and their definitions are `segan.metrics.report`.

Mask values are never guessed (see `MaskEncoding`): a prediction or ground truth holding a value
its encoding cannot place, a size mismatch or an unreadable file stops the evaluation before any
figure is computed, with every such file listed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import metrics
from .metrics import structure
from .data.encoding import MaskEncoding, MaskValueError, format_counts, read_mask, read_mask_with_unknown, read_roi
from .data.io import IMAGE_SUFFIXES, ImageReadError
from .text import name_list as _names

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Folders that cannot be evaluated: nothing pairs, missing predictions, sizes that differ,
    mask values that cannot be placed.

    Attributes:
        problems: one line per file (or pair) that could not be scored; empty for errors about
            the folders as a whole.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def __reduce__(self):
        return type(self), (str(self), self.problems)


@dataclass
class EvaluationResult:
    """Per-image confusion matrices of a folder pair and the report made from them."""

    names: list[str]  # relative stems, e.g. "sub/img_001"
    pred_files: list[Path]
    gt_files: list[Path]
    confusions: torch.Tensor  # (N, C, C) int64, rows truth, columns prediction
    class_names: list[str]
    ignore_index: int | None
    report: dict
    pred_dir: Path
    gt_dir: Path
    roi_dir: Path | None = None
    threshold_sweep: dict | None = None  # how the binary threshold was chosen on val, when it was
    unmatched_predictions: list[str] = field(default_factory=list)  # predictions without ground truth
    missing_predictions: list[str] = field(default_factory=list)  # ground truth without prediction (allow_missing)
    roi_files: list[Path | None] = field(default_factory=list)
    encoding: MaskEncoding | None = None  # how the ground truth was decoded
    # per image (in `names`' order): each foreground class's structure figures (segan.metrics.structure)
    structure: list[dict] = field(default_factory=list)

    @property
    def binary(self) -> bool:
        return self.report["task"] == "binary"

    def per_image(self) -> list[dict]:
        """One row per image, worst headline IoU first (images where it is undefined last).

        `iou` / `dice` are the headline of the image: the foreground class for binary tasks, else
        the mean over the classes present in the image's truth or prediction. Binary rows count
        the false-positive and false-negative pixels, multi-class rows the pixels of a wrong class.
        """
        ious, dices = metrics.iou(self.confusions), metrics.dice(self.confusions)  # (N, C) float64
        if self.binary:
            head_iou, head_dice = ious[:, 1], dices[:, 1]
        else:
            head_iou, head_dice = metrics.nanmean(ious, dim=1), metrics.nanmean(dices, dim=1)
        rows = []
        for i, name in enumerate(self.names):
            confusion = self.confusions[i]
            row = {"name": name, "iou": float(head_iou[i]), "dice": float(head_dice[i]),
                   "scored_pixels": int(confusion.sum())}
            if self.binary:  # foreground pixels predicted wrongly, and missed
                row.update(fp_pixels=int(confusion[0, 1]), fn_pixels=int(confusion[1, 0]))
            else:
                row["wrong_pixels"] = int(confusion.sum() - confusion.diagonal().sum())
            for c, cls in enumerate(self.class_names):
                row[f"iou_{cls}"] = float(ious[i, c])
            for c, cls in enumerate(self.class_names):
                row[f"dice_{cls}"] = float(dices[i, c])
            for cls, figures in (self.structure[i] if self.structure else {}).items():
                row.update({f"{figure}_{cls}": math.nan if value is None else float(value)
                            for figure, value in figures.items()})
            row.update(prediction=str(self.pred_files[i]), ground_truth=str(self.gt_files[i]))
            rows.append(row)
        rows.sort(key=lambda r: (math.isnan(r["iou"]), r["iou"] if not math.isnan(r["iou"]) else 0.0, r["name"]))
        return rows

    def to_dict(self) -> dict:
        """What `metrics.json` holds (NaN kept; `write_report` turns it into null)."""
        return {
            **self.report,
            "pred_dir": str(self.pred_dir),
            "gt_dir": str(self.gt_dir),
            "roi_dir": str(self.roi_dir) if self.roi_dir else None,
            "ignore_index": self.ignore_index,
            "unmatched_predictions": self.unmatched_predictions,
            "missing_predictions": self.missing_predictions,
        }


def _mask_files(folder: Path) -> dict[str, Path]:
    """Relative stem -> file, for every image file under `folder` (hidden files and folders skipped)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = rel.with_suffix("").as_posix()
        if key in files:
            raise EvaluationError(f"{files[key]} and {path} have the same name apart from the suffix; "
                                  "keep one mask per image")
        files[key] = path
    return files


def _resolve(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{what} folder not found: {folder}")
    # The output folder of `segan predict` and a dataset split folder hold their masks in masks/.
    if (folder / "masks").is_dir() and ((folder / "manifest.csv").is_file() or (folder / "images").is_dir()):
        return folder / "masks"
    return folder


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, num_classes: int | None = None,
                     class_names: Sequence[str] | None = None, ignore_index: int | None = 255,
                     roi_dir: str | Path | None = None, allow_missing: bool = False,
                     only: Sequence[str] | None = None, encoding: MaskEncoding | None = None,
                     allow_unknown_values: bool = False,
                     structure_families: Sequence[str] = structure.DEFAULT_FAMILIES,
                     tolerance: float = structure.DEFAULT_TOLERANCE) -> EvaluationResult:
    """Scores the predicted masks in `pred_dir` against the ground truth in `gt_dir`.

    Args:
        pred_dir: predicted masks (binary 0/1 or 0/255, multi-class class indices), searched
            recursively; the output folder of `segan predict` (its masks/ inside) works too.
        gt_dir: ground-truth masks in the same relative layout; a dataset split folder with
            images/ + masks/ works too.
        num_classes: class count; default len(class_names), or 2 (binary).
        class_names: class names, background first; default background/foreground or class_<i>.
        ignore_index: ground-truth value that is not scored (multi-class masks; binary masks
            follow `MaskEncoding`'s binary rule, 0/1 or 0/255 thresholded at 127 as in training,
            so they have no ignore value).
        roi_dir: optional masks of the same layout; pixels where the ROI is 0 are not scored.
        allow_missing: score only the ground truth that has a prediction instead of failing.
        only: score exactly these ground-truth stems (e.g. a held-out split of a folder).
        encoding: how ground-truth values become classes (a dataset's `MaskEncoding`); default
            binary 0/1 or 0/255 for two classes, else class indices with `ignore_index`.
        allow_unknown_values: ground-truth values the encoding cannot place are not scored (a
            warning names the files) instead of failing; predictions must always place.

    Raises:
        EvaluationError: before anything is scored, listing every file with values that cannot
            be placed, every size mismatch and every unreadable file.
    """
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise EvaluationError(f"{len(class_names)} class names given for {num_classes} classes")
        num_classes = len(class_names)
    num_classes = 2 if num_classes is None else int(num_classes)
    if num_classes < 2:
        raise EvaluationError(f"need at least 2 classes (background first), got {num_classes}")
    if class_names is None:
        class_names = ["background", "foreground"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]
    if len(set(class_names)) != len(class_names):
        raise EvaluationError(f"class names must differ: {class_names}")

    pred_dir, gt_dir = _resolve(pred_dir, "prediction"), _resolve(gt_dir, "ground-truth")
    preds, truths = _mask_files(pred_dir), _mask_files(gt_dir)
    if only is not None:
        absent = sorted(set(only) - set(truths))
        if absent:
            raise EvaluationError(f"{gt_dir} has no ground-truth mask for {_names(absent)}")
        truths = {name: truths[name] for name in only}
    if not truths:
        raise EvaluationError(f"{gt_dir}: no ground-truth masks ({', '.join(IMAGE_SUFFIXES)})")
    if not preds:
        raise EvaluationError(f"{pred_dir}: no predicted masks ({', '.join(IMAGE_SUFFIXES)})")
    names = sorted(set(preds) & set(truths))
    missing = sorted(set(truths) - set(preds))
    unmatched = sorted(set(preds) - set(truths))
    if not names:
        raise EvaluationError(
            f"no prediction in {pred_dir} pairs with a ground-truth mask in {gt_dir} by relative path and "
            f"file stem: predictions e.g. {_names(sorted(preds), 3)}; ground truth e.g. {_names(sorted(truths), 3)}")
    if missing and not allow_missing:
        raise EvaluationError(
            f"{len(missing)} of {len(truths)} ground-truth masks in {gt_dir} have no prediction in {pred_dir}: "
            f"{_names(missing)}. Predict them, or pass --allow-missing to score only the {len(names)} that have one.")
    if missing:
        log.warning("%d ground-truth masks have no prediction and are not scored: %s", len(missing), _names(missing))
    if unmatched:
        log.warning("%d predictions have no ground truth and are not scored: %s", len(unmatched), _names(unmatched))

    roi_files: dict[str, Path] = {}
    if roi_dir is not None:
        roi_dir = Path(roi_dir)
        if not roi_dir.is_dir():
            raise EvaluationError(f"region-of-interest folder not found: {roi_dir}")
        roi_files = _mask_files(roi_dir)
        without_roi = [name for name in names if name not in roi_files]
        if without_roi:
            raise EvaluationError(f"{len(without_roi)} images have no region-of-interest mask in {roi_dir}: "
                                  f"{_names(without_roi)}")
    encoding = encoding or MaskEncoding(num_classes, ignore_index)
    if allow_unknown_values and not encoding.allow_unknown_values:
        encoding = dataclasses.replace(encoding, allow_unknown_values=True)
    items = [(name, preds[name], truths[name], roi_files.get(name)) for name in names]
    return score_pairs(items, class_names, encoding, structure_families, tolerance, pred_dir=pred_dir, gt_dir=gt_dir,
                       roi_dir=roi_dir, unmatched_predictions=unmatched,
                       missing_predictions=missing if allow_missing else [])


def score_pairs(items: Sequence[tuple[str, Path, Path, Path | None]], class_names: Sequence[str],
                encoding: MaskEncoding, structure_families: Sequence[str] = structure.DEFAULT_FAMILIES,
                tolerance: float = structure.DEFAULT_TOLERANCE, **where) -> EvaluationResult:
    """Scores (name, prediction, ground truth, region of interest or None) files.

    Predictions are segan's own encoding (binary 0/1 or 0/255 by `MaskEncoding`'s binary rule,
    class-index or palette PNGs); ground truth is decoded with `encoding`, the dataset's. `where`
    fills the result's folder fields. `structure_families` (`segan.metrics.structure.FAMILIES`) are
    scored per image and foreground class too, NSD and boundary F1 within `tolerance` pixels.

    Raises:
        EvaluationError: listing every pair that cannot be scored (unplaceable values, unreadable
            files, sizes that differ), after reading them all and before any figure is computed.
    """
    num_classes = len(class_names)
    ignore_index = encoding.ignore_index
    # Predictions never carry an ignore value and never have unknown values ignored: every pixel
    # must hold a class, or the figures would leave out what the prediction got wrong.
    prediction_encoding = MaskEncoding(num_classes, None)
    confusions = torch.zeros(len(items), num_classes, num_classes, dtype=torch.long)
    problems: list[str] = []
    ignored: list[str] = []  # ground truth whose unplaceable values allow_unknown_values left out
    structure_scores: list[dict] = []
    for i, (name, pred_path, gt_path, roi_path) in enumerate(items):
        truth = pred = None
        try:
            truth, unknown = read_mask_with_unknown(gt_path, encoding)
            if unknown:
                ignored.append(f"{gt_path} ({format_counts(unknown)})")
        except ImageReadError as error:
            problems.append(f"ground truth {error}")
        try:
            pred = read_mask(pred_path, prediction_encoding)
        except MaskValueError as error:
            problems.append(_prediction_problem(pred_path, error, num_classes))
        except ImageReadError as error:
            problems.append(f"prediction {error}")
        if truth is None or pred is None:
            continue
        if pred.shape != truth.shape:
            problems.append(f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} (WxH) but ground truth "
                            f"{gt_path} is {truth.shape[1]}x{truth.shape[0]}; predict at the ground truth's size")
            continue
        target = torch.from_numpy(truth).long()
        if roi_path is not None:
            try:
                inside = read_roi(roi_path)
            except ImageReadError as error:
                problems.append(f"region of interest {error}")
                continue
            if inside.shape != truth.shape:
                problems.append(f"region of interest {roi_path} is {inside.shape[1]}x{inside.shape[0]} but ground "
                                f"truth {gt_path} is {truth.shape[1]}x{truth.shape[0]}")
                continue
            target[torch.from_numpy(~inside)] = -1  # confusion_matrix leaves out targets outside 0..C-1
        confusions[i] = metrics.confusion_matrix(torch.from_numpy(pred).long()[None], target[None],
                                                 num_classes, ignore_index)[0]
        if structure_families:
            valid = ((target >= 0) & (target < num_classes)).numpy()  # not ignored, inside the region of interest
            structure_scores.append(structure.image_scores(pred, truth, valid, list(class_names), structure_families,
                                                           tolerance))
    if problems:
        raise EvaluationError(f"{len(problems)} problem(s) in {len(items)} prediction/ground-truth pairs; nothing "
                              "was scored:\n" + "\n".join(f"  - {problem}" for problem in problems), problems)
    if ignored:
        log.warning("%d ground-truth masks hold values the mask encoding cannot place; allow_unknown_values leaves "
                    "those pixels unscored: %s", len(ignored), "; ".join(ignored))
    binary = num_classes == 2
    report = metrics.report(confusions, list(class_names), binary=binary)
    if structure_families:
        report["structure"] = {"families": list(structure_families), "tolerance_px": tolerance,
                               "per_class": structure.summarise(structure_scores)}
    return EvaluationResult(
        names=[item[0] for item in items], pred_files=[item[1] for item in items],
        gt_files=[item[2] for item in items], roi_files=[item[3] for item in items], encoding=encoding,
        confusions=confusions, class_names=list(class_names),
        # binary masks follow the binary rule, so they have no ignore value unless remapped or allowed unknowns
        ignore_index=ignore_index if not binary or encoding.value_map or encoding.allow_unknown_values else None,
        report=report, structure=structure_scores, **where)


def _prediction_problem(path: Path, error: MaskValueError, num_classes: int) -> str:
    """What is wrong with a prediction's values, in a prediction's terms (the encoding's own
    message is about a dataset's masks and points at data.value_map)."""
    values, counts = list(error.values), format_counts(error.values)
    if num_classes == 2:
        return (f"prediction {path}: values {values} cannot be placed ({counts}); a binary prediction is 0/1, or "
                "0/255 thresholded at 127 (segan predict writes 0/255); if the predictions are multi-class, give "
                "--classes with one name per class")
    return (f"prediction {path}: values {values} are not class indices ({counts}); a prediction must give every "
            f"pixel a class index (0-{num_classes - 1})")


def refuse_earlier_report(out_dir: Path, overwrite: bool) -> None:
    """Refuses to replace an earlier evaluation's metrics.json unless `overwrite` says so."""
    if (Path(out_dir) / "metrics.json").is_file() and not overwrite:
        raise EvaluationError(f"{out_dir} already holds an evaluation (metrics.json); nothing was written. Write this "
                              "one elsewhere with --out NEW_FOLDER, or replace it with --overwrite")


def write_report(result: EvaluationResult, out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Writes `metrics.json` (the report with definitions; null where undefined) and `per_image.csv`
    (one row per image, worst headline IoU first; empty cells where undefined) into `out_dir`;
    an earlier report there is replaced only with `overwrite`."""
    out_dir = Path(out_dir)
    refuse_earlier_report(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path, csv_path = out_dir / "metrics.json", out_dir / "per_image.csv"
    metrics_path.write_text(json.dumps(metrics.json_safe(result.to_dict()), indent=2, allow_nan=False) + "\n")
    rows = result.per_image()
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                                 f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return {"metrics": metrics_path, "per_image": csv_path}


def _fmt(value: float) -> str:
    return "   -  " if value is None or math.isnan(value) else f"{value:.4f}"


def format_table(result: EvaluationResult, worst: int = 5) -> str:
    """A plain-text table of the report for the terminal ("-" where a figure is undefined)."""
    report = result.report
    names = list(report["per_class"])
    width = max(len("macro without background"), *(len(n) for n in names)) + 2
    columns = ("IoU", "Dice", "Prec", "Recall", "IoU/img", "Dice/img")
    keys = ("iou", "dice", "precision", "recall", "iou_per_image", "dice_per_image")
    lines = []
    if result.binary:
        ignored = "; masks 0/1 or 0/255, thresholded at 127"
        if result.encoding is not None and result.encoding.allow_unknown_values:
            ignored += "; ground-truth values the binary rule cannot place not scored"
    else:
        ignored = f"; ground-truth value {result.ignore_index} not scored" if result.ignore_index is not None else ""
    roi = "; only pixels inside the region of interest" if result.roi_dir else ""
    lines.append(f"{report['images']} images, {report['scored_pixels']} scored pixels, {len(names)} classes "
                 f"({report['task']}{ignored}{roi})")
    header = "class".ljust(width) + "".join(c.rjust(9) for c in columns) + "  images  truth px"
    lines += [header, "-" * len(header)]
    for name in names:
        entry = report["per_class"][name]
        lines.append(name.ljust(width) + "".join(_fmt(entry[k]).rjust(9) for k in keys)
                     + f"{entry['images_scored']:8d}{entry['truth_pixels']:10d}")
    lines.append("-" * len(header))
    for label, key in (("macro with background", "macro_with_background"),
                       ("macro without background", "macro_without_background")):
        block = report[key]
        lines.append(label.ljust(width) + "".join(_fmt(block[k]).rjust(9) for k in keys))
    head = report["headline"]
    lines.append("")
    lines.append(f"headline ({head['scope']}): IoU {_fmt(head['iou'])}  Dice {_fmt(head['dice'])}  "
                 f"(per image: IoU {_fmt(head['iou_per_image'])}  Dice {_fmt(head['dice_per_image'])})")
    lines.append("IoU/Dice/Prec/Recall pool every pixel of the split per class; IoU/img, Dice/img are means over "
                 "images; '-' = undefined (class absent from truth and prediction), left out of the means")
    lines += _structure_lines(report.get("structure"))
    rows = [r for r in result.per_image() if not math.isnan(r["iou"])][:worst]
    if rows and len(result.names) > 1:
        lines.append("worst images by IoU: " + ", ".join(f"{r['name']} ({r['iou']:.3f})" for r in rows))
    if result.unmatched_predictions:
        lines.append(f"{len(result.unmatched_predictions)} predictions without ground truth, not scored: "
                     f"{_names(result.unmatched_predictions)}")
    if result.missing_predictions:
        lines.append(f"{len(result.missing_predictions)} ground-truth masks without prediction, not scored: "
                     f"{_names(result.missing_predictions)}")
    return "\n".join(lines)


COMPACT_STRUCTURE = (("hd95", "HD95 px"), ("assd", "ASSD px"), ("nsd", "NSD"), ("boundary_iou", "BIoU"),
                     ("cldice", "clDice"), ("betti0_error", "b0 err"), ("betti1_error", "b1 err"),
                     ("rand_error", "Rand err"), ("vi", "VI"))


def _structure_lines(report: dict | None) -> list[str]:
    """The structure figures' means per foreground class, a compact subset (metrics.json has them all)."""
    if not report or not report["per_class"]:
        return []
    figures = [(key, label) for key, label in COMPACT_STRUCTURE
               if key in next(iter(report["per_class"].values()))]
    width = max(len("class"), *(len(name) for name in report["per_class"])) + 2
    lines = ["", f"structure, mean over images where defined (NSD within {report['tolerance_px']:g} px; distances in "
                 "pixels, the image diagonal where a class is in one mask only):",
             "class".ljust(width) + "".join(label.rjust(10) for _, label in figures)]
    for name, entry in report["per_class"].items():
        lines.append(name.ljust(width) + "".join(_fmt(entry[key]["mean"]).rjust(10) for key, _ in figures))
    return lines


def evaluate_model(run: str | Path, data_root: str | Path | None = None, split: str = "val",
                   out: str | Path | None = None, tta: bool = False, device: str = "auto", batch_size: int = 8,
                   num_workers: int = 2, progress: bool = True, threshold: float = 0.5,
                   save_probs: bool = False, overwrite: bool = False,
                   sweep_threshold_on_val: bool = False, backend: str = "torch",
                   precision: str = "auto", observe=None, tta_scales: Sequence[float] = (1.0,),
                   structure_families: Sequence[str] = structure.DEFAULT_FAMILIES,
                   tolerance: float = structure.DEFAULT_TOLERANCE) -> EvaluationResult:
    """Segments a dataset split with a trained run and scores it.

    Runs exactly `segan predict` (same code: scale, padding or tiling, TTA, written PNG masks) into
    `OUT/predictions`, then scores those files, so `evaluate --model` and `predict` followed by
    `evaluate --pred` give the same figures by construction. Masks are scored at their original size.

    Args:
        run: run folder written by `segan train`.
        data_root: dataset folder; default the run's own `data.root`.
        split: "val" or "train" (the run's own split, including a held-back fraction), or the name
            of a split folder (e.g. "test") with images and masks inside.
        out: where predictions/, metrics.json and per_image.csv go; default RUN/evaluation/SPLIT.
        threshold: binary foreground threshold (see `sweep_threshold` to choose one on validation).
        save_probs: also keep the probability maps (predictions/probs/, one .npy file an image).
        overwrite: replace an earlier evaluation in `out`; without it one is refused before any work.
        sweep_threshold_on_val: binary tasks: choose the threshold of best Dice on the validation
            split first (`sweep_threshold`, written beside `out` in val/), then score `split` with it;
            refused for split "val", so the threshold is never chosen on the split it scores.
        backend: what runs the network (`segan.backends.BACKENDS`), as for `segan predict`.
        precision: fp32, bf16, or auto (bf16 where the device has native bf16).
        observe: passed to `predict_folder`: sees each image's probabilities.
        tta_scales: multi-scale test-time augmentation (see `Predictor`).
    """
    from .batch_predict import collect_inputs, predict_folder
    from .data.pairs import find_split
    from .inference import Predictor

    out = Path(out) if out else Path(run) / "evaluation" / split
    refuse_earlier_report(out, overwrite)
    sweep = None
    if sweep_threshold_on_val:
        if split == "val":
            raise EvaluationError("--sweep-threshold chooses the threshold on val, so it cannot also score val; "
                                  "give --split test (or another held-out split)")
        sweep = sweep_threshold(run, data_root, out.parent / "val", tta=tta, device=device, backend=backend,
                                precision=precision, tta_scales=tta_scales, structure_families=structure_families,
                                tolerance=tolerance)
        sweep["file"] = str(out.parent / "val" / "threshold_sweep.json")
        threshold = sweep["best_threshold"]
    predictor = Predictor.from_pretrained(run, device=device, tta=tta, threshold=threshold, backend=backend,
                                          tta_scales=tta_scales, precision=precision)
    config = predictor.config
    data = dataclasses.replace(config.data, root=str(data_root or config.data.root))
    pairs = find_split(data, split)
    predictions = out / "predictions"
    summary = predict_folder(predictor, [pair.image for pair in pairs], predictions, batch_size=batch_size,
                             num_workers=num_workers, progress=progress, save_probs=save_probs, overwrite=True,
                             observe=observe)
    if summary.failed:
        raise EvaluationError(f"{summary.failed} images of the {split} split could not be segmented: "
                              f"{_names(summary.failures, 5)}")
    rel = {item.path: item.rel for item in collect_inputs([pair.image for pair in pairs], predictions)[0]}
    items = [(rel[pair.image].with_suffix("").as_posix(), predictions / "masks" / rel[pair.image].with_suffix(".png"),
              pair.mask, pair.roi) for pair in pairs]
    roi_dirs = {str(pair.roi.parent) for pair in pairs if pair.roi is not None}
    result = score_pairs(items, config.data.classes, MaskEncoding.from_config(data), structure_families, tolerance,
                         pred_dir=predictions / "masks", gt_dir=pairs[0].mask.parent,
                         roi_dir=Path(roi_dirs.pop()) if len(roi_dirs) == 1 else None)
    result.threshold_sweep = sweep
    write_report(result, out, overwrite=True)
    return result


def _probabilities_and_truth(result: EvaluationResult, out: Path):
    """Each image's foreground probabilities (saved by the evaluation in `out`) and its truth, 255
    where not scored."""
    for name, truth_file, roi_file in zip(result.names, result.gt_files, result.roi_files):
        probs = np.load(out / "predictions" / "probs" / f"{name}.npy")[0].astype(np.float32)
        truth = read_mask(truth_file, result.encoding)
        if roi_file is not None:
            truth = np.where(read_roi(roi_file), truth, 255)
        yield probs, truth


def _structure_at(result: EvaluationResult, out: Path, thresholds: Sequence[float], families: Sequence[str],
                  tolerance: float) -> dict[float, dict[str, float | None]]:
    """The foreground's structure figures at each of `thresholds`, in one pass over the saved maps:
    threshold -> figure -> mean over the images where defined."""
    scores: dict[float, list] = {threshold: [] for threshold in thresholds}
    for probs, truth in _probabilities_and_truth(result, out):
        for threshold, images in scores.items():
            images.append(structure.image_scores((probs >= threshold).astype(np.uint8), truth, truth < 2,
                                                 result.class_names, families, tolerance))
    foreground = result.class_names[1]
    return {threshold: {figure: entry["mean"] for figure, entry in structure.summarise(images)[foreground].items()}
            for threshold, images in scores.items()}


def sweep_threshold(run: str | Path, data_root: str | Path | None = None, out: str | Path | None = None,
                    steps: int = 100, criterion: str = "dice",
                    structure_families: Sequence[str] = structure.DEFAULT_FAMILIES,
                    tolerance: float = structure.DEFAULT_TOLERANCE, **predict_args) -> dict:
    """Chooses the binary foreground threshold on the validation split.

    Segments the run's validation split (as `evaluate_model`, keeping the probability maps), then
    scores every threshold k/steps from histograms of the foreground probability of truth-foreground
    and truth-background pixels: exact micro IoU and Dice at each threshold, in one pass over the
    images. The threshold is never chosen on the split it is then used to score. At the chosen
    threshold and at 0.5, `structure_families` are scored too (their means over the images), so a
    threshold that buys Dice with broken structure shows.

    Returns:
        {"best_threshold", "criterion", "best": {...}, "at_0.5": {...}, "thresholds": [...]}, also
        written to OUT/threshold_sweep.json (OUT default RUN/evaluation/val).
    """
    if criterion not in ("dice", "iou"):
        raise ValueError(f"criterion must be dice or iou, got {criterion}")
    out = Path(out) if out else Path(run) / "evaluation" / "val"
    result = evaluate_model(run, data_root, "val", out, save_probs=True, overwrite=True,
                            structure_families=structure_families, tolerance=tolerance, **predict_args)
    if not result.binary:
        raise EvaluationError("a threshold sweep is for binary tasks; multi-class masks take the argmax")
    foreground = np.zeros(steps, np.int64)  # truth-foreground pixels per probability bin
    background = np.zeros(steps, np.int64)
    for probs, truth in _probabilities_and_truth(result, out):
        bins = np.minimum((probs * steps).astype(np.int64), steps - 1)
        foreground += np.bincount(bins[truth == 1], minlength=steps)
        background += np.bincount(bins[truth == 0], minlength=steps)
    # A pixel is foreground at threshold k/steps when its bin is >= k (probability >= k/steps).
    tp = np.cumsum(foreground[::-1])[::-1]
    fp = np.cumsum(background[::-1])[::-1]
    fn = foreground.sum() - tp
    rows = []
    for k in range(1, steps):
        iou = tp[k] / max(tp[k] + fp[k] + fn[k], 1)
        dice = 2 * tp[k] / max(2 * tp[k] + fp[k] + fn[k], 1)
        rows.append({"threshold": round(k / steps, 4), "iou": float(iou), "dice": float(dice)})
    best = max(rows, key=lambda row: row[criterion])
    half = min(rows, key=lambda row: abs(row["threshold"] - 0.5))
    if structure_families:  # on copies: the rows of the sweep stay overlap figures only
        at = _structure_at(result, out, {best["threshold"], half["threshold"]}, structure_families, tolerance)
        best, half = ({**row, "structure": at[row["threshold"]]} for row in (best, half))
    sweep = {"split": "val", "criterion": criterion, "best_threshold": best["threshold"], "best": best,
             "at_0.5": half, "thresholds": rows,
             "note": "micro IoU/Dice of the foreground over the validation split; a pixel is foreground when "
                     "its probability is at least the threshold. Chosen on validation: apply it to test."}
    (out / "threshold_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
    return sweep
