#!/usr/bin/env python
"""What unlabelled images add: labelled-only against each semi-supervised mode and the ceiling.

    python scripts/bench_semi.py [--datasets kvasir-seg isbi2012] [--splits 0 1 2]
                                 [--rows labeled-only self-training adversarial adversarial+self-training all-labels]
                                 [--protocol cpu|gpu] [--jobs N] [--out DIR] [--markdown]

Kvasir-SEG: 1/8 of the 800 training masks (100 images) kept, the other 700 images unlabelled,
scored on the 100 validation images. ISBI 2012: 3 of the 24 training images kept (the 6 others
are the held-back validation split), the other 21 plus the 30 unlabelled test/ images as
unlabelled. A split is `--split-seed S`: it chooses the labelled images (and, for ISBI, the
held-back six), the same for every row. Every row trains the same model (U-Net,
EfficientNet-Lite0 with its offline ImageNet weights) for the same number of optimizer steps
(the epochs run over the labelled set, so all-labels runs the same steps over more images).

Rows: labeled-only (`--semi none`), the three `--semi` modes, self-training+teacher (pseudo-labels
from a mean teacher, `semi.teacher_decay` 0.99), self-training-weight-0.15 (self-training with the
unlabelled loss weighted as little as the discriminator's gate leaves it), and all-labels (the
ceiling).
Per split: each row's paired difference to labeled-only, and the share of the gap to the ceiling
that it closes. Runs go to OUT/PROTOCOL/DATASET/ROW-splitS and are not run again once their
summary.json exists, so an interrupted benchmark continues where it stopped; runs are ordered
split by split, so a partial benchmark has whole splits. `--jobs N` trains N runs at once (a GPU
has room for several of these small models; on the 2-core CPU keep 1). Prints one JSON line;
writes OUT/PROTOCOL/results.json. `--markdown` trains nothing and prints the tables of
BENCHMARKS.md from that file. `--publish` also writes them into docs/benchmarks/results/semi.json,
as tables PROTOCOL-DATASET, stamped with this command, machine, date and commit.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchkit
import yaml
from benchkit import LITE0, ROOT, add_common_arguments, mean_std, require_datasets, segan

# dataset -> protocol -> flags; epochs count passes over the labelled images.
PROTOCOLS = {
    "kvasir-seg": {
        "labels": ["--labeled-fraction", "0.125"],
        # 576 steps: at 192 (16 epochs) the all-labels run had seen each image twice and was no ceiling
        "cpu": ["--size", "128", "--epochs", "48", "--batch-size", "8", "--augment", "medium"],
        "gpu": ["--size", "320", "--epochs", "60", "--batch-size", "8", "--augment", "medium"]},
    "isbi2012": {
        "labels": ["--labeled-fraction", "0.125", "--unlabeled", "test"],  # 3 of 24
        "cpu": ["--size", "256", "--epochs", "240", "--batch-size", "3", "--augment", "medium"],
        "gpu": ["--size", "512", "--epochs", "400", "--batch-size", "3", "--augment", "medium"]},
}
ROWS = {"labeled-only": ["--semi", "none"], "self-training": ["--semi", "self-training"],
        "adversarial": ["--semi", "adversarial"],
        "adversarial+self-training": ["--semi", "adversarial+self-training"],
        "self-training+teacher": ["--semi", "self-training"],
        "self-training-weight-0.15": ["--semi", "self-training"], "all-labels": []}
# Rows that differ by a setting without a flag: written into that row's copy of the recipe.
# self-training-weight-0.15: self-training whose unlabelled loss weighs about what D-gated
# self-training's does when the discriminator passes 14 % of the pixels; it tells whether the
# discriminator's choice of pixels matters or only the smaller weight.
ROW_SETTINGS = {"self-training+teacher": {"semi": {"teacher_decay": 0.99}},
                "self-training-weight-0.15": {"semi": {"unlabeled_weight": 0.15}}}


def run_one(dataset: str, row: str, split: int, protocol: str, data: Path, out: Path) -> dict:
    run = out / dataset / f"{row}-split{split}"
    summary = run / "summary.json"
    if not summary.is_file():
        spec = PROTOCOLS[dataset]
        command = ["train", "--config", str(recipe(dataset, row, out)),
                   "--data", str(data / dataset), "--out", str(run), "--split-seed", str(split), "--seed", "0",
                   *LITE0, *spec[protocol], *ROWS[row], "--overwrite"]
        if row != "all-labels":
            labels = list(spec["labels"])
            if row == "labeled-only" and "--unlabeled" in labels:  # not read when nothing learns from it
                labels = labels[:labels.index("--unlabeled")]
            command += labels
        else:  # the ceiling trains as many steps over all the labels as the others over theirs
            command += ["--epochs", str(max(1, round(int(spec[protocol][spec[protocol].index("--epochs") + 1])
                                                    * float(spec["labels"][1]))))]
        command += (["--accelerator", "cpu", "--num-workers", "1"] if protocol == "cpu"
                    else ["--accelerator", "gpu", "--precision", "bf16-mixed", "--num-workers", "3"])
        segan(*command, label=f"{dataset} {row} split {split}")
    result = json.loads(summary.read_text())
    return {"dataset": dataset, "row": row, "split": split, "dice": result["best_val_dice"],
            "iou": result["best_val_iou"], "steps": result["steps"], "wall_time_s": result["wall_time_s"],
            "precision": result.get("precision"),
            "semi": result.get("semi")}


def recipe(dataset: str, row: str, out: Path) -> Path:
    """The dataset's recipe with the row's settings, without the per-epoch progress.png (an ISBI
    epoch is one step here)."""
    config = yaml.safe_load((ROOT / "datasets" / dataset / "config.yaml").read_text())
    config.setdefault("train", {})["progress_png"] = False
    for section, values in ROW_SETTINGS.get(row, {}).items():
        config.setdefault(section, {}).update(values)
    path = out / dataset / f"config-{row}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


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


def tables(result: dict) -> list[dict]:
    """The result file's tables of one protocol's results.json (docs/benchmarks/results/semi.json):
    one per dataset, named PROTOCOL-DATASET, a row per row of the benchmark."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in result["runs"]):
        mine = [r for r in result["runs"] if r["dataset"] == dataset]
        splits = sorted({r["split"] for r in mine})
        columns = [{"key": "row", "label": "row"},
                   *({"key": f"split{s}", "label": f"split {s} Dice", "format": "{:.4f}"} for s in splits),
                   {"key": "mean", "label": "mean Dice", "format": "{:.4f}"},
                   {"key": "minus_labeled_only", "label": "Dice − labelled-only, per split"},
                   {"key": "gap_closed", "label": "gap to all-labels closed, per split"},
                   {"key": "pseudo_share", "label": "pseudo-labels used (last epoch, mean)", "format": "{:.2f}"},
                   {"key": "pseudo_precision", "label": "their precision", "format": "{:.3f}"},
                   {"key": "wall_time_s", "label": "wall time per run", "format": "{:.0f} s"}]
        rows = []
        for row in dict.fromkeys(r["row"] for r in mine):
            chosen = {r["split"]: r for r in mine if r["row"] == row}
            entry = result["summary"][f"{dataset}/{row}"]
            semi = [r["semi"] for r in chosen.values() if r["semi"] and "pseudo_precision" in r["semi"]]
            rows.append({
                "row": row, **{f"split{s}": chosen[s]["dice"] if s in chosen else None for s in splits},
                "mean": entry["dice"]["mean"],
                "minus_labeled_only": ", ".join(f"{d:+.4f}" for d in entry.get("dice_minus_labeled_only", [])) or None,
                "gap_closed": ", ".join(f"{g:.2f}" for g in entry.get("gap_closed", [])) or None,
                "pseudo_share": round(statistics.fmean(s["pseudo_share"] for s in semi), 2) if semi else None,
                "pseudo_precision": round(statistics.fmean(s["pseudo_precision"] for s in semi), 3) if semi else None,
                "wall_time_s": entry["wall_time_s"]["mean"]})
        out.append({"name": f"{result['protocol']}-{dataset}", "columns": columns, "rows": rows})
    return out


