#!/usr/bin/env python
"""Accuracy with and without the adversarial term, on the three real datasets, over seeds.

    python scripts/bench_accuracy.py [--datasets isbi2012 kvasir-seg camvid] [--seeds 0 1 2]
                                     [--one-seed camvid] [--configs gan plain] [--protocol cpu|gpu] [--out DIR]

Each run is `segan train` with the dataset's recipe (datasets/NAME/config.yaml) and the
protocol's size, epochs and batch; `gan` is the default configuration, `plain` the same with
`--adv-weight 0`. Splits are fixed: ISBI 2012 holds back the same 6 of its 30 labelled images for
every seed (`split_seed` 0); Kvasir-SEG trains on train/ and scores validation/; CamVid trains on
train/ and scores val/ (mIoU over its 11 classes, void ignored). Scores are the best checkpoint's
validation figures as `summary.json` reports them (foreground class for binary tasks, the mean
over classes for CamVid). Each run's best checkpoint is then scored again at native resolution by
`segan evaluate --model RUN` with the structure metrics (ISBI 2012 also with the regions family:
adapted Rand error and variation of information of the cells the membranes delimit), and every
configuration is paired with `plain` per image: the difference averaged over the seeds both ran,
then its mean over images with a 95% bootstrap interval (`segan.report.bootstrap_interval`).

Runs are written to OUT/NAME/CONFIG-seedS; a run whose summary.json exists is not run again, so
an interrupted benchmark continues where it stopped. Prints one JSON line with mean and standard
deviation per dataset and configuration, and writes it to OUT/results.json. `--publish` also writes
the tables into docs/benchmarks/results/accuracy.json: table PROTOCOL for `gan` and `plain`,
PROTOCOL-configs when other configurations run, and PROTOCOL-structure (or PROTOCOL-configs-structure)
with the paired differences at native resolution.

CPU protocol: each run takes about 10 minutes on 2 cores. GPU protocol: full resolution.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np

import benchkit
from benchkit import ROOT, add_common_arguments, mean_std, require_datasets, segan
from segan.metrics import structure
from segan.report import bootstrap_interval, verdict

# dataset -> protocol -> train flags
PROTOCOLS = {
    "isbi2012": {"cpu": ["--size", "256", "--epochs", "30", "--batch-size", "8", "--augment", "medium"],
                 "gpu": ["--size", "512", "--epochs", "100", "--batch-size", "8", "--augment", "medium"]},
    "kvasir-seg": {"cpu": ["--size", "128", "--epochs", "8", "--batch-size", "8", "--augment", "medium"],
                   "gpu": ["--size", "352", "--epochs", "60", "--batch-size", "16", "--augment", "medium"]},
    "camvid": {"cpu": ["--size", "192", "--epochs", "7", "--batch-size", "8", "--augment", "medium"],
               "gpu": ["--size", "384", "--epochs", "80", "--batch-size", "16", "--augment", "medium"]},
}
# `gan` is the default configuration; the others each change one thing against it.
CONFIGS = {"gan": [], "plain": ["--adv-weight", "0"],
           "gan-d64": ["--d-channels", "64"],  # the textbook pix2pix discriminator width
           "gan-w0.1": ["--adv-weight", "0.1"],  # V-GAN's weight, 10x the default
           # the precision default (auto) against each of its choices, pinned
           "gan-fp32": ["--precision", "32-true"], "gan-bf16": ["--precision", "bf16-mixed"]}


def run_one(dataset: str, config: str, seed: int, protocol: str, data: Path, out: Path) -> dict:
    run = out / dataset / f"{config}-seed{seed}"
    summary = run / "summary.json"
    if not summary.is_file():
        segan("train", "--config", str(ROOT / "datasets" / dataset / "config.yaml"), "--data", str(data / dataset),
              "--out", str(run), "--seed", str(seed), *PROTOCOLS[dataset][protocol], *CONFIGS[config],
              *(["--accelerator", "cpu"] if protocol == "cpu" else []), label=f"{dataset} {config} seed {seed}")
    result = json.loads(summary.read_text())
    return {"dataset": dataset, "config": config, "seed": seed, "dice": result["best_val_dice"],
            "iou": result["best_val_iou"], "wall_time_s": result["wall_time_s"], "best_epoch": result["best_epoch"],
            "d_steps_skipped": result.get("d_steps_skipped", 0)}


# Structure families scored at native resolution, per dataset: membranes delimit cells, so ISBI 2012
# gets the challenge's own region scores too.
FAMILIES = {"isbi2012": ["distance", "boundary", "topology", "regions"]}


def score_native(dataset: str, run: Path, protocol: str) -> dict[str, dict[str, float | None]]:
    """image -> figure -> value, from `segan evaluate --model RUN` at native resolution (done once:
    RUN/native holds it): Dice and IoU of the image (evaluate's headline per image) and each
    structure figure (`structure.headline`: the foreground's, or the mean over classes)."""
    scored = run / "native"
    benchkit.evaluate(run, "native", "val", "--metrics", *FAMILIES.get(dataset, list(structure.DEFAULT_FAMILIES)),
                      *(["--device", "cpu"] if protocol == "cpu" else []))
    classes = list(json.loads((scored / "metrics.json").read_text())["per_class"])
    images = {}
    with (scored / "per_image.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            figures = {cls: {f: float(row[f"{f}_{cls}"]) if row.get(f"{f}_{cls}") else None for f in structure.LABELS}
                       for cls in classes}  # the background has no structure columns: all None
            images[row["name"]] = {"dice": float(row["dice"]) if row["dice"] else None,
                                   "iou": float(row["iou"]) if row["iou"] else None,
                                   **{f: structure.headline(figures, f) for f in structure.LABELS}}
    return images


def paired_rows(dataset: str, config: str, scores: dict[int, dict[str, dict]],
                plain: dict[int, dict[str, dict]]) -> list[dict]:
    """Per figure: CONFIG minus plain per image, averaged over the seeds where both define it, then
    the mean over images with its 95% bootstrap interval; and each seed's mean difference, since a
    split of few images (ISBI 2012 holds back 6) makes the interval over images narrow. With a dozen
    figures one is "better" or "worse" by chance about half the time, so each row also has the
    verdict of the interval adjusted for the number of figures (Bonferroni: 1 - 0.05/figures)."""
    rows, differences_of = [], {}
    for figure in ["dice", "iou", *structure.LABELS]:
        per_image: dict[str, list[float]] = {}
        per_seed: dict[int, list[float]] = {}
        values: dict[str, list[float]] = {"config": [], "plain": []}
        for seed, images in scores.items():
            for name, image in images.items():
                a, b = plain[seed][name].get(figure), image.get(figure)
                if a is not None and b is not None:
                    per_image.setdefault(name, []).append(b - a)
                    per_seed.setdefault(seed, []).append(b - a)
                    values["config"].append(b)
                    values["plain"].append(a)
        if not per_image:
            continue  # a figure this dataset does not have
        differences = differences_of[figure] = np.array([np.mean(d) for d in per_image.values()])
        interval = bootstrap_interval(differences)
        lower = figure in structure.LOWER_IS_BETTER
        rows.append({"dataset": dataset, "config": config,
                     "figure": structure.LABELS.get(figure, {"dice": "Dice", "iou": "IoU"}.get(figure)),
                     "images": len(differences), "plain": float(np.mean(values["plain"])),
                     "mean": float(np.mean(values["config"])), "difference": float(differences.mean()),
                     "interval": f"{interval[0]:+.4f} to {interval[1]:+.4f}", "verdict": verdict(interval, lower),
                     "per_seed": " / ".join(f"{np.mean(d):+.4f}" for d in per_seed.values())})
    level = 1 - 0.05 / len(rows) if rows else 0.95
    for row, (figure, differences) in zip(rows, differences_of.items()):
        row["adjusted_verdict"] = verdict(bootstrap_interval(differences, level=level),
                                          figure in structure.LOWER_IS_BETTER)
    return rows


STRUCTURE_COLUMNS = [{"key": "dataset", "label": "dataset"}, {"key": "config", "label": "config"},
                     {"key": "figure", "label": "figure (per image)"}, {"key": "images", "label": "images"},
                     {"key": "plain", "label": "plain", "format": "{:.4f}"},
                     {"key": "mean", "label": "config", "format": "{:.4f}"},
                     {"key": "difference", "label": "config − plain", "format": "{:+.4f}"},
                     {"key": "interval", "label": "95% interval"},
                     {"key": "verdict", "label": "verdict"},
                     {"key": "adjusted_verdict", "label": "verdict, adjusted for the figures tested"},
                     {"key": "per_seed", "label": "difference per seed"}]


# The columns of the result file's tables (docs/benchmarks/results/accuracy.json).
COLUMNS = [{"key": "dataset", "label": "dataset"}, {"key": "config", "label": "config"},
           {"key": "dice", "label": "Dice (mean)", "format": "{:.4f}"},
           {"key": "dice_sd", "label": "± sd", "format": "{:.4f}"},
           {"key": "iou", "label": "IoU (CamVid: mIoU)", "format": "{:.4f}"},
           {"key": "iou_sd", "label": "± sd", "format": "{:.4f}"},
           {"key": "minus_plain_dice", "label": "− plain, per seed: Dice", "format": "{:+.4f}"},
           {"key": "minus_plain_dice_sd", "label": "± sd", "format": "{:.4f}"},
           {"key": "minus_plain_iou", "label": "− plain, per seed: IoU", "format": "{:+.4f}"},
           {"key": "minus_plain_iou_sd", "label": "± sd", "format": "{:.4f}"},
           {"key": "best_epochs", "label": "best epoch per seed"},
           {"key": "wall_time_s", "label": "fit wall time per run", "format": "{:.0f} s"},
           {"key": "wall_time_sd", "label": "± sd", "format": "{:.0f} s"},
           {"key": "wall_time_vs_plain", "label": "fit time / plain", "format": "{:.2f}x"}]


def table(result: dict) -> dict:
    """The result file's table of RESULT: a row per dataset and configuration, with the means and
    standard deviations over seeds, the paired difference to plain and the fit time over plain's."""
    summary, configs = result["summary"], list(dict.fromkeys(r["config"] for r in result["runs"]))
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in result["runs"]):
        for config in configs:
            entry, minus = summary[f"{dataset}/{config}"], summary.get(f"{dataset}/{config}-minus-plain", {})
            plain = summary.get(f"{dataset}/plain")
            rows.append({
                "dataset": dataset, "config": config, "dice": entry["dice"]["mean"], "dice_sd": entry["dice"]["std"],
                "iou": entry["iou"]["mean"], "iou_sd": entry["iou"]["std"],
                "minus_plain_dice": minus["dice"]["mean"] if minus else None,
                "minus_plain_dice_sd": minus["dice"]["std"] if minus else None,
                "minus_plain_iou": minus["iou"]["mean"] if minus else None,
                "minus_plain_iou_sd": minus["iou"]["std"] if minus else None,
                "best_epochs": " / ".join(str(r["best_epoch"]) for r in result["runs"]
                                          if r["dataset"] == dataset and r["config"] == config),
                "wall_time_s": entry["wall_time_s"]["mean"], "wall_time_sd": entry["wall_time_s"]["std"],
                "wall_time_vs_plain": round(entry["wall_time_s"]["mean"] / plain["wall_time_s"]["mean"], 2)
                if plain and minus else None})
    name = result["protocol"] + ("" if set(configs) <= {"gan", "plain"} else "-configs")
    return {"name": name, "columns": COLUMNS, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, PROTOCOLS, "bench-accuracy", markdown=False)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--one-seed", nargs="+", default=[], metavar="DATASET",
                        help="datasets that run the first seed only (CamVid's runs are the longest)")
    parser.add_argument("--configs", nargs="+", default=["gan", "plain"], choices=list(CONFIGS))
    parser.add_argument("--protocol", default="cpu", choices=("cpu", "gpu"))
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out) / args.protocol
    require_datasets(data, args.datasets)
    seeds = {dataset: args.seeds[:1] if dataset in args.one_seed else args.seeds for dataset in args.datasets}
    runs = [run_one(dataset, config, seed, args.protocol, data, out)
            for dataset in args.datasets for seed in seeds[dataset] for config in args.configs]
    native = {(dataset, config): {seed: score_native(dataset, out / dataset / f"{config}-seed{seed}", args.protocol)
                                  for seed in seeds[dataset]}
              for dataset in args.datasets for config in args.configs if "plain" in args.configs}  # pairs with plain
    structure_rows = [row for dataset in args.datasets for config in args.configs if config != "plain"
                      and "plain" in args.configs
                      for row in paired_rows(dataset, config, native[dataset, config], native[dataset, "plain"])]
    summary = {}
    for dataset in args.datasets:
        for config in args.configs:
            chosen = [r for r in runs if r["dataset"] == dataset and r["config"] == config]
            summary[f"{dataset}/{config}"] = {key: mean_std([r[key] for r in chosen])
                                               for key in ("dice", "iou", "wall_time_s")}
            if config != "plain" and "plain" in args.configs:
                # Same seed, same data order and warm-up: the per-seed difference is the sharper test.
                plain = {r["seed"]: r for r in runs if r["dataset"] == dataset and r["config"] == "plain"}
                summary[f"{dataset}/{config}-minus-plain"] = {
                    key: mean_std([r[key] - plain[r["seed"]][key] for r in chosen]) for key in ("dice", "iou")}
    result = {"benchmark": "accuracy", "protocol": args.protocol, "machine": platform.machine(),
              "seeds": seeds, "summary": summary, "runs": runs, "native_paired": structure_rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    if args.publish:
        main_table = table(result)
        paired = [{"name": f"{main_table['name']}-structure", "columns": STRUCTURE_COLUMNS, "rows": structure_rows}]
        benchkit.publish("accuracy", [main_table, *(paired if structure_rows else [])])


if __name__ == "__main__":
    main()
