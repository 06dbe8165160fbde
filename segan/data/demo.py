"""The synthetic demo dataset: textured shapes on a textured, noisy, blurred background.

Foreground and background differ in texture, not in brightness: distractor shapes painted with
the background texture but a brightness shift are labelled background. A U-Net needs a few
epochs to learn that, which makes the set a fair smoke test of training.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _stripes(size: int, period: float, angle: float, phase: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)


def _dots(size: int, period: float, phase: tuple[float, float]) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.sin(2 * np.pi * x / period + phase[0]) * np.sin(2 * np.pi * y / period + phase[1])


def _random_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    center = rng.uniform(0.15, 0.85, 2) * size
    radius = rng.uniform(0.08, 0.2) * size
    if rng.random() < 0.5:
        axes = (int(radius), int(radius * rng.uniform(0.5, 1.0)))
        cv2.ellipse(canvas, (int(center[0]), int(center[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        corners = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = radius * rng.uniform(0.6, 1.2, corners)
        points = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [points.astype(np.int32)], 1)
    return canvas.astype(bool)


def make_sample(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Returns one (RGB uint8 image, 0/1 uint8 mask) pair."""
    tint = rng.uniform(-25, 25, 3).astype(np.float32)
    base = 120 + 25 * _smooth_noise(rng, size, size / 8)
    background = base + 22 * _stripes(size, rng.uniform(6, 10), rng.uniform(0, np.pi), rng.uniform(0, 6.3))
    foreground = base + 35 * _dots(size, rng.uniform(5, 9), tuple(rng.uniform(0, 6.3, 2)))

    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        mask |= _random_shape(rng, size)
    grey = np.where(mask, foreground, background)
    for _ in range(int(rng.integers(0, 3))):  # distractors: background texture, other brightness
        distractor = _random_shape(rng, size) & ~mask
        grey = np.where(distractor, grey + rng.choice([-1, 1]) * rng.uniform(20, 40), grey)

    image = grey[:, :, None] + tint[None, None, :]
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.6, 1.2))
    image = image + rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def make_demo_dataset(out: str | Path, n_train: int = 240, n_val: int = 60, size: int = 128,
                      seed: int = 0) -> Path:
    """Writes `out/{train,validation}/{images,masks}/NNNN.png` (masks 0/255) and returns `out`.

    The same seed always writes the same files.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("validation", n_val)):
        for kind in ("images", "masks"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, mask = make_sample(rng, size)
            name = f"{index:04d}.png"
            cv2.imwrite(str(out / split / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / split / "masks" / name), mask * 255)
    return out
