"""Reading images and masks from disk into NumPy arrays.

Images come back as uint8 HxWxC with the channel count the model expects; masks as their stored
values (`segan.data.encoding` turns those into class indices). Every failure raises `ImageReadError` naming the file, so callers can report and
skip one bad file instead of dying inside OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".webp")


class ImageReadError(ValueError):
    """A file that could not be decoded as an image."""


def _decode(path: Path, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read file ({error.strerror})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    array = cv2.imdecode(data, flags)
    if array is None and path.suffix.lower() == ".gif":
        # OpenCV builds without GIF support; one frame through VideoCapture still decodes it.
        capture = cv2.VideoCapture(str(path))
        ok, frame = capture.read()
        capture.release()
        array = frame if ok else None
    if array is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((array - low) * scale).astype(np.uint8)


def read_image(path: str | Path, in_channels: int = 3) -> np.ndarray:
    """Reads an image as uint8 HxWxC RGB (C=3) or greyscale (C=1).

    16-bit images keep their top 8 bits; alpha is dropped.
    """
    return to_channels(_to_uint8(_decode(Path(path), cv2.IMREAD_UNCHANGED)), in_channels, bgr=True)


def to_channels(array: np.ndarray, in_channels: int, bgr: bool = False) -> np.ndarray:
    """HxW or HxWxC (grey, grey+alpha, colour, colour+alpha) to HxWx1 greyscale or HxWx3 RGB.

    `bgr` says the colour channels are in OpenCV's order (as decoded from a file); alpha is dropped.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if in_channels == 1:
        if channels >= 3:
            code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
            return cv2.cvtColor(np.ascontiguousarray(array[:, :, :3]), code)[:, :, None]
        return np.ascontiguousarray(array[:, :, :1])
    if channels < 3:
        return np.ascontiguousarray(np.repeat(array[:, :, :1], 3, axis=2))
    colour = np.ascontiguousarray(array[:, :, :3])
    return cv2.cvtColor(colour, cv2.COLOR_BGR2RGB) if bgr else colour


def _palette_indices(path: Path) -> np.ndarray | None:
    """The indices of a palette (mode P) PNG or GIF, which OpenCV would turn into colours; else None."""
    if path.suffix.lower() not in (".png", ".gif"):
        return None
    from PIL import Image
    try:
        with Image.open(path) as image:  # reads the header only, unless it is a palette image
            return np.array(image, dtype=np.uint8) if image.mode == "P" else None
    except (OSError, SyntaxError, ValueError):
        return None  # not decodable by PIL: OpenCV reports it


def read_raw_mask(path: str | Path, colour: bool = False) -> np.ndarray:
    """A mask file's stored values, undecoded: palette PNG/GIF indices, else HxW (or HxWxC BGR when
    `colour`, or when the file is colour) 8- or 16-bit values. `segan.data.encoding` decodes them."""
    path = Path(path)
    if not colour:
        indices = _palette_indices(path)
        if indices is not None:
            return indices
    return _decode(path, cv2.IMREAD_UNCHANGED)
