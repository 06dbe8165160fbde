"""Finding (image, mask) pairs in a dataset folder.

The seam where dataset adapters plug in: everything after this module sees only a list of
`Pair`s per split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .io import IMAGE_SUFFIXES

VAL_SPLIT_NAMES = ("validation", "val", "valid")


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


class DatasetLayoutError(ValueError):
    """A dataset folder whose layout or pairing cannot be used."""


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_by_stem(image_dir: Path, mask_dir: Path) -> list[Pair]:
    """Pairs images with masks of the same file stem; raises if nothing pairs or stems are unmatched."""
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DatasetLayoutError(f"folder not found: {folder}")
    images = {p.stem: p for p in list_images(image_dir)}
    masks = {p.stem: p for p in list_images(mask_dir)}
    if not images:
        raise DatasetLayoutError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    unmatched_images = sorted(set(images) - set(masks))
    unmatched_masks = sorted(set(masks) - set(images))
    if unmatched_images or unmatched_masks:
        raise DatasetLayoutError(
            f"{image_dir} and {mask_dir} do not pair by file stem: "
            f"{len(unmatched_images)} image(s) without a mask (e.g. {unmatched_images[:3]}), "
            f"{len(unmatched_masks)} mask(s) without an image (e.g. {unmatched_masks[:3]}). "
            "Give every image a mask of the same name, or remove the extra files.")
    return [Pair(images[stem], masks[stem]) for stem in sorted(images)]


def _split_dirs(root: Path, split: str) -> tuple[Path, Path] | None:
    images, masks = root / split / "images", root / split / "masks"
    return (images, masks) if images.is_dir() and masks.is_dir() else None


def find_splits(root: str | Path, train_split: str = "train", val_split: str | None = None,
                val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[Pair]]:
    """Returns {"train": [...], "val": [...]} for a dataset folder.

    Layouts: `{train_split}/images` + `{train_split}/masks` with a validation split beside it
    (`val_split`, or the first of validation/val/valid that exists); or `images/` + `masks/`
    at the root, of which a seeded `val_fraction` is held back for validation. A train split
    without a validation split beside it is divided the same way.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    train_dirs = _split_dirs(root, train_split)
    if train_dirs is not None:
        train = pair_by_stem(*train_dirs)
        names = [val_split] if val_split else list(VAL_SPLIT_NAMES)
        for name in names:
            val_dirs = _split_dirs(root, name)
            if val_dirs is not None:
                return {"train": train, "val": pair_by_stem(*val_dirs)}
        if val_split:
            raise DatasetLayoutError(f"{root / val_split}: no images/ and masks/ folders for the validation split")
        return hold_out(train, val_fraction, seed)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return hold_out(pair_by_stem(root / "images", root / "masks"), val_fraction, seed)
    raise DatasetLayoutError(
        f"{root}: no dataset layout found. Expected {train_split}/images + {train_split}/masks "
        "(with validation/images + validation/masks), or images/ + masks/.")


def hold_out(pairs: list[Pair], val_fraction: float, seed: int) -> dict[str, list[Pair]]:
    """Splits pairs into train and val with a seeded shuffle; both splits get at least one pair."""
    if len(pairs) < 2:
        raise DatasetLayoutError(f"need at least 2 image/mask pairs to hold back a validation split, found {len(pairs)}")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetLayoutError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    return {"train": sorted(order[n_val:], key=lambda p: p.image), "val": sorted(order[:n_val], key=lambda p: p.image)}
