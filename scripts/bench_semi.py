#!/usr/bin/env python
"""What unlabelled images add: labelled-only against each semi-supervised mode and the ceiling.

    python scripts/bench_semi.py [--datasets kvasir-seg isbi2012] [--splits 0 1 2]
                                 [--rows labeled-only self-training adversarial adversarial+self-training all-labels]
                                 [--protocol cpu|gpu] [--out DIR]

Kvasir-SEG: 1/8 of the 800 training masks (100 images) kept, the other 700 images unlabelled,
scored on the 100 validation images. ISBI 2012: 3 of the 24 training images kept (the 6 others
are the held-back validation split), the other 21 plus the 30 unlabelled test/ images as
unlabelled. A split is `--split-seed S`: it chooses the labelled images (and, for ISBI, the
held-back six), the same for every row. Every row trains the same model (U-Net,
EfficientNet-Lite0 with its offline ImageNet weights) for the same number of optimizer steps
(the epochs run over the labelled set, so all-labels runs the same steps over more images).

Rows: labeled-only (`--semi none`), the three `--semi` modes, and all-labels (the ceiling).
Per split: each row's paired difference to labeled-only, and the share of the gap to the ceiling
that it closes. Runs go to OUT/PROTOCOL/DATASET/ROW-splitS and are not run again once their
summary.json exists, so an interrupted benchmark continues where it stopped; runs are ordered
split by split, so a partial benchmark has whole splits. Prints one JSON line; writes
OUT/PROTOCOL/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--encoder", "tu-efficientnet_lite0", "--encoder-weights", "imagenet"]
# dataset -> protocol -> flags; epochs count passes over the labelled images.
PROTOCOLS = {
    "kvasir-seg": {
        "labels": ["--labeled-fraction", "0.125"],
        "cpu": ["--size", "128", "--epochs", "16", "--batch-size", "8", "--augment", "medium"],
        "gpu": ["--size", "320", "--epochs", "80", "--batch-size", "8", "--augment", "medium"]},
    "isbi2012": {
        "labels": ["--labeled-fraction", "0.125", "--unlabeled", "test"],  # 3 of 24
        "cpu": ["--size", "256", "--epochs", "120", "--batch-size", "3", "--augment", "medium"],
        "gpu": ["--size", "512", "--epochs", "200", "--batch-size", "3", "--augment", "medium"]},
}
ROWS = {"labeled-only": ["--semi", "none"], "self-training": ["--semi", "self-training"],
        "adversarial": ["--semi", "adversarial"],
        "adversarial+self-training": ["--semi", "adversarial+self-training"], "all-labels": []}


def run_one(dataset: str, row: str, split: int, protocol: str, data: Path, out: Path) -> dict:
    run = out / dataset / f"{row}-split{split}"
    summary = run / "summary.json"
    if not summary.is_file():
        spec = PROTOCOLS[dataset]
        command = [sys.executable, "-m", "segan", "train", "--config", str(ROOT / "datasets" / dataset / "config.yaml"),
                   "--data", str(data / dataset), "--out", str(run), "--split-seed", str(split), "--seed", "0",
                   *MODEL, *spec[protocol], *ROWS[row], "--overwrite"]
        if row != "all-labels":
            labels = list(spec["labels"])
            if row == "labeled-only" and "--unlabeled" in labels:  # not read when nothing learns from it
                labels = labels[:labels.index("--unlabeled")]
            command += labels
        else:  # the ceiling trains as many steps over all the labels as the others over theirs
            command += ["--epochs", str(max(1, round(int(spec[protocol][spec[protocol].index("--epochs") + 1])
                                                    * float(spec["labels"][1]))))]
        if protocol == "cpu":
            command += ["--accelerator", "cpu", "--num-workers", "1"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        print(f"{dataset} {row} split {split}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    result = json.loads(summary.read_text())
    return {"dataset": dataset, "row": row, "split": split, "dice": result["best_val_dice"],
            "iou": result["best_val_iou"], "steps": result["steps"], "wall_time_s": result["wall_time_s"],
            "semi": result.get("semi")}


def mean_std(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None, "n": len(values)}


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == dataset]
        by = {(r["row"], r["split"]): r for r in mine}
        for row in dict.fromkeys(r["row"] for r in mine):
            chosen = [r for r in mine if r["row"] == row]
            entry = {key: mean_std([r[key] for r in chosen]) for key in ("dice", "iou", "wall_time_s")}
            paired = [(r, by[("labeled-only", r["split"])]) for r in chosen if ("labeled-only", r["split"]) in by]
            if row not in ("labeled-only", "all-labels") and paired:
                entry["dice_minus_labeled_only"] = [round(r["dice"] - base["dice"], 4) for r, base in paired]
                closed = [(r["dice"] - base["dice"]) / (by[("all-labels", r["split"])]["dice"] - base["dice"])
                          for r, base in paired if ("all-labels", r["split"]) in by
                          and by[("all-labels", r["split"])]["dice"] != base["dice"]]
                entry["gap_closed"] = [round(value, 3) for value in closed]
            summary[f"{dataset}/{row}"] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--protocol", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "weights" / "bench-semi"))
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out) / args.protocol
    for dataset in args.datasets:
        if not (data / dataset).is_dir():
            raise SystemExit(f"{data / dataset} not found: this benchmark trains on ../shared/data")
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for split in args.splits:  # whole splits first: a partial benchmark still pairs its rows
        for dataset in args.datasets:
            for row in args.rows:
                runs.append(run_one(dataset, row, split, args.protocol, data, out))
                result = {"benchmark": "semi", "protocol": args.protocol, "machine": platform.machine(),
                          "splits": args.splits, "summary": summarise(runs), "runs": runs}
                (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
