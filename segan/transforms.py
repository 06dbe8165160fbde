"""Albumentations pipelines: training presets and the evaluation pipeline.

Every pipeline transforms image and mask together and ends in normalisation, so a dataset
only has to call `transform(image=, mask=)`.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np

from .config import AUGMENT_PRESETS as PRESETS, RESIZE_MODES  # the option lists live in the config schema


def _geometry(preset: str, rotations: bool) -> list:
    if preset == "none":
        return []
    ops: list = [A.HorizontalFlip(p=0.5)]
    if rotations:
        ops += [A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if preset in ("medium", "heavy"):
        strength = 1.0 if preset == "medium" else 2.0
        ops.append(A.Affine(scale=(1 - 0.1 * strength, 1 + 0.1 * strength), rotate=(-15 * strength, 15 * strength),
                            translate_percent=(-0.05 * strength, 0.05 * strength), border_mode=cv2.BORDER_REFLECT_101,
                            p=0.5))
    if preset == "heavy":
        ops.append(A.OneOf([A.ElasticTransform(alpha=30, sigma=6), A.GridDistortion()], p=0.3))
    return ops


def _photometric(preset: str) -> list:
    if preset in ("none", "light"):
        return []
    ops: list = [A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02, p=0.5)]
    if preset == "heavy":
        ops += [A.GaussNoise(std_range=(0.02, 0.08), p=0.3), A.GaussianBlur(blur_limit=(3, 5), p=0.2)]
    return ops


def _normalize(mean, std) -> A.Normalize:
    return A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)


class TrainTransform:
    """A training pipeline: sizing (resize; or rescale and pad), the crop window, then geometry,
    colour and normalisation, each on `size` x `size` pixels.

    Called as `transform(image=, mask=, focus_class=None)`; a crop is centred on a random pixel
    of `focus_class` when the image holds it after sizing (rare-class crops), else placed at
    random. Returns `dict(image=, mask=)`.
    """

    def __init__(self, before: list, after: list, size: int, crop: bool, seed: int | None = None) -> None:
        self.before, self.after = A.Compose(before), A.Compose(after)
        self.size, self.crop = size, crop
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        """Albumentations keeps its own random state, deaf to global seeds: this seeds it (and
        the crop window). Training reseeds it per sample (see `segan.data.EpochSampler`)."""
        before, after, crop = (None, None, None) if seed is None else np.random.SeedSequence(seed).generate_state(3)
        seed_compose(self.before, before)
        seed_compose(self.after, after)
        self.rng = np.random.default_rng(crop)

    def __call__(self, image: np.ndarray, mask: np.ndarray, focus_class: int | None = None) -> dict:
        sized = self.before(image=image, mask=mask)
        image, mask = sized["image"], sized["mask"]
        if self.crop:
            y, x = crop_origin(mask, self.size, self.rng, focus_class)
            image, mask = image[y:y + self.size, x:x + self.size], mask[y:y + self.size, x:x + self.size]
        return self.after(image=image, mask=mask)


def seed_compose(compose: A.Compose, seed: int | None) -> None:
    """Seeds `compose` with one random stream that its transforms draw from in turn.

    `Compose.set_random_seed` would give every transform a generator of its own from the same
    seed: each would then draw the same numbers, and flips, rotations and colour jitter of equal
    probability would happen all together or not at all."""
    compose.set_random_state(np.random.default_rng(seed), random.Random(None if seed is None else int(seed)))


def crop_origin(mask: np.ndarray, size: int, rng: np.random.Generator, focus_class: int | None = None) -> tuple[int, int]:
    """Top-left corner of a `size` window in `mask` (at least `size` on each side): centred on a
    random pixel of `focus_class` where the mask holds one (kept inside the image), else random."""
    height, width = mask.shape[:2]
    if focus_class is not None:
        ys, xs = np.nonzero(mask == focus_class)
        if len(ys):
            k = rng.integers(len(ys))
            return (int(np.clip(ys[k] - size // 2, 0, height - size)), int(np.clip(xs[k] - size // 2, 0, width - size)))
    return int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))


def build_train_transform(preset: str, size: int, resize: str, mean, std, rotations: bool = True,
                          ignore_index: int = 255, seed: int | None = None,
                          scale_range: tuple[float, float] | None = None) -> TrainTransform:
    """Training pipeline: size to `size` (resize, or rescale, pad and crop), augment, normalise.

    Args:
        preset: none, light (flips, and 90-degree rotations when `rotations`), medium (+ affine,
            colour jitter) or heavy (+ elastic/grid distortion, noise, blur).
        size: side length of the training images.
        resize: "resize" or "crop".
        mean, std: normalisation of pixels scaled to [0, 1].
        rotations: whether vertical flips and 90-degree rotations keep labels valid.
        ignore_index: fill value for padded mask pixels.
        seed: seeds albumentations and the crop window (see `TrainTransform.set_random_seed`).
        scale_range: crop mode: each image is first rescaled by a factor drawn from this range.
    """
    return TrainTransform(_sizing(preset, size, resize, ignore_index, scale_range),
                          _geometry(preset, rotations) + _photometric(preset) + [_normalize(mean, std)],
                          size, resize == "crop", seed)


def build_weak_transform(preset: str, size: int, resize: str, rotations: bool = True, ignore_index: int = 255,
                         scale_range: tuple[float, float] | None = None) -> TrainTransform:
    """The weak view of an unlabelled image (see `segan.semi`): the training pipeline's sizing
    and geometry, no colour change, no normalisation (uint8 out, for the strong view to perturb)."""
    return TrainTransform(_sizing(preset, size, resize, ignore_index, scale_range), _geometry(preset, rotations),
                          size, resize == "crop")


def _sizing(preset: str, size: int, resize: str, ignore_index: int,
            scale_range: tuple[float, float] | None = None) -> list:
    """Resize to `size`, or (crop mode) rescale by a factor from `scale_range` and pad to at
    least `size`: the crop itself is `TrainTransform`'s."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset '{preset}'; choose one of {PRESETS}")
    if resize == "resize":
        return [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    if resize != "crop":
        raise ValueError(f"unknown resize mode '{resize}'; choose one of {RESIZE_MODES}")
    scaling = [] if scale_range is None else [
        A.RandomScale(scale_limit=(scale_range[0] - 1, scale_range[1] - 1), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0)]
    return scaling + [A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index)]
