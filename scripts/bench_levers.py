#!/usr/bin/env python
"""Rare and thin classes: each accuracy lever against today's recipe, at equal wall time.

    python scripts/bench_levers.py [--datasets camvid isbi2012] [--rows recipe class-weights ohem
                                   rare-class scale best] [--seeds 0] [--final-seeds 0 1 2]
                                   [--budget 1h] [--best-levers NAME...] [--tta-scales S...]
                                   [--out DIR] [--markdown] [--publish]

Every row trains the dataset's recipe (datasets/NAME/config.yaml) with the hand settings below
for the same `--time-budget` (the budget decides the epochs, so a slower lever trains fewer), then
scores the validation split with `segan evaluate --model RUN --split val`: native resolution for
the crop-trained CamVid, the figures `segan predict` would give (with `--tta-scales`, also with
flips at those scales, on the same weights, and the seconds each scoring took). Rows:
- recipe: the settings alone; class-weights: `--class-weights median-frequency`; ohem:
  `--ohem-keep 0.25 --ohem-threshold 0.7`; rare-class: `--rare-class-crops 0.5`; scale:
  `--scale-range 0.5 2.0` (crop-trained sets only);
- best: every lever whose row beat recipe (mean IoU, seed 0), together; trained for each of
  `--final-seeds` (default 0 1 2). Without a lever that beat recipe, it is the recipe. As the
  levers were chosen on val, these runs are also scored on the test split, which chose nothing
  (where the data has one in the recipe's layout, as CamVid's published test/ and testannot/).
  `--best-levers NAME...` names them instead, for a session whose OUT lacks the lever rows
  (weights/ is not kept between sessions: take them from BENCHMARKS.md's seed-0 rows).
ISBI 2012 (binary, thin membranes) gets the recipe, class-weights and ohem rows only.

Per row: mean IoU over the classes (CamVid; the foreground IoU and Dice for ISBI), every class's
IoU, the epochs the budget allowed, and wall time. Runs go to OUT/DATASET/ROW-seedS and are not
trained or scored again once their metrics.json exists, so the benchmark continues where it
stopped, across sessions. Prints one JSON line; writes OUT/results.json. `--markdown` trains
nothing and prints the archive's tables from that file. `--publish` also writes the docs' tables
(docs/benchmarks/levers.md) into docs/benchmarks/results/levers.json: DATASET-BUDGET for the
lever rows, DATASET-best-BUDGET for row best's seeds with their mean and sd (with the runs, not
with `--markdown`: it stamps today's machine and date).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from benchkit import (LITE0, ROOT, add_common_arguments, add_publish_argument, add_tta_argument, evaluate,
                      evaluate_tta, mean_std, publish, require_datasets, seconds, segan)

# The hand settings of issue 21's report (CamVid, 0.691 mean IoU in 56 minutes) and the ISBI
# all-labels row of the semi-supervised benchmark, at native resolution for the thin membranes.
HAND = {
    "camvid": [*LITE0, "--size", "256", "--resize", "crop", "--batch-size", "8", "--augment", "medium"],
    "isbi2012": [*LITE0, "--size", "256", "--resize", "crop", "--batch-size", "8", "--augment", "medium"],
}
LEVERS = {
    "class-weights": ["--class-weights", "median-frequency"],
    "ohem": ["--ohem-keep", "0.25", "--ohem-threshold", "0.7"],
    "rare-class": ["--rare-class-crops", "0.5"],
    "scale": ["--scale-range", "0.5", "2.0"],
}
ROWS = ("recipe", *LEVERS, "best")
DATASET_ROWS = {"camvid": ROWS, "isbi2012": ("recipe", "class-weights", "ohem")}
# What the docs' tables show (the --markdown tables keep every class): the headline IoU's label, its Dice
# where that is the set's usual figure, the classes of the lever rows (CamVid's rare and thin ones) and
# those of row best (the three weakest, whose means the archive follows).
SHOWN = {
    "camvid": {"iou": "mean IoU", "dice": False,
               "classes": ("Pole", "SignSymbol", "Fence", "Pedestrian", "Bicyclist"),
               "best_classes": ("Pole", "SignSymbol", "Pedestrian")},
    "isbi2012": {"iou": "membrane IoU", "dice": True, "classes": (), "best_classes": ()},
}


def best_levers(dataset: str, out: Path) -> list[str]:
    """The levers whose seed-0 row beat the recipe's seed-0 row, from their finished scores."""
    def score(row: str) -> float | None:
        path = out / dataset / f"{row}-seed0" / "evaluation" / "metrics.json"
        return json.loads(path.read_text())["headline"]["iou"] if path.is_file() else None
    recipe = score("recipe")
    if recipe is None:
        raise SystemExit(f"row best of {dataset} needs the recipe row first")
    return [lever for lever in LEVERS if lever in DATASET_ROWS[dataset] and (score(lever) or 0.0) > recipe]


