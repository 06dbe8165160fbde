"""The scores segan computes, defined once for training, evaluation, reports and tests.

- `segan.metrics.overlap`: confusion counts and the scores made from them (IoU, Dice, precision,
  recall), per image and per class, and the report `segan evaluate` writes;
- `segan.metrics.structure`: what overlap is blind to, per image and class: boundary distances
  (Hausdorff, HD95, ASSD), boundary agreement within a tolerance (NSD, boundary F1), Boundary IoU,
  topology (clDice, Betti errors) and, for membranes, the adapted Rand error and variation of
  information of the regions they delimit.
"""

from .overlap import (DEFINITIONS, SCORES, Reliability, confusion_matrix, counts, dice, iou, json_safe, nanmean,
                      pooled, precision, recall, report, summary)

__all__ = ["DEFINITIONS", "SCORES", "Reliability", "confusion_matrix", "counts", "dice", "iou", "json_safe", "nanmean",
           "pooled", "precision", "recall", "report", "summary"]
