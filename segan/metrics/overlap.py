"""Confusion counts and the scores made from them, defined once for training, evaluation and tests.

Counts are per image and per class over pixels that are not ignored. IoU = TP / (TP + FP + FN),
Dice = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN). A class absent
from both truth and prediction has a zero denominator: its score is NaN (undefined) and it is left
out of every mean, never counted as 0 or 1. (Likewise precision is undefined where a class is never
predicted, recall where it is absent from the truth.)

`report` turns per-image confusion matrices into the figures `segan evaluate` prints and writes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """Per-image confusion matrices: (B, C, C) int64, rows = truth, columns = prediction.

    Args:
        pred, target: (B, H, W) class indices.
        num_classes: C.
        ignore_index: target value whose pixels are left out.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    batch = target.shape[0]
    pred = pred.reshape(batch, -1).long()
    target = target.reshape(batch, -1).long()
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    image = torch.arange(batch, device=target.device).unsqueeze(1).expand_as(target)
    index = (image * num_classes + target) * num_classes + pred.clamp(0, num_classes - 1)
    counts = torch.bincount(index[valid], minlength=batch * num_classes * num_classes)
    return counts.reshape(batch, num_classes, num_classes)


def counts(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(TP, FP, FN) per class from confusion matrices (..., C, C)."""
    tp = confusion.diagonal(dim1=-2, dim2=-1)
    fp = confusion.sum(dim=-2) - tp
    fn = confusion.sum(dim=-1) - tp
    return tp, fp, fn


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.full_like(numerator, float("nan")))


def iou(confusion: torch.Tensor) -> torch.Tensor:
    tp, fp, fn = counts(confusion)
    return _ratio(tp, tp + fp + fn)


def dice(confusion: torch.Tensor) -> torch.Tensor:
    tp, fp, fn = counts(confusion)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def summary(confusion: torch.Tensor, binary: bool) -> dict[str, float]:
    """The headline scores of a split from its summed (C, C) confusion matrix.

    Binary tasks report the foreground class; multi-class tasks the mean over classes present in
    truth or prediction (background included).
    """
    class_iou, class_dice = iou(confusion), dice(confusion)
    if binary:
        return {"iou": float(class_iou[1]), "dice": float(class_dice[1])}
    return {"iou": float(class_iou.nanmean()), "dice": float(class_dice.nanmean())}


def precision(confusion: torch.Tensor) -> torch.Tensor:
    tp, fp, _ = counts(confusion)
    return _ratio(tp, tp + fp)


def recall(confusion: torch.Tensor) -> torch.Tensor:
    tp, _, fn = counts(confusion)
    return _ratio(tp, tp + fn)


SCORES = {"iou": iou, "dice": dice, "precision": precision, "recall": recall}


def pooled(confusion: torch.Tensor, classes: Sequence[int] | None = None) -> dict[str, float]:
    """Scores from TP, FP, FN summed over `classes` (default all) of a (C, C) matrix before the ratio.

    This is scikit-learn's `average="micro"`. Over all classes of a multi-class task precision and
    recall both equal the pixel accuracy.
    """
    tp, fp, fn = counts(confusion)
    index = torch.as_tensor(list(range(tp.shape[-1])) if classes is None else list(classes), dtype=torch.long)
    tp, fp, fn = (x[..., index].sum(dim=-1) for x in (tp, fp, fn))
    return {"iou": float(_ratio(tp, tp + fp + fn)), "dice": float(_ratio(2 * tp, 2 * tp + fp + fn)),
            "precision": float(_ratio(tp, tp + fp)), "recall": float(_ratio(tp, tp + fn))}


DEFINITIONS = {
    "iou": "TP / (TP + FP + FN) over scored pixels",
    "dice": "2 TP / (2 TP + FP + FN); equals pixel F1",
    "precision": "TP / (TP + FP)",
    "recall": "TP / (TP + FN)",
    "scored_pixels": "pixels whose ground truth is a class index; the ignore index (and pixels outside the "
                     "region of interest, when one is given) are not scored",
    "micro": "per class: TP, FP, FN summed over all images of the split, then the ratio (keys iou, dice, "
             "precision, recall)",
    "per_image": "per class: the ratio in each image, then the mean over the images where it is defined "
                 "(keys iou_per_image, dice_per_image; images_scored says over how many)",
    "macro_with_background": "mean over all classes, background (class 0) included, of the per-class figures",
    "macro_without_background": "mean over classes 1.., background (class 0) left out, of the per-class figures",
    "headline": "binary tasks: the foreground class; multi-class tasks: macro_with_background (the same "
                "figure training reports as validation IoU / Dice)",
    "absent_class": "a class absent from both truth and prediction (in an image, or in the whole split) has "
                    "a zero denominator: its IoU and Dice are undefined (NaN, null in JSON) and it is left out "
                    "of every mean, never counted as 0 or 1. Likewise precision is undefined where the class "
                    "is never predicted and recall where it is absent from the truth.",
}


def nanmean(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the defined (non-NaN) entries; NaN where none is defined, without warnings."""
    defined = ~values.isnan()
    total = torch.where(defined, values, torch.zeros_like(values))
    if dim is None:
        n = defined.sum()
        return total.sum() / n if n > 0 else torch.tensor(float("nan"), dtype=values.dtype)
    n = defined.sum(dim=dim)
    return torch.where(n > 0, total.sum(dim=dim) / n.clamp(min=1), torch.full_like(n, float("nan"), dtype=values.dtype))


def report(confusions: torch.Tensor | np.ndarray, class_names: Sequence[str], binary: bool | None = None) -> dict:
    """The full figures of a split from its per-image confusion matrices (N, C, C), rows truth.

    Returns a JSON-ready dict (floats are float64 values, NaN where undefined): `per_class`
    micro and per-image scores, `macro_with_background`, `macro_without_background`, the
    `headline` (foreground class for binary tasks, `macro_with_background` otherwise),
    `pixel_accuracy` and the `definitions` of every figure, including the absent-class rule.
    """
    confusions = torch.as_tensor(np.asarray(confusions) if isinstance(confusions, np.ndarray) else confusions)
    if confusions.ndim != 3 or confusions.shape[1] != confusions.shape[2]:
        raise ValueError(f"confusions must have shape (N, C, C), got {tuple(confusions.shape)}")
    n_images, n_classes = confusions.shape[0], confusions.shape[1]
    if n_images == 0:
        raise ValueError("no images to report on")
    class_names = list(class_names)
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
    binary = n_classes == 2 if binary is None else binary
    confusions = confusions.long()
    total = confusions.sum(dim=0)

    micro = {name: fn(total) for name, fn in SCORES.items()}
    per_image_scores = {name: SCORES[name](confusions) for name in ("iou", "dice")}  # (N, C)
    per_image = {f"{name}_per_image": nanmean(values, dim=0) for name, values in per_image_scores.items()}
    images_scored = (~per_image_scores["iou"].isnan()).sum(dim=0)
    truth_pixels, predicted_pixels = total.sum(dim=1), total.sum(dim=0)

    per_class = {}
    for c, name in enumerate(class_names):
        entry = {key: float(values[c]) for key, values in {**micro, **per_image}.items()}
        entry.update(images_scored=int(images_scored[c]), truth_pixels=int(truth_pixels[c]),
                     predicted_pixels=int(predicted_pixels[c]))
        per_class[name] = entry

    def macro(first: int) -> dict:
        block = {key: float(nanmean(values[first:])) for key, values in {**micro, **per_image}.items()}
        block["classes_scored"] = int((~micro["iou"][first:].isnan()).sum())
        return block

    with_background, without_background = macro(0), macro(1)
    keys = ("iou", "dice", "iou_per_image", "dice_per_image")
    if binary:
        headline = {"scope": f"foreground class {class_names[1]!r}", **{k: per_class[class_names[1]][k] for k in keys}}
    else:
        headline = {"scope": "macro_with_background", **{k: with_background[k] for k in keys}}
    scored = int(total.sum())
    return {
        "task": "binary" if binary else "multiclass",
        "classes": class_names,
        "images": int(n_images),
        "scored_pixels": scored,
        "pixel_accuracy": float(total.diagonal().sum()) / scored if scored else float("nan"),
        "headline": headline,
        "per_class": per_class,
        "macro_with_background": with_background,
        "macro_without_background": without_background,
        "definitions": dict(DEFINITIONS),
    }


def json_safe(value):
    """`value` with every NaN or infinite float replaced by None, so JSON gets null (not NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


class Reliability:
    """Calibration of predicted probabilities, accumulated image by image.

    Binary tasks: the foreground probability of every scored pixel against how often such pixels
    are foreground (the probability users threshold). Multi-class: the top class's probability
    against how often the top class is right. Pixels fall into `bins` equal-width bins; the
    expected calibration error (ECE) is the pixel-weighted mean |frequency - mean probability|
    over the bins (Guo et al. 2017).
    """

    def __init__(self, bins: int = 15) -> None:
        self.edges = np.linspace(0.0, 1.0, bins + 1)
        self.pixels = np.zeros(bins, np.int64)
        self.confidence = np.zeros(bins, np.float64)  # sums of the probabilities in each bin
        self.hits = np.zeros(bins, np.int64)  # foreground (binary) or correct (multi-class) pixels
        self.binary: bool | None = None

    def add(self, probs: np.ndarray, truth: np.ndarray, scored: np.ndarray | None = None) -> None:
        """probs: CxHxW (C = 1: foreground probability); truth: HxW class indices; scored: HxW
        bool, the pixels that count (default all)."""
        probs = np.asarray(probs, dtype=np.float32)
        self.binary = probs.shape[0] == 1
        if self.binary:
            confidence, hit = probs[0], truth == 1
        else:
            confidence, hit = probs.max(axis=0), probs.argmax(axis=0) == truth
        if scored is not None:
            confidence, hit = confidence[scored], hit[scored]
        index = np.clip(np.searchsorted(self.edges, confidence.ravel(), side="right") - 1, 0, len(self.pixels) - 1)
        self.pixels += np.bincount(index, minlength=len(self.pixels))
        self.confidence += np.bincount(index, weights=confidence.ravel().astype(np.float64), minlength=len(self.pixels))
        self.hits += np.bincount(index, weights=hit.ravel(), minlength=len(self.pixels)).astype(np.int64)

    def result(self) -> dict:
        """{"ece", "pixels", "bins": [{lower, upper, pixels, confidence, frequency}], names}."""
        total = int(self.pixels.sum())
        bins, ece = [], 0.0
        for i, pixels in enumerate(self.pixels):
            confidence = self.confidence[i] / pixels if pixels else float("nan")
            frequency = self.hits[i] / pixels if pixels else float("nan")
            if pixels:
                ece += pixels / total * abs(frequency - confidence)
            bins.append({"lower": float(self.edges[i]), "upper": float(self.edges[i + 1]), "pixels": int(pixels),
                         "confidence": float(confidence), "frequency": float(frequency)})
        binary = self.binary is not False
        return {"ece": float(ece), "pixels": total, "bins": bins,
                "confidence_name": "predicted foreground probability" if binary else "top-class probability",
                "frequency_name": "observed foreground frequency" if binary else "observed accuracy"}
