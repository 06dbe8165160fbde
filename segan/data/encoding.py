"""Mask encodings: how the values stored in a mask file become class indices.

Published datasets store masks in many ways: binary 0/255 greyscale (often JPEG, so with noise),
0/1, foreground as the dark value, class-index PNGs, palette PNGs (Pascal VOC, 255 = void), RGB
colour codes with a colour->class table, or values that need remapping (Oxford-IIIT Pet trimaps:
1 pet, 2 background, 3 border). A `MaskEncoding` turns any of them into uint8 class indices with
one vectorised pass (a lookup table or a sorted-key search), so decoding costs no more than
reading the file.

A stored value is never guessed: a value the declared encoding cannot place in a class (a binary
mask holding 2, a class index beyond the class list, a colour not in the table) raises
`MaskValueError` naming the file, each such value and its pixel count, unless
`allow_unknown_values` asks for those pixels to be ignored instead.
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

# A message lists at most this many unplaceable values (the error's `values` holds them all): a
# JPEG mask read with the wrong encoding can hold a hundred grey levels.
MAX_VALUES_LISTED = 32


class MaskValueError(ImageReadError):
    """A mask holding stored values its encoding cannot place in a class.

    Attributes:
        path: the mask file ("<array>" when decoding an array).
        values: every unplaceable stored value (an int, or "(R,G,B)" for colour masks) -> pixels.
    """

    def __init__(self, message: str, path: str | Path = "<array>",
                 values: Mapping[int | str, int] | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.values = dict(values or {})

    def __reduce__(self):
        # Exceptions pickle as type(*args); keep path and values across DataLoader workers and pools.
        return type(self), (str(self), self.path, self.values)


def format_counts(values: Mapping[int | str, int], limit: int = MAX_VALUES_LISTED) -> str:
    """'2: 5 pixels, 7: 1 pixel' for value -> pixel count, in the mapping's order, at most `limit`."""
    items = list(values.items())
    shown = ", ".join(f"{value}: {count} pixel{'s' if count != 1 else ''}" for value, count in items[:limit])
    if len(items) > limit:
        rest = sum(count for _, count in items[limit:])
        shown += f", ... {len(items) - limit} more values ({rest} pixels)"
    return shown


# What to do about unplaceable values, after the binary rule and the class-index rule.
BINARY_REMEDY = ("Say what they are with --value-map / data.value_map (stored value: class index, e.g. 2:1), give "
                 "--classes with one name per class if the masks are multi-class, or pass --allow-unknown-values / "
                 "data.allow_unknown_values to ignore those pixels")
INDEX_REMEDY = ("Check the class list (--classes, one name per class), say what they are with --value-map / "
                "data.value_map (stored value: class index or the ignore index), or pass --allow-unknown-values / "
                "data.allow_unknown_values to ignore those pixels")


