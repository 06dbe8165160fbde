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

With `--backends`, instead: one row per inference backend and precision on a trained run's
validation split (`--model RUN`, its own data unless `--data DIR`): `predict_folder` images/s
(decode, preprocess, network, write PNGs; rows alternate for `--rounds` rounds, best kept), the
ratio to v0.1's path (torch float32 in NCHW layout, no autocast), the share of mask pixels equal
to v0.1's masks, and validation Dice with its change. Exports the run first if it has no export.

    python scripts/bench_predict.py --backends --model RUN [--data DIR] [--rounds 3]

With `--publish`, also writes the table (`pipeline`, or `backends` with `--backends`, or the name
`--table` gives) into docs/benchmarks/results/predict.json, the source of docs/benchmarks/predict.md.
The backends include OpenVINO int8: the run's generator quantised by `segan export --int8` in a
copy of the run folder, calibrated and checked on the run's data. On a CPU without bf16 units the
bf16 rows are left out.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import benchkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segan.batch_predict import predict_folder  # noqa: E402
from segan.config import Config, merge  # noqa: E402
from segan.data.demo import make_sample  # noqa: E402
from segan.hardware import cpu_has_bf16  # noqa: E402
from segan.inference import Predictor  # noqa: E402
from segan.preprocess import pad_multiple  # noqa: E402
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


class NchwNetwork:
    """v0.1's inference: the generator in float32, in the NCHW layout smp builds, no autocast."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model.to(device).eval().to(memory_format=torch.contiguous_format)
        self.device, self.precision, self.stride = device, "fp32", pad_multiple(model)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(batch.to(self.device).contiguous())


# (row name, backend, precision); the first is the baseline
BACKEND_ROWS = [("v0.1 torch fp32 NCHW", "v0.1", "fp32"), ("torch fp32", "torch", "fp32"),
                ("torch bf16", "torch", "bf16"), ("onnxruntime fp32", "onnxruntime", "fp32"),
                ("openvino fp32", "openvino", "fp32"), ("openvino bf16", "openvino", "bf16"),
                ("openvino int8", "openvino-int8", "fp32")]


def int8_copy(run: Path, data_root: str | None, folder: Path) -> Path:
    """A copy of `run` (its config and generator) whose export is the int8 OpenVINO model, so the
    float export of `run` stays as it is; calibrated and checked on the run's data (or `data_root`)."""
    from segan.export import export_run
    copy = folder / run.name
    (copy / "generator").mkdir(parents=True)
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    for file in (run / "generator").iterdir():
        (copy / "generator" / file.name).symlink_to(file.resolve())
    settings = export_run(copy, "openvino", int8=True, data_root=data_root)
    print(f"int8 export: {json.dumps(settings['int8'])}", file=sys.stderr)
    return copy


def backend_predictor(run: Path, backend: str, precision: str, args: argparse.Namespace,
                      int8_folder: Path) -> Predictor:
    """The predictor of one row of BACKEND_ROWS."""
    if backend == "openvino-int8":
        return Predictor.from_pretrained(int8_copy(run, args.data, int8_folder), device=args.device, backend="openvino",
                                         precision=precision)
    if backend == "v0.1":
        torch_predictor = Predictor.from_pretrained(run, device=args.device, precision="fp32")
        return Predictor(NchwNetwork(torch_predictor.network.model, torch_predictor.device), torch_predictor.config,
                         torch_predictor.device)
    return Predictor.from_pretrained(run, device=args.device, backend=backend, precision=precision)


def rows_here() -> list[tuple[str, str, str]]:
    """BACKEND_ROWS less the bf16 ones on a CPU without bf16 units, where bf16 is emulated (torch)
    or not offered (OpenVINO runs float32): rows no one would choose there."""
    return [row for row in BACKEND_ROWS if row[2] != "bf16" or cpu_has_bf16()]


