"""The benchmark scripts run from a clone and print one JSON line (tiny settings; speed is not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def write_summary(run: Path, dice: float, iou: float, wall_time_s: float) -> None:
    run.mkdir(parents=True)
    run.joinpath("summary.json").write_text(json.dumps(
        {"best_val_dice": dice, "best_val_iou": iou, "wall_time_s": wall_time_s, "best_epoch": 3}))


def test_bench_accuracy_reuses_finished_runs_and_pairs_seeds(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "isbi2012").mkdir(parents=True)
    runs = out / "cpu" / "isbi2012"
    write_summary(runs / "gan-seed0", 0.80, 0.66, 300)
    write_summary(runs / "gan-seed1", 0.78, 0.64, 310)
    write_summary(runs / "plain-seed0", 0.79, 0.65, 270)
    write_summary(runs / "plain-seed1", 0.78, 0.62, 280)

    result = run_script("bench_accuracy.py", "--datasets", "isbi2012", "--seeds", "0", "1",
                        "--data", str(data), "--out", str(out))

    summary = result["summary"]
    assert summary["isbi2012/gan"]["dice"] == {"mean": 0.79, "std": pytest.approx(0.0141, abs=1e-4), "n": 2}
    assert summary["isbi2012/plain"]["wall_time_s"]["mean"] == 275
    # Per-seed differences: dice +0.01 and 0.00, iou +0.01 and +0.02.
    assert summary["isbi2012/gan-minus-plain"]["dice"]["mean"] == pytest.approx(0.005)
    assert summary["isbi2012/gan-minus-plain"]["iou"]["mean"] == pytest.approx(0.015)
    assert len(result["runs"]) == 4
    assert json.loads((out / "cpu" / "results.json").read_text()) == result


def test_bench_accuracy_refuses_missing_data(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_accuracy.py"), "--datasets", "camvid",
                           "--data", str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0
    assert "camvid not found" in done.stderr


def test_bench_train_prints_ratio_memory_and_flops():
    result = run_script("bench_train.py", "--size", "64", "--batch-size", "2", "--steps", "1", "--rounds", "1",
                        "--d-channels", "8", "16")

    for name in ("gan_d8", "gan_d16"):
        assert result[f"{name}_ratio"] > 0
        assert result[f"{name}_images_per_s"] > 0
        assert result[f"{name}_peak_rss_mb"] > 100
    assert result["plain_peak_rss_mb"] > 100
    assert result["gan_default_ratio"] == result["gan_d16_ratio"]
    # Doubling every layer's width roughly quadruples the discriminator's convolutions.
    ratio = result["gan_d16_discriminator_forward_gflop_per_image"] / result["gan_d8_discriminator_forward_gflop_per_image"]
    assert 3 < ratio < 4.5
    assert 0 < result["plain_fraction_of_peak"] < 1.5
