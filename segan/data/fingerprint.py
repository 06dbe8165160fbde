"""A dataset's fingerprint: what `segan plan` chooses settings from.

Measured per training pair in the same pass as `segan data check` (`check_dataset(...,
fingerprint=True)`), then pooled over the split:
- images: stored bit depth and channels, whether colour channels differ, intensity range;
- per foreground class: the share of each image it covers, and its objects (8-connected
  components): their area as a share of the image and their width.

An object's width is that of the band that would fit inside it: read off the distance transform
along its ridge (the pixels farthest from the background locally), as 2 x distance - 1 pixels,
averaged along the ridge. A line 3 pixels wide is 3, a disk of diameter 21 is 21, and a
network of membranes gets the width of its strands, not of its junctions. A class whose median
object is under `THIN_PX` wide is flagged thin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# Objects narrower than this (at native resolution) are thin: membranes, vessels, poles. Resizing
# would narrow them further, so `segan plan` trains their datasets on native-resolution crops.
THIN_PX = 8
# Pixels sampled per image for the intensity range: enough for the percentiles, cheap on 4k images.
INTENSITY_SAMPLES = 65_536


def image_statistics(raw: np.ndarray) -> dict:
    """Bit depth, channels, colour and the 1st/99th intensity percentiles of a decoded image (as
    stored: 16-bit stays 16-bit)."""
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    colour_channels = raw if raw.ndim == 2 else raw[:, :, :3 if channels >= 3 else 1]
    flat = colour_channels.reshape(-1, colour_channels.shape[-1] if colour_channels.ndim == 3 else 1)
    step = max(1, len(flat) // INTENSITY_SAMPLES)
    sample = flat[::step]
    colour = bool(sample.shape[1] >= 3 and (np.any(sample[:, 0] != sample[:, 1]) or np.any(sample[:, 1] != sample[:, 2])))
    low, high = np.percentile(sample, [1, 99])
    return {"bits": raw.dtype.itemsize * 8, "channels": channels, "colour": colour, "low": float(low),
            "high": float(high)}


def object_statistics(labels: np.ndarray, num_classes: int) -> dict[int, dict]:
    """Per foreground class present in a decoded mask (class indices; ignored pixels hold a value
    of `num_classes` or more): its share of the image's pixels, and the area (share of the image)
    and width (pixels) of each of its objects."""
    total = labels.size
    result = {}
    for index in range(1, num_classes):
        mask = (labels == index).astype(np.uint8)
        pixels = int(mask.sum())
        if not pixels:
            continue
        count, components = cv2.connectedComponents(mask, connectivity=8)
        areas = np.bincount(components.ravel(), minlength=count)[1:]
        distance = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        ridge = (distance > 0) & (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8)))
        on_ridge = components[ridge]
        sums = np.bincount(on_ridge, weights=2 * distance[ridge] - 1, minlength=count)[1:]
        counts = np.bincount(on_ridge, minlength=count)[1:]
        widths = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)
        result[index] = {"share": pixels / total, "areas": (areas / total).tolist(), "widths": widths.tolist()}
    return result


def weighted_percentiles(values: list[float], weights: list[float] | None, percents: tuple[float, ...]) -> list[float]:
    """Percentiles of `values` where each counts `weights` times (all once without weights): the
    smallest value whose cumulative weight reaches the percent."""
    order = np.argsort(values)
    ordered = np.asarray(values, dtype=float)[order]
    cumulative = np.cumsum(np.ones(len(values)) if weights is None else np.asarray(weights, dtype=float)[order])
    return [float(ordered[np.searchsorted(cumulative, cumulative[-1] * percent / 100)]) for percent in percents]


@dataclass
class Fingerprint:
    """Pooled statistics of a split (see the module docstring)."""

    images: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) per image
    bits: set[int] = field(default_factory=set)
    channels: set[int] = field(default_factory=set)
    colour: bool = False
    low: float = float("inf")  # lowest 1st percentile of any image
    high: float = float("-inf")  # highest 99th percentile
    class_shares: dict[int, list[float]] = field(default_factory=dict)  # per class: its share of each image
    areas: dict[int, list[float]] = field(default_factory=dict)
    widths: dict[int, list[float]] = field(default_factory=dict)

    def add(self, size: tuple[int, int], image: dict, objects: dict[int, dict], num_classes: int) -> None:
        self.images += 1
        self.sizes.append(size)
        self.bits.add(image["bits"])
        self.channels.add(image["channels"])
        self.colour |= image["colour"]
        self.low, self.high = min(self.low, image["low"]), max(self.high, image["high"])
        for index in range(1, num_classes):
            found = objects.get(index)
            self.class_shares.setdefault(index, []).append(found["share"] if found else 0.0)
            if found:
                self.areas.setdefault(index, []).extend(found["areas"])
                self.widths.setdefault(index, []).extend(found["widths"])

    def to_dict(self, classes: list[str]) -> dict:
        """The figures `segan plan` prints and writes: percentiles rather than every value. Object
        areas and widths are weighted by area (the median is that of the object a pixel of the
        class lies in), so the specks that annotations leave at object borders do not count as
        objects of their own."""
        def pct(values: list[float], digits: int = 4, weights: list[float] | None = None) -> dict:
            if not values:
                return {}
            p10, p50, p90 = weighted_percentiles(values, weights, (10, 50, 90))
            return {"p10": round(p10, digits), "median": round(p50, digits), "p90": round(p90, digits)}
        widths, heights = zip(*self.sizes) if self.sizes else ((), ())
        found = {}
        for index in range(1, len(classes)):
            width = pct(self.widths.get(index, []), 1, self.areas.get(index))
            found[classes[index]] = {
                "image_share": pct(self.class_shares.get(index, [])),
                "images_with_it": sum(share > 0 for share in self.class_shares.get(index, [])),
                "objects": len(self.areas.get(index, [])),
                "object_area": pct(self.areas.get(index, []), 5, self.areas.get(index)),
                "object_width_px": width,
                "thin": bool(width) and width["median"] < THIN_PX}
        return {
            "images": self.images,
            "width": pct(list(widths), 0), "height": pct(list(heights), 0),
            "bits": sorted(self.bits), "channels": sorted(self.channels), "colour": self.colour,
            "intensity": [round(self.low, 1), round(self.high, 1)] if self.images else [],
            "classes": found,
        }