@dataclass(frozen=True)
class MaskEncoding:
    """How mask values map to class indices.

    Which rule applies: `colors` given -> RGB colour table; `value_map` given -> the remap, then
    class indices; two classes -> the binary rule; otherwise class indices (palette PNGs read as
    their palette indices).

    The binary rule (the one rule for two-class masks without `value_map` or `colors`):
        - largest value 0 or 1: a 0/1 mask; 0 is background, 1 is foreground.
        - holds 255 (65535 in a 16-bit file): a 0/255 mask; values above `threshold` (above
          `threshold` * 257 in 16 bits) are foreground, the rest background, so grey values in
          between (JPEG noise, anti-aliasing) are thresholded and an all-255 mask is all foreground.
        - anything else (largest value 2-254, e.g. {0, 2}, {0, 1, 7}, {0, 128}): its values above
          1 cannot be placed, an error (`MaskValueError`) naming the file, each such value and its
          pixel count. With `allow_unknown_values` those pixels become `ignore_index` instead.
        - `invert` then swaps background and foreground; `ignore_index` plays no part in it (255
          is foreground in a 0/255 mask), except as the value given to allowed unknown pixels.
        The rule is per file: each mask must place itself, whatever the other masks hold.

    Class indices (more classes, or after `value_map`): a value is a class index
    (0..num_classes-1) or `ignore_index`; any other value is a `MaskValueError` (or, with
    `allow_unknown_values`, becomes `ignore_index`). RGB masks: a colour is in `colors` or is
    `ignore_color`; likewise for other colours.

    Attributes:
        num_classes: classes including background; 2 is a binary task.
        ignore_index: value left out of loss and scores (e.g. 255, VOC's void); None for none.
        threshold: binary 0/255 masks: values above it are foreground (removes JPEG noise).
        invert: binary masks: the dark value is the foreground (e.g. ISBI 2012 membranes).
        value_map: stored value -> class index (or `ignore_index`), applied before anything else;
            values not listed are kept. For binary masks it replaces the binary rule: e.g.
            {1: 1, 2: 0, 3: 255} for trimaps, {0: 1, 255: 0} for dark foreground.
        colors: RGB masks: one [R, G, B] per class, in class order.
        ignore_color: RGB masks: a colour that marks ignored pixels.
        allow_unknown_values: map values the encoding cannot place to `ignore_index` instead of
            raising; `decode_with_unknown` returns them so that the caller can warn.
    """

    num_classes: int = 2
    ignore_index: int | None = 255
    threshold: int = 127
    invert: bool = False
    value_map: Mapping[int, int] | None = None
    colors: Sequence[Sequence[int]] | None = None
    ignore_color: Sequence[int] | None = None
    allow_unknown_values: bool = False

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
        if self.allow_unknown_values and self.ignore_index is None:
            raise ValueError("allow_unknown_values maps unplaceable mask values to the ignore index, but "
                             "ignore_index is None; set one (255 is usual)")

    @staticmethod
    def _key(color: Sequence[int], name: str) -> int:
        if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
            raise ValueError(f"{name}: a colour is [R, G, B] with values 0-255, got {list(color)}")
        r, g, b = (int(c) for c in color)
        return (r << 16) | (g << 8) | b

    @classmethod
    def from_config(cls, data) -> "MaskEncoding":
        """The encoding a `DataConfig` declares."""
        # getattr: configs written before data.allow_unknown_values existed do not have it.
        return cls(num_classes=data.num_classes, ignore_index=data.ignore_index, threshold=data.threshold,
                   invert=data.invert, value_map=data.value_map, colors=data.colors,
                   ignore_color=data.ignore_color,
                   allow_unknown_values=bool(getattr(data, "allow_unknown_values", False)))

    @property
    def kind(self) -> str:
        return "rgb" if self.colors is not None else "binary" if self.num_classes == 2 else "index"

    def describe(self) -> str:
        unknown = (f"; other values ignored (as {self.ignore_index})" if self.allow_unknown_values
                   else "; other values are errors")
        if self.kind == "rgb":
            return f"RGB colours, one per class ({self.num_classes} classes)" + (
                f", {list(self.ignore_color)} ignored" if self.ignore_color is not None else "") + unknown
        mapped = f", values remapped {dict(self.value_map)}" if self.value_map else ""
        ignore = f", {self.ignore_index} ignored" if self.ignore_index is not None else ""
        if self.kind == "binary" and not self.value_map:
            fg, bg = ("background", "foreground") if self.invert else ("foreground", "background")
            return (f"binary (0/1 masks: 1 is {fg}; masks holding 255: above {self.threshold} is {fg}, "
                    f"the rest {bg}{unknown})")
        if self.kind == "binary":
            return f"binary (exact values after the remap: 0/1{ignore}{mapped}{unknown})"
        return f"class index per pixel (0-{self.num_classes - 1}{ignore}{mapped}{unknown})"

    def valid_values(self) -> set[int]:
        """Class indices this encoding may produce."""
        values = set(range(self.num_classes))
        return values | {self.ignore_index} if self.ignore_index is not None else values

    def decode(self, raw: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
        """Stored mask (HxW, or HxWxC colour) -> uint8 HxW class indices.

        Raises:
            MaskValueError: values the encoding cannot place (unless `allow_unknown_values`),
                naming `path`, each value and its pixel count.
            ImageReadError: a mask of the wrong kind (colour where indices are expected, ...).
        """
        return self.decode_with_unknown(raw, path)[0]

    def decode_with_unknown(self, raw: np.ndarray, path: str | Path = "<array>"
                            ) -> tuple[np.ndarray, dict[int | str, int]]:
        """As `decode`, also returning the unplaceable values that `allow_unknown_values` turned
        into `ignore_index` (value, or "(R,G,B)" for colours -> pixels; empty when there were none)."""
        if self.kind == "rgb":
            return self._decode_rgb(raw, path)
        stored = self._stored(raw, path)
        if self.value_map:
            labels = self._remap(stored)
        elif self.kind == "binary":
            return self._decode_binary(stored, path)
        else:
            labels = stored
        bad = labels >= self.num_classes
        if self.ignore_index is not None:
            bad &= labels != self.ignore_index
        unknown = self._unknown(labels, bad, path)
        if unknown:
            labels = np.where(bad, self.ignore_index, labels)
        return labels.astype(np.uint8, copy=False), unknown

    def _stored(self, raw: np.ndarray, path) -> np.ndarray:
        """One channel of stored values: uint8, or uint16 where a 16-bit file holds values above 255."""
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
            # 16-bit files holding 0-255 are the 8-bit encodings; above 255 only 0/65535 binary masks place.
            return raw.astype(np.uint8) if int(raw.max(initial=0)) <= 255 else raw
        if raw.dtype != np.uint8:
            raise ImageReadError(f"{path}: mask pixels of type {raw.dtype}; expected 8- or 16-bit integers")
        return raw

    def _decode_binary(self, stored: np.ndarray, path) -> tuple[np.ndarray, dict[int | str, int]]:
        """The binary rule of the class docstring."""
        full = 65535 if stored.dtype == np.uint16 else 255
        top = int(stored.max(initial=0))
        bad = None
        unknown: dict[int | str, int] = {}
        if top <= 1:
            labels = stored.astype(np.uint8, copy=False)
        elif top == full:
            cut = self.threshold * 257 if full == 65535 else self.threshold  # the same cut on the 16-bit scale
            labels = (stored > cut).astype(np.uint8)
        else:
            bad = stored > 1
            unknown = self._unknown(stored, bad, path)  # raises unless allow_unknown_values
            labels = np.minimum(stored, 1).astype(np.uint8)
        if self.invert:
            labels = 1 - labels
        if bad is not None:
            labels[bad] = self.ignore_index
        return labels, unknown

    def _unknown(self, values: np.ndarray, bad: np.ndarray, path) -> dict[int | str, int]:
        """Unplaceable value -> pixels where `bad`; raises `MaskValueError` unless they are allowed."""
        if not bad.any():
            return {}
        found, counts = np.unique(values[bad], return_counts=True)
        unknown = dict(zip(found.tolist(), counts.tolist()))
        if not self.allow_unknown_values:
            raise self._error(path, unknown)
        return unknown

    def _error(self, path, unknown: dict[int | str, int]) -> MaskValueError:
        listed = list(unknown)[:MAX_VALUES_LISTED]
        more = f" and {len(unknown) - len(listed)} more" if len(unknown) > len(listed) else ""
        if self.kind == "binary" and not self.value_map:
            full = 65535 if any(isinstance(v, int) and v > 255 for v in unknown) else 255
            zero, one = ("foreground", "background") if self.invert else ("background", "foreground")
            why = (f"a binary mask is 0/1 (0 {zero}, 1 {one}), or 0/{full} with values above "
                   f"{self.threshold * 257 if full == 65535 else self.threshold} {one} when it holds {full}; "
                   f"this one holds values above 1 but no {full}")
            remedy = BINARY_REMEDY
        else:
            remap = " after data.value_map" if self.value_map else ""
            why = (f"they are neither a class index (0-{self.num_classes - 1}) nor the ignore index "
                   f"{self.ignore_index}{remap}")
            remedy = INDEX_REMEDY
        return MaskValueError(f"{path}: mask values {listed}{more} cannot be placed ({format_counts(unknown)}): "
                              f"{why}. {remedy}", path, unknown)

    def _remap(self, stored: np.ndarray) -> np.ndarray:
        if stored.dtype == np.uint8:
            return cv2.LUT(np.ascontiguousarray(stored), self._value_lut)
        lut = np.arange(65536, dtype=np.uint16)  # 16-bit values above 255 are not in value_map: kept
        lut[:256] = self._value_lut
        return lut[stored]

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

    def _decode_rgb(self, raw: np.ndarray, path) -> tuple[np.ndarray, dict[int | str, int]]:
        if raw.ndim != 3 or raw.shape[2] < 3:
            raise ImageReadError(f"{path}: a single-channel mask, but data.colors declares RGB colour codes")
        if raw.dtype != np.uint8:
            raise ImageReadError(f"{path}: RGB masks must be 8-bit, got {raw.dtype}")
        keys = colour_keys(raw)
        lut, unknown_value = self._colour_lut
        labels = lut[keys]
        bad = labels == unknown_value
        if not bad.any():
            return labels, {}
        found, counts = np.unique(keys[bad], return_counts=True)
        unknown = {f"({k >> 16},{(k >> 8) & 255},{k & 255})": n for k, n in zip(found.tolist(), counts.tolist())}
        if not self.allow_unknown_values:
            colours = [[(k >> 16) & 255, (k >> 8) & 255, k & 255] for k in found.tolist()[:5]]
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise MaskValueError(
                f"{path}: {int(bad.sum())} pixels have colours {colours}{more} that are in neither data.colors nor "
                f"data.ignore_color ({format_counts(unknown)}); add them to data.colors or data.ignore_color, or "
                "pass --allow-unknown-values / data.allow_unknown_values to ignore those pixels", path, unknown)
        labels[bad] = self.ignore_index
        return labels, unknown


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
    return read_mask_with_unknown(path, encoding)[0]


def read_mask_with_unknown(path: str | Path, encoding: MaskEncoding | None = None
                           ) -> tuple[np.ndarray, dict[int | str, int]]:
    """As `read_mask`, also returning the values `allow_unknown_values` turned into the ignore index."""
    encoding = encoding or MaskEncoding()
    return encoding.decode_with_unknown(read_raw_mask(path, colour=encoding.kind == "rgb"), path)


def read_roi(path: str | Path) -> np.ndarray:
    """Reads a region-of-interest mask as bool HxW: True inside (0/1 or 0/255 masks, by the binary rule)."""
    return read_mask(path, MaskEncoding()).astype(bool)
