"""The cost of the structure metrics: `segan evaluate`'s scoring time with and without them.

    python scripts/bench_metrics.py [--data ../shared/data] [--rounds 3] [--model CAMVID_RUN] [--publish]

Scores CamVid's validation masks (480x360, 11 classes and void) against predictions made from them
by moving every mask 2 pixels right and down (so every class has boundary errors to measure), with
`evaluate_folders` as `segan evaluate --pred --gt` calls it: once with `--metrics none` (overlap
only), once with the default families, once with every family. Reading and decoding the files is
part of every row, as it is of a real evaluation. Rows alternate for `--rounds` rounds and the best
time of each is kept. With `--model RUN` (a run trained on CamVid), also the whole `segan evaluate
--model RUN` (segmenting the images and scoring them, in-process as `evaluate_model`) with and
without the default families, alternating the same way. Prints one JSON line; with `--publish`,
writes docs/benchmarks/results/metrics.json (table camvid-val, and camvid-val-model with --model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import benchkit

sys.path.insert(0, str(benchkit.ROOT))

from segan.config import STRUCTURE_DEFAULT, STRUCTURE_FAMILIES, Config  # noqa: E402
from segan.data import MaskEncoding  # noqa: E402
from segan.evaluation import evaluate_folders, evaluate_model  # noqa: E402

ROWS = {"overlap only (`--metrics none`)": (), "default families": STRUCTURE_DEFAULT, "every family": STRUCTURE_FAMILIES}


def shifted_predictions(truth_dir: Path, out: Path, ignore_index: int) -> int:
    """Writes each truth mask moved 2 px right and down as a prediction (void pixels become the
    background class, as a prediction has no void); returns how many."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(truth_dir.glob("*.png")):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        moved = np.roll(mask, (2, 2), axis=(0, 1))
        moved[moved == ignore_index] = 0
        cv2.imwrite(str(out / path.name), moved)
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(benchkit.ROOT.parent / "shared" / "data"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="a run trained on CamVid: also time segan evaluate --model with it")
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    benchkit.require_datasets(Path(args.data), ["camvid"])
    data = Config.load(benchkit.ROOT / "datasets" / "camvid" / "config.yaml").data
    encoding = MaskEncoding.from_config(data)
    truth_dir = Path(args.data) / "camvid" / "valannot"
    best = {row: float("inf") for row in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        images = shifted_predictions(truth_dir, Path(tmp) / "pred", encoding.ignore_index)
        for _ in range(args.rounds):
            for row, families in ROWS.items():
                started = time.perf_counter()
                evaluate_folders(Path(tmp) / "pred", truth_dir, class_names=data.classes, encoding=encoding,
                                 structure_families=families)
                best[row] = min(best[row], time.perf_counter() - started)
    rows = table_rows(best, images)
    model_rows = table_rows(time_model(Path(args.model), Path(args.data) / "camvid", args.rounds), images) \
        if args.model else []
    print(json.dumps({"benchmark": "metrics", "images": images, "size": "480x360", "rounds": args.rounds,
                      "rows": rows, "model_rows": model_rows}))
    if args.publish:
        columns = [{"key": "row", "label": "scoring"}, {"key": "seconds", "label": "seconds", "format": "{:.2f}"},
                   {"key": "per_image_ms", "label": "ms an image", "format": "{:.1f}"},
                   {"key": "vs_overlap", "label": "time over overlap only", "format": "{:.2f}x"}]
        tables = [{"name": "camvid-val", "columns": columns, "rows": rows}]
        if model_rows:
            tables.append({"name": "camvid-val-model", "columns": columns, "rows": model_rows})
        benchkit.publish("metrics", tables)


def table_rows(best: dict[str, float], images: int) -> list[dict]:
    """Each row's best time, per image, and over the first row's (overlap only)."""
    base = next(iter(best.values()))
    return [{"row": row, "seconds": round(seconds, 2), "per_image_ms": round(1000 * seconds / images, 1),
             "vs_overlap": round(seconds / base, 2)} for row, seconds in best.items()]


def time_model(run: Path, data: Path, rounds: int) -> dict[str, float]:
    """Best wall time of `evaluate_model` on CamVid's val split without and with the default families."""
    rows = {"segan evaluate --model, `--metrics none`": (), "segan evaluate --model, default families":
            STRUCTURE_DEFAULT}
    best = {row: float("inf") for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for row, families in rows.items():
                started = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):  # the one JSON line stays alone on stdout
                    evaluate_model(run, data, "val", Path(tmp) / "evaluation", device="cpu", progress=False,
                                   overwrite=True, structure_families=families)
                best[row] = min(best[row], time.perf_counter() - started)
    return best


if __name__ == "__main__":
    main()
