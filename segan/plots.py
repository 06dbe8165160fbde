"""Pictures of a run, drawn with matplotlib (headless): training curves, image panels with error
maps, per-class bars, the confusion matrix, the reliability diagram, paired differences.

Each function returns a matplotlib `Figure`; `save` writes one to a file and closes it. Colours
for classes are `segan.batch_predict.PALETTE`, the palette of predicted masks; the error map
uses the Okabe-Ito colours, which stay apart for colour-blind readers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: files only

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .atomic import atomic_write  # noqa: E402
from .batch_predict import colour_mask  # noqa: E402

# true positive, false positive, false negative (binary error maps)
ERROR_COLOURS = {"true positive": (0, 158, 115), "false positive": (230, 159, 0),
                 "false negative": (86, 180, 233)}
WRONG_COLOUR = (213, 94, 0)  # multi-class: a pixel of the wrong class

# Training curves: panel title -> the metrics.csv columns drawn in it (those present).
# The generator's adversarial term is on another scale than the segmentation losses (and may be
# negative, hinge): it has its own axis, on the right.
RIGHT_AXIS = {"train/adv_loss"}
CURVES: dict[str, tuple[str, ...]] = {
    "generator losses": ("train/seg_loss", "train/g_loss", "train/adv_loss", "val/loss", "train/seg_loss_real",
                         "train/seg_loss_synthetic"),
    "discriminator losses": ("train/d_loss", "train/d_loss_real", "train/d_loss_fake", "semi/d_loss_unlabeled"),
    "validation": ("val/iou", "val/dice"),
    "learning rate": ("lr/generator", "lr/discriminator"),
    "skipped steps (total)": ("train/d_steps_skipped", "train/nonfinite_skipped"),
    "unlabelled images": ("semi/pseudo_share", "semi/pseudo_precision", "semi/unlabeled_loss_epoch"),
}
LABELS = {"train/seg_loss_real": "segmentation loss, real pairs",
          "train/seg_loss_synthetic": "segmentation loss, synthetic pairs", "train/d_loss": "D loss", "train/d_loss_real": "D loss on truth (real)",
          "train/d_loss_fake": "D loss on predictions (fake)",
          "semi/pseudo_share": "pseudo-label share", "semi/pseudo_precision": "pseudo-label precision",
          "semi/unlabeled_loss_epoch": "unlabelled loss", "semi/d_loss_unlabeled": "D loss, unlabelled",
          "train/d_steps_skipped": "D steps skipped", "train/nonfinite_skipped": "non-finite batches skipped"}


def save(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Writes `figure` (format from the suffix) atomically, so a reader never sees half a file."""
    from io import BytesIO
    path = Path(path)
    buffer = BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip(".").replace("jpg", "jpeg"), dpi=dpi, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())
    return path


def _series(rows: Sequence[Mapping[str, str]], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(float(row["step"]), float(row[key])) for row in rows if row.get(key) not in (None, "")]
    if not points:
        return np.zeros(0), np.zeros(0)
    steps, values = np.array(points).T
    return steps, values


