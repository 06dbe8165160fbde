"""Mask decoding cost against file reading, per encoding, on real masks.

    python scripts/bench_data.py [--data ../shared/data] [--repeats 3]

For each encoding: the time to read the stored values of a mask file (`read_raw_mask`, PNG/JPEG
decompression) and the time to turn them into class indices (`MaskEncoding.decode`), per mask,
best of `repeats` passes over the same files. The claim to check: decoding costs no more than
reading. Also the time for one full training sample (`SegmentationDataset[i]`: image + mask +
augmentation at 192 px), which DataLoader workers spend off the training's critical path.
Prints one JSON line; with `--publish`, also writes its tables into
docs/benchmarks/results/data.json, the source of docs/benchmarks/data.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import benchkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segan.config import Config  # noqa: E402
from segan.data import MaskEncoding, SegmentationDataset, find_splits  # noqa: E402
from segan.data.io import read_raw_mask  # noqa: E402
from segan.transforms import build_train_transform  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMVID_COLOURS = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
                  [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]


def best_ms(function, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return round(best * 1000, 3)


def measure(name: str, files: list[Path], encoding: MaskEncoding, repeats: int) -> dict:
    colour = encoding.kind == "rgb"
    raws = [read_raw_mask(f, colour=colour) for f in files]
    read = best_ms(lambda f: read_raw_mask(f, colour=colour), files, repeats)
    decode = best_ms(encoding.decode, raws, repeats)
    height, width = raws[0].shape[:2]
    return {"encoding": name, "masks": len(files), "size": f"{width}x{height}", "read_ms": read,
            "decode_ms": decode, "decode_over_read": round(decode / read, 3)}


ENCODING_COLUMNS = [{"key": "encoding", "label": "encoding"}, {"key": "size", "label": "mask size"},
                    {"key": "read_ms", "label": "read", "format": "{:.3f} ms"},
                    {"key": "decode_ms", "label": "decode", "format": "{:.3f} ms"},
                    {"key": "decode_over_read", "label": "decode / read", "format": "{:.3f}"}]


def published_tables(result: dict) -> list[dict]:
    """The JSON line's figures as the tables of docs/benchmarks/results/data.json."""
    encodings = [{column["key"]: row[column["key"]] for column in ENCODING_COLUMNS} for row in result["encodings"]]
    sample = {"what": "Kvasir-SEG training sample: image + mask read, decoded, augmented (light), normalised at 192 px",
              "ms": result["kvasir_sample_192px_ms"]}
    return [{"name": "encodings", "columns": ENCODING_COLUMNS, "rows": encodings},
            {"name": "sample", "columns": [{"key": "what", "label": "what"},
                                           {"key": "ms", "label": "per sample", "format": "{:.2f} ms"}],
             "rows": [sample]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--masks", type=int, default=100, help="masks per encoding")
    parser.add_argument("--repeats", type=int, default=3)
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one worker's view: each DataLoader worker decodes on one core
    data = Path(args.data)
    for name in ("kvasir-seg", "camvid"):
        if not (data / name).is_dir():
            raise SystemExit(f"{data / name} not found: this benchmark reads real masks from ../shared/data")
    results = []
    kvasir = sorted((data / "kvasir-seg" / "train" / "masks").glob("*.jpg"))[: args.masks]
    results.append(measure("binary JPEG 0/255 with noise, threshold 127 (Kvasir-SEG)", kvasir, MaskEncoding(),
                           args.repeats))
    results.append(measure("binary JPEG, inverted", kvasir, MaskEncoding(invert=True), args.repeats))
    camvid = sorted((data / "camvid" / "trainannot").glob("*.png"))[: args.masks]
    results.append(measure("class-index PNG, 11 classes + void (CamVid)", camvid, MaskEncoding(11, ignore_index=11),
                           args.repeats))
    results.append(measure("class-index PNG through a value map", camvid,
                           MaskEncoding(12, ignore_index=255, value_map={11: 255}), args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        table = np.array(CAMVID_COLOURS + [[0, 0, 0]], np.uint8)
        rgb_files = []
        for path in camvid:  # the same CamVid labels, rendered as colour-coded PNGs
            labels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            rgb_files.append(Path(tmp) / path.name)
            cv2.imwrite(str(rgb_files[-1]), cv2.cvtColor(table[labels], cv2.COLOR_RGB2BGR))
        results.append(measure("RGB colour table, 11 colours + a void colour", rgb_files,
                               MaskEncoding(11, ignore_index=11, colors=CAMVID_COLOURS, ignore_color=[0, 0, 0]),
                               args.repeats))
    config = Config.load(ROOT / "datasets" / "kvasir-seg" / "config.yaml")
    config.data.root = str(data / "kvasir-seg")
    pairs = find_splits(config.data)["train"][:50]
    mean, std = config.data.normalization()
    dataset = SegmentationDataset(pairs, build_train_transform("light", 192, "resize", mean, std, True, 255, seed=0),
                                  3, MaskEncoding.from_config(config.data))
    sample_ms = best_ms(dataset.__getitem__, range(len(dataset)), args.repeats)
    result = {"benchmark": "data", "machine": f"{platform.machine()} {torch.get_num_threads()} thread",
              "python": platform.python_version(), "opencv": cv2.__version__, "encodings": results,
              "kvasir_sample_192px_ms": sample_ms, "max_decode_over_read": max(r["decode_over_read"] for r in results)}
    print(json.dumps(result))
    if args.publish:
        benchkit.publish("data", published_tables(result))


if __name__ == "__main__":
    main()
