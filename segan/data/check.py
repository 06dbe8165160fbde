"""`segan data check`: what segan would read from a dataset folder, and what is wrong with it.

Reads every file once (in threads: OpenCV releases the GIL while decoding) and reports the layout
found, pairs and unmatched files per split, unreadable files, image/mask size mismatches, the
stored mask values against the declared encoding, class pixel frequencies, and the data config
that training would use. Problems that would stop training are errors; the rest are warnings.

Every mask holding values its encoding cannot place (see `MaskEncoding`: a binary mask storing 2,
a class index beyond the class list) is its own error naming the file, the values and their pixel
counts, so one run lists them all; with `allow_unknown_values` they are warnings instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..text import count

from .encoding import (BINARY_REMEDY, INDEX_REMEDY, MaskEncoding, MaskValueError, colour_keys, format_counts,
                       read_roi)
from .classes import ClassStats
from .fingerprint import Fingerprint, image_statistics, object_statistics
from .io import ImageReadError, read_image, read_raw_mask, read_stored_image
from .pairs import DatasetLayoutError, Matching, Pair, detect_layout, hold_out, match_split, val_split_name

MAX_VALUES_SHOWN = 12
MAX_FILES_WARNED = 10  # files named in one warning about ignored unknown values; the JSON report has all


@dataclass
class SplitReport:
    name: str
    source: str
    pairs: int = 0
    held_out_from: str | None = None  # the split a held-back validation set was taken from
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    stored_values: Counter = field(default_factory=Counter)  # stored mask value (or colour) -> pixels
    class_pixels: list[int] = field(default_factory=list)  # per class, then ignored pixels last
    outside_roi_pixels: int = 0
    fingerprint: Fingerprint | None = None  # the training split's, when asked for (segan plan)
    class_stats: ClassStats | None = None  # the training split's: per-image class pixels

    def to_dict(self) -> dict:
        values = dict(sorted(self.stored_values.items(), key=lambda kv: -kv[1]))
        return {"name": self.name, "source": self.source, "pairs": self.pairs, "held_out_from": self.held_out_from,
                "image_sizes": {f"{w}x{h}": n for (w, h), n in self.image_sizes.most_common()},
                "stored_values": {str(k): v for k, v in values.items()}, "class_pixels": self.class_pixels,
                "outside_roi_pixels": self.outside_roi_pixels}


@dataclass
class CheckReport:
    root: str
    layout: str = ""
    encoding: str = ""
    classes: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # the data section training would use
    # masks holding values the encoding cannot place: {"file", "split", "values": {value: pixels},
    # "ignored"}; ignored is True where allow_unknown_values turned them into the ignore index
    unknown_values: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"root": self.root, "ok": self.ok, "layout": self.layout, "encoding": self.encoding,
                "classes": self.classes, "splits": [s.to_dict() for s in self.splits], "errors": self.errors,
                "warnings": self.warnings, "config": {"data": self.config},
                "unknown_values": [{**entry, "values": {str(k): n for k, n in entry["values"].items()}}
                                   for entry in self.unknown_values]}

    def format(self) -> str:
        import yaml
        lines = [f"dataset {self.root}", f"layout: {self.layout or '-'}", f"mask encoding: {self.encoding}"]
        for split in self.splits:
            origin = f" (held back from {split.held_out_from})" if split.held_out_from else ""
            lines.append(f"\n[{split.name}] {split.pairs} pairs{origin}: {split.source}")
            if split.image_sizes:
                sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in split.image_sizes.most_common(4))
                more = f", ... {len(split.image_sizes) - 4} more sizes" if len(split.image_sizes) > 4 else ""
                lines.append(f"  image sizes (WxH): {sizes}{more}")
            if split.stored_values:
                top = sorted(split.stored_values.items(), key=lambda kv: -kv[1])
                total = sum(split.stored_values.values())
                shown = ", ".join(f"{k}: {100 * n / total:.2f}%" for k, n in top[:MAX_VALUES_SHOWN])
                more = f", ... {len(top) - MAX_VALUES_SHOWN} more values" if len(top) > MAX_VALUES_SHOWN else ""
                lines.append(f"  stored mask values ({len(top)} distinct): {shown}{more}")
            if sum(split.class_pixels):
                total = sum(split.class_pixels)
                names = self.classes + ["(ignored)"]
                shown = ", ".join(f"{n} {100 * p / total:.2f}%" for n, p in zip(names, split.class_pixels)
                                  if p or n != "(ignored)")
                lines.append(f"  classes after decoding: {shown}")
            if split.outside_roi_pixels:
                lines.append(f"  outside the region of interest (ignored): {split.outside_roi_pixels} pixels")
            if split.class_stats is not None and split.class_stats.pixels.sum():
                lines.append("  class statistics (loss.class_weights, data.rare_class_crops):")
                lines.extend("  " + line for line in split.class_stats.format())
        if self.config:
            lines.append("\nconfig training would use (YAML, data section):")
            lines.append("  " + yaml.safe_dump({"data": self.config}, sort_keys=False).strip().replace("\n", "\n  "))
        for title, items in (("warnings", self.warnings), ("errors", self.errors)):
            if items:
                lines.append(f"\n{len(items)} {title}:")
                lines.extend(f"  - {item}" for item in items)
        lines.append("\n" + ("OK: ready to train" if self.ok else "NOT READY: fix the errors above")
                     + (f" ({len(self.warnings)} warnings)" if self.warnings else ""))
        return "\n".join(lines)


def _inspect(pair: Pair, encoding: MaskEncoding, in_channels: int, fingerprint: bool = False) -> dict:
    """Reads one pair; returns sizes, stored-value and class histograms (and with `fingerprint`,
    image and object statistics), or the errors."""
    result: dict = {"errors": []}
    try:
        image = read_stored_image(pair.image) if fingerprint else read_image(pair.image, in_channels)
        result["size"] = (image.shape[1], image.shape[0])
        if fingerprint:
            result["image"] = image_statistics(image)
    except ImageReadError as error:
        result["errors"].append(str(error))
    try:
        raw = read_raw_mask(pair.mask, colour=encoding.kind == "rgb")
    except ImageReadError as error:
        result["errors"].append(str(error))
        return result
    if raw.ndim == 3 and encoding.kind == "rgb":
        keys, counts = np.unique(colour_keys(raw), return_counts=True)
        result["values"] = {f"({k >> 16},{(k >> 8) & 255},{k & 255})": int(n) for k, n in zip(keys, counts)}
    else:
        flat = raw if raw.ndim == 2 else raw[:, :, 0]
        keys, counts = np.unique(flat, return_counts=True)
        result["values"] = {int(k): int(n) for k, n in zip(keys, counts)}
    mask_size = (raw.shape[1], raw.shape[0])
    if "size" in result and mask_size != result["size"]:
        result["errors"].append(f"{pair.image.name} is {result['size'][0]}x{result['size'][1]} but its mask "
                                f"{pair.mask} is {mask_size[0]}x{mask_size[1]}; image and mask must have the same size")
        return result
    try:
        labels, ignored = encoding.decode_with_unknown(raw, pair.mask)
    except MaskValueError as error:  # reported per dataset, then grouped by values (`_unknown_value_errors`)
        result["unknown"] = error.values
        return result
    except ImageReadError as error:
        result["errors"].append(str(error))
        return result
    if ignored:
        result["ignored_unknown"] = ignored
    if fingerprint:
        result["objects"] = object_statistics(labels, encoding.num_classes)
    if pair.roi is not None:
        try:
            inside = read_roi(pair.roi)
        except ImageReadError as error:
            result["errors"].append(str(error))
            return result
        if inside.shape != labels.shape:
            result["errors"].append(f"region of interest {pair.roi} is {inside.shape[1]}x{inside.shape[0]} but "
                                    f"{pair.image.name} is {labels.shape[1]}x{labels.shape[0]}")
            return result
        result["outside_roi"] = int((~inside).sum())
        labels = labels[inside]
    counts = np.bincount(labels.ravel(), minlength=256)
    result["classes"] = counts[:encoding.num_classes].tolist() + [int(counts[encoding.num_classes:].sum())]
    return result


def check_dataset(data, workers: int = 4, progress: bool = True, fingerprint: bool = False) -> CheckReport:
    """Checks the dataset a `DataConfig` describes; never raises for problems in the data.

    With `fingerprint`, the training split's report also holds its `Fingerprint` (segan plan).
    """
    report = CheckReport(root=str(data.root), classes=list(data.classes))
    try:
        encoding = MaskEncoding.from_config(data)
    except ValueError as error:
        report.errors.append(f"mask encoding: {error}")
        return report
    report.encoding = encoding.describe()
    try:
        layout = detect_layout(data)
    except DatasetLayoutError as error:
        report.errors.append(str(error))
        return report
    report.layout = layout.describe()
    matchings: dict[str, Matching] = {}
    try:
        matchings[data.train_split] = match_split(data, layout, data.train_split)
        val_name = val_split_name(data, layout)
        if val_name is not None:
            matchings[val_name] = match_split(data, layout, val_name)
    except DatasetLayoutError as error:
        report.errors.append(str(error))
        return report
    split_pairs: dict[str, tuple[list[Pair], str, str | None]] = {}
    for name, matching in matchings.items():
        report.errors.extend(matching.problems())
        report.warnings.extend(matching.warnings())
        split_pairs[name] = (matching.pairs, matching.source, None)
    if val_name is None:
        train_pairs, source, _ = split_pairs.pop(data.train_split)
        if len(train_pairs) >= 2 and 0 < data.val_fraction < 1:
            divided = hold_out(train_pairs, data.val_fraction, data.split_seed)
            split_pairs["train"] = (divided["train"], source, None)
            split_pairs["val"] = (divided["val"], source, data.train_split)
        else:
            split_pairs[data.train_split] = (train_pairs, source, None)
            report.errors.append(f"{source}: {len(train_pairs)} pairs and no validation split; need at least 2 "
                                 f"pairs and 0 < val_fraction < 1 to hold one back")

    jobs = [(name, pair) for name, (pairs, _, _) in split_pairs.items() for pair in pairs]
    training = "train" if "train" in split_pairs else data.train_split
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(lambda job: _inspect(job[1], encoding, data.in_channels,
                                                          fingerprint and job[0] == training), jobs),
                            total=len(jobs), desc="checking files", disable=not progress, unit="pair"))
    for name, (pairs, source, origin) in split_pairs.items():
        split = SplitReport(name=name, source=source, pairs=len(pairs), held_out_from=origin,
                            class_pixels=[0] * (encoding.num_classes + 1),
                            fingerprint=Fingerprint() if fingerprint and name == training else None)
        for (job_split, pair), result in zip(jobs, results):
            if job_split != name:
                continue
            report.errors.extend(result["errors"])
            if "unknown" in result:
                report.unknown_values.append({"file": str(pair.mask), "split": name, "values": result["unknown"],
                                              "ignored": False})
            if "ignored_unknown" in result:
                report.unknown_values.append({"file": str(pair.mask), "split": name,
                                              "values": result["ignored_unknown"], "ignored": True})
            if "size" in result:
                split.image_sizes[result["size"]] += 1
            split.stored_values.update(result.get("values", {}))
            split.outside_roi_pixels += result.get("outside_roi", 0)
            if split.fingerprint is not None and "objects" in result:
                split.fingerprint.add(result["size"], result["image"], result["objects"], encoding.num_classes)
            for c, n in enumerate(result.get("classes", [])):
                split.class_pixels[c] += n
        if name == training:
            counted = [(str(pair.image), result["classes"][:encoding.num_classes])
                       for (job_split, pair), result in zip(jobs, results) if job_split == name and "classes" in result]
            split.class_stats = ClassStats(list(data.classes), [image for image, _ in counted],
                                           np.asarray([counts for _, counts in counted], dtype=np.int64)
                                           .reshape(len(counted), encoding.num_classes))
        report.splits.append(split)
        report.warnings.extend(_ignored_unknown_warnings(report.unknown_values, name, encoding))
        report.warnings.extend(_encoding_warnings(split, encoding, data.classes))

    stored = set().union(*(split.stored_values for split in report.splits))
    report.errors[:0] = _unknown_value_errors(report.unknown_values, stored, len(jobs), encoding)

    config = dataclasses.asdict(data)
    if data.image_dir is None and data.pairs_file is None:  # record what was detected
        config.update(image_dir=layout.image_dir, mask_dir=layout.mask_dir, pairs_file=layout.pairs_file)
    config["val_split"] = val_name
    report.config = {k: v for k, v in config.items() if v is not None}
    return report


def _unknown_value_errors(entries: list[dict], stored: set, masks: int, encoding: MaskEncoding) -> list[str]:
    """Masks holding values the encoding cannot place, as one diagnosis of the whole dataset (what the
    values suggest, and what to do) followed by the masks grouped by their unplaceable values, a few
    named each: a screenful however many files fail. `--report` has every file."""
    failing = [entry for entry in entries if not entry["ignored"]]
    if not failing:
        return []
    share = "every mask" if len(failing) == masks else f"{len(failing)} of {masks} masks"
    values = sorted(value for value in stored if isinstance(value, int))
    # Stored values 0..K beyond the classes given: most likely class indices of a multi-class task.
    indices = len(values) > max(encoding.num_classes, 2) and values == list(range(len(values)))
    if indices:
        held = f"values 0-{values[-1]}"
    else:
        listed = values + sorted(value for value in stored if isinstance(value, str))  # numbers, then colours
        held = "values " + ", ".join(map(str, listed[:MAX_VALUES_SHOWN]))
    diagnosis = (f"{share} {'holds' if len(failing) == masks else 'hold'} values the mask encoding cannot place "
                 f"({encoding.describe()}); the masks hold {held}")
    remedy = BINARY_REMEDY if encoding.kind == "binary" and not encoding.value_map else INDEX_REMEDY
    if indices:
        diagnosis += (f": multi-class? give --classes with one name per value ({len(values)} names, background "
                      "first), or --config with the dataset's recipe (e.g. datasets/camvid/config.yaml). Otherwise: "
                      + remedy[0].lower() + remedy[1:])
    else:
        diagnosis += ". " + remedy
    groups: dict[tuple, list[dict]] = {}
    for entry in failing:
        groups.setdefault(tuple(sorted(entry["values"], key=lambda v: (isinstance(v, str), str(v).zfill(12)))),
                          []).append(entry)
    lines = [diagnosis]
    for unknown, group in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:MAX_FILES_WARNED]:
        pixels = sum(sum(entry["values"].values()) for entry in group)
        files = ", ".join(entry["file"] for entry in group[:3])
        more = f", ... {len(group) - 3} more (--report FILE lists every one)" if len(group) > 3 else ""
        lines.append(f"mask values {list(unknown)[:MAX_VALUES_SHOWN]} in {count(len(group), 'mask')} "
                     f"({count(pixels, 'pixel')}): {files}{more}")
    if len(groups) > MAX_FILES_WARNED:
        lines.append(f"... and {len(groups) - MAX_FILES_WARNED} more groups of values")
    return lines


def _ignored_unknown_warnings(entries: list[dict], split: str, encoding: MaskEncoding) -> list[str]:
    """One warning per split naming the masks whose unplaceable values allow_unknown_values ignored."""
    ignored = [entry for entry in entries if entry["split"] == split and entry["ignored"]]
    if not ignored:
        return []
    total = sum(sum(entry["values"].values()) for entry in ignored)
    shown = "; ".join(f"{entry['file']} ({format_counts(entry['values'])})" for entry in ignored[:MAX_FILES_WARNED])
    more = f"; ... {len(ignored) - MAX_FILES_WARNED} more files" if len(ignored) > MAX_FILES_WARNED else ""
    return [f"[{split}] {len(ignored)} masks hold values the mask encoding cannot place; allow_unknown_values "
            f"ignores their {total} pixels (as {encoding.ignore_index}): {shown}{more}"]


def _encoding_warnings(split: SplitReport, encoding: MaskEncoding, classes: list[str]) -> list[str]:
    """Signs that the declared encoding does not fit the stored values."""
    warnings = []
    total = sum(split.class_pixels[:-1])
    if not total:
        return warnings
    if encoding.kind == "binary" and not encoding.value_map:
        numeric = [k for k in split.stored_values if isinstance(k, int)]
        # Only 0/255 masks are thresholded; other extra values are errors (or ignored) per file.
        if len(numeric) > 2 and 255 in split.stored_values:
            near = sum(n for k, n in split.stored_values.items() if isinstance(k, int) and 15 < k < 240)
            share = near / sum(split.stored_values.values())
            warnings.append(f"[{split.name}] binary masks hold {len(numeric)} distinct values (JPEG noise or "
                            f"anti-aliasing; {100 * share:.2f}% of pixels lie between 16 and 239); thresholded at "
                            f"{encoding.threshold}")
        foreground = split.class_pixels[1] / total
        if foreground > 0.5:
            warnings.append(f"[{split.name}] '{classes[1]}' covers {100 * foreground:.1f}% of the pixels: if the "
                            "foreground is the dark value in these masks, set data.invert (--invert)")
    absent = [classes[c] for c in range(len(classes)) if split.class_pixels[c] == 0]
    if absent:
        warnings.append(f"[{split.name}] no pixels of class(es) {absent}")
    return warnings
