#!/usr/bin/env python
"""Training-step speed: the GAN step against the plain supervised step, in one run.

Same model, same batch, same Lightning loop: `adv_weight 0` is exactly the plain supervised smp
step (tests/test_training.py checks this), so the ratio is the price of the adversarial term.
Each configuration runs in turn for `--rounds` rounds of `--steps` steps, and the best round
of each is kept, so a burst of other load does not land on one side only. The discriminator is
timed at several widths (`--d-channels`) to show what the default costs, and the plain and
default GAN steps again under each further `--precisions` entry (bf16-mixed: Lightning's bf16
autocast, as `train.precision: auto` chooses on CPUs with native bf16), and once more in v0.1's
layout: float32 in the NCHW layout smp builds (segan now trains in NHWC), the baseline of the
`*_speedup_vs_v0.1` figures. That baseline runs today's step (fused Adam, one host read, one D
pass for real and fake), so it isolates the layout and precision, not everything since v0.1.

Also: generator and discriminator forward GFLOP per image (torch's FLOP counter), the machine's
matmul peak GFLOP/s (fp32 2048^2 matmul, best of 10), the achieved GFLOP/s of the plain step
(counting a training step as 3x the forward), and each configuration's peak memory: the peak RSS
of a fresh process that builds it and trains `--steps` steps (on a CPU the activations live in
host memory; on a GPU it would be torch.cuda.max_memory_allocated).

Prints one JSON line. With `--publish`, also writes its tables (`discriminator`: every
configuration in the first precision; `precision`: the plain and default GAN steps in each) into
docs/benchmarks/results/train.json, the source of docs/benchmarks/train.md.

    python scripts/bench_train.py [--size 192] [--batch-size 8] [--steps 6] [--rounds 2]\n                                  [--precisions 32-true bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

import benchkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segan.config import Config, merge  # noqa: E402
from segan.training import SeganModule  # noqa: E402


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self.started)


class NchwModule(SeganModule):
    """v0.1's layout: the networks and batches in NCHW, as smp builds them (today's step code)."""

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.to(memory_format=torch.contiguous_format)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return batch


def step_time(config: Config, batch: dict, steps: int, nchw: bool = False, callbacks: tuple = ()) -> float:
    """Median seconds per training step over `steps` steps after one warm-up step (`callbacks`:
    more Lightning callbacks, e.g. a profiler's)."""
    times = sorted(step_times(config, batch, steps, nchw, callbacks)[1:])
    return times[len(times) // 2]


def step_times(config: Config, batch: dict, steps: int, nchw: bool = False, callbacks: tuple = ()) -> list[float]:
    """Seconds of each of `steps` + 1 training steps, the first (warm-up, compiling) included."""
    torch.manual_seed(0)
    module = (NchwModule if nchw else SeganModule)(config.to_dict())
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, precision=config.train.precision, limit_train_batches=steps + 1,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer, *callbacks])
    trainer.fit(module, DataLoader([batch] * (steps + 1), batch_size=None))
    return timer.times