def backend_rows(args: argparse.Namespace) -> dict:
    from segan.data import MaskEncoding
    from segan.data.pairs import find_split
    from segan.evaluation import evaluate_folders
    from segan.export import export_run
    run = Path(args.model)
    predictors = {}
    int8_folder = tempfile.TemporaryDirectory()
    with contextlib.redirect_stdout(sys.stderr):  # smp's loader prints; stdout holds the one JSON line
        if not (run / "export" / "openvino" / "model.xml").is_file():
            export_run(run, "openvino")
        for name, backend, precision in rows_here():
            predictors[name] = backend_predictor(run, backend, precision, args, Path(int8_folder.name))
    config = predictors[BACKEND_ROWS[0][0]].config
    data = config.data if args.data is None else dataclasses.replace(config.data, root=args.data)
    pairs = find_split(data, "val")
    images = [pair.image for pair in pairs]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        times: dict[str, list[float]] = {name: [] for name in predictors}
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                started = time.perf_counter()
                summary = predict_folder(predictor, images, tmp / name, batch_size=args.batch_size,
                                         num_workers=args.num_workers, progress=False, overwrite=True)
                times[name].append(time.perf_counter() - started)
                assert summary.written == len(images), summary
        baseline = BACKEND_ROWS[0][0]
        masks = {name: [cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                        for path in sorted((tmp / name / "masks").rglob("*.png"))] for name in predictors}
        rows = []
        for name, backend, precision in rows_here():
            result = evaluate_folders(tmp / name / "masks", pairs[0].mask.parent, class_names=list(config.data.classes),
                                      encoding=MaskEncoding.from_config(data))
            agreement = np.mean([(a == b).mean() for a, b in zip(masks[name], masks[baseline])])
            rows.append({"row": name, "backend": backend, "precision": precision,
                         "images_per_s": round(len(images) / min(times[name]), 2),
                         "seconds": [round(t, 2) for t in times[name]],
                         "ratio_to_v0.1": round(min(times[baseline]) / min(times[name]), 3),
                         "mask_agreement_with_v0.1": round(float(agreement), 5),
                         "dice": round(result.report["headline"]["dice"], 4)})
        openvino_fp32 = min(times["openvino fp32"])
        for row in rows:
            row["dice_change"] = round(row["dice"] - rows[0]["dice"], 4)
            row["ratio_to_openvino_fp32"] = round(openvino_fp32 / min(times[row["row"]]), 3)
    int8_folder.cleanup()
    return {"benchmark": "predict_backends", "model": str(run), "images": len(images),
            "image_size": config.data.size, "resize": config.data.resize, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "rounds": args.rounds, "device": args.device,
            "torch_threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16(), "rows": rows}


def pipeline_table(result: dict, memory_counts: tuple[int, int]) -> dict:
    """The default run's figures as one row of the published `pipeline` table."""
    small, large = memory_counts
    columns = [{"key": "model", "label": "model"}, {"key": "images", "label": "images"},
               {"key": "forward_only_images_per_s", "label": "forward only (images/s)", "format": "{:.2f}"},
               {"key": "predict_folder_images_per_s", "label": "`predict_folder` (images/s)", "format": "{:.2f}"},
               {"key": "throughput_ratio", "label": "throughput ratio", "format": "{:.3f}"},
               {"key": f"peak_rss_mb_{small}", "label": f"peak RSS, {small} images", "format": "{:.1f} MB"},
               {"key": f"peak_rss_mb_{large}", "label": f"peak RSS, {large} images", "format": "{:.1f} MB"},
               {"key": "memory_ratio", "label": "memory ratio", "format": "{:.2f}"}]
    row = {column["key"]: result.get(column["key"]) for column in columns}
    row["images"] = f"{result['images']} of {result['image_size']} px"
    return {"name": "pipeline", "columns": columns, "rows": [row]}


BACKEND_COLUMNS = [{"key": "row", "label": "backend, precision"},
                   {"key": "images_per_s", "label": "images/s", "format": "{:.1f}"},
                   {"key": "ratio_to_v0.1", "label": "vs v0.1", "format": "{:.2f}x"},
                   {"key": "ratio_to_openvino_fp32", "label": "vs openvino fp32", "format": "{:.2f}x"},
                   {"key": "mask_agreement_with_v0.1", "label": "mask agreement with v0.1", "format": "{:.4f}"},
                   {"key": "dice", "label": "validation Dice", "format": "{:.4f}"},
                   {"key": "dice_change", "label": "Dice change", "format": "{:+.4f}"}]


def backends_table(result: dict, name: str = "backends") -> dict:
    """The `--backends` rows as the published table NAME."""
    return {"name": name, "columns": BACKEND_COLUMNS,
            "rows": [{column["key"]: row[column["key"]] for column in BACKEND_COLUMNS} for row in result["rows"]]}


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
    parser.add_argument("--backends", action="store_true", help="one row per backend and precision (needs --model)")
    parser.add_argument("--data", help="with --backends: the dataset folder, if not the run's own data.root")
    parser.add_argument("--table", default="backends", help="with --backends --publish: the table's name")
    benchkit.add_publish_argument(parser)
    args = parser.parse_args()
    if args.backends:
        if not args.model:
            parser.error("--backends needs --model RUN: a trained run, so masks and Dice mean something")
        result = backend_rows(args)
        print(json.dumps(result))
        if args.publish:
            benchkit.publish("predict", [backends_table(result, args.table)])
        return

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
        result = {
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
        }
        print(json.dumps(result))
        if args.publish:
            benchkit.publish("predict", [pipeline_table(result, args.memory_counts)])


if __name__ == "__main__":
    main()
