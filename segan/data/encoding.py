"""Mask encodings: how the values stored in a mask file become class indices.

Published datasets store masks in many ways: binary 0/255 greyscale (often JPEG, so with noise),
0/1, foreground as the dark value, class-index PNGs, palette PNGs (Pascal VOC, 255 = void), RGB
colour codes with a colour->class table, or values that need remapping (Oxford-IIIT Pet trimaps:
1 pet, 2 background, 3 border). A `MaskEncoding` turns any of them into uint8 class indices with
one vectorised pass (a lookup table or a sorted-key search), so decoding costs no more than
reading the file.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from .io import ImageReadError, read_raw_mask


@dataclass(frozen=True)
class MaskEncoding:
    """How mask values map to class indices.

    Which rule applies: `colors` given -> RGB colour table; two classes -> binary; otherwise
    class indices (palette PNGs read as their palette indices).

    Attributes:
        num_classes: classes including background; 2 is a binary task.
        ignore_index: value left out of loss and scores (e.g. 255, VOC's void); None for none.
        threshold: binary masks: grey values above it are foreground (removes JPEG noise). Masks
            whose values are all 0/1 are taken as they are.
        invert: binary masks: the dark value is the foreground (e.g. ISBI 2012 membranes).
        value_map: stored value -> class index (or `ignore_index`), applied before anything else;
            values not listed are kept. For binary masks it replaces the threshold: e.g.
            {1: 1, 2: 0, 3: 255} for trimaps, {0: 1, 255: 0} for dark foreground.
        colors: RGB masks: one [R, G, B] per class, in class order.
        ignore_color: RGB masks: a colour that marks ignored pixels.
    """

    num_classes: int = 2
    ignore_index: int | None = 255
    threshold: int = 127
    invert: bool = False
    value_map: Mapping[int, int] | None = None
    colors: Sequence[Sequence[int]] | None = None
    ignore_color: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"need at least 2 classes (background and one more), got {self.num_classes}")
        if self.colors is not None:
            if len(self.colors) != self.num_classes:
                raise ValueError(f"data.colors has {len(self.colors)} colours for {self.num_classes} classes; "
                                 "give one [R, G, B] per class, in class order")
            keys = [self._key(c, "data.colors") for c in self.colors]
            if len(set(keys)) != len(keys):
                raise ValueError(f"data.colors repeats a colour: {self.colors}")
        if self.ignore_color is not None:
            self._key(self.ignore_color, "data.ignore_color")
        for raw, target in (self.value_map or {}).items():
            if not 0 <= int(raw) <= 255 or not (0 <= int(target) < self.num_classes or target == self.ignore_index):
                raise ValueError(f"data.value_map {raw}: {target}: stored values are 0-255 and targets a class "
                                 f"index (0-{self.num_classes - 1}) or the ignore index {self.ignore_index}")

    @staticmethod
    def _key(color: Sequence[int], name: str) -> int:
        if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
            raise ValueError(f"{name}: a colour is [R, G, B] with values 0-255, got {list(color)}")
        r, g, b = (int(c) for c in color)
        return (r << 16) | (g << 8) | b

    @classmethod
    def from_config(cls, data) -> "MaskEncoding":
        """The encoding a `DataConfig` declares."""
        return cls(num_classes=data.num_classes, ignore_index=data.ignore_index, threshold=data.threshold,
                   invert=data.invert, value_map=data.value_map, colors=data.colors,
                   ignore_color=data.ignore_color)

    @property
    def kind(self) -> str:
        return "rgb" if self.colors is not None else "binary" if self.num_classes == 2 else "index"

    def describe(self) -> str:
        if self.kind == "rgb":
            return f"RGB colours, one per class ({self.num_classes} classes)" + (
                f", {list(self.ignore_color)} ignored" if self.ignore_color is not None else "")
        mapped = f", values remapped {dict(self.value_map)}" if self.value_map else ""
        if self.kind == "binary":
            rule = "exact values after the remap" if self.value_map else (
                f"0/1 as stored, else grey > {self.threshold} is {'background' if self.invert else 'foreground'}")
            return f"binary ({rule}{mapped})"
        ignore = f", {self.ignore_index} ignored" if self.ignore_index is not None else ""
        return f"class index per pixel (0-{self.num_classes - 1}{ignore}{mapped})"

    def valid_values(self) -> set[int]:
        """Class indices this encoding may produce."""
        values = set(range(self.num_classes))
        return values | {self.ignore_index} if self.ignore_index is not None else values

    def decode(self, raw: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
        """Stored mask (HxW, or HxWxC colour) -> uint8 HxW class indices; raises `ImageReadError`
        naming `path` for values the encoding does not allow."""
        if self.kind == "rgb":
            return self._decode_rgb(raw, path)
        grey = self._grey(raw, path)
        if self.value_map:
            labels = cv2.LUT(np.ascontiguousarray(grey), self._value_lut)
        elif self.kind == "binary":
            labels = grey if int(grey.max(initial=0)) <= 1 else (grey > self.threshold).astype(np.uint8)
            return (1 - labels).astype(np.uint8) if self.invert else labels
        else:
            labels = grey
        self._check(labels, path)
        return labels

    def _grey(self, raw: np.ndarray, path) -> np.ndarray:
        if raw.ndim == 3:
            if raw.shape[2] in (1, 2):
                raw = raw[:, :, 0]
            elif self.kind == "binary":
                raw = cv2.cvtColor(np.ascontiguousarray(raw[:, :, :3]), cv2.COLOR_BGR2GRAY)
            elif (raw[:, :, 0] == raw[:, :, 1]).all() and (raw[:, :, 1] == raw[:, :, 2]).all():
                raw = raw[:, :, 0]
            else:
                raise ImageReadError(f"{path}: a colour mask, but class indices were expected; for colour-coded "
                                     "masks give data.colors (one [R, G, B] per class)")
        if raw.dtype == np.uint16:
            if int(raw.max(initial=0)) > 255:
                if self.kind != "binary":
                    raise ImageReadError(f"{path}: 16-bit mask values above 255; class indices must be 0-255")
                return (raw > (self.threshold * 257)).astype(np.uint8)  # same threshold on the 16-bit scale
            raw = raw.astype(np.uint8)
        if raw.dtype != np.uint8:
            raise ImageReadError(f"{path}: mask pixels of type {raw.dtype}; expected 8- or 16-bit integers")
        return raw

    def _check(self, labels: np.ndarray, path) -> None:
        bad = labels >= self.num_classes
        if self.ignore_index is not None:
            bad &= labels != self.ignore_index
        if bad.any():
            values = np.unique(labels[bad])[:10].tolist()
            raise ImageReadError(
                f"{path}: mask values {values} are neither a class index (0-{self.num_classes - 1}) nor the "
                f"ignore index {self.ignore_index}; check the class list, or map them with data.value_map")

    @functools.cached_property
    def _value_lut(self) -> np.ndarray:
        lut = np.arange(256, dtype=np.uint8)
        for stored, target in self.value_map.items():
            lut[int(stored)] = int(target)
        return lut

    @functools.cached_property
    def _colour_lut(self) -> tuple[np.ndarray, int]:
        """A lookup table over all 2^24 colours (16 MB, built once per process) and the value it
        holds for colours not in the table: a gather per pixel is the cheapest decode there is."""
        valid = self.valid_values() | ({255} if self.ignore_color is not None else set())
        unknown = next(v for v in range(254, -1, -1) if v not in valid)
        lut = np.full(1 << 24, unknown, np.uint8)
        for index, colour in enumerate(self.colors):
            lut[self._key(colour, "colors")] = index
        if self.ignore_color is not None:
            lut[self._key(self.ignore_color, "ignore_color")] = self.ignore_index if self.ignore_index is not None else 255
        return lut, unknown

    def _decode_rgb(self, raw: np.ndarray, path) -> np.ndarray:
        if raw.ndim != 3 or raw.shape[2] < 3:
            raise ImageReadError(f"{path}: a single-channel mask, but data.colors declares RGB colour codes")
        if raw.dtype != np.uint8:
            raise ImageReadError(f"{path}: RGB masks must be 8-bit, got {raw.dtype}")
        keys = colour_keys(raw)
        lut, unknown_value = self._colour_lut
        labels = lut[keys]
        unknown = labels == unknown_value
        if unknown.any():
            found = np.unique(keys[unknown])[:5].tolist()
            colours = [[(k >> 16) & 255, (k >> 8) & 255, k & 255] for k in found]
            raise ImageReadError(f"{path}: {int(unknown.sum())} pixels have colours {colours} that are in neither "
                                 "data.colors nor data.ignore_color")
        return labels


def colour_keys(raw: np.ndarray) -> np.ndarray:
    """HxWx3+ 8-bit BGR(A) -> HxW uint32 keys R<<16 | G<<8 | B, the form colour tables use."""
    if sys.byteorder == "little":
        # BGRA bytes viewed as little-endian uint32 are B | G<<8 | R<<16 | A<<24.
        bgra = cv2.cvtColor(np.ascontiguousarray(raw[:, :, :3]), cv2.COLOR_BGR2BGRA)
        return bgra.view(np.uint32)[:, :, 0] & 0xFFFFFF
    bgr = raw[:, :, :3].astype(np.uint32)
    return (bgr[:, :, 2] << 16) | (bgr[:, :, 1] << 8) | bgr[:, :, 0]


def read_mask(path: str | Path, encoding: MaskEncoding | None = None) -> np.ndarray:
    """Reads a mask file as uint8 HxW class indices (default: a binary 0/1 or 0/255 mask)."""
    encoding = encoding or MaskEncoding()
    return encoding.decode(read_raw_mask(path, colour=encoding.kind == "rgb"), path)


def read_roi(path: str | Path) -> np.ndarray:
    """Reads a region-of-interest mask as bool HxW: True inside (0/1 or 0/255 masks, thresholded)."""
    return read_mask(path, MaskEncoding()).astype(bool)