def forward_gflop(model: torch.nn.Module, *inputs: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(*inputs)
    return counter.get_total_flops() / 1e9


def peak_rss_mb(config_dict: dict, batch: dict, steps: int) -> float:
    """Peak RSS of this (fresh, spawned) process after building the module and training."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    step_time(Config.from_dict(config_dict), batch, steps)
    # VmHWM belongs to this process's own address space. Linux's ru_maxrss carries the spawning
    # parent's peak over fork and exec, so it would report the parent's figure for every child.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflop_per_s(n: int = 2048, repeats: int = 10) -> float:
    """The machine's practical peak: the best fp32 GFLOP/s of a large square matmul with torch's
    threads (a BLAS kernel runs close to what the cores can do; a network never runs faster)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e9


PRECISION_LABELS = {"32-true": "float32"}


def published_tables(result: dict, d_channels: list[int], precisions: list[str]) -> list[dict]:
    """The JSON line's figures as the tables of docs/benchmarks/results/train.json."""
    default_d = result["default_d_channels"]
    names = {"plain": "plain (adv_weight 0)",
             **{f"gan_d{c}": f"GAN, D base {c}" + (" (default)" if c == default_d else "") for c in d_channels}}
    discriminator = {"name": "discriminator", "columns": [
        {"key": "configuration", "label": "configuration"},
        {"key": "d_gflop", "label": "D forward per image (GFLOP)", "format": "{:.3f}"},
        {"key": "step_s", "label": f"step time (batch {result['batch_size']})", "format": "{:.3f} s"},
        {"key": "images_per_s", "label": "images/s", "format": "{:.2f}"},
        {"key": "ratio", "label": "ratio to plain", "format": "{:.3f}"},
        {"key": "peak_rss_mb", "label": "peak RSS", "format": "{:.0f} MB"}], "rows": [
        {"configuration": label, "d_gflop": result.get(f"{name}_discriminator_forward_gflop_per_image"),
         "step_s": result[f"{name}_step_s"], "images_per_s": result[f"{name}_images_per_s"],
         "ratio": result.get(f"{name}_ratio", 1.0), "peak_rss_mb": result[f"{name}_peak_rss_mb"]}
        for name, label in names.items()]}
    first, *others = precisions
    if not others or f"gan_d{default_d}" not in names:
        return [discriminator]
    # One row per step and a row of their ratio, a column per precision: each step's time is
    # `NAME_step_s` in the first precision and `NAME_PRECISION_step_s` in the others.
    columns = [{"key": "configuration", "label": "step"}]
    for precision in precisions:
        label = PRECISION_LABELS.get(precision, precision)
        columns.append({"key": f"step_s_{precision}", "label": f"{label} (s)", "format": "{:.3f}"})
        if precision != first:
            columns.append({"key": f"speedup_{precision}", "label": f"{label} speed-up over "
                            f"{PRECISION_LABELS.get(first, first)}", "format": "{:.2f}x"})
    for precision in precisions:
        label = PRECISION_LABELS.get(precision, precision)
        columns.append({"key": f"peak_rss_mb_{precision}", "label": f"{label} peak RSS", "format": "{:.0f} MB"})
    rows = []
    for name in ("plain", f"gan_d{default_d}"):
        row = {"configuration": names[name], f"step_s_{first}": result[f"{name}_step_s"],
               f"peak_rss_mb_{first}": result[f"{name}_peak_rss_mb"]}
        for precision in others:
            row[f"step_s_{precision}"] = result[f"{name}_{precision}_step_s"]
            row[f"speedup_{precision}"] = result[f"{name}_{precision}_speedup_vs_{first}"]
            row[f"peak_rss_mb_{precision}"] = result[f"{name}_{precision}_peak_rss_mb"]
        rows.append(row)
    ratios = {f"step_s_{first}": result[f"gan_d{default_d}_ratio"],
              **{f"step_s_{precision}": result[f"gan_default_ratio_{precision}"] for precision in others}}
    rows.append({"configuration": "GAN step / plain step", **ratios})
    rows = [{column["key"]: row.get(column["key"]) for column in columns} for row in rows]  # blanks are null
    return [discriminator, {"name": "precision", "columns": columns, "rows": rows}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--d-channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"],
                        help="the first one times every configuration; the others the plain and default GAN steps")
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    torch.manual_seed(0)
    mask = (torch.rand(args.batch_size, args.size, args.size) > 0.8).long()
    batch = dict(image=torch.randn(args.batch_size, 3, args.size, args.size), mask=mask,
                 name=[str(i) for i in range(args.batch_size)])
    first, *others = args.precisions
    base = {"data": {"size": args.size}, "generator": {"encoder_name": args.encoder},
            "loss": {"adv_warmup_epochs": 0}, "train": {"precision": first}}
    configs = {"plain": merge(Config(), {**base, "loss": {"adv_weight": 0.0}})}
    for channels in args.d_channels:
        configs[f"gan_d{channels}"] = merge(Config(), {**base, "discriminator": {"base_channels": channels}})
    default_d = Config().discriminator.base_channels
    for precision in others:
        for name in ("plain", f"gan_d{default_d}"):
            configs[f"{name}_{precision}"] = merge(configs[name], {"train": {"precision": precision}})

    v01 = {f"{name}_v0.1": configs[name] for name in ("plain", f"gan_d{default_d}")}  # float32, NCHW
    best = {name: float("inf") for name in [*configs, *v01]}
    for _ in range(args.rounds):
        for name, config in configs.items():
            best[name] = min(best[name], step_time(config, batch, args.steps))
        for name, config in v01.items():
            best[name] = min(best[name], step_time(config, batch, args.steps, nchw=True))

    # One fresh process per configuration, so one's peak does not hide another's.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        peak_mb = {name: pool.apply(peak_rss_mb, (config.to_dict(), batch, args.steps))
                   for name, config in configs.items()}

    from segan.models import build_discriminator, build_generator, output_channels
    plain = configs["plain"]
    image = torch.randn(1, plain.data.in_channels, args.size, args.size)
    gflop = forward_gflop(build_generator(plain.generator, plain.data.in_channels, plain.data.num_classes), image)
    result = {
        "benchmark": "train_step", "device": "cpu", "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "encoder": args.encoder, "image_size": args.size,
        "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds, "precision": first,
        "plain_step_s": round(best["plain"], 3),
        "plain_images_per_s": round(args.batch_size / best["plain"], 2),
        "plain_peak_rss_mb": round(peak_mb["plain"], 1),
        "generator_forward_gflop_per_image": round(gflop, 2),
        "plain_achieved_gflop_per_s": round(3 * gflop * args.batch_size / best["plain"], 1),
        "matmul_peak_gflop_per_s": round(matmul_peak_gflop_per_s(), 1),
    }
    result["plain_fraction_of_peak"] = round(result["plain_achieved_gflop_per_s"] / result["matmul_peak_gflop_per_s"], 3)
    for channels in args.d_channels:
        name = f"gan_d{channels}"
        result[f"{name}_step_s"] = round(best[name], 3)
        result[f"{name}_ratio"] = round(best[name] / best["plain"], 3)
        result[f"{name}_images_per_s"] = round(args.batch_size / best[name], 2)
        result[f"{name}_peak_rss_mb"] = round(peak_mb[name], 1)
        d = configs[name]
        mask = torch.rand(1, output_channels(d.data.num_classes), args.size, args.size)
        discriminator = build_discriminator(d.discriminator, d.data.in_channels, mask.shape[1])
        result[f"{name}_discriminator_forward_gflop_per_image"] = round(forward_gflop(discriminator, image, mask), 4)
    for precision in others:
        for name in ("plain", f"gan_d{default_d}"):
            key = f"{name}_{precision}"
            result[f"{key}_step_s"] = round(best[key], 3)
            result[f"{key}_speedup_vs_{first}"] = round(best[name] / best[key], 3)
            result[f"{key}_speedup_vs_v0.1"] = round(best[f"{name}_v0.1"] / best[key], 3)
            result[f"{key}_peak_rss_mb"] = round(peak_mb[key], 1)
        result[f"gan_default_ratio_{precision}"] = round(best[f"gan_d{default_d}_{precision}"] / best[f"plain_{precision}"], 3)
    for name in v01:
        result[f"{name}_step_s"] = round(best[name], 3)
    result["default_d_channels"] = default_d
    result["gan_default_ratio"] = result.get(f"gan_d{default_d}_ratio")
    print(json.dumps(result))
    if args.publish:
        benchkit.publish("train", published_tables(result, args.d_channels, args.precisions))


if __name__ == "__main__":
    main()
