"""Segmenting whole folders: input listing, sharding, batched inference, safe writing, a manifest.

Outputs go under one folder DIR and mirror the input tree:
`DIR/masks/<rel>/<stem>.png` (binary 0/255, or class indices with a colour palette),
`DIR/probs/<rel>/<stem>.npy` with `save_probs` (float16, C x H x W),
`DIR/overlays/<rel>/<stem>.jpg` with `overlay`, and `DIR/manifest[-K-of-N].csv` with a row per input.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .config import DataConfig
from .data.io import IMAGE_SUFFIXES, read_image
from .atomic import atomic_write
from .inference import Predictor
from .preprocess import prepare_image, restore

log = logging.getLogger(__name__)

# A fixed 256-colour palette: black background, then well-separated hues.
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0]]
                   + [[(i * 37) % 256, (i * 91) % 256, (i * 157) % 256] for i in range(16, 256)], np.uint8)
PALETTE[255] = [255, 255, 255]


def colour_mask(mask: np.ndarray, binary: bool) -> np.ndarray:
    """Class indices as RGB in the palette of predicted masks (binary foreground white), for
    pictures of masks (report, TensorBoard)."""
    palette = PALETTE.copy()
    if binary:
        palette[1] = (255, 255, 255)
    return palette[np.clip(mask, 0, len(palette) - 1)]


class PredictInputError(ValueError):
    """Inputs or an output folder that cannot be used."""


@dataclass(frozen=True)
class InputItem:
    path: Path
    rel: Path  # path relative to the output tree, keeping the input's sub-folders


@dataclass
class PredictSummary:
    inputs: int = 0
    written: int = 0
    skipped_existing: int = 0
    failed: int = 0
    ignored_non_images: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    manifest: str = ""
    classes: list[str] = field(default_factory=list)  # mask value i is class classes[i]
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'K/N' (K from 0 to N-1); without it, torchrun's RANK/WORLD_SIZE, else 0/1."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise PredictInputError(f"--shard must look like K/N (e.g. 0/4), got '{text}'") from None
    if not 0 <= index < count:
        raise PredictInputError(f"--shard {text}: K must be between 0 and N-1")
    return index, count


def in_shard(rel: Path, index: int, count: int) -> bool:
    """Deterministic and independent of listing order: a hash of the relative path picks the shard."""
    return count == 1 or zlib.crc32(rel.as_posix().encode()) % count == index


def _walk(folder: Path) -> Iterable[Path]:
    # os.walk does not follow symlinked folders, so a symlink loop cannot trap it.
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in sorted(files):
            yield Path(directory) / name


def collect_inputs(inputs: Sequence[str | Path], output: Path) -> tuple[list[InputItem], int]:
    """Files, folders (recursive) and globs to a sorted list of items, plus how many non-image files
    the folders held. Refuses an output folder that is, or lies inside, an input folder."""
    output = output.resolve()
    roots: list[tuple[Path, list[Path]]] = []
    ignored = 0
    for entry in map(str, inputs):
        if glob.has_magic(entry):
            matches = sorted(Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file())
            if not matches:
                raise PredictInputError(f"no files match {entry}")
            base = Path(entry.split("*")[0].split("?")[0].split("[")[0])
            base = base if entry.endswith(os.sep) or base.is_dir() else base.parent
            roots.append((base, matches))
        elif Path(entry).is_dir():
            folder = Path(entry)
            if output == folder.resolve() or folder.resolve() in output.parents:
                raise PredictInputError(f"output folder {output} is inside the input folder {folder}: "
                                        "choose an output folder outside the inputs")
            files = list(_walk(folder))
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            ignored += len(files) - len(images)
            roots.append((folder, images))
        elif Path(entry).is_file():
            roots.append((Path(entry).parent, [Path(entry)]))
        else:
            raise PredictInputError(f"input not found: {entry}")
    prefix = len(roots) > 1 and len({root for root, _ in roots}) > 1
    items: dict[Path, InputItem] = {}
    for root, files in roots:
        for path in files:
            rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
            if prefix:
                rel = Path(root.name or "input") / rel
            if rel in items and items[rel].path != path:
                raise PredictInputError(f"{items[rel].path} and {path} would write the same output {rel}")
            items[rel] = InputItem(path, rel)
    if not items:
        raise PredictInputError(f"no images found in {', '.join(map(str, inputs))} ({', '.join(IMAGE_SUFFIXES)})")
    return [items[rel] for rel in sorted(items)], ignored


class _ImageFiles(Dataset):
    """Decodes and prepares images in DataLoader workers; a bad file yields its error, not an exception."""

    def __init__(self, items: Sequence[InputItem], data: DataConfig, keep_image: bool) -> None:
        self.items = items
        self.data = data  # not the Predictor: workers need no model
        self.keep_image = keep_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        try:
            image = read_image(item.path, self.data.in_channels)
            array = prepare_image(image, self.data)
        except Exception as error:  # reported in the manifest; the other files go on
            return dict(index=index, error=str(error))
        return dict(index=index, array=array, size=image.shape[:2], image=image if self.keep_image else None)


def _as_is(sample: dict) -> dict:
    return sample  # keep NumPy arrays as they are (the default collate would make tensors)


def _encode_mask(mask: np.ndarray, binary: bool) -> bytes:
    if binary:
        ok, data = cv2.imencode(".png", mask * 255)
        return data.tobytes()
    image = Image.fromarray(mask, mode="P")
    image.putpalette(PALETTE.flatten().tolist())
    from io import BytesIO
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _overlay(image: np.ndarray, mask: np.ndarray, binary: bool) -> bytes:
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    colours = PALETTE[mask] if not binary else np.where(mask[:, :, None] > 0, PALETTE[1], 0).astype(np.uint8)
    tinted = np.where(mask[:, :, None] > 0, (0.55 * rgb + 0.45 * colours).astype(np.uint8), rgb)
    edges = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    tinted[edges] = colours[edges] if not binary else PALETTE[1]
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(tinted, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes()


def _npy(array: np.ndarray) -> bytes:
    from io import BytesIO
    buffer = BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def predict_folder(predictor: Predictor, inputs: Sequence[str | Path], output: str | Path, *,
                   batch_size: int = 8, num_workers: int = 2, save_probs: bool = False, overlay: bool = False,
                   skip_existing: bool = False, shard: tuple[int, int] = (0, 1),
                   progress: bool = True, overwrite: bool = False,
                   observe: Callable[[Path, torch.Tensor], None] | None = None) -> PredictSummary:
    """Segments every image in `inputs` into `output` (see the module docstring for the layout).

    A file that cannot be read is reported in the manifest and skipped; the others are written.
    Each output file is written atomically (temporary file, then rename). An output folder that
    holds an earlier job's results is refused unless `skip_existing` (resume that job) or
    `overwrite` (replace its files) says what to do with them. `observe(image path, probabilities)`,
    when given, sees each image's probabilities (CxHxW, at the image's size) as they are made.
    """
    output = Path(output)
    shard_index, shard_count = shard
    manifest_name = "manifest.csv" if shard_count == 1 else f"manifest-{shard_index}-of-{shard_count}.csv"
    if output.exists() and not output.is_dir():
        raise PredictInputError(f"{output} is a file: --output must be a folder (segan predict writes OUTPUT/masks/, "
                                "OUTPUT/manifest.csv and more); give a new folder name")
    if (output / manifest_name).is_file() and not (skip_existing or overwrite):
        raise PredictInputError(f"{output} already holds the results of an earlier segan predict ({manifest_name}); "
                                "nothing was written. Resume that job with --skip-existing, write elsewhere with "
                                "--output NEW_FOLDER, or replace its files with --overwrite")
    items, ignored = collect_inputs(inputs, output)
    items = [item for item in items if in_shard(item.rel, shard_index, shard_count)]
    input_paths = {item.path.resolve() for item in items}

    def mask_path(item: InputItem) -> Path:
        return output / "masks" / item.rel.with_suffix(".png")

    for item in items:
        if mask_path(item).resolve() in input_paths:
            raise PredictInputError(f"writing {mask_path(item)} would overwrite an input; choose another output folder")
    output.mkdir(parents=True, exist_ok=True)
    probe = output / f".segan-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PredictInputError(f"cannot write to the output folder {output} ({error.strerror}); choose a writable "
                                "folder") from None
    summary = PredictSummary(inputs=len(items), ignored_non_images=ignored, manifest=str(output / manifest_name),
                             classes=list(predictor.config.data.classes))

    todo = []
    rows: list[dict] = []
    for item in items:
        if skip_existing and mask_path(item).is_file():
            summary.skipped_existing += 1
            rows.append(dict(input=str(item.path), status="exists", mask=str(mask_path(item)), height="", width="",
                             message="mask already there (--skip-existing)"))
        else:
            todo.append(item)

    binary = predictor.binary
    loader = DataLoader(_ImageFiles(todo, predictor.config.data, overlay), batch_size=None, shuffle=False,
                        collate_fn=_as_is, num_workers=num_workers, prefetch_factor=2 if num_workers else None)
    writer = ThreadPoolExecutor(max_workers=2)
    pending: deque[tuple[InputItem, Future, tuple]] = deque()
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, desc="predict")

    def record(item: InputItem, status: str, message: str = "", size=("", "")) -> None:
        rows.append(dict(input=str(item.path), status=status, mask=str(mask_path(item)) if status == "written" else "",
                         height=size[0], width=size[1], message=message))
        if status == "failed":
            summary.failed += 1
            # read errors already begin with the file's name
            said = message if message.startswith(str(item.path)) else f"{item.path}: {message}"
            summary.failures.append(said)
            log.warning("skipped %s", said)
        bar.update(1)

    def write(item: InputItem, probs: torch.Tensor, image: np.ndarray | None) -> None:
        mask = predictor.labels(probs)
        atomic_write(mask_path(item), _encode_mask(mask, binary))
        if save_probs:
            atomic_write(output / "probs" / item.rel.with_suffix(".npy"), _npy(probs.numpy().astype(np.float16)))
        if overlay and image is not None:
            atomic_write(output / "overlays" / item.rel.with_suffix(".jpg"), _overlay(image, mask, binary))

    def finish(item: InputItem, future: Future, size) -> None:
        try:
            future.result()
        except OSError as error:  # read-only or full disk: report, keep what was written
            record(item, "failed", f"cannot write output: {error}", size)
        else:
            summary.written += 1
            record(item, "written", "", size)

    def submit(samples: list[dict]) -> None:
        probs = predictor.probabilities_batch([s["array"] for s in samples], batch_size)
        for sample, p in zip(samples, probs):
            item = todo[sample["index"]]
            p = restore(p, *sample["size"])
            if observe is not None:
                observe(item.path, p)
            pending.append((item, writer.submit(write, item, p, sample["image"]), sample["size"]))
        # Bounded queue: memory stays flat however many images there are.
        while len(pending) > 2 * batch_size:
            finish(*pending.popleft())

    buckets: dict[tuple, list[dict]] = {}
    try:
        for sample in loader:
            if "error" in sample:
                record(todo[sample["index"]], "failed", sample["error"])
                continue
            if predictor.needs_tiling(sample["array"]):
                submit([sample])
                continue
            bucket = buckets.setdefault(sample["array"].shape, [])
            bucket.append(sample)
            if len(bucket) == batch_size:
                submit(buckets.pop(sample["array"].shape))
        for bucket in buckets.values():
            submit(bucket)
        while pending:
            finish(*pending.popleft())
    finally:
        writer.shutdown(wait=True)
        bar.close()
        summary.seconds = round(time.perf_counter() - started, 2)
        summary.images_per_s = round(summary.written / summary.seconds, 2) if summary.seconds else 0.0
        _write_manifest(output / manifest_name, rows)
        (output / manifest_name).with_suffix(".json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _write_manifest(path: Path, rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda row: row["input"])
    text_rows = [["input", "status", "mask", "height", "width", "message"]]
    text_rows += [[row[key] for key in text_rows[0]] for row in rows]
    from io import StringIO
    buffer = StringIO()
    csv.writer(buffer).writerows(text_rows)
    atomic_write(path, buffer.getvalue().encode())
