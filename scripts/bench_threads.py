#!/usr/bin/env python
"""Training-step time on a shared machine: torch's thread settings, alone and beside a busy process.

A user's CPU is rarely idle. torch starts one OpenMP thread per core, and OpenMP threads that
finish first spin at the end of every operation until the slowest one is done; when another
process holds one of the cores, each of the thousands of operations in a step waits for the
thread that shares that core to be scheduled again. This script measures what that costs and
what each remedy gives back, at the quickstart's settings (resnet18 U-Net, 128 px, batch 8,
bf16-mixed where the CPU has it, the GAN step):
- default: torch's own choice (one thread per core, OpenMP's default wait policy);
- passive: OMP_WAIT_POLICY=PASSIVE (waiting threads sleep instead of spinning);
- short-spin: GOMP_SPINCOUNT=10000 (they spin 10,000 rounds, not GNU OpenMP's 300,000, then sleep);
- one-thread: OMP_NUM_THREADS=1 (torch runs one thread).
Each setting runs in a fresh process (OpenMP reads its environment once), alone and beside
`--busy` processes that spin on a core each, for `--rounds` rounds of `--steps` steps; the
best round's median step is kept. Prints one JSON line; with `--publish`, also writes its table
into docs/benchmarks/results/threads.json, the source of docs/benchmarks/threads.md.

    python scripts/bench_threads.py [--steps 8] [--rounds 2] [--busy 1] [--publish]

With `--loaders DATA`, it measures instead what the workers that read and augment the images cost
beside torch's threads: `segan train`'s plain step (Lite0 U-Net, `--size` px, batch 8) on the real
training loader of DATA/`--dataset`, timed from one step's end to the next, with DataLoader
workers 0, 1 and 2 and torch threads 1 and one per core, each in a fresh process (the `loaders`
table):

    python scripts/bench_threads.py --loaders ../shared/data --dataset camvid --steps 12 [--publish]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import benchkit

SCRIPTS = Path(__file__).resolve().parent
SETTINGS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "short-spin": {"GOMP_SPINCOUNT": "10000"},
            "one-thread": {"OMP_NUM_THREADS": "1"}}
OPENMP_VARIABLES = {name for values in SETTINGS.values() for name in values}
# A fresh process: times the quickstart's GAN step with bench_train's timer, prints seconds.
CHILD = """
import logging, sys, warnings
import torch
sys.path.insert(0, {scripts!r})
from bench_train import step_time
from segan.config import Config, merge
from segan.hardware import resolve_training_precision
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")
torch.manual_seed(0)
batch = dict(image=torch.randn(8, 3, 128, 128), mask=(torch.rand(8, 128, 128) > 0.8).long(), name=[str(i) for i in range(8)])
config = merge(Config(), {{"data": {{"size": 128}}, "generator": {{"encoder_name": "resnet18"}},
                          "loss": {{"adv_weight": 0.01, "adv_warmup_epochs": 0}},
                          "train": {{"precision": resolve_training_precision("auto", "cpu")}}}})
print(min(step_time(config, batch, {steps}) for _ in range({rounds})), torch.get_num_threads())
"""


def timed(setting: str, steps: int, rounds: int) -> tuple[float, int]:
    env = {key: value for key, value in os.environ.items() if key not in OPENMP_VARIABLES}
    env.update(SETTINGS[setting])
    done = subprocess.run([sys.executable, "-c", CHILD.format(scripts=str(SCRIPTS), steps=steps, rounds=rounds)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{setting} failed:\n{done.stderr[-3000:]}")
    seconds, threads = done.stdout.split()[-2:]
    return float(seconds), int(threads)


LABELS = {"default": "default (torch: one thread per core)", "passive": "`OMP_WAIT_POLICY=PASSIVE`",
          "short-spin": "`GOMP_SPINCOUNT=10000`", "one-thread": "`OMP_NUM_THREADS=1`"}


def published_table(result: dict, settings: list[str]) -> dict:
    """The JSON line's figures as the table of docs/benchmarks/results/threads.json, a row per setting."""
    columns = [{"key": "setting", "label": "setting"}, {"key": "threads", "label": "threads"},
               {"key": "alone_step_s", "label": "step alone", "format": "{:.3f} s"},
               {"key": "loaded_step_s", "label": "step beside a busy process", "format": "{:.3f} s"},
               {"key": "loaded_slowdown", "label": "slowdown", "format": "{:.2f}×"},
               {"key": "alone_vs_default", "label": "alone, against default", "format": "{:.2f}×"}]
    rows = [{"setting": LABELS[setting], **{column["key"]: result.get(f"{setting}_{column['key']}")
                                            for column in columns[1:]}} for setting in settings]
    return {"name": "busy-cpu", "columns": columns, "rows": rows}


