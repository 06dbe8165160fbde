"""Finding (image, mask[, region of interest]) pairs in a dataset folder.

The seam where dataset layouts plug in: everything after this module sees only a list of `Pair`s
per split. A layout is a pair of folder templates (`{split}` stands for the split name) or a list
file of pairs; file names pair by stem, by a name template, or by a regular-expression key.
Pairing reports every problem (unmatched files, duplicate keys, listed files that do not exist,
non-image files) in a `Matching`, so `segan data check` can show them all; training and
evaluation refuse a split that has blocking ones.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..text import name_list
from .io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

VAL_SPLIT_NAMES = ("validation", "val", "valid")
# (image folder, mask folder) templates seen in published datasets, tried in this order.
SPLIT_LAYOUTS = (("{split}/images", "{split}/masks"), ("{split}/image", "{split}/label"),
                 ("{split}/images", "{split}/labels"), ("{split}/image", "{split}/mask"),
                 ("{split}", "{split}annot"))
FLAT_LAYOUTS = (("images", "masks"), ("image", "label"), ("images", "labels"), ("image", "mask"))
LIST_FILES = ("{split}.txt", "{split}.csv")


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    roi: Path | None = None


class DatasetLayoutError(ValueError):
    """A dataset folder whose layout or pairing cannot be used."""


@dataclass(frozen=True)
class Layout:
    """Where a dataset's files are: folder templates or a list-file template (relative to `root`)."""

    root: Path
    image_dir: str | None = None
    mask_dir: str | None = None
    roi_dir: str | None = None
    pairs_file: str | None = None

    @property
    def per_split(self) -> bool:
        """Whether each split has its own folders (or list file); otherwise validation is held out."""
        return "{split}" in (self.pairs_file or self.image_dir or "")

    def path(self, template: str, split: str) -> Path:
        return self.root / template.format(split=split)

    def exists(self, split: str) -> bool:
        if self.pairs_file:
            return self.path(self.pairs_file, split).is_file()
        return self.path(self.image_dir, split).is_dir()

    def describe(self) -> str:
        roi = f", regions of interest {self.roi_dir}/" if self.roi_dir else ""
        if self.pairs_file:
            return f"list file {self.pairs_file}{roi}"
        return f"images {self.image_dir}/, masks {self.mask_dir}/{roi}"


@dataclass
class Matching:
    """The pairs of one split, and every reason some files did not pair."""

    source: str
    pairs: list[Pair] = field(default_factory=list)
    unmatched_images: list[Path] = field(default_factory=list)
    unmatched_masks: list[Path] = field(default_factory=list)
    missing_roi: list[Path] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # listed in a pairs file but not on disk
    duplicates: list[str] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Blocking problems, each naming files and what to do."""
        found = []
        if not self.pairs and not (self.unmatched_images or self.unmatched_masks or self.missing_files
                                   or self.missing_roi):
            found.append(f"{self.source}: no images ({', '.join(IMAGE_SUFFIXES)})")
        if self.unmatched_images or self.unmatched_masks:
            found.append(
                f"{self.source}: {len(self.unmatched_images)} image(s) without a mask "
                f"{name_list(self.unmatched_images, parens=True)}, {len(self.unmatched_masks)} mask(s) without an "
                f"image {name_list(self.unmatched_masks, parens=True)}. Give every image a mask, remove the extra "
                "files, or set data.image_name/data.mask_name when names differ.")
        if self.missing_roi:
            found.append(f"{self.source}: {len(self.missing_roi)} image(s) without a region-of-interest mask "
                         f"{name_list(self.missing_roi, parens=True)}")
        if self.missing_files:
            found.append(f"{self.source}: {len(self.missing_files)} listed file(s) not found "
                         f"{name_list(self.missing_files, parens=True)}; fix the paths or set data.strip_prefix")
        if self.duplicates:
            found.append(f"{self.source}: several files share a pairing key: {'; '.join(self.duplicates[:5])}")
        return found

    def warnings(self) -> list[str]:
        if not self.non_images:
            return []
        return [f"{self.source}: {len(self.non_images)} file(s) that are not images were ignored "
                f"{name_list(self.non_images, parens=True)}"]

    def require(self) -> list[Pair]:
        """The pairs, or `DatasetLayoutError` with every blocking problem."""
        problems = self.problems()
        if problems:
            raise DatasetLayoutError("\n".join(problems))
        for warning in self.warnings():
            log.warning(warning)
        return self.pairs


def name_key(pattern: str) -> Callable[[str], str | None]:
    """A function from a file stem to its pairing key (None when the stem does not fit `pattern`).

    `pattern` is a template with `{id}` for the shared part ("{id}_manual1"), matched against the
    whole stem, or a regular expression searched in the stem whose group `id` (else its first
    group, else the whole match) is the key.
    """
    if "{id}" in pattern:
        before, after = pattern.split("{id}", 1)
        regex = re.compile(re.escape(before) + "(?P<id>.+?)" + re.escape(after))
        return lambda stem: match.group("id") if (match := regex.fullmatch(stem)) else None
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise DatasetLayoutError(f"name pattern {pattern!r} is neither a template with {{id}} nor a valid regular "
                                 f"expression: {error}") from None
    group = "id" if "id" in regex.groupindex else 1 if regex.groups else 0
    return lambda stem: match.group(group) if (match := regex.search(stem)) else None


def list_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly inside `folder`, sorted; hidden files are skipped."""
    images, others = [], []
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return images, others


