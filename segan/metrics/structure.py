"""What overlap scores are blind to, per image and per class: boundaries, topology and regions.

Each function takes one class as two boolean masks of the same shape, the prediction and the truth,
and `valid`, the pixels that are scored (None: all). The conventions, stated once:

- Ignored pixels (outside a region of interest, void) count as "not this class" in both masks, and
  boundary pixels touching them are left out, so the edge of a field of view never scores.
- A boundary is the mask minus its erosion by the 4-neighbour cross (MONAI's and MetricsReloaded's
  rule); the image border counts as boundary. Distances are exact Euclidean distances between
  pixel centres, in pixels: each boundary pixel's nearest pixel of the other boundary, found in a
  k-d tree (scipy's), in float64, so the same masks always give the same figures (the tests check
  them against MONAI's distance transform). Each class is measured inside the bounding box of both
  its masks, one pixel wider (as MONAI does), which changes no figure and saves most of the work
  for small objects.
- A class absent from both masks is undefined: every figure is None, and left out of every mean.
- A class present in only one mask gets the image diagonal as its distances (`one_sided` says so)
  and 0 as its scores (NSD, boundary F1, Boundary IoU, clDice).

Families (`FAMILIES`): distance (Hausdorff, HD95, ASSD), boundary (NSD and boundary F1 within a
tolerance, Boundary IoU), topology (clDice, Betti errors) and regions (adapted Rand error and
variation of information of the regions a binary mask's background forms: the cells membranes
delimit, as the ISBI 2012 challenge scores them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np
from scipy.spatial import cKDTree
from skimage.measure import label
from skimage.metrics import adapted_rand_error, variation_of_information
from skimage.morphology import skeletonize

from ..config import STRUCTURE_DEFAULT, STRUCTURE_TOLERANCE

CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
FAMILIES = {
    "distance": ("hd", "hd95", "assd"),
    "boundary": ("nsd", "boundary_f1", "boundary_iou"),
    "topology": ("cldice", "betti0_error", "betti1_error"),
    "regions": ("rand_error", "vi"),
}
# What each figure is called on a page, and which are errors (lower is better) rather than scores.
LABELS = {"hd": "Hausdorff (px)", "hd95": "HD95 (px)", "assd": "ASSD (px)", "nsd": "NSD", "boundary_f1": "boundary F1",
          "boundary_iou": "Boundary IoU", "cldice": "clDice", "betti0_error": "Betti-0 error",
          "betti1_error": "Betti-1 error", "rand_error": "adapted Rand error", "vi": "variation of information"}
LOWER_IS_BETTER = frozenset({"hd", "hd95", "assd", "betti0_error", "betti1_error", "rand_error", "vi"})
DEFAULT_TOLERANCE = STRUCTURE_TOLERANCE
BOUNDARY_IOU_RATIO = 0.02  # of the image diagonal: Cheng et al.'s d for COCO


def boundary(mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside it (or on the image border), less those
    touching an ignored pixel."""
    eroded = cv2.erode(mask.view(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    edge = mask & ~eroded.view(bool)
    if valid is not None:  # outside the image is not ignored
        near_ignored = cv2.dilate((~valid).view(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        edge &= ~near_ignored.view(bool)
    return edge


def union_box(*masks: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the masks' pixels, one pixel wider on each side (inside the image)."""
    x, y, width, height = cv2.boundingRect(np.logical_or.reduce(masks).view(np.uint8))
    return slice(max(y - 1, 0), y + height + 1), slice(max(x - 1, 0), x + width + 1)


def surface_distances(pred: np.ndarray, truth: np.ndarray,
                      valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(distances from each prediction boundary pixel to the truth's boundary, and back); None
    where either boundary is empty. Exact Euclidean distances between pixel centres, by nearest
    neighbour in a k-d tree of the other boundary's pixels (a boundary is a few thousand pixels, so
    this is quicker than a distance transform of the whole box, and it is exact in float64)."""
    pred_points, truth_points = np.argwhere(boundary(pred, valid)), np.argwhere(boundary(truth, valid))
    if not len(pred_points) or not len(truth_points):
        return None
    return cKDTree(truth_points).query(pred_points)[0], cKDTree(pred_points).query(truth_points)[0]


def distance_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None,
                    tolerance: float = DEFAULT_TOLERANCE, diagonal: float | None = None) -> dict[str, float]:
    """Hausdorff distance, HD95 (the larger of the two directional 95th percentiles, linearly
    interpolated: MONAI's convention), ASSD (the mean of both directions' distances pooled), NSD and
    boundary F1 at `tolerance` pixels; `diagonal` (default: these masks') stands for the distances
    where one side has no boundary."""
    distances = surface_distances(pred, truth, valid)
    if distances is None:  # one side has no boundary to measure from: the worst case
        diagonal = diagonal if diagonal is not None else math.hypot(*pred.shape)
        return {"hd": diagonal, "hd95": diagonal, "assd": diagonal, "nsd": 0.0, "boundary_f1": 0.0}
    to_truth, to_pred = distances
    within_pred, within_truth = to_truth <= tolerance, to_pred <= tolerance
    precision, recall = within_pred.mean(), within_truth.mean()
    return {"hd": float(max(to_truth.max(), to_pred.max())),
            "hd95": float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95))),
            "assd": float(np.concatenate([to_truth, to_pred]).mean()),
            "nsd": float((within_pred.sum() + within_truth.sum()) / (len(to_truth) + len(to_pred))),
            "boundary_f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0}


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's pixels within `width` of its contour, by chessboard distance (the Boundary IoU
    reference's 3x3 erosion, repeated; the image border counts as contour)."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * width + 1, 2 * width + 1))  # = `width` 3x3 erosions
    eroded = cv2.erode(padded, square)[1:-1, 1:-1]
    return mask & ~eroded.astype(bool)


def boundary_iou(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None,
                 ratio: float = BOUNDARY_IOU_RATIO, diagonal: float | None = None) -> float:
    """Boundary IoU (Cheng et al. 2021): the IoU of the two masks' bands within d of their contours,
    d = `ratio` of the image diagonal (at least 1 px; `diagonal`: the whole image's, where these
    masks are cut from it)."""
    width = max(1, round(ratio * (diagonal if diagonal is not None else math.hypot(*pred.shape))))
    pred_band, truth_band = boundary_band(pred, width), boundary_band(truth, width)
    if valid is not None:
        pred_band, truth_band = pred_band & valid, truth_band & valid
    union = (pred_band | truth_band).sum()
    return float((pred_band & truth_band).sum() / union) if union else 0.0


def cldice(pred: np.ndarray, truth: np.ndarray) -> float:
    """clDice (Shit et al. 2021): the harmonic mean of the share of the prediction's skeleton inside
    the truth and the share of the truth's skeleton inside the prediction (skimage's skeletons)."""
    pred_skeleton, truth_skeleton = skeletonize(pred), skeletonize(truth)
    if not pred_skeleton.any() or not truth_skeleton.any():
        return 0.0
    precision = (pred_skeleton & truth).sum() / pred_skeleton.sum()
    sensitivity = (truth_skeleton & pred).sum() / truth_skeleton.sum()
    return float(2 * precision * sensitivity / (precision + sensitivity)) if precision + sensitivity else 0.0


def betti_numbers(mask: np.ndarray) -> tuple[int, int]:
    """(components, holes) of a 2-D mask: 8-connected foreground components, and 4-connected
    background components of the zero-padded mask other than the outside (the dual connectivity,
    so a diagonal gap does not both join and split)."""
    # OpenCV counts the zero pixels' label too: one more than the components, two more than the holes
    components = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1
    padded = cv2.copyMakeBorder((~mask).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    holes = cv2.connectedComponents(padded, connectivity=4)[0] - 2
    return int(components), int(holes)


def region_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Adapted Rand error and variation of information (skimage's, as the ISBI 2012 challenge) of the
    regions the background of each mask forms (4-connected), with the mask itself (the membranes)
    and ignored pixels left out of the truth (label 0)."""
    truth_regions = label(~truth & (valid if valid is not None else True), connectivity=1)
    pred_regions = label(~pred, connectivity=1)
    error, _, _ = adapted_rand_error(truth_regions, pred_regions, ignore_labels=(0,))
    under, over = variation_of_information(truth_regions, pred_regions, ignore_labels=(0,))
    return {"rand_error": float(error), "vi": float(under + over)}


def class_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None,
                 families: Iterable[str] = ("distance", "boundary", "topology"),
                 tolerance: float = DEFAULT_TOLERANCE, with_cldice: bool = True) -> dict[str, float | bool | None]:
    """Every figure of `families` for one class in one image, plus `one_sided` (the class is in one
    mask only, so its distances are the diagonal). Ignored pixels are "not this class" in both.
    `with_cldice` False leaves clDice out of the topology family (multi-class tasks)."""
    families = list(families)
    if valid is not None:
        pred, truth = pred & valid, truth & valid
    names = [name for family in families for name in FAMILIES[family] if with_cldice or name != "cldice"]
    if not pred.any() and not truth.any():  # undefined, as overlap scores are
        return {name: None for name in names} | {"one_sided": None}
    scores: dict[str, float | bool | None] = {"one_sided": bool(pred.any()) != bool(truth.any())}
    whole, diagonal = (pred, truth, valid), math.hypot(*pred.shape)
    box = union_box(pred, truth)  # no figure but the regions' changes inside it
    pred, truth, valid = pred[box], truth[box], valid[box] if valid is not None else None
    if "distance" in families or "boundary" in families:
        distances = distance_scores(pred, truth, valid, tolerance, diagonal)
        scores.update({name: distances[name] for name in ("hd", "hd95", "assd", "nsd", "boundary_f1")
                       if name in names})
    if "boundary" in families:
        scores["boundary_iou"] = boundary_iou(pred, truth, valid, diagonal=diagonal)
    if "topology" in families:
        if with_cldice:
            scores["cldice"] = cldice(pred, truth)
        (pred_components, pred_holes), (truth_components, truth_holes) = betti_numbers(pred), betti_numbers(truth)
        scores["betti0_error"] = float(abs(pred_components - truth_components))
        scores["betti1_error"] = float(abs(pred_holes - truth_holes))
    if "regions" in families:  # the regions the background forms reach beyond the box
        scores.update(region_scores(*whole))
    return scores


DEFAULT_FAMILIES = STRUCTURE_DEFAULT


def image_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None, class_names: list[str],
                 families: Iterable[str] = DEFAULT_FAMILIES,
                 tolerance: float = DEFAULT_TOLERANCE) -> dict[str, dict[str, float | bool | None]]:
    """`class_scores` of each foreground class (every class but the first, the background) of one
    image, from its predicted and true class-index masks. clDice and the region scores are for
    binary tasks only (thin foreground structures, and the cells membranes delimit)."""
    families = list(families)
    if len(class_names) > 2:
        families = [family for family in families if family != "regions"]
    scores = {}
    for index, name in enumerate(class_names[1:], start=1):
        scores[name] = class_scores(pred == index, truth == index, valid, families, tolerance,
                                    with_cldice=len(class_names) == 2)
    return scores


def summarise(per_image: list[dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per class and figure: the mean and median over the images where it is defined, how many those
    are, and how many of them had the class in one mask only (their distances are the diagonal)."""
    summary: dict[str, dict[str, dict]] = {}
    for name in per_image[0] if per_image else []:
        rows = [image[name] for image in per_image]
        one_sided = sum(1 for row in rows if row["one_sided"])
        summary[name] = {}
        for figure in (key for key in rows[0] if key != "one_sided"):
            values = np.array([row[figure] for row in rows if row[figure] is not None], dtype=np.float64)
            summary[name][figure] = {"mean": float(values.mean()) if len(values) else None,
                                     "median": float(np.median(values)) if len(values) else None,
                                     "defined": int(len(values)), "one_sided": one_sided}
    return summary


def headline(image: dict[str, dict], figure: str) -> float | None:
    """One image's `figure` as a single number: the mean over the foreground classes where it is
    defined (binary tasks: the foreground's), as the per-image Dice headline is; None where no class
    defines it."""
    values = [scores[figure] for scores in image.values() if scores.get(figure) is not None]
    return float(np.mean(values)) if values else None
