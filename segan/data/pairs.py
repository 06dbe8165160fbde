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
# (image folder, mask folder) names seen in published datasets, tried in this order.
FOLDER_NAMES = (("images", "masks"), ("image", "label"), ("images", "labels"), ("image", "mask"))


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
    for image_name, mask_name in FOLDER_NAMES:
        images, masks = root / split / image_name, root / split / mask_name
        if images.is_dir() and masks.is_dir():
            return images, masks
    return None


def find_splits(root: str | Path, train_split: str = "train", val_split: str | None = None,
                val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[Pair]]:
    """Returns {"train": [...], "val": [...]} for a dataset folder.

    Layouts: `{train_split}/images` + `{train_split}/masks` (or image/label, images/labels,
    image/mask) with a validation split beside it (`val_split`, or the first of
    validation/val/valid that exists); or the same folder pairs at the root, of which a seeded
    `val_fraction` is held back for validation. A train split without a validation split beside
    it is divided the same way.
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
    flat = _split_dirs(root, ".")
    if flat is not None:
        return hold_out(pair_by_stem(*flat), val_fraction, seed)
    raise DatasetLayoutError(
        f"{root}: no dataset layout found. Expected {train_split}/images + {train_split}/masks "
        "(with validation/images + validation/masks), or images/ + masks/ "
        f"(also accepted instead of images/masks: {', '.join('/'.join(n) for n in FOLDER_NAMES[1:])}).")


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


def find_split(root: str | Path, split: str, train_split: str = "train", val_split: str | None = None,
               val_fraction: float = 0.2, seed: int = 0) -> list[Pair]:
    """The pairs of one split: "train" or "val" as training divides them (`find_splits`), or any
    other split folder by name (e.g. "test" holding images/ + masks/)."""
    if split in ("train", "val"):
        return find_splits(root, train_split, val_split, val_fraction, seed)[split]
    folders = _split_dirs(Path(root), split)
    if folders is None:
        raise DatasetLayoutError(f"{Path(root) / split}: no images/ + masks/ folders for split '{split}'")
    return pair_by_stem(*folders)