def training_curves(rows: Sequence[Mapping[str, str]], best_step: float | None = None,
                    title: str = "") -> Figure:
    """One panel per `CURVES` entry from `metrics.csv` rows (x: training step); a dashed line at
    the best epoch's step. Per-step series are drawn faint with a running mean over them."""
    figure = Figure(figsize=(15, 7.5), layout="constrained")
    axes = figure.subplots(2, 3).flatten()
    for ax, (panel, keys) in zip(axes, CURVES.items()):
        drawn, right = False, None
        colours = iter(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
        for key in keys:
            steps, values = _series(rows, key)
            if not len(steps):
                continue
            drawn = True
            label = LABELS.get(key, key)
            if key in RIGHT_AXIS:
                right = right or ax.twinx()
                label += " (right axis)"
            target, colour = (right if key in RIGHT_AXIS else ax), next(colours)
            if len(steps) > 20:  # per-step values: faint, with a running mean
                target.plot(steps, values, alpha=0.25, linewidth=0.8, color=colour)
                window = max(3, len(values) // 20)
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                target.plot(steps[window - 1:], smooth, color=colour, label=label)
            else:
                target.plot(steps, values, marker="o", markersize=3, color=colour, label=label)
        if best_step is not None and drawn:
            ax.axvline(best_step, color="grey", linestyle="--", linewidth=0.8, label="best epoch")
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            handles = [h for a in (ax, right) if a is not None for h in a.get_legend_handles_labels()[0]]
            ax.legend(handles=handles, fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", color="grey",
                    transform=ax.transAxes)
    if title:
        figure.suptitle(title)
    return figure


def error_map(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, binary: bool,
              ignore_index: int | None = None) -> np.ndarray:
    """RGB: the image darkened, and over it (binary) true positives, false positives and false
    negatives in `ERROR_COLOURS`, or (multi-class) every wrong pixel in `WRONG_COLOUR`.
    Ignored pixels are left as the darkened image."""
    rgb = np.repeat(image, 3, axis=2) if image.ndim == 3 and image.shape[2] == 1 else image
    shown = (0.35 * rgb.astype(np.float32)).astype(np.uint8)
    scored = np.ones(truth.shape, bool) if ignore_index is None else truth != ignore_index
    if binary:
        colours = ERROR_COLOURS
        shown[scored & (truth == 1) & (prediction == 1)] = colours["true positive"]
        shown[scored & (truth != 1) & (prediction == 1)] = colours["false positive"]
        shown[scored & (truth == 1) & (prediction != 1)] = colours["false negative"]
    else:
        shown[scored & (truth != prediction)] = WRONG_COLOUR
    return shown


def _legend(figure: Figure, class_names: Sequence[str], binary: bool, present: set[int]) -> None:
    from .batch_predict import PALETTE
    if binary:
        handles = [Patch(color=np.array(c) / 255, label=name) for name, c in ERROR_COLOURS.items()]
    else:
        handles = [Patch(color=PALETTE[i] / 255, label=class_names[i]) for i in sorted(present)
                   if i < len(class_names)]
        handles.append(Patch(color=np.array(WRONG_COLOUR) / 255, label="wrong class (error map)"))
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)


def image_panels(image: np.ndarray, truth: np.ndarray, predictions: Mapping[str, np.ndarray],
                 class_names: Sequence[str], ignore_index: int | None = None, title: str = "",
                 panel_width: float = 3.2) -> Figure:
    """A row of panels: the image, the truth, then for each prediction its mask and its error map.

    Args:
        image: HxWx3 (or HxWx1) uint8 RGB.
        truth: HxW class indices (`ignore_index` where not scored).
        predictions: label -> HxW class indices (one run, or several to compare).
        class_names: the run's classes, background first; two means binary.
    """
    binary = len(class_names) == 2
    panels: list[tuple[str, np.ndarray]] = [("image", image if image.shape[-1] == 3 else np.repeat(image, 3, 2)),
                                            ("truth", colour_mask(_unignored(truth, ignore_index), binary))]
    for label, prediction in predictions.items():
        panels.append((f"{label}: prediction" if len(predictions) > 1 else "prediction", colour_mask(prediction, binary)))
        panels.append((f"{label}: errors" if len(predictions) > 1 else "errors",
                       error_map(image, truth, prediction, binary, ignore_index)))
    height, width = truth.shape
    figure = Figure(figsize=(panel_width * len(panels), panel_width * height / width + 0.9), layout="constrained")
    for ax, (name, picture) in zip(figure.subplots(1, len(panels)), panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    present = set(np.unique(truth).tolist()) | {int(v) for p in predictions.values() for v in np.unique(p)}
    _legend(figure, class_names, binary, present - {ignore_index})
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _unignored(truth: np.ndarray, ignore_index: int | None) -> np.ndarray:
    return truth if ignore_index is None else np.where(truth == ignore_index, 0, truth)


def class_bars(values: Mapping[str, float | None], title: str = "IoU per class") -> Figure:
    """Horizontal bars of a per-class figure ("undefined" where it is None or NaN)."""
    names = list(values)
    figure = Figure(figsize=(7, 0.35 * len(names) + 1.2), layout="constrained")
    ax = figure.subplots()
    numbers = [np.nan if v is None else float(v) for v in values.values()]
    ax.barh(names, [0 if math.isnan(v) else v for v in numbers], color="#0072B2")
    for y, v in enumerate(numbers):
        ax.text(0.01 if math.isnan(v) else v + 0.01, y, "undefined" if math.isnan(v) else f"{v:.3f}", va="center",
                fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return figure


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    """The confusion matrix normalised by row (each true class sums to 1), with its values."""
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros(confusion.shape, float), where=totals > 0)
    size = 0.55 * len(class_names) + 2.5
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if normalised[i, j] >= 0.005:
                ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_title("confusion matrix (each row: one true class, sums to 1)")
    figure.colorbar(shown, ax=ax, shrink=0.8)
    return figure


def reliability_figure(reliability: Mapping, title: str) -> Figure:
    """Mean predicted probability against observed frequency per bin (`metrics.Reliability`),
    with the diagonal of perfect calibration, the calibration error, and the pixel count per bin."""
    bins = [b for b in reliability["bins"] if b["pixels"]]
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    ax, counts = figure.subplots(1, 2, width_ratios=[1.3, 1])
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    ax.plot([b["confidence"] for b in bins], [b["frequency"] for b in bins], marker="o", color="#D55E00",
            label=f"this run (ECE {reliability['ece']:.4f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(reliability["confidence_name"])
    ax.set_ylabel(reliability["frequency_name"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title)
    edges = [b["lower"] for b in reliability["bins"]] + [reliability["bins"][-1]["upper"]]
    counts.stairs([b["pixels"] for b in reliability["bins"]], edges, fill=True, color="#0072B2")
    counts.set_yscale("log")
    counts.set_xlabel(reliability["confidence_name"])
    counts.set_ylabel("pixels")
    counts.set_title("pixels per bin")
    return figure


def difference_histogram(differences: np.ndarray, interval: tuple[float, float], label: str, metric: str) -> Figure:
    """Histogram of per-image paired differences, with their mean and its bootstrap interval."""
    figure = Figure(figsize=(7, 3.8), layout="constrained")
    ax = figure.subplots()
    ax.hist(differences, bins=min(40, max(10, len(differences) // 3)), color="#0072B2", alpha=0.8)
    mean = float(np.mean(differences))
    ax.axvline(0, color="black", linewidth=1)
    ax.axvline(mean, color="#D55E00", linewidth=1.5, label=f"mean {mean:+.4f}")
    ax.axvspan(*interval, color="#D55E00", alpha=0.15, label=f"95% bootstrap interval [{interval[0]:+.4f}, "
                                                              f"{interval[1]:+.4f}]")
    ax.set_xlabel(f"{metric}: {label} (per image)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title(f"paired per-image differences, {len(differences)} images")
    return figure


def picture_grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]], title: str = "",
                 panel_width: float = 2.4) -> Figure:
    """Pictures in rows, each under its caption: (caption, HxWx3 uint8 or HxW grey) per panel."""
    height, width = rows[0][0][1].shape[:2]
    columns = max(len(row) for row in rows)
    figure = Figure(figsize=(columns * panel_width, len(rows) * (panel_width * height / width + 0.3) + 0.6),
                    layout="constrained")
    axes = np.asarray(figure.subplots(len(rows), columns, squeeze=False))
    for row_axes, row in zip(axes, rows):
        for ax in row_axes:
            ax.axis("off")
        for ax, (caption, picture) in zip(row_axes, row):
            grey = picture.ndim == 2 or picture.shape[-1] == 1
            ax.imshow(picture.reshape(picture.shape[:2]) if grey else picture, cmap="gray" if grey else None,
                      vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(caption, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def drawing_panels(shown: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str], title: str = "",
                   panel_width: float = 2.4) -> Figure:
    """One row per example, three panels: the mask, the real image, the image drawn from the mask
    (`segan synth`). Each example maps "mask" (HxW class indices), "real" and "drawn" (HxWxC uint8)."""
    binary = len(class_names) == 2
    rows = [[("mask", colour_mask(np.where(example["mask"] < len(class_names), example["mask"], 0), binary)),
             ("real", example["real"]), ("drawn", example["drawn"])] for example in shown]
    return picture_grid(rows, title, panel_width)


def ssim_histogram(ssim: np.ndarray, copy_ssim: float) -> Figure:
    """How close each synthetic image comes to its nearest training image (SSIM), with the line
    above which `segan synth sample` counts it a copy."""
    figure = Figure(figsize=(6, 3.2), layout="constrained")
    ax = figure.subplots()
    ax.hist(ssim, bins=np.linspace(min(0.0, float(np.min(ssim))), 1.0, 41), color="#0072B2")
    ax.axvline(copy_ssim, color="#D55E00", linestyle="--", label=f"copy (SSIM ≥ {copy_ssim:g})")
    copies = int((ssim >= copy_ssim).sum())
    ax.set_title(f"nearest training image of each synthetic one: {copies} of {len(ssim)} copies", fontsize=10)
    ax.set_xlabel("SSIM with the nearest training image")
    ax.set_ylabel("synthetic images")
    ax.legend(fontsize=8)
    return figure
