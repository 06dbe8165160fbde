"""Albumentations pipelines: training presets and the evaluation pipeline.

Every pipeline transforms image and mask together and ends in normalisation, so a dataset
only has to call `transform(image=, mask=)`.
"""

from __future__ import annotations

import albumentations as A
import cv2

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


def build_train_transform(preset: str, size: int, resize: str, mean, std, rotations: bool = True,
                          ignore_index: int = 255, seed: int | None = None) -> A.Compose:
    """Training pipeline: size to `size` (resize, or pad then random crop), augment, normalise.

    Args:
        preset: none, light (flips, and 90-degree rotations when `rotations`), medium (+ affine,
            colour jitter) or heavy (+ elastic/grid distortion, noise, blur).
        size: side length of the training images.
        resize: "resize" or "crop".
        mean, std: normalisation of pixels scaled to [0, 1].
        rotations: whether vertical flips and 90-degree rotations keep labels valid.
        ignore_index: fill value for padded mask pixels.
        seed: albumentations keeps its own random state, deaf to global seeds: this seeds it.
            Training reseeds it per sample (see `segan.data.EpochSampler`).
    """
    return A.Compose(_sizing(preset, size, resize, ignore_index) + _geometry(preset, rotations)
                     + _photometric(preset) + [_normalize(mean, std)], seed=seed)


def build_weak_transform(preset: str, size: int, resize: str, rotations: bool = True,
                         ignore_index: int = 255) -> A.Compose:
    """The weak view of an unlabelled image (see `segan.semi`): the training pipeline's sizing
    and geometry, no colour change, no normalisation (uint8 out, for the strong view to perturb)."""
    return A.Compose(_sizing(preset, size, resize, ignore_index) + _geometry(preset, rotations))


def _sizing(preset: str, size: int, resize: str, ignore_index: int) -> list:
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset '{preset}'; choose one of {PRESETS}")
    if resize == "resize":
        sizing = [A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    elif resize == "crop":
        sizing = [A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
                  A.RandomCrop(size, size)]
    else:
        raise ValueError(f"unknown resize mode '{resize}'; choose one of {RESIZE_MODES}")
    return sizing