def markdown(result: dict) -> str:
    """The BENCHMARKS.md tables of one protocol's results.json: one table per dataset."""
    lines = []
    for table in tables(result):
        splits = [column["key"] for column in table["columns"] if column["key"].startswith("split")]
        lines += [f"### {table['name'].removeprefix(result['protocol'] + '-')}",
                  "| row | " + " | ".join(f"split {s.removeprefix('split')} Dice" for s in splits)
                  + " | mean Dice | Dice − labelled-only, per split | gap to all-labels closed, per split"
                  " | pseudo-labels used / precision (last epoch, mean) | wall time per run |",
                  "|---" * (len(splits) + 6) + "|"]
        for row in table["rows"]:
            pseudo = (f"{row['pseudo_share']:.2f} / {row['pseudo_precision']:.3f}"
                      if row["pseudo_share"] is not None else "")
            lines.append(" | ".join([
                f"| {row['row']}", *(f"{row[s]:.4f}" if row[s] is not None else "" for s in splits),
                f"{row['mean']:.4f}", row["minus_labeled_only"] or "", row["gap_closed"] or "", pseudo,
                f"{row['wall_time_s']:.0f} s |"]))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, PROTOCOLS, "bench-semi")
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--protocol", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out) / args.protocol
    if args.markdown:
        print(markdown(json.loads((out / "results.json").read_text())))
        return
    require_datasets(data, args.datasets)
    out.mkdir(parents=True, exist_ok=True)
    # whole splits first: a partial benchmark still pairs its rows
    order = [(dataset, row, split) for split in args.splits for dataset in args.datasets for row in args.rows]
    runs = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for run in pool.map(lambda job: run_one(*job, args.protocol, data, out), order):
            runs.append(run)
            result = {"benchmark": "semi", "protocol": args.protocol, "machine": platform.machine(),
                      "splits": args.splits, "summary": summarise(runs), "runs": runs}
            (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    if args.publish:
        benchkit.publish("semi", tables(result))


if __name__ == "__main__":
    main()
