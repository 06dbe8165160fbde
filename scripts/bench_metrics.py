"""The cost of the structure metrics: `segan evaluate`'s scoring time with and without them.

    python scripts/bench_metrics.py [--data ../shared/data] [--rounds 3] [--publish]

Scores CamVid's validation masks (480x360, 11 classes and void) against predictions made from them
by moving every mask 2 pixels right and down (so every class has boundary errors to measure), with
`evaluate_folders` as `segan evaluate --pred --gt` calls it: once with `--metrics none` (overlap
only), once with the default families, once with every family. Reading and decoding the files is
part of every row, as it is of a real evaluation. Rows alternate for `--rounds` rounds and the best
time of each is kept. Prints one JSON line; with `--publish`, writes docs/benchmarks/results/metrics.json.
"""

from __future__ import annotations

import argparse
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
from segan.evaluation import evaluate_folders  # noqa: E402

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
    base = best["overlap only (`--metrics none`)"]
    rows = [{"row": row, "seconds": round(seconds, 2), "per_image_ms": round(1000 * seconds / images, 1),
             "vs_overlap": round(seconds / base, 2)} for row, seconds in best.items()]
    print(json.dumps({"benchmark": "metrics", "images": images, "size": "480x360", "rounds": args.rounds,
                      "rows": rows}))
    if args.publish:
        columns = [{"key": "row", "label": "scoring"}, {"key": "seconds", "label": "seconds", "format": "{:.2f}"},
                   {"key": "per_image_ms", "label": "ms an image", "format": "{:.1f}"},
                   {"key": "vs_overlap", "label": "time over overlap only", "format": "{:.2f}x"}]
        benchkit.publish("metrics", [{"name": "camvid-val", "columns": columns, "rows": rows}])


if __name__ == "__main__":
    main()