# A fresh process: `segan train`'s step on a dataset's real training loader (reading, augmenting
# and cropping in `workers` processes, or between steps with 0), timed from one step's end to the
# next (the wait for the next batch included); prints the median seconds after `warmup` steps.
LOADER_CHILD = """
import logging, statistics, sys, time, warnings
import lightning as L
import torch
from segan.config import Config, merge
from segan.hardware import resolve_training_precision
from segan.training import SeganModule, build_dataloaders
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")
ends = []
class Ends(L.Callback):
    def on_train_batch_end(self, *args):
        ends.append(time.perf_counter())
config = merge(Config.load({recipe!r}), {{"data": {{"root": {root!r}, "size": {size}, "num_workers": {workers}}},
                                          "generator": {{"encoder_name": "tu-efficientnet_lite0", "encoder_weights": None}},
                                          "loss": {{"adv_weight": 0.0}},
                                          "train": {{"precision": resolve_training_precision("auto", "cpu")}}}})
torch.manual_seed(0)
train_loader, _ = build_dataloaders(config)
trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, precision=config.train.precision,
                    limit_train_batches={warmup} + {steps} + 1, limit_val_batches=0, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[Ends()])
trainer.fit(SeganModule(config.to_dict()), train_loader)
gaps = [later - earlier for earlier, later in zip(ends[{warmup}:], ends[{warmup} + 1:])]
print(statistics.median(gaps), torch.get_num_threads())
"""
LOADER_WARMUP = 3


def loader_timed(data: Path, dataset: str, workers: int, threads: int, size: int, steps: int) -> float:
    env = {key: value for key, value in os.environ.items() if key not in OPENMP_VARIABLES}
    env["OMP_NUM_THREADS"] = str(threads)
    child = LOADER_CHILD.format(recipe=str(benchkit.ROOT / "datasets" / dataset / "config.yaml"),
                                root=str(data / dataset), size=size, workers=workers, warmup=LOADER_WARMUP,
                                steps=steps)
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"workers {workers}, threads {threads} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-2])


def loader_table(data: Path, dataset: str, size: int, steps: int) -> dict:
    """Training steps on the real loader for DataLoader workers 0, 1, 2 beside torch threads 1 and
    one per core: the table of docs/benchmarks/results/threads.json named `loaders`."""
    cores = os.cpu_count() or 1
    rows = [{"workers": workers, "threads": threads, "step_s": loader_timed(data, dataset, workers, threads, size, steps)}
            for threads in sorted({1, cores}) for workers in (0, 1, 2)]
    fastest = min(row["step_s"] for row in rows)
    for row in rows:
        row["vs_fastest"] = row["step_s"] / fastest
    columns = [{"key": "workers", "label": "DataLoader workers"}, {"key": "threads", "label": "torch threads"},
               {"key": "step_s", "label": f"step on {dataset} at {size} px, batch 8", "format": "{:.3f} s"},
               {"key": "vs_fastest", "label": "against the fastest", "format": "{:.2f}×"}]
    return {"name": "loaders", "columns": columns, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", type=int, default=1, help="busy processes beside the loaded runs")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--loaders", type=Path, metavar="DATA",
                        help="instead: DataLoader workers (0, 1, 2) beside torch threads on DATA/--dataset's real "
                             "training loader (the `loaders` table)")
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--size", type=int, default=256)
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    if args.loaders is not None:
        table = loader_table(args.loaders, args.dataset, args.size, args.steps)
        print(json.dumps({"benchmark": "loaders", "machine": benchkit.machine(), **table}))
        if args.publish:
            benchkit.publish("threads", [table])
        return
    result = {"benchmark": "threads", "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
              "steps": args.steps, "rounds": args.rounds, "busy_processes": args.busy}
    for setting in args.settings:
        seconds, threads = timed(setting, args.steps, args.rounds)
        result[f"{setting}_threads"] = threads
        result[f"{setting}_alone_step_s"] = round(seconds, 3)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for setting in args.settings:
            result[f"{setting}_loaded_step_s"] = round(timed(setting, args.steps, args.rounds)[0], 3)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    for setting in args.settings:
        result[f"{setting}_loaded_slowdown"] = round(result[f"{setting}_loaded_step_s"]
                                                     / result[f"{setting}_alone_step_s"], 2)
        if setting != "default" and "default" in args.settings:
            result[f"{setting}_alone_vs_default"] = round(result[f"{setting}_alone_step_s"]
                                                          / result["default_alone_step_s"], 2)
    print(json.dumps(result))
    if args.publish:
        benchkit.publish("threads", [published_table(result, args.settings)])


if __name__ == "__main__":
    main()
