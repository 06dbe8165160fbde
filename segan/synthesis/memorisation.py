"""Did the generator copy its training images? Each synthetic image's nearest training image.

A mask-to-image generator trained on a few pairs can learn them by heart: given a new mask, it may
still paint one of its training images. Each synthetic image is compared with every training
image by SSIM (scikit-image's, on greyscale thumbnails, after a cheap correlation picks the few
closest candidates). An image whose nearest training image scores `COPY_SSIM` or more is counted
as a copy; when copies are more than `COPIES_DOMINATE` of the sample, the sample warns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from skimage.metrics import structural_similarity

log = logging.getLogger(__name__)

THUMBNAIL = 64  # px, the side images are compared at
CANDIDATES = 5  # training images scored by SSIM per synthetic image, the closest by correlation
COPY_SSIM = 0.9
COPIES_DOMINATE = 0.5


@dataclass
class Memorisation:
    """The nearest training image of each synthetic image.

    Attributes:
        nearest: per synthetic image, the index of its nearest training image.
        ssim: per synthetic image, the SSIM with that training image (1 = identical).
    """

    nearest: np.ndarray
    ssim: np.ndarray

    @property
    def copies(self) -> int:
        return int((self.ssim >= COPY_SSIM).sum())

    @property
    def copy_share(self) -> float:
        return self.copies / len(self.ssim) if len(self.ssim) else 0.0

    @property
    def dominated(self) -> bool:
        return self.copy_share > COPIES_DOMINATE

    def summary(self) -> dict:
        return {"images": len(self.ssim), "copy_ssim": COPY_SSIM, "copies": self.copies,
                "copy_share": round(self.copy_share, 4), "median_ssim": round(float(np.median(self.ssim)), 4)
                if len(self.ssim) else None, "dominated_by_copies": self.dominated}


def thumbnail(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 and image.shape[-1] == 3 else image.squeeze()
    return cv2.resize(grey, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def nearest_training(synthetic: Sequence[np.ndarray], training: Sequence[np.ndarray]) -> Memorisation:
    """Each synthetic image's nearest training image and their SSIM (uint8 images, HxW or HxWxC)."""
    if not training:
        raise ValueError("no training images to compare with")
    train = np.stack([thumbnail(image) for image in training])
    flat = train.reshape(len(train), -1)
    flat = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-6)
    nearest, scores = [], []
    for image in synthetic:
        small = thumbnail(image)
        vector = (small.ravel() - small.mean()) / (small.std() + 1e-6)
        candidates = np.argsort(flat @ vector)[::-1][:CANDIDATES]
        ssim = [structural_similarity(small, train[index], data_range=1.0) for index in candidates]
        best = int(np.argmax(ssim))
        nearest.append(int(candidates[best]))
        scores.append(float(ssim[best]))
    result = Memorisation(np.array(nearest, dtype=int), np.array(scores))
    if result.dominated:
        log.warning("%d of %d synthetic images (%.0f%%) are near copies of a training image (SSIM >= %.2f): the "
                    "generator has learnt its training images by heart; these pairs add little", result.copies,
                    len(scores), 100 * result.copy_share, COPY_SSIM)
    return result
