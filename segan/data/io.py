"""Reading images and masks from disk into NumPy arrays.

Images come back as uint8 HxWxC with the channel count the model expects (16-bit ones scaled by
the range of their bit depth, `to_uint8`); masks as their stored values (`segan.data.encoding`
turns those into class indices). Every failure raises `ImageReadError` naming the file, so callers
can report and skip one bad file instead of dying inside OpenCV.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".webp")
# Images above this many pixels are refused before decoding: a few-kilobyte PNG can declare
# 100000 x 100000 pixels and would take 30 GB to decode (a decompression bomb). 16384^2 by default;
# raise it with SEGAN_MAX_IMAGE_PIXELS or `segan predict --max-image-pixels`.
MAX_IMAGE_PIXELS = int(os.environ.get("SEGAN_MAX_IMAGE_PIXELS", 16384 * 16384))


def set_max_image_pixels(pixels: int) -> None:
    """Sets the decoding limit here and for worker processes started later."""
    global MAX_IMAGE_PIXELS
    MAX_IMAGE_PIXELS = int(pixels)
    os.environ["SEGAN_MAX_IMAGE_PIXELS"] = str(int(pixels))


def _declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header (PIL reads headers lazily); None if PIL cannot tell."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning: the limit is applied here
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:  # PIL's own limit; read the declared size without it
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as image:
                return image.size
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # not a format PIL knows, or damaged: OpenCV decides
        return None


class ImageReadError(ValueError):
    """A file that could not be decoded as an image."""


def _decode(path: Path, flags: int) -> np.ndarray:
    size = _declared_size(path)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageReadError(f"{path}: declares {size[0]}x{size[1]} pixels, above the limit of {MAX_IMAGE_PIXELS} "
                             "(a decompression bomb, or a very large scan). If it is genuine, raise the limit with "
                             "--max-image-pixels or SEGAN_MAX_IMAGE_PIXELS, or cut it into tiles first")
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


# Bit depths a camera or scanner stores in a 16-bit container (12-bit microscopy, 14-bit sensors, ...).
BIT_DEPTHS = (8, 10, 12, 14, 16)


def bit_depth(array: np.ndarray) -> int:
    """The smallest of `BIT_DEPTHS` whose range holds every value of a uint8 or uint16 array.

    The file does not record how many of a 16-bit container's bits a camera filled, so the values
    decide: an image with maximum 4095 is 12-bit, one with maximum 4096 is 14-bit.
    """
    top = int(array.max()) if array.size else 0
    return next((bits for bits in BIT_DEPTHS if top < 2 ** bits), BIT_DEPTHS[-1])


def to_uint8(array: np.ndarray) -> np.ndarray:
    """An image's pixel values as uint8, for the model: the one rule for files and in-memory arrays.

    uint8 is returned as it is. uint16 is scaled by the range of its bit depth b (`bit_depth`, the
    smallest of 8, 10, 12, 14, 16 with max < 2**b): value * 255 / (2**b - 1), rounded to the
    nearest integer. So 12-bit microscopy in a 16-bit file maps 4095 to 255 (shifting right by 8
    would leave it nearly black), a full 16-bit image maps 65535 to 255, and 8-bit values stored
    in 16 bits stay as they are. One b serves all channels, so colours keep their balance. The
    rule cannot tell a dim 16-bit image whose values all stay below 4096 from a 12-bit one: it is
    read as 12-bit. Any other type (float, signed) is stretched from its minimum to its maximum.

    Args:
        array: HxW or HxWxC pixel values.

    Returns:
        uint8 array of the same shape.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        full = 2 ** bit_depth(array) - 1
        # Integer round-half-up of value * 255 / full (exact, no float error at the top value), as a
        # table of at most 65536 entries: one lookup per pixel, no full-size uint32 temporaries.
        table = ((np.arange(full + 1, dtype=np.uint32) * 510 + full) // (2 * full)).astype(np.uint8)
        return table[array]
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return ((array - low) * scale).astype(np.uint8)


def read_image(path: str | Path, in_channels: int = 3) -> np.ndarray:
    """Reads an image as uint8 HxWxC RGB (C=3) or greyscale (C=1).

    16-bit images are scaled by the range of their bit depth (see `to_uint8`); alpha is dropped.
    """
    return to_channels(to_uint8(_decode(Path(path), cv2.IMREAD_UNCHANGED)), in_channels, bgr=True)


def read_stored_image(path: str | Path) -> np.ndarray:
    """An image as stored: its own bit depth and channels (OpenCV's BGR order), for describing a
    dataset (`segan.data.fingerprint`) rather than feeding a network."""
    return _decode(Path(path), cv2.IMREAD_UNCHANGED)


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
