#!/usr/bin/env python
"""Inference speed and memory of `segan predict`, measured in one run on the same images.

1. Throughput: images/s of `predict_folder` (decode, preprocess, forward, write PNGs) against the
   model's forward alone on the same images already in memory as tensors. Target ratio >= 0.9.
   The two alternate for `--rounds` rounds and the best time of each is kept, so a burst of other
   load on the machine does not land on one side only.
2. Memory: peak resident memory of the predicting process for 200 versus 2,000 images, each in a
   fresh subprocess. Target: flat (ratio <= 1.1).

Prints one JSON line. Uses `--model RUN` if given, else a run folder with an untrained generator
of the default architecture (speed does not depend on the weights).

    python scripts/bench_predict.py [--model RUN] [--size 256] [--images 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segan.batch_predict import predict_folder  # noqa: E402
from segan.config import Config, merge  # noqa: E402
from segan.data.demo import make_sample  # noqa: E402
from segan.inference import Predictor  # noqa: E402
from segan.preprocess import prepare_image  # noqa: E402
from segan.models import build_generator  # noqa: E402


def untrained_run(folder: Path, size: int) -> Path:
    config = merge(Config(), {"data": {"size": size, "resize": "resize"}})
    torch.manual_seed(0)
    generator = build_generator(config.generator, config.data.in_channels, config.data.num_classes).eval()
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / "config.yaml")
    generator.save_pretrained(str(folder / "generator"))
    return folder


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = [make_sample(rng, size)[0] for _ in range(min(count, 50))]
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(base[index % len(base)], cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def in_memory_batches(predictor: Predictor, paths: list[Path], batch_size: int) -> list[torch.Tensor]:
    from segan.data.io import read_image
    arrays = [prepare_image(read_image(p, predictor.config.data.in_channels), predictor.config.data) for p in paths]
    return [torch.from_numpy(np.stack(arrays[i:i + batch_size])) for i in range(0, len(arrays), batch_size)]


def forward_only(predictor: Predictor, batches: list[torch.Tensor]) -> float:
    """Seconds for the forward passes alone, inputs decoded and normalised beforehand."""
    started = time.perf_counter()
    for batch in batches:
        predictor.forward(batch)
    return time.perf_counter() - started


MEMORY_PROBE = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from segan.batch_predict import predict_folder
from segan.inference import Predictor
predictor = Predictor.from_pretrained({run!r}, device={device!r})
summary = predict_folder(predictor, [{images!r}], {out!r}, batch_size={batch}, num_workers={workers}, progress=False)
print(json.dumps(dict(written=summary.written, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def peak_memory(run: Path, images: Path, out: Path, device: str, batch: int, workers: int) -> dict:
    code = MEMORY_PROBE.format(repo=str(Path(__file__).resolve().parents[1]), run=str(run), images=str(images),
                               out=str(out), device=device, batch=batch, workers=workers)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run folder (default: an untrained default-architecture run)")
    parser.add_argument("--size", type=int, default=256, help="image side for the throughput test")
    parser.add_argument("--images", type=int, default=96, help="images for the throughput test")
    parser.add_argument("--memory-counts", type=int, nargs=2, default=(200, 2000))
    parser.add_argument("--memory-size", type=int, default=64, help="image side for the memory test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; the best of each is kept")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = Path(args.model) if args.model else untrained_run(tmp / "run", args.size)
        predictor = Predictor.from_pretrained(run, device=args.device)
        size = predictor.config.data.size if predictor.config.data.resize == "resize" else args.size
        paths = write_images(tmp / "images", args.images, size)

        batches = in_memory_batches(predictor, paths, args.batch_size)
        predictor.forward(batches[0])  # warm-up
        forward_times, folder_times = [], []
        for round_index in range(args.rounds):
            forward_times.append(forward_only(predictor, batches))
            started = time.perf_counter()
            summary = predict_folder(predictor, [tmp / "images"], tmp / f"out{round_index}",
                                     batch_size=args.batch_size, num_workers=args.num_workers, progress=False)
            folder_times.append(time.perf_counter() - started)
            assert summary.written == len(paths), summary
        forward_s, folder_s = min(forward_times), min(folder_times)

        memory = {}
        for count in args.memory_counts:
            images = tmp / f"mem{count}"
            write_images(images, count, args.memory_size)
            memory[count] = peak_memory(run, images, tmp / f"mem_out{count}", args.device, args.batch_size,
                                        args.num_workers)
        small, large = args.memory_counts
        print(json.dumps({
            "benchmark": "predict",
            "device": args.device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "model": str(args.model or "untrained unet/resnet18"), "image_size": size, "images": len(paths),
            "batch_size": args.batch_size, "num_workers": args.num_workers,
            "forward_only_images_per_s": round(len(paths) / forward_s, 2),
            "predict_folder_images_per_s": round(len(paths) / folder_s, 2),
            "throughput_ratio": round(forward_s / folder_s, 3),
            "rounds": args.rounds,
            "forward_only_s": [round(t, 2) for t in forward_times], "predict_folder_s": [round(t, 2) for t in folder_times],
            f"peak_rss_mb_{small}": round(memory[small]["peak_rss_mb"], 1),
            f"peak_rss_mb_{large}": round(memory[large]["peak_rss_mb"], 1),
            "memory_ratio": round(memory[large]["peak_rss_mb"] / memory[small]["peak_rss_mb"], 3),
        }))


if __name__ == "__main__":
    main()