def _keyed(files: list[Path], pattern: str, what: str, duplicates: list[str]) -> tuple[dict[str, Path], list[Path]]:
    key_of = name_key(pattern)
    keyed: dict[str, Path] = {}
    unkeyed = []
    for path in files:
        key = key_of(path.stem)
        if key is None:
            unkeyed.append(path)
        elif key in keyed:
            duplicates.append(f"{what} {keyed[key].name} and {path.name} both give key '{key}'")
        else:
            keyed[key] = path
    return keyed, unkeyed


def match_folders(image_dir: Path, mask_dir: Path, roi_dir: Path | None = None, image_name: str = "{id}",
                  mask_name: str = "{id}", roi_name: str = "{id}") -> Matching:
    """Pairs the images in `image_dir` with the masks in `mask_dir` (and regions of interest in
    `roi_dir`) by the key `name_key` takes from each file stem."""
    for folder in (image_dir, mask_dir, roi_dir):
        if folder is not None and not folder.is_dir():
            raise DatasetLayoutError(f"folder not found: {folder}")
    roi = f" + {roi_dir}" if roi_dir else ""
    matching = Matching(source=f"{image_dir} + {mask_dir}{roi}")
    image_files, other_images = list_folder(image_dir)
    mask_files, other_masks = list_folder(mask_dir)
    # A split folder that is also the image folder ({split}/ + {split}annot/) holds no masks itself.
    matching.non_images = other_images + [p for p in other_masks if p not in other_images]
    images, unkeyed_images = _keyed(image_files, image_name, "images", matching.duplicates)
    masks, unkeyed_masks = _keyed(mask_files, mask_name, "masks", matching.duplicates)
    rois = _keyed(list_folder(roi_dir)[0], roi_name, "regions of interest", matching.duplicates)[0] if roi_dir else {}
    matching.unmatched_images = sorted(unkeyed_images + [images[k] for k in set(images) - set(masks)])
    matching.unmatched_masks = sorted(unkeyed_masks + [masks[k] for k in set(masks) - set(images)])
    for key in sorted(set(images) & set(masks), key=lambda k: images[k]):
        if roi_dir is not None and key not in rois:
            matching.missing_roi.append(images[key])
            continue
        matching.pairs.append(Pair(images[key], masks[key], rois.get(key)))
    return matching


def read_pairs_file(list_file: Path, root: Path, strip_prefix: str | None = None, roi_dir: Path | None = None,
                    image_name: str = "{id}", roi_name: str = "{id}") -> Matching:
    """Pairs from a list file: `image mask [roi]` per line, whitespace- or comma-separated.

    Paths are relative to `root` (or to the list file's folder), or absolute. An absolute path
    that does not exist (a list written on another machine, like CamVid's `/SegNet/CamVid/...`)
    has `strip_prefix` removed, or else the shortest leading part whose removal makes it exist
    under `root`; the prefix found is then used for every line.

    With `roi_dir`, a line without a third path gets the region of interest in `roi_dir` whose
    key (by `roi_name`) is its image's key (by `image_name`), as `match_folders` pairs them; an
    image without one is reported in `missing_roi`.
    """
    if not list_file.is_file():
        raise DatasetLayoutError(f"list file not found: {list_file}")
    if roi_dir is not None and not roi_dir.is_dir():
        raise DatasetLayoutError(f"folder not found: {roi_dir}")
    matching = Matching(source=f"{list_file} + {roi_dir}" if roi_dir else str(list_file))
    rois = _keyed(list_folder(roi_dir)[0], roi_name, "regions of interest", matching.duplicates)[0] if roi_dir else {}
    image_key = name_key(image_name)
    found_prefix: list[int] = []  # path parts to drop, once detected

    def resolve(text: str) -> Path | None:
        if strip_prefix and text.startswith(strip_prefix):
            text = text[len(strip_prefix):].lstrip("/\\")
        path = Path(text)
        if not path.is_absolute():
            for base in (root, list_file.parent):
                if (base / path).is_file():
                    return base / path
            return None
        if path.is_file():
            return path
        parts = path.parts
        tries = found_prefix or range(1, len(parts))
        for drop in tries:
            candidate = root.joinpath(*parts[drop:])
            if candidate.is_file():
                if not found_prefix:
                    found_prefix.append(drop)
                return candidate
        return None

    lines = list_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line.split(",") if "," in line else line.split())]
        if len(fields) < 2:
            raise DatasetLayoutError(f"{list_file}, line {number}: expected 'image mask' (two paths), got {line!r}")
        if number == 1 and Path(fields[0]).suffix.lower() not in IMAGE_SUFFIXES:
            continue  # a header line such as "image,mask"
        resolved = [resolve(f) for f in fields[:3]]
        missing = [f for f, r in zip(fields, resolved) if r is None]
        if missing:
            matching.missing_files.extend(f"line {number}: {m}" for m in missing)
            continue
        if roi_dir is not None and len(resolved) == 2:  # a region of interest named on the line is kept
            roi = rois.get(image_key(resolved[0].stem))  # a stem that does not fit image_name has no key
            if roi is None:
                matching.missing_roi.append(resolved[0])
                continue
            resolved.append(roi)
        matching.pairs.append(Pair(*resolved))
    return matching