def missing_split(dataset: str, data: Path, split: str) -> str | None:
    """Why `segan evaluate --split SPLIT` would find no such split in the recipe's layout under DATA
    (segan's own rule, so a broken test/ folder is reported too), or None where it would."""
    from segan.config import Config, merge
    from segan.data.pairs import DatasetLayoutError, find_split
    config = merge(Config.load(ROOT / "datasets" / dataset / "config.yaml"), {"data": {"root": str(data / dataset)}})
    try:
        find_split(config.data, split)
    except DatasetLayoutError as error:
        return str(error)
    return None


def run_one(dataset: str, row: str, seed: int, budget: str, data: Path, out: Path,
            chosen: list[str] | None = None, tta_scales: list[float] | None = None) -> dict:
    run = out / dataset / f"{row}-seed{seed}"
    if row == "best":
        levers = chosen if chosen is not None else best_levers(dataset, out)
    else:
        levers = [row] if row in LEVERS else []
    started = time.perf_counter()
    if not (run / "summary.json").is_file():
        flags = [flag for lever in levers for flag in LEVERS[lever]]
        segan("train", "--config", str(ROOT / "datasets" / dataset / "config.yaml"), "--data", str(data / dataset),
              "--out", str(run), "--seed", str(seed), "--time-budget", budget, *HAND[dataset], *flags,
              "--overwrite")
    eval_s = evaluate(run, "evaluation", "val")
    if row == "best" and not (why := missing_split(dataset, data, "test")):
        evaluate(run, "evaluation-test", "test")
    elif row == "best":
        print(f"row best is scored on val only: {why}", file=sys.stderr, flush=True)
    tta, tta_s = evaluate_tta(run, "val", tta_scales)
    print(f"{dataset} {row} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    def read(folder: str) -> dict | None:
        path = run / folder / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    scores, test = read("evaluation"), read("evaluation-test")
    summary = json.loads((run / "summary.json").read_text())

    def per_class(metrics: dict) -> dict:
        return {name: round(entry["iou"], 4) for name, entry in metrics["per_class"].items()}

    return {"dataset": dataset, "row": row, "seed": seed, "levers": levers,
            "test_iou": round(test["headline"]["iou"], 4) if test else None,
            "iou": round(scores["headline"]["iou"], 4), "dice": round(scores["headline"]["dice"], 4),
            "per_class_iou": per_class(scores), "eval_s": eval_s,
            **({"tta_scales": tta_scales, "tta_iou": round(tta["headline"]["iou"], 4),
                "tta_per_class_iou": per_class(tta), "tta_eval_s": tta_s} if tta else {}),
            "epochs": summary["epochs"], "steps": summary["steps"], "wall_time_s": summary["wall_time_s"],
            "time_budget": summary.get("time_budget"), "precision": summary.get("precision")}


def summarise(runs: list[dict]) -> dict:
    """Per dataset and row: the mean IoU over seeds (with its spread), and the paired difference
    of each row's seed-0 run to the recipe's."""
    summary = {}
    for dataset in dict.fromkeys(run["dataset"] for run in runs):
        mine = [run for run in runs if run["dataset"] == dataset]
        recipe = next((run for run in mine if run["row"] == "recipe" and run["seed"] == 0), None)
        for row in dict.fromkeys(run["row"] for run in mine):
            entry = {"iou": mean_std([run["iou"] for run in mine if run["row"] == row])}
            tests = [run["test_iou"] for run in mine if run["row"] == row and run["test_iou"] is not None]
            if tests:
                entry["test_iou"] = mean_std(tests)
            first = next((run for run in mine if run["row"] == row and run["seed"] == 0), None)
            if recipe is not None and first is not None:
                entry["iou_minus_recipe_seed0"] = round(first["iou"] - recipe["iou"], 4)
            summary[f"{dataset}/{row}"] = entry
    return summary


def markdown(result: dict) -> str:
    """The BENCHMARKS.md tables: one per dataset, a row per run, every class's IoU."""
    lines = []
    for dataset in dict.fromkeys(run["dataset"] for run in result["runs"]):
        mine = [run for run in result["runs"] if run["dataset"] == dataset]
        classes = list(mine[0]["per_class_iou"])
        lines += [f"### {dataset}", "| row | seed | levers | mean IoU | − recipe | " + " | ".join(classes)
                  + " | epochs | wall time | test mean IoU |", "|---" * (len(classes) + 8) + "|"]
        for run in mine:
            difference = result["summary"][f"{dataset}/{run['row']}"].get("iou_minus_recipe_seed0")
            shown = f"{difference:+.4f}" if difference is not None and run["seed"] == 0 else ""
            lines.append(f"| {run['row']} | {run['seed']} | {' '.join(run['levers']) or '-'} | {run['iou']:.4f} | "
                         f"{shown} | " + " | ".join(f"{run['per_class_iou'][name]:.3f}" for name in classes)
                         + f" | {run['epochs']} | {run['wall_time_s']:.0f} s | "
                         + (f"{run['test_iou']:.4f} |" if run["test_iou"] is not None else " |"))
        lines.append("")
        scored = [run for run in mine if "tta_iou" in run]
        if scored:
            lines += [f"### {dataset}: multi-scale test-time augmentation, the same weights",
                      "| row | seed | scales, with flips | mean IoU | with TTA | change | " + " | ".join(classes)
                      + " | seconds plain | seconds TTA |", "|---" * (len(classes) + 8) + "|"]
            for run in scored:
                lines.append(f"| {run['row']} | {run['seed']} | {' '.join(f'{s:g}' for s in run['tta_scales'])} | "
                             f"{run['iou']:.4f} | {run['tta_iou']:.4f} | {run['tta_iou'] - run['iou']:+.4f} | "
                             + " | ".join(f"{run['tta_per_class_iou'][name]:.3f}" for name in classes)
                             + f" | {seconds(run['eval_s'])} | {seconds(run['tta_eval_s'])} |")
            lines.append("")
    return "\n".join(lines)


def column(key: str, label: str, fmt: str | None = None) -> dict:
    """One column of a docs table (scripts/docs.py renders numbers with FMT)."""
    return {"key": key, "label": label, **({"format": fmt} if fmt else {})}


def docs_row(result: dict, run: dict, columns: list[dict]) -> dict:
    """RUN's cells of COLUMNS: its scores, the change of a seed-0 row to the recipe's seed-0 row, and
    each class's IoU; None where it has no such figure (as `with TTA` for a run not scored with TTA)."""
    difference = result["summary"][f"{run['dataset']}/{run['row']}"].get("iou_minus_recipe_seed0")
    values = {"row": run["row"], "seed": run["seed"], "levers": " ".join(run["levers"]) or "-",
              "iou": run["iou"], "minus_recipe": difference if run["seed"] == 0 else None, "dice": run["dice"],
              "tta_iou": run.get("tta_iou"), **run["per_class_iou"], "epochs": run["epochs"],
              "wall_time_s": run["wall_time_s"]}
    return {c["key"]: values.get(c["key"]) for c in columns}


def docs_tables(result: dict) -> list[dict]:
    """The tables of docs/benchmarks/levers.md, in benchkit.publish's shape. Per dataset:
    DATASET-BUDGET, the lever rows; DATASET-best-BUDGET, row best's seeds and, for two or more,
    their mean and sample sd."""
    tables = []
    for dataset in dict.fromkeys(run["dataset"] for run in result["runs"]):
        shown, budget = SHOWN[dataset], result["budget"]
        mine = [run for run in result["runs"] if run["dataset"] == dataset]
        dice = [column("dice", "Dice", "{:.4f}")] if shown["dice"] else []
        scores = [column("iou", shown["iou"], "{:.4f}"), *dice, column("tta_iou", "with TTA", "{:.4f}")]
        end = [column("epochs", "epochs"), column("wall_time_s", "wall time", "{:.0f} s")]

        levers = [run for run in mine if run["row"] != "best"]
        if levers:
            columns = [column("row", "row"), column("seed", "seed"), scores[0],
                       column("minus_recipe", "− recipe", "{:+.4f}"), *scores[1:],
                       *(column(c, c, "{:.3f}") for c in shown["classes"]), *end]
            tables.append({"name": f"{dataset}-{budget}", "columns": columns,
                           "rows": [docs_row(result, run, columns) for run in levers]})

        best = [run for run in mine if run["row"] == "best"]
        if best:
            classes = [column(c, c, "{:.3f}") for c in shown["best_classes"]]
            columns = [column("seed", "seed"), column("levers", "levers"), *scores, *classes, *end]
            rows = [docs_row(result, run, columns) for run in best]
            if len(rows) > 1:
                keys = [c["key"] for c in scores + classes if all(row[c["key"]] is not None for row in rows)]
                spread = {key: mean_std([row[key] for row in rows]) for key in keys}
                rows += [{c["key"]: None for c in columns} | {"seed": label}
                         | {key: spread[key][part] for key in keys}
                         for label, part in (("mean", "mean"), ("sd", "std"))]
            tables.append({"name": f"{dataset}-best-{budget}", "columns": columns, "rows": rows})
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, HAND, "bench-levers")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every row but best")
    parser.add_argument("--final-seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of row best")
    parser.add_argument("--budget", default="1h", help="time budget of every run (segan train --time-budget)")
    parser.add_argument("--best-levers", nargs="*", choices=list(LEVERS), default=None,
                        help="the levers of row best (default: those whose seed-0 rows in OUT beat recipe)")
    add_tta_argument(parser)
    add_publish_argument(parser)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    if args.markdown and args.publish:
        parser.error("--publish stamps today's machine and date: give it with the runs, not with --markdown")
    if args.markdown:
        print(markdown(json.loads((out / "results.json").read_text())))
        return
    require_datasets(data, args.datasets)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(dataset, row, seed) for dataset in args.datasets for row in args.rows if row in DATASET_ROWS[dataset]
            for seed in (args.final_seeds if row == "best" else args.seeds)]
    runs: list[dict] = []
    result = {"benchmark": "levers", "budget": args.budget, "runs": runs}
    for job in jobs:
        runs.append(run_one(*job, args.budget, data, out, args.best_levers, args.tta_scales))
        result = {"benchmark": "levers", "budget": args.budget, "machine": platform.machine(),
                  "summary": summarise(runs), "runs": runs}
        (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.publish:
        publish("levers", docs_tables(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
