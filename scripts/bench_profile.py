#!/usr/bin/env python
"""Where a training step's time goes: by part of the network, and by kind of operation.

Issue 53 asks this before any speed lever: on a CPU without bf16, which part of `segan train`'s
step is slow? Two views of the same step (the U-Net `--encoder`, `--size` px, `--batch-size`
images, `--precision`; the plain step `segan plan` trains when every image is labelled, and the
GAN step beside it):
- parts: each part of the step timed alone, forward and backward, best of `--rounds` medians
  of `--steps`: the encoder, the decoder with its head, the segmentation loss, Adam's update,
  the discriminator (both of its passes); beside them the whole step through Lightning, as
  `segan train` runs it (bench_train's timer). What the parts leave out of the whole is the loop
  itself: Lightning, logging, the host synchronisation and the non-finite guard;
- operations: torch's profiler over `--steps` whole steps, self time grouped into
  convolutions, their backward, normalisation, pointwise operations, resampling and copies,
  the optimiser, and the rest (the ten costliest operations are listed too);
- compiled: the plain step again with `train.compile true` (inductor), its first step (which
  compiles) apart;
- data: with `--data` and `--dataset`, one batch of the training loader (decode and
  augmentation, no workers) per step, as `segan train` reads it.

The machine is named as benchkit names it; run it with ATEN_CPU_CAPABILITY=avx2 and
ONEDNN_MAX_CPU_ISA=AVX2 to hold torch's kernels to AVX2 on a newer CPU (said beside the figures).
Prints one JSON line; with `--publish`, writes its tables into docs/benchmarks/results/profile.json.

    python scripts/bench_profile.py [--encoder tu-efficientnet_lite0] [--size 256] [--batch-size 8]
        [--precision 32-true] [--steps 4] [--rounds 2] [--data ../shared/data --dataset camvid]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

import benchkit
from bench_train import step_time, step_times

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segan.config import Config, merge  # noqa: E402
from segan.models import build_discriminator, build_generator, output_channels  # noqa: E402
from segan.preprocess import network_input, network_layout  # noqa: E402

# Operation kinds, matched in order against an operation's name (the first that matches).
KINDS = [("convolution backward", ("convolution_backward", "mkldnn_convolution_backward")),
         ("convolution", ("conv", "mkldnn_convolution")),
         ("normalisation", ("batch_norm", "native_batch_norm", "instance_norm", "group_norm")),
         ("resampling and copies", ("upsample", "cat", "copy_", "clone", "contiguous", "to_copy", "pad", "slice",
                                    "index", "narrow", "split", "chunk", "stack")),
         ("optimiser", ("adam", "foreach", "lerp", "addcdiv", "addcmul", "sqrt")),
         ("pointwise", ("relu", "hardtanh", "sigmoid", "add", "mul", "sub", "div", "threshold", "where", "fill",
                        "zero", "leaky", "exp", "log", "sum", "mean", "max", "min", "softmax", "nll", "eq", "ne",
                        "abs", "neg", "pow", "clamp", "rsub", "ones", "empty"))]


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, keys in KINDS if any(key in lowered for key in keys)), "other")


def best_median(run: Callable[[], None], steps: int, rounds: int) -> float:
    """Best of `rounds` medians of `steps` timed calls, after one untimed call."""
    run()
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        medians.append(statistics.median(times))
    return min(medians)


def part_times(config: Config, batch: dict, steps: int, rounds: int) -> dict[str, float]:
    """Seconds per step of each part alone, forward and backward (autocast as the step runs it)."""
    from segan.losses import SegmentationLoss
    data = config.data
    generator = network_layout(build_generator(config.generator, data.in_channels, data.num_classes,
                                               load_encoder_weights=False))
    image, mask = network_input(batch["image"]), batch["mask"]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.train.precision.startswith("bf16"))
    loss_fn = SegmentationLoss(data.num_classes, data.ignore_index, config.loss.terms, None, config.loss.ohem_keep,
                               config.loss.ohem_threshold)
    with torch.no_grad(), autocast:
        features = [feature.detach() for feature in generator.encoder(image)]
        logits = generator(image).float().detach()

    def encoder() -> None:
        with autocast:
            outputs = generator.encoder(image)
        sum(output.float().mean() for output in outputs).backward()

    def decoder() -> None:
        inputs = [feature.requires_grad_() for feature in features]
        with autocast:
            out = generator.segmentation_head(generator.decoder(inputs))
        out.float().mean().backward()

    def loss() -> None:
        loss_fn(logits.requires_grad_(), mask).backward()

    optimiser = torch.optim.Adam(generator.parameters(), lr=1e-4, fused=True)
    for parameter in generator.parameters():
        parameter.grad = torch.zeros_like(parameter)

    mask_channels = output_channels(data.num_classes)
    discriminator = network_layout(build_discriminator(config.discriminator, data.in_channels, mask_channels))
    fake = network_input(torch.rand(len(image), mask_channels, *image.shape[2:]))

    def discriminate() -> None:  # the step's two passes: D step on real and fake together, then G's term
        with autocast:
            both = discriminator(torch.cat([image, image]), torch.cat([fake, fake]))
            again = discriminator(image, fake.requires_grad_())
        (both.float().mean() + again.float().mean()).backward()

    parts = {"encoder": encoder, "decoder and head": decoder, "segmentation loss": loss,
             "Adam update (generator)": optimiser.step, "discriminator (GAN step only)": discriminate}
    return {name: best_median(run, steps, rounds) for name, run in parts.items()}


def operation_times(config: Config, batch: dict, steps: int) -> tuple[dict[str, float], list[dict], float]:
    """Self CPU seconds per step by operation kind over `steps` whole steps, the ten costliest
    operations, and the wall seconds per profiled step (the profiler's own cost included)."""
    from torch.profiler import ProfilerActivity, profile
    import lightning as L

    class Profiled(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 1:  # after the first step, which picks kernels and allocates
                self.profiler = profile(activities=[ProfilerActivity.CPU])
                self.profiler.__enter__()
                self.started = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.wall_s = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)

    profiled = Profiled()
    step_time(config, batch, steps, callbacks=[profiled])
    by_kind: dict[str, float] = defaultdict(float)
    rows = []
    for event in profiled.profiler.key_averages():
        seconds = event.self_cpu_time_total / 1e6 / steps
        if event.key.startswith(("ProfilerStep", "[")):
            continue
        by_kind[kind_of(event.key)] += seconds
        rows.append({"operation": event.key, "kind": kind_of(event.key), "self_s": seconds, "calls": event.count // steps})
    rows.sort(key=lambda row: -row["self_s"])
    return dict(by_kind), rows[:10], profiled.wall_s / steps


def data_time(config: Config, steps: int) -> float:
    """Seconds per batch of the training loader in the main process (no workers)."""
    from segan.training import build_dataloaders
    loader, _ = build_dataloaders(merge(config, {"data": {"num_workers": 0}}))
    batches = iter(loader)
    next(batches)
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return (time.perf_counter() - started) / steps


def published_tables(result: dict) -> list[dict]:
    whole = result["plain_step_s"]
    parts = [{"part": name, "seconds": seconds, "share": seconds / whole} for name, seconds in result["parts"].items()]
    parts.append({"part": "whole plain step (Lightning, as segan train runs it)", "seconds": whole, "share": 1.0})
    parts.append({"part": "whole GAN step", "seconds": result["gan_step_s"], "share": result["gan_step_s"] / whole})
    if result.get("data_s") is not None:
        parts.append({"part": f"one batch of the training loader ({result['dataset']}, no workers)",
                      "seconds": result["data_s"], "share": result["data_s"] / whole})
    operations = [{"kind": kind, "seconds": seconds, "share": seconds / result["profiled_s"]}
                  for kind, seconds in sorted(result["operations"].items(), key=lambda item: -item[1])]
    columns = [{"key": "seconds", "label": "seconds per step", "format": "{:.3f}"},
               {"key": "share", "label": "share of the plain step", "format": "{:.1%}"}]
    top = [{"key": "operation", "label": "operation"}, {"key": "kind", "label": "kind"},
           {"key": "calls", "label": "calls per step"},
           {"key": "self_s", "label": "self seconds per step", "format": "{:.3f}"}]
    compiled = {"name": "compiled", "columns": [
        {"key": "step", "label": "plain step"}, {"key": "seconds", "label": "seconds per step", "format": "{:.3f}"},
        {"key": "speedup", "label": "against uncompiled", "format": "{:.2f}×"},
        {"key": "compile_s", "label": "compiling (first step)", "format": "{:.0f} s"}],
        "rows": [{"step": "uncompiled (train.compile false)", "seconds": whole, "speedup": 1.0},
                 {"step": "compiled (train.compile true, inductor)", "seconds": result["compiled_step_s"],
                  "speedup": result["compiled_speedup"], "compile_s": result["compile_s"]}]}
    return [compiled, {"name": "parts", "columns": [{"key": "part", "label": "part"}, *columns], "rows": parts},
            {"name": "operations", "columns": [{"key": "kind", "label": "kind of operation"}, columns[0],
                                               {**columns[1], "label": "share of the profiled time"}],
             "rows": operations},
            {"name": "costliest", "columns": top, "rows": result["costliest"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="tu-efficientnet_lite0")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classes", type=int, default=11, help="classes of the model (CamVid's 11 by default)")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, help="the shared data folder, to time the training loader too")
    parser.add_argument("--dataset", default="camvid")
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    torch.manual_seed(0)
    batch = dict(image=torch.randn(args.batch_size, 3, args.size, args.size),
                 mask=torch.randint(0, args.classes, (args.batch_size, args.size, args.size)),
                 name=[str(index) for index in range(args.batch_size)])
    classes = [f"class{index}" for index in range(args.classes)] if args.classes > 2 else ["background", "foreground"]
    config = merge(Config(), {"data": {"size": args.size, "classes": classes},
                              "generator": {"encoder_name": args.encoder, "encoder_weights": None},
                              "loss": {"adv_weight": 0.0}, "train": {"precision": args.precision}})
    gan = merge(config, {"loss": {"adv_weight": 0.01, "adv_warmup_epochs": 0}})
    # Rounds take turns, so that a burst of other load does not land on one configuration only;
    # the best round of each is kept. Compiled (train.compile true): the first step of the first
    # round compiles (later rounds reuse the compiled code); its steady step is the median after it.
    compiled_config = merge(config, {"train": {"compile": True}})
    plain_s = gan_s = compiled_s = math.inf
    compile_s = 0.0
    for round_index in range(args.rounds):
        plain_s = min(plain_s, step_time(config, batch, args.steps))
        gan_s = min(gan_s, step_time(gan, batch, args.steps))
        compiled = step_times(compiled_config, batch, args.steps)
        compiled_s = min(compiled_s, statistics.median(compiled[1:]))
        compile_s = compile_s or compiled[0] - statistics.median(compiled[1:])
    parts = part_times(config, batch, args.steps, args.rounds)
    operations, costliest, profiled_step_s = operation_times(config, batch, args.steps)
    data_s = None
    if args.data is not None:
        recipe = benchkit.ROOT / "datasets" / args.dataset / "config.yaml"
        data_config = merge(Config.load(recipe), {"data": {"root": str(args.data / args.dataset), "size": args.size},
                                                  "train": {"batch_size": args.batch_size}})
        data_s = data_time(data_config, args.steps * args.rounds)
    result = {"benchmark": "train_profile", "machine": benchkit.machine(), "encoder": args.encoder,
              "size": args.size, "batch_size": args.batch_size, "precision": args.precision,
              "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "plain_step_s": plain_s, "gan_step_s": gan_s, "compiled_step_s": compiled_s,
              "compile_s": compile_s, "compiled_speedup": plain_s / compiled_s, "parts": parts, "operations": operations,
              "profiled_s": sum(operations.values()),
              "profiled_step_s": profiled_step_s, "costliest": costliest, "data_s": data_s,
              "dataset": args.dataset if args.data is not None else None}
    print(json.dumps(result))
    if args.publish:
        benchkit.publish("profile", published_tables(result))


if __name__ == "__main__":
    main()