def detect_layout(data, split: str | None = None) -> Layout:
    """The layout a `DataConfig` declares, or the first known one found under its root for
    `split` (default the training split)."""
    split = split or data.train_split
    root = Path(data.root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    if data.pairs_file:
        return Layout(root, roi_dir=data.roi_dir, pairs_file=data.pairs_file)
    if data.image_dir or data.mask_dir:
        if not (data.image_dir and data.mask_dir):
            raise DatasetLayoutError("give both data.image_dir and data.mask_dir (--image-dir, --mask-dir), or neither")
        return Layout(root, data.image_dir, data.mask_dir, data.roi_dir)
    for image_dir, mask_dir in SPLIT_LAYOUTS + FLAT_LAYOUTS:
        layout = Layout(root, image_dir, mask_dir, data.roi_dir)
        if layout.exists(split) and layout.path(mask_dir, split).is_dir():
            return layout
    for template in LIST_FILES:
        layout = Layout(root, roi_dir=data.roi_dir, pairs_file=template)
        if layout.exists(split):
            return layout
    known = ", ".join(f"{i}/ + {m}/" for i, m in SPLIT_LAYOUTS + FLAT_LAYOUTS)
    raise DatasetLayoutError(
        f"{root}: no dataset layout found for split '{split}'. Known layouts ({{split}} = split name): "
        f"{known}, or a list file {' / '.join(LIST_FILES)}. Otherwise give the folders with --image-dir/--mask-dir "
        "(data.image_dir, data.mask_dir) or a list file with --pairs-file.")


def match_split(data, layout: Layout, split: str) -> Matching:
    """Pairs one split's files (for a layout without `{split}`, the whole dataset)."""
    roi = layout.path(layout.roi_dir, split) if layout.roi_dir else None
    if layout.pairs_file:
        return read_pairs_file(layout.path(layout.pairs_file, split), layout.root, data.strip_prefix, roi,
                               data.image_name, data.roi_name)
    return match_folders(layout.path(layout.image_dir, split), layout.path(layout.mask_dir, split), roi,
                         data.image_name, data.mask_name, data.roi_name)


def val_split_name(data, layout: Layout) -> str | None:
    """The validation split beside the training split, or None when it is to be held out."""
    if not layout.per_split:
        return None
    if data.val_split:
        if not layout.exists(data.val_split):
            where = layout.pairs_file or layout.image_dir
            raise DatasetLayoutError(f"{layout.path(where, data.val_split)}: not found for validation split "
                                     f"'{data.val_split}'")
        return data.val_split
    return next((name for name in VAL_SPLIT_NAMES if name != data.train_split and layout.exists(name)), None)


def find_splits(data) -> dict[str, list[Pair]]:
    """Returns {"train": [...], "val": [...]} for a `DataConfig`.

    The validation split is the split folder beside the training one (`data.val_split`, or the
    first of validation/val/valid found); without one, `data.val_fraction` of the training pairs
    is held back, shuffled with `data.split_seed`. Raises `DatasetLayoutError` naming the files on any blocking
    pairing problem.
    """
    layout = detect_layout(data)
    train = match_split(data, layout, data.train_split).require()
    val_name = val_split_name(data, layout)
    if val_name is None:
        return hold_out(train, data.val_fraction, data.split_seed)
    return {"train": train, "val": match_split(data, layout, val_name).require()}


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


def find_split(data, split: str) -> list[Pair]:
    """The pairs of one split: "train" or "val" as training divides them (`find_splits`), or any
    other split by name (e.g. "test", in the same layout as the training split)."""
    if split in ("train", "val"):
        return find_splits(data)[split]
    try:
        layout = detect_layout(data, split)
    except DatasetLayoutError:
        layout = detect_layout(data)
    if not layout.per_split or not layout.exists(split):
        raise DatasetLayoutError(f"{data.root}: no split '{split}' in the layout ({layout.describe()})")
    return match_split(data, layout, split).require()
