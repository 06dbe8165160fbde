#!/usr/bin/env python
"""What drawn pairs add to a small label set, at equal total wall time (issue 54).

    python scripts/bench_synth.py [--setups kvasir-seg-25 kvasir-seg-100 isbi2012-3] [--splits 0 1 2]
                                  [--rows labeled-only synthetic synthetic-undeformed semi semi+synthetic all-labels]
                                  [--budget 8m] [--generator-budget 2m30s] [--count 400] [--out DIR] [--publish]

Setups: Kvasir-SEG with 25 and with 100 labelled training images, ISBI 2012 with 3. Each split
(`--split-seed S`) chooses the labelled images, the same for every row. Rows, each trained for
the same total wall time `--budget`:
- labeled-only: the segmenter on the labelled pairs (`segan plan`'s choice: no adversarial term);
- synthetic: a drawing network (`segan synth train`, `--generator-budget`, one per setup and split)
  trained on the same labelled pairs, `--count` pairs drawn from deformed masks (`segan synth
  sample`), mixed into half of each batch (`--synthetic`); the generator's training and the
  sampling are charged to the row: its segmenter trains for what is left of the budget;
- synthetic-undeformed: the same, its pairs drawn from the training masks unchanged (the ablation:
  near copies of the training pairs, expected to add nothing);
- semi: the other training images as unlabelled images (`--semi adversarial+self-training`, the
  mode bench_semi found best on Kvasir-SEG);
- semi+synthetic: both;
- all-labels: every training image labelled, the ceiling (one run, shared by the splits and by the
  setups of one dataset).

Every row chooses its checkpoint on the validation split and is scored, at native resolution by
`segan evaluate --model`, on the validation split and on a report split: training images carved
out once (100 of Kvasir-SEG's 800, 6 of ISBI's 30, the same for every setup, split and row) that
no row trains on or chooses a checkpoint with. ISBI's validation split is 6 more of its 30; its
rows are also scored by adapted Rand error and clDice (`--metrics topology regions`), the figures
of a membrane's gaps that Dice hardly counts.

The folds are written as list files in OUT/lists/DATASET (absolute paths; `--pairs-file
'{split}.txt'`). Runs go to OUT/SETUP/ROW-splitS (all-labels: OUT/DATASET/all-labels) and are not
run again once scored, so an interrupted benchmark continues where it stopped; whole splits come
first. Prints one JSON line, writes OUT/results.json; `--publish` writes the tables into
docs/benchmarks/results/synth.json (per setup, a table of its rows and one of its drawing
networks: their losses and memorisation figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import benchkit
from benchkit import LITE0, ROOT, mean_std, require_datasets, segan

sys.path.insert(0, str(ROOT))

from segan.config import parse_duration  # noqa: E402
from segan.metrics.structure import LABELS  # noqa: E402

REPORT_SEED = 1000  # the report split: one draw, the same for every setup, split and row
# A tiny labelled set makes epochs of a few steps, and validating after each would take most of
# the budget (25 images, batch 8: 3 steps of about 0.5 s, then 100 validation images): an epoch
# cycles through the set for --min-epoch-steps, so that validation is about a tenth of the time.
SETUPS = {
    "kvasir-seg-25": {"dataset": "kvasir-seg", "labels": 25, "report": 100,
                      "flags": ["--size", "128", "--batch-size", "8", "--augment", "medium", "--min-epoch-steps", "40"]},
    "kvasir-seg-100": {"dataset": "kvasir-seg", "labels": 100, "report": 100,
                       "flags": ["--size", "128", "--batch-size", "8", "--augment", "medium", "--min-epoch-steps", "40"]},
    "isbi2012-3": {"dataset": "isbi2012", "labels": 3, "report": 6, "validation": 6,
                   "flags": ["--size", "256", "--batch-size", "4", "--augment", "medium", "--min-epoch-steps", "20"],
                   # membranes: Dice is blind to a gap that merges two cells, the region and topology scores are not
                   "structure": ("rand_error", "cldice")},
}
STRUCTURE_FLAGS = ("--metrics", "topology", "regions")  # the families holding those figures
GENERATOR_VALIDATE_EVERY = "10"  # the drawing network's epochs are as short (segan synth has no min_epoch_steps)
ROWS = ("labeled-only", "synthetic", "synthetic-undeformed", "semi", "semi+synthetic", "all-labels")


def write_lists(dataset: str, data: Path, out: Path, report: int, validation: int | None) -> Path:
    """OUT/lists/DATASET/{train,validation,report}.txt: the folds, as 'image mask' lines."""
    folder = out / "lists" / dataset
    if (folder / "report.txt").is_file():
        return folder
    if dataset == "kvasir-seg":
        train = pairs(data / dataset / "train" / "images", data / dataset / "train" / "masks")
        held = pairs(data / dataset / "validation" / "images", data / dataset / "validation" / "masks")
    else:
        train, held = pairs(data / dataset / "train" / "image", data / dataset / "train" / "label"), []
    order = np.random.default_rng(REPORT_SEED).permutation(len(train))
    folds = {"report": [train[i] for i in order[:report]]}
    if validation:  # carved out of train too
        folds["validation"] = [train[i] for i in order[report:report + validation]]
        folds["train"] = [train[i] for i in order[report + validation:]]
    else:
        folds["validation"], folds["train"] = held, [train[i] for i in order[report:]]
    folder.mkdir(parents=True, exist_ok=True)
    for name, chosen in folds.items():
        (folder / f"{name}.txt").write_text("".join(f"{image} {mask}\n" for image, mask in sorted(chosen)))
    return folder


def pairs(images: Path, masks: Path) -> list[tuple[str, str]]:
    return [(str(image), str(masks / image.name)) for image in sorted(images.iterdir()) if (masks / image.name).is_file()]


def data_flags(setup: str, lists: Path, split: int, all_labels: bool = False) -> list[str]:
    spec = SETUPS[setup]
    train_count = len((lists / "train.txt").read_text().splitlines())
    fraction = 1.0 if all_labels else spec["labels"] / train_count
    return ["--config", str(ROOT / "datasets" / spec["dataset"] / "config.yaml"), "--data", str(lists),
            "--pairs-file", "{split}.txt", "--train-split", "train", "--val-split", "validation",
            "--labeled-fraction", f"{fraction:.6f}", "--split-seed", str(split), "--seed", "0"]


def generator(setup: str, lists: Path, split: int, args: argparse.Namespace, out: Path) -> dict:
    """The split's drawing network and its two samples (deformed, undeformed), each timed once."""
    folder = out / setup / f"synth-split{split}"
    record = folder / "bench.json"
    if record.is_file():
        return json.loads(record.read_text())
    size = SETUPS[setup]["flags"][1]
    train_s = segan("synth", "train", *data_flags(setup, lists, split), "--size", size, "--time-budget",
                    args.generator_budget, "--validate-every", GENERATOR_VALIDATE_EVERY, "--out", str(folder / "run"),
                    "--overwrite", "--num-workers", "1",
                    label=f"{setup} split {split}: drawing network")
    from segan.synthesis.sampling import sample
    figures = {"train_s": round(train_s, 1), **json.loads((folder / "run" / "summary.json").read_text())}
    for name, deform in (("deformed", True), ("undeformed", False)):
        started = time.perf_counter()
        result = sample(folder / "run", folder / name, args.count, seed=split, deform=deform)
        figures[name] = {"sample_s": round(time.perf_counter() - started, 1), **result.memorisation}
    record.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def run_row(setup: str, row: str, split: int, lists: Path, args: argparse.Namespace, out: Path) -> dict:
    # all-labels, the ceiling, trains on every training image: one run serves every split, and every
    # setup of its dataset (Kvasir-SEG's two setups differ only in how many labels the others keep).
    run = out / SETUPS[setup]["dataset"] / "all-labels" if row == "all-labels" else out / setup / f"{row}-split{split}"
    budget_s = parse_duration(args.budget)
    charged, flags = 0.0, []
    if "synthetic" in row:
        made = generator(setup, lists, split, args, out)
        kind = "undeformed" if row == "synthetic-undeformed" else "deformed"
        charged = made["train_s"] + made[kind]["sample_s"]
        flags += ["--synthetic", str(out / setup / f"synth-split{split}" / kind), "--synthetic-ratio", "0.5"]
    if row.startswith("semi"):
        flags += ["--semi", "adversarial+self-training", "--adv-weight", "0.01"]
    else:
        flags += ["--semi", "none", "--adv-weight", "0"]
    if not (run / "summary.json").is_file():
        segan("train", *data_flags(setup, lists, split, all_labels=row == "all-labels"), *LITE0,
              *SETUPS[setup]["flags"], *flags,
              "--time-budget", f"{max(60.0, budget_s - charged):.0f}", "--out", str(run), "--overwrite",
              "--num-workers", "1", label=f"{setup} {row} split {split}")
    structure = SETUPS[setup].get("structure", ())
    scores = {}
    for split_name, folder in (("val", "eval-val"), ("report", "eval-report")):
        benchkit.evaluate(run, folder, split_name, *(STRUCTURE_FLAGS if structure else ()))
        scores[split_name] = json.loads((run / folder / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    report = scores["report"]
    # binary tasks: the one foreground class; each figure is the mean over the report split's images
    per_class = next(iter(report["structure"]["per_class"].values())) if structure else {}
    return {"setup": setup, "row": row, "split": split, "charged_s": round(charged, 1),
            "steps": summary["steps"], "val_dice": scores["val"]["headline"]["dice"],
            "report_dice": report["headline"]["dice"], "report_dice_per_image": report["headline"]["dice_per_image"],
            **{f"report_{key}": per_class[key]["mean"] for key in structure}}


def gap_share(score: float, base: float, ceiling: float) -> str:
    """The share of the gap from labelled-only to all-labels a row closed; "no gap" where all-labels
    did not score above labelled-only (a short budget: all-labels passes over its images fewer times)."""
    return f"{(score - base) / (ceiling - base):.2f}" if ceiling > base else "no gap"


def tables(runs: list[dict], generators: list[dict]) -> list[dict]:
    """Two tables per setup: one with a row per benchmark row (Dice per split on both splits, the
    paired difference to labelled-only on the report split and the share of the gap to all-labels
    it closes), and one of its drawing networks (SETUP-generators), so that publishing one setup
    keeps the others' tables."""
    out = []
    for setup in dict.fromkeys(r["setup"] for r in runs):
        mine = [r for r in runs if r["setup"] == setup]
        base = {r["split"]: r for r in mine if r["row"] == "labeled-only"}
        ceiling = next((r["report_dice"] for r in mine if r["row"] == "all-labels"), None)
        splits = sorted({r["split"] for r in mine})
        structure = [f"report_{key}" for key in SETUPS[setup].get("structure", ())]
        rows = []
        for row in dict.fromkeys(r["row"] for r in mine):
            chosen = {r["split"]: r for r in mine if r["row"] == row}
            rows.append({
                "row": row, "steps": mean_std([r["steps"] for r in chosen.values()])["mean"],
                "charged_s": mean_std([r["charged_s"] for r in chosen.values()])["mean"],
                "val_dice": mean_std([r["val_dice"] for r in chosen.values()])["mean"],
                **{f"report_split{s}": chosen[s]["report_dice"] if s in chosen else None for s in splits},
                "report_dice": mean_std([r["report_dice"] for r in chosen.values()])["mean"],
                **{key: mean_std([r[key] for r in chosen.values()])["mean"] for key in structure},
                "minus_labeled_only": None if row == "labeled-only" else ", ".join(
                    f"{chosen[s]['report_dice'] - base[s]['report_dice']:+.4f}" for s in splits
                    if s in chosen and s in base),
                "gap_closed": None if row in ("labeled-only", "all-labels") or ceiling is None else ", ".join(
                    gap_share(chosen[s]["report_dice"], base[s]["report_dice"], ceiling)
                    for s in splits if s in chosen and s in base)})
        columns = [{"key": "row", "label": "row"}, {"key": "steps", "label": "segmenter steps (mean)", "format": "{:.0f}"},
                   {"key": "charged_s", "label": "drawing charged (mean)", "format": "{:.0f} s"},
                   {"key": "val_dice", "label": "validation Dice (mean)", "format": "{:.4f}"},
                   *({"key": f"report_split{s}", "label": f"report Dice, split {s}", "format": "{:.4f}"} for s in splits),
                   {"key": "report_dice", "label": "report Dice (mean)", "format": "{:.4f}"},
                   *({"key": key, "label": f"report {LABELS[key.removeprefix('report_')]} (mean)", "format": "{:.4f}"}
                     for key in structure),
                   {"key": "minus_labeled_only", "label": "report Dice − labelled-only, per split"},
                   {"key": "gap_closed", "label": "share of the gap to all-labels closed, per split"}]
        out += [{"name": setup, "columns": columns, "rows": rows},
                generator_table(setup, [g for g in generators if g["setup"] == setup])]
    return out


def generator_table(setup: str, generators: list[dict]) -> dict:
    """The drawing networks of one setup: their training and memorisation figures, a row per split."""
    columns = [{"key": "generator", "label": "setup, split"}, {"key": "steps", "label": "steps"},
               {"key": "train_s", "label": "training", "format": "{:.0f} s"},
               {"key": "val_l1", "label": "validation L1 (−1..1)", "format": "{:.3f}"},
               {"key": "median_ssim", "label": "median SSIM to nearest training image", "format": "{:.3f}"},
               {"key": "copies", "label": "copies (SSIM ≥ 0.9), deformed"},
               {"key": "copies_undeformed", "label": "copies, undeformed"}]
    return {"name": f"{setup}-generators", "columns": columns, "rows": [
        # the L1 of the network that drew: the last epoch's (val_l1); before val_l1 was recorded, the best
        {"generator": g["name"], "steps": g["steps"], "train_s": g["train_s"], "val_l1": g.get("val_l1", g["best_val_l1"]),
         "median_ssim": g["deformed"]["median_ssim"], "copies": f"{g['deformed']['copies']} of {g['deformed']['images']}",
         "copies_undeformed": f"{g['undeformed']['copies']} of {g['undeformed']['images']}"} for g in generators]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "weights" / "bench-synth"))
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--budget", default="8m", help="total wall time of every row")
    parser.add_argument("--generator-budget", default="2m30s", help="the drawing network's time budget")
    parser.add_argument("--count", type=int, default=400, help="synthetic pairs drawn per split")
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    require_datasets(data, sorted({SETUPS[s]["dataset"] for s in args.setups}))
    runs, generators = [], []
    for split in args.splits:  # whole splits first: a partial benchmark still pairs its rows
        for setup in args.setups:
            spec = SETUPS[setup]
            lists = write_lists(spec["dataset"], data, out, spec["report"], spec.get("validation"))
            for row in args.rows:
                runs.append(run_row(setup, row, split, lists, args, out))
                result = {"benchmark": "synth", "machine": benchkit.machine(), "budget": args.budget,
                          "generator_budget": args.generator_budget, "count": args.count, "runs": runs}
                (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
            record = out / setup / f"synth-split{split}" / "bench.json"
            if record.is_file():
                generators.append({"name": f"{setup}, split {split}", "setup": setup, **json.loads(record.read_text())})
    print(json.dumps({"runs": runs, "generators": generators}))
    if args.publish:
        benchkit.publish("synth", tables(runs, generators))


if __name__ == "__main__":
    main()
