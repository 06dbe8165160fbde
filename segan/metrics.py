"""Confusion counts and the scores made from them, defined once for training, evaluation and tests.

Counts are per image and per class over pixels that are not ignored. IoU = TP / (TP + FP + FN),
Dice = 2 TP / (2 TP + FP + FN). A class absent from both truth and prediction has a zero
denominator: its score is NaN (undefined) and it is left out of every mean, never counted as 0
or 1.
"""

from __future__ import annotations

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
