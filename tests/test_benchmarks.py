"""The benchmark scripts run from a clone and print one JSON line (tiny settings; speed is not tested)."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml

from conftest import SHARED_DATA, shared_dataset, write
from segan.report import bootstrap_interval, verdict

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_here(name: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`python scripts/NAME ARGS`, run in this process: a fresh one spends seconds importing torch,
    Lightning and segan again. The scripts' own modules are imported anew each time (benchkit reads
    SEGAN_BENCH_RESULTS when imported); a SystemExit ends the run as it would end the process."""
    for loaded in [key for key, module in sys.modules.items()
                   if Path(getattr(module, "__file__", None) or "/").parent == SCRIPTS]:
        del sys.modules[loaded]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with mock.patch.object(sys, "argv", [str(SCRIPTS / name), *args]), \
            mock.patch.object(sys, "path", [str(SCRIPTS), *sys.path]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(str(SCRIPTS / name), run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
    done = subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())
    assert not check or code == 0, done.stderr[-3000:]
    return done


def run_script(name: str, *args: str) -> dict:
    """The one JSON line a benchmark script prints. bench_train runs as `python scripts/NAME`: its
    spawned pool imports the functions it runs from the script's own process."""
    if name == "bench_train.py":
        done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=300)
    else:
        done = run_here(name, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def write_summary(run: Path, dice: float, iou: float, wall_time_s: float) -> None:
    run.mkdir(parents=True)
    run.joinpath("summary.json").write_text(json.dumps(
        {"best_val_dice": dice, "best_val_iou": iou, "wall_time_s": wall_time_s, "best_epoch": 3}))


def write_native(run: Path, images: dict[str, tuple[float, float, float]]) -> None:
    """What `segan evaluate --model RUN --out RUN/native` leaves for bench_accuracy: image -> (Dice,
    HD95, clDice) of the foreground; the other structure figures undefined."""
    (run / "native").mkdir(parents=True)
    (run / "native" / "metrics.json").write_text(json.dumps({"per_class": {"background": {}, "foreground": {}}}))
    lines = ["name,iou,dice,hd95_foreground,cldice_foreground,nsd_foreground"]
    lines += [f"{name},{dice - 0.1},{dice},{hd95},{cldice}," for name, (dice, hd95, cldice) in images.items()]
    (run / "native" / "per_image.csv").write_text("\n".join(lines) + "\n")


def finished_lever_run(run: Path, iou: float, class_iou: dict[str, float]) -> None:
    """A bench_levers run folder as a finished one-hour run leaves it: summary and evaluation."""
    write_summary(run, iou, iou, 3600.0)
    summary = run / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "epochs": 30, "steps": 900}))
    (run / "evaluation").mkdir()
    (run / "evaluation" / "metrics.json").write_text(json.dumps({
        "headline": {"iou": iou, "dice": iou + 0.1},
        "per_class": {name: {"iou": value} for name, value in class_iou.items()}}))


def test_bench_accuracy_reuses_finished_runs_and_pairs_seeds(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "isbi2012").mkdir(parents=True)
    runs = out / "cpu" / "isbi2012"
    write_summary(runs / "gan-seed0", 0.80, 0.66, 300)
    write_summary(runs / "gan-seed1", 0.78, 0.64, 310)
    write_summary(runs / "plain-seed0", 0.79, 0.65, 270)
    write_summary(runs / "plain-seed1", 0.78, 0.62, 280)
    write_native(runs / "gan-seed0", {"a": (0.8, 2, 0.6), "b": (0.7, 4, 0.5)})
    write_native(runs / "gan-seed1", {"a": (0.8, 1, 0.7), "b": (0.7, 6, 0.4)})
    write_native(runs / "plain-seed0", {"a": (0.8, 3, 0.5), "b": (0.7, 4, 0.4)})
    write_native(runs / "plain-seed1", {"a": (0.8, 3, 0.6), "b": (0.7, 5, 0.3)})

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
    # At native size, per image: gan minus plain averaged over the two seeds, then over images.
    paired = {row["figure"]: row for row in result["native_paired"]}
    assert list(paired) == ["Dice", "IoU", "HD95 (px)", "clDice"]  # NSD is undefined everywhere
    hd95 = paired["HD95 (px)"]  # a: -1 and -2, b: 0 and +1
    assert (hd95["images"], hd95["plain"], hd95["mean"]) == (2, 3.75, 3.25)
    assert hd95["difference"] == pytest.approx(-0.5)
    low, high = bootstrap_interval(np.array([-1.5, 0.5]))
    assert hd95["interval"] == f"{low:+.4f} to {high:+.4f}"
    assert hd95["verdict"] == "not distinguishable" and hd95["per_seed"] == "-0.5000 / -0.5000"
    cldice = paired["clDice"]  # +0.1 on every image and seed: better at any level
    assert cldice["difference"] == pytest.approx(0.1) and cldice["verdict"] == cldice["adjusted_verdict"] == "better"
    # the adjusted verdict reads the interval at 1 - 0.05 / 4 (four figures tested)
    assert hd95["adjusted_verdict"] == verdict(bootstrap_interval(np.array([-1.5, 0.5]), level=1 - 0.05 / 4), True)
    assert paired["Dice"]["difference"] == 0 and paired["Dice"]["verdict"] == "not distinguishable"


def test_bench_accuracy_refuses_missing_data(tmp_path):
    done = run_here("bench_accuracy.py", "--datasets", "camvid", "--data", str(tmp_path), "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "camvid not found" in done.stderr


def test_bench_semi_pairs_rows_with_labeled_only_and_measures_the_gap_closed(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "kvasir-seg").mkdir(parents=True)
    runs = out / "cpu" / "kvasir-seg"
    for split, (alone, semi, ceiling) in enumerate([(0.70, 0.75, 0.80), (0.60, 0.62, 0.70)]):
        write_summary(runs / f"labeled-only-split{split}", alone, 0.5, 100)
        write_summary(runs / f"self-training-split{split}", semi, 0.5, 200)
        write_summary(runs / f"all-labels-split{split}", ceiling, 0.5, 90)
    for path in runs.glob("*/summary.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "steps": 192, "semi": None}))

    result = run_script("bench_semi.py", "--datasets", "kvasir-seg", "--splits", "0", "1", "--rows", "labeled-only",
                        "self-training", "all-labels", "--data", str(data), "--out", str(out))

    row = result["summary"]["kvasir-seg/self-training"]
    assert row["dice_minus_labeled_only"] == [0.05, 0.02]
    assert row["gap_closed"] == [0.5, 0.2]  # 0.05 of 0.10, 0.02 of 0.10
    assert result["summary"]["kvasir-seg/all-labels"]["dice"]["mean"] == 0.75
    assert json.loads((out / "cpu" / "results.json").read_text()) == result


def test_bench_levers_combines_the_levers_that_beat_the_recipe(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    # CamVid's published test split: one image and its mask
    write(data / "camvid" / "test" / "0001TP_008550.png", np.zeros((8, 8, 3)))
    write(data / "camvid" / "testannot" / "0001TP_008550.png", np.zeros((8, 8)))

    def finished(row: str, seed: int, iou: float, pole: float) -> None:
        finished_lever_run(out / "camvid" / f"{row}-seed{seed}", iou, {"Sky": 0.9, "Pole": pole})

    for row, iou, pole in (("recipe", 0.69, 0.075), ("class-weights", 0.71, 0.20), ("ohem", 0.68, 0.10),
                           ("rare-class", 0.70, 0.15), ("scale", 0.69, 0.07)):
        finished(row, 0, iou, pole)
    for seed, iou in enumerate((0.72, 0.74, 0.73)):
        finished("best", seed, iou, 0.25)
        (out / "camvid" / f"best-seed{seed}" / "evaluation-test").mkdir()
        (out / "camvid" / f"best-seed{seed}" / "evaluation-test" / "metrics.json").write_text(json.dumps(
            {"headline": {"iou": iou - 0.05, "dice": 0.0}, "per_class": {}}))

    result = run_script("bench_levers.py", "--datasets", "camvid", "--data", str(data), "--out", str(out))

    best = [run for run in result["runs"] if run["row"] == "best"]
    assert [run["levers"] for run in best] == [["class-weights", "rare-class"]] * 3  # scale only ties the recipe
    assert result["summary"]["camvid/best"] == {"iou": {"mean": 0.73, "std": 0.01, "n": 3},
                                                "test_iou": {"mean": 0.68, "std": 0.01, "n": 3},
                                                "iou_minus_recipe_seed0": 0.03}
    assert result["summary"]["camvid/ohem"]["iou_minus_recipe_seed0"] == -0.01
    assert best[0]["per_class_iou"] == {"Sky": 0.9, "Pole": 0.25}
    table = run_here("bench_levers.py", "--out", str(out), "--markdown", check=True).stdout
    assert "| row | seed | levers | mean IoU | − recipe | Sky | Pole | epochs | wall time | test mean IoU |" in table
    assert "| best | 0 | class-weights rare-class | 0.7200 | +0.0300 | 0.900 | 0.250 | 30 | 3600 s | 0.6700 |" in table
    assert "| ohem | 0 | ohem | 0.6800 | -0.0100 | 0.900 | 0.100 | 30 | 3600 s |  |" in table
    # A later session, whose weights/ lacks the lever rows, names the levers the archive found
    # (docs/benchmarks/archive.md).
    named = run_script("bench_levers.py", "--datasets", "camvid", "--rows", "best", "--best-levers", "ohem", "scale",
                       "--data", str(data), "--out", str(out))
    assert [run["levers"] for run in named["runs"]] == [["ohem", "scale"]] * 3
    # Data without a test split (../shared/data/camvid has train and val only): row best says so and is
    # scored on val alone, where it used to fail after its training hour.
    for folder in ("test", "testannot"):
        shutil.rmtree(data / "camvid" / folder)
    finished("best", 3, 0.75, 0.3)
    done = run_here("bench_levers.py", "--datasets", "camvid", "--rows", "best", "--best-levers", "--final-seeds", "3",
                    "--data", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"row best is scored on val only: {data / 'camvid'}: no split 'test' in the layout" in done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [(run["levers"], run["iou"], run["test_iou"]) for run in runs] == [([], 0.75, None)]

    # Multi-scale TTA re-scores finished runs on the same weights, from its own folder.
    (out / "camvid" / "recipe-seed0" / "evaluation" / "seconds.json").write_text('{"seconds": 20.0}')
    tta = out / "camvid" / "recipe-seed0" / "evaluation-tta-0.75-1-1.25"
    tta.mkdir()
    (tta / "metrics.json").write_text(json.dumps({"headline": {"iou": 0.705, "dice": 0.8},
                                                  "per_class": {"Sky": {"iou": 0.92}, "Pole": {"iou": 0.06}}}))
    (tta / "seconds.json").write_text('{"seconds": 95.0}')
    scored = run_script("bench_levers.py", "--datasets", "camvid", "--rows", "recipe", "--tta-scales", "0.75",
                        "1", "1.25", "--data", str(data), "--out", str(out))
    recipe = scored["runs"][0]
    assert (recipe["tta_iou"], recipe["tta_eval_s"], recipe["eval_s"]) == (0.705, 95.0, 20.0)
    assert recipe["tta_per_class_iou"] == {"Sky": 0.92, "Pole": 0.06}
    table = run_here("bench_levers.py", "--out", str(out), "--markdown", check=True).stdout
    assert "| recipe | 0 | 0.75 1 1.25 | 0.6900 | 0.7050 | +0.0150 | 0.920 | 0.060 | 20 s | 95 s |" in table


def test_bench_accuracy_publishes_the_docs_table(tmp_path, monkeypatch):
    data, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    (data / "isbi2012").mkdir(parents=True)
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(results))
    runs = out / "cpu" / "isbi2012"
    write_summary(runs / "gan-seed0", 0.80, 0.66, 300)
    write_summary(runs / "gan-seed1", 0.78, 0.64, 310)
    write_summary(runs / "plain-seed0", 0.79, 0.65, 270)
    write_summary(runs / "plain-seed1", 0.78, 0.62, 280)

    for run in ("gan-seed0", "gan-seed1", "plain-seed0", "plain-seed1"):
        write_native(runs / run, {"a": (0.8, 2, 0.6)})
    run_script("bench_accuracy.py", "--datasets", "isbi2012", "--seeds", "0", "1", "--data", str(data),
               "--out", str(out), "--publish")

    table, paired = json.loads((results / "accuracy.json").read_text())["tables"]
    assert paired["name"] == "cpu-structure" and [row["figure"] for row in paired["rows"]] == [
        "Dice", "IoU", "HD95 (px)", "clDice"]
    assert {column["key"] for column in paired["columns"]} == set(paired["rows"][0])
    assert table["name"] == "cpu" and table["command"].startswith("python scripts/bench_accuracy.py --datasets")
    gan, plain = table["rows"]
    assert (gan["dataset"], gan["config"], gan["dice"], gan["best_epochs"]) == ("isbi2012", "gan", 0.79, "3 / 3")
    assert gan["minus_plain_dice"] == pytest.approx(0.005) and gan["minus_plain_iou"] == pytest.approx(0.015)
    assert gan["wall_time_vs_plain"] == round(305 / 275, 2)
    assert plain["minus_plain_dice"] is None and plain["wall_time_vs_plain"] is None
    assert {column["key"] for column in table["columns"]} == set(gan)


def test_bench_semi_publishes_one_docs_table_per_dataset(tmp_path, monkeypatch):
    data, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    (data / "kvasir-seg").mkdir(parents=True)
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(results))
    runs = out / "cpu" / "kvasir-seg"
    for split, (alone, semi, ceiling) in enumerate([(0.70, 0.75, 0.80), (0.60, 0.62, 0.70)]):
        for row, dice in (("labeled-only", alone), ("self-training", semi), ("all-labels", ceiling)):
            write_summary(runs / f"{row}-split{split}", dice, 0.5, 100)
            path = runs / f"{row}-split{split}" / "summary.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "steps": 576, "semi": {
                "pseudo_share": 0.9, "pseudo_precision": 0.97} if row == "self-training" else None}))

    run_script("bench_semi.py", "--datasets", "kvasir-seg", "--splits", "0", "1", "--rows", "labeled-only",
               "self-training", "all-labels", "--data", str(data), "--out", str(out), "--publish")

    [table] = json.loads((results / "semi.json").read_text())["tables"]
    assert table["name"] == "cpu-kvasir-seg" and table["command"].startswith("python scripts/bench_semi.py")
    assert [row["row"] for row in table["rows"]] == ["labeled-only", "self-training", "all-labels"]
    assert table["rows"][1] == {"row": "self-training", "split0": 0.75, "split1": 0.62, "mean": 0.685,
                                "minus_labeled_only": "+0.0500, +0.0200", "gap_closed": "0.50, 0.20",
                                "pseudo_share": 0.9, "pseudo_precision": 0.97, "wall_time_s": 100}
    assert {column["key"] for column in table["columns"]} == set(table["rows"][1])
    markdown = run_here("bench_semi.py", "--out", str(out), "--markdown", check=True).stdout
    assert ("| self-training | 0.7500 | 0.6200 | 0.6850 | +0.0500, +0.0200 | 0.50, 0.20 | 0.90 / 0.970 | 100 s |"
            in markdown)


def test_bench_plan_reads_finished_runs_and_their_budgets(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "kvasir-seg").mkdir(parents=True)
    for row, dice, spent in (("plan", 0.90, 1790.0), ("hand", 0.88, 1770.0), ("plan-seed1", 0.91, 1780.0)):
        write_summary(out / "kvasir-seg" / row, dice, dice - 0.1, spent - 20)
        summary = out / "kvasir-seg" / row / "summary.json"
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "epochs": 40, "steps": 4000, "time_budget": {
            "budget_s": 1800.0, "spent_s": spent, "spent_share": round(spent / 1800, 3)}}))
        (out / "kvasir-seg" / row / "config.yaml").write_text("train:\n  time_budget: 30m\n")
        (out / "kvasir-seg" / row / "evaluation").mkdir()
        (out / "kvasir-seg" / row / "evaluation" / "metrics.json").write_text(json.dumps(
            {"headline": {"iou": dice - 0.09, "dice": dice + 0.002}}))

    result = run_script("bench_plan.py", "--datasets", "kvasir-seg", "--data", str(data), "--out", str(out))

    assert [(run["row"], run["dice"], run["native_dice"], run["time_budget"]["spent_share"])
            for run in result["runs"]] == [("plan", 0.90, 0.902, 0.994), ("hand", 0.88, 0.882, 0.983)]
    table = run_here("bench_plan.py", "--out", str(out), "--markdown", check=True).stdout
    assert "| kvasir-seg | plan | 1800 s | 1790 s | 0.994 | 40 | 4000 | 0.9000 | 0.8000 | 0.9020 | 0.8100 |" in table

    # Flip TTA re-scores the plan's finished run from its own folder; the hand row was not scored with it.
    (out / "kvasir-seg" / "plan" / "evaluation" / "seconds.json").write_text('{"seconds": 11.0}')
    tta = out / "kvasir-seg" / "plan" / "evaluation-tta-1"
    tta.mkdir()
    (tta / "metrics.json").write_text(json.dumps({"headline": {"iou": 0.8193, "dice": 0.9007}}))
    (tta / "seconds.json").write_text('{"seconds": 19.0}')
    scored = run_script("bench_plan.py", "--datasets", "kvasir-seg", "--rows", "plan", "--tta-scales", "1",
                        "--data", str(data), "--out", str(out))
    plan = scored["runs"][0]
    assert (plan["native_tta_dice"], plan["native_tta_iou"], plan["eval_s"], plan["tta_eval_s"]) == (
        0.9007, 0.8193, 11.0, 19.0)
    table = run_here("bench_plan.py", "--out", str(out), "--markdown", check=True).stdout
    assert "| 0.9000 | 0.8000 | 0.9020 | 0.8100 | 0.9007 | 0.8193 | 11 s | 19 s |" in table

    # Another seed of the same plan is its own run folder, named in the table.
    seeded = run_script("bench_plan.py", "--datasets", "kvasir-seg", "--rows", "plan", "--seeds", "0", "1",
                        "--data", str(data), "--out", str(out))
    assert [(run["seed"], run["dice"]) for run in seeded["runs"]] == [(0, 0.90), (1, 0.91)]
    table = run_here("bench_plan.py", "--out", str(out), "--markdown", check=True).stdout
    assert "| kvasir-seg | plan seed 1 | 1800 s | 1780 s | 0.989 | 40 | 4000 | 0.9100 |" in table


def import_script(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(SCRIPTS))


def test_bench_levers_finds_the_test_split_by_segans_layout_rule(tmp_path):
    bench_levers = import_script("bench_levers")
    camvid = tmp_path / "camvid"
    write(camvid / "test" / "0001TP_008550.png", np.zeros((8, 8, 3)))
    # A test/ folder segan evaluate cannot use is reported with segan's reason, not taken for a split.
    assert bench_levers.missing_split("camvid", tmp_path, "test") == f"folder not found: {camvid / 'testannot'}"
    write(camvid / "testannot" / "0001TP_008550.png", np.zeros((8, 8)))
    assert bench_levers.missing_split("camvid", tmp_path, "test") is None
    assert bench_levers.missing_split("camvid", tmp_path, "holdout") == (
        f"{camvid}: no split 'holdout' in the layout (images {{split}}/, masks {{split}}annot/)")


def test_bench_levers_publishes_the_docs_tables(tmp_path, monkeypatch):
    data, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    (data / "camvid").mkdir(parents=True)  # no test split: row best is scored on val alone
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(results))
    classes = ("Sky", "Pole", "SignSymbol", "Fence", "Pedestrian", "Bicyclist")
    for row, seed, iou in (("recipe", 0, 0.70), ("class-weights", 0, 0.68), ("best", 0, 0.72), ("best", 1, 0.74)):
        finished_lever_run(out / "camvid" / f"{row}-seed{seed}", iou, {name: iou / 2 for name in classes})

    run_script("bench_levers.py", "--datasets", "camvid", "--rows", "recipe", "class-weights", "best", "--best-levers",
               "--final-seeds", "0", "1", "--data", str(data), "--out", str(out), "--publish")

    tables = {table["name"]: table for table in json.loads((results / "levers.json").read_text())["tables"]}
    assert list(tables) == ["camvid-1h", "camvid-best-1h"]
    levers, best = tables["camvid-1h"], tables["camvid-best-1h"]
    assert [column["label"] for column in levers["columns"]] == [
        "row", "seed", "mean IoU", "− recipe", "with TTA", "Pole", "SignSymbol", "Fence", "Pedestrian", "Bicyclist",
        "epochs", "wall time"]
    assert levers["rows"][1] == {"row": "class-weights", "seed": 0, "iou": 0.68, "minus_recipe": -0.02,
                                 "tta_iou": None, "Pole": 0.34, "SignSymbol": 0.34, "Fence": 0.34,
                                 "Pedestrian": 0.34, "Bicyclist": 0.34, "epochs": 30, "wall_time_s": 3600.0}
    assert [(row["seed"], row["levers"], row["iou"], row["Pole"]) for row in best["rows"]] == [
        (0, "-", 0.72, 0.36), (1, "-", 0.74, 0.37), ("mean", None, 0.73, 0.365), ("sd", None, 0.0141, 0.0071)]
    assert best["command"].startswith("python scripts/bench_levers.py --datasets camvid") and best["date"]


def test_bench_plan_publishes_one_docs_table_per_dataset(tmp_path, monkeypatch):
    data, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    (data / "kvasir-seg").mkdir(parents=True)
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(results))
    for row, seed, dice, steps in (("plan", 0, 0.88, 2100), ("plan", 1, 0.90, 2300),
                                   ("plan+decoder128", 0, 0.89, 2600), ("plan+decoder128", 1, 0.91, 2400)):
        run = out / "kvasir-seg" / (row if seed == 0 else f"{row}-seed{seed}")
        write_summary(run, dice, dice - 0.1, 1750.0)
        summary = run / "summary.json"
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "epochs": steps // 100, "steps": steps,
                                       "time_budget": {"validation_s": 100.0 * (seed + 1), "training_s": 1000.0}}))
        (run / "config.yaml").write_text("train:\n  time_budget: 30m\n")
        for folder, score in (("evaluation", dice), ("evaluation-tta-1", dice + 0.01)):
            (run / folder).mkdir()
            (run / folder / "metrics.json").write_text(json.dumps({"headline": {"iou": score - 0.1, "dice": score}}))

    run_script("bench_plan.py", "--datasets", "kvasir-seg", "--rows", "plan", "plan+decoder128", "--seeds", "0", "1",
               "--tta-scales", "1", "--data", str(data), "--out", str(out), "--publish")

    [table] = json.loads((results / "plan.json").read_text())["tables"]
    assert table["name"] == "kvasir-seg" and table["command"].startswith("python scripts/bench_plan.py")
    assert [column["key"] for column in table["columns"]] == [
        "row", "date", "machine", "seeds", "steps", "validating", "score", "sd", "tta", "plan", "plan_tta"]
    keys = ("row", "seeds", "steps", "validating", "score", "sd", "tta", "plan", "plan_tta")
    assert [{key: row[key] for key in keys} for row in table["rows"]] == [
        {"row": "plan", "seeds": "0, 1", "steps": "2,100-2,300", "validating": 0.15, "score": 0.89, "sd": 0.0141,
         "tta": 0.9, "plan": None, "plan_tta": None},
        {"row": "plan+decoder128", "seeds": "0, 1", "steps": "2,400-2,600", "validating": 0.15, "score": 0.9,
         "sd": 0.0141, "tta": 0.91, "plan": 0.89, "plan_tta": 0.9}]


def test_bench_plan_lever_rows_change_only_their_keys_of_the_plan(tmp_path):
    bench_plan = import_script("bench_plan")
    from segan.config import Config

    plan = tmp_path / "plan.yaml"
    plan.write_text("# reasons\ndata:\n  size: 288\n  augment: medium\n"
                    "generator:\n  encoder_name: tu-efficientnet_lite0\n"
                    "loss:\n  terms:\n    dice: 1.0\n    ce: 1.0\n  adv_weight: 0.05\n"
                    "train:\n  time_budget: 30m\n  epochs: 14\n  batch_size: 8\n")
    # Each row's settings that differ from the plan's, as dotted keys: a lever's terms replace the
    # plan's rather than join them, and nothing else moves.
    expected = {"plan+ema": {"train.ema_decay": 0.999},
                "plan+lite1": {"generator.encoder_name": "tu-efficientnet_lite1"},
                "plan+lr3e-4": {"train.lr": 3e-4},
                "plan+lovasz": {"loss.terms": {"ce": 1.0, "lovasz": 1.0}},
                "plan+fpn": {"generator.arch": "fpn"},  # and smp's decoder width, which this plan has
                "plan+gan": {"loss.adv_weight": 0.01},
                "plan+batch4": {"train.batch_size": 4},
                "plan+light": {"data.augment": "light"},
                "plan+heavy": {"data.augment": "heavy"},
                "plan+unetplusplus": {"generator.arch": "unetplusplus"},
                "plan+val-native": {"data.val_native": True},
                "plan+wd1e-4": {"train.weight_decay": 1e-4},
                "plan+size192": {"data.size": 192},
                "plan+decoder128": {"generator.decoder_width": 128},
                "plan+decoder256": {},
                "plan+validate-every-epoch": {}}  # this plan validates every epoch already
    assert set(expected) == set(bench_plan.LEVERS)

    planned = Config.load(plan).flat()
    assert (planned["data.size"], planned["train.time_budget"], planned["train.epochs"]) == (288, "30m", 14)
    for row, changes in expected.items():
        lever = Config.load(bench_plan.with_lever(plan, bench_plan.LEVERS[row], tmp_path / f"{row}.yaml")).flat()
        assert {key: value for key, value in lever.items() if value != planned[key]} == changes, row
    # A plan that resized halves the U-Net decoder: each architecture lever still loads, at smp's width.
    halved = yaml.safe_load(plan.read_text())
    halved["generator"]["decoder_width"] = 128
    plan.write_text(yaml.safe_dump(halved))
    for row, arch, width in (("plan+fpn", "fpn", 256), ("plan+unetplusplus", "unetplusplus", 256),
                             ("plan+decoder256", "unet", 256), ("plan+decoder128", "unet", 128)):
        lever = Config.load(bench_plan.with_lever(plan, bench_plan.LEVERS[row], tmp_path / f"{row}.yaml"))
        assert (lever.generator.arch.lower(), lever.generator.decoder_width) == (arch, width), row
    # A plan that validates every 5th epoch: the lever validates every one.
    halved["train"]["validate_every"] = 5
    plan.write_text(yaml.safe_dump(halved))
    lever = Config.load(bench_plan.with_lever(plan, bench_plan.LEVERS["plan+validate-every-epoch"], tmp_path / "v.yaml"))
    assert lever.train.validate_every == 1


def patchgan_forward_flop(size: int, base: int, image_channels: int = 3, mask_channels: int = 1) -> int:
    """FLOPs of the default PatchGAN (3 stride-2 layers, then a stride-1 layer and the 1-channel head,
    all 4x4 with padding 1) on one size x size image: 2 x in x out x 16 per output pixel (torch's
    FLOP counter leaves biases and activations out)."""
    layers = [(image_channels + mask_channels, base, 2), (base, 2 * base, 2), (2 * base, 4 * base, 2),
              (4 * base, 8 * base, 1), (8 * base, 1, 1)]
    total, side = 0, size
    for c_in, c_out, stride in layers:
        side = (side + 2 - 4) // stride + 1
        total += 2 * c_in * c_out * 16 * side * side
    return total


@pytest.mark.heavy(30)
def test_bench_train_prints_its_keys_and_the_flop_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(tmp_path))
    # One discriminator width and one precision: each configuration costs a fresh process (for its
    # peak memory). The precision table's columns are checked below, from a result of two.
    result = run_script("bench_train.py", "--size", "64", "--batch-size", "2", "--steps", "1", "--rounds", "1",
                        "--d-channels", "16", "--precisions", "32-true", "--publish")

    per_d = ("step_s", "ratio", "images_per_s", "peak_rss_mb", "discriminator_forward_gflop_per_image")
    assert set(result) == {
        "benchmark", "device", "cores", "torch_threads", "cpu", "encoder", "image_size", "batch_size", "steps",
        "rounds", "plain_step_s", "plain_images_per_s", "plain_peak_rss_mb", "generator_forward_gflop_per_image",
        "plain_achieved_gflop_per_s", "matmul_peak_gflop_per_s", "plain_fraction_of_peak", "default_d_channels",
        "gan_default_ratio", "precision", *(f"gan_d16_{key}" for key in per_d), "plain_v0.1_step_s",
        "gan_d16_v0.1_step_s"}
    assert (result["benchmark"], result["encoder"], result["image_size"], result["batch_size"]) == (
        "train_step", "resnet18", 64, 2)
    assert result["default_d_channels"] == 16 and result["gan_default_ratio"] == result["gan_d16_ratio"]
    assert result["precision"] == "32-true"
    # FLOPs are counted, not timed, so they are exact: by hand for the discriminators; the resnet18
    # U-Net generator is 0.6748 GFLOP at 64 px by torch's counter (6.07 at 192 px).
    assert patchgan_forward_flop(64, 8) == 6_430_720 and patchgan_forward_flop(64, 16) == 23_478_272
    assert result["gan_d16_discriminator_forward_gflop_per_image"] == round(patchgan_forward_flop(64, 16) / 1e9, 4)
    assert result["generator_forward_gflop_per_image"] == 0.67
    # The fraction of peak is derived from the two figures beside it (their values are timings).
    assert result["plain_fraction_of_peak"] == round(
        result["plain_achieved_gflop_per_s"] / result["matmul_peak_gflop_per_s"], 3)

    # --publish writes the docs' table from the same figures (one precision: no precision table).
    [discriminator] = json.loads((tmp_path / "train.json").read_text())["tables"]
    assert discriminator["name"] == "discriminator"
    assert [row["configuration"] for row in discriminator["rows"]] == ["plain (adv_weight 0)",
                                                                        "GAN, D base 16 (default)"]
    assert discriminator["rows"][1]["ratio"] == result["gan_d16_ratio"]
    assert discriminator["command"] == ("python scripts/bench_train.py --size 64 --batch-size 2 --steps 1 --rounds 1 "
                                        "--d-channels 16 --precisions 32-true")  # the command that measures


def test_bench_train_precision_table_has_a_column_pair_per_precision():
    """With a second precision, bench_train's JSON line gains its figures (NAME_PRECISION_*) and
    --publish a table of the plain and default GAN steps in each precision."""
    sys.path.insert(0, str(SCRIPTS))
    import bench_train
    result = {"default_d_channels": 16, "batch_size": 2, "plain_step_s": 0.2, "plain_images_per_s": 10.0,
              "plain_peak_rss_mb": 900.0, "gan_d16_step_s": 0.25, "gan_d16_images_per_s": 8.0, "gan_d16_ratio": 1.25,
              "gan_d16_peak_rss_mb": 910.0, "gan_d16_discriminator_forward_gflop_per_image": 0.0235}
    for name, step_s in (("plain", 0.1), ("gan_d16", 0.15)):
        result.update({f"{name}_bf16-mixed_step_s": step_s, f"{name}_bf16-mixed_peak_rss_mb": 800.0,
                       f"{name}_bf16-mixed_speedup_vs_32-true": round(result[f"{name}_step_s"] / step_s, 3)})
    result["gan_default_ratio_bf16-mixed"] = 1.5
    discriminator, precision = bench_train.published_tables(result, [16], ["32-true", "bf16-mixed"])
    assert discriminator["name"] == "discriminator" and precision["name"] == "precision"
    assert [column["key"] for column in precision["columns"]] == [
        "configuration", "step_s_32-true", "step_s_bf16-mixed", "speedup_bf16-mixed", "peak_rss_mb_32-true",
        "peak_rss_mb_bf16-mixed"]
    assert precision["rows"] == [
        {"configuration": "plain (adv_weight 0)", "step_s_32-true": 0.2, "step_s_bf16-mixed": 0.1,
         "speedup_bf16-mixed": 2.0, "peak_rss_mb_32-true": 900.0, "peak_rss_mb_bf16-mixed": 800.0},
        {"configuration": "GAN, D base 16 (default)", "step_s_32-true": 0.25, "step_s_bf16-mixed": 0.15,
         "speedup_bf16-mixed": 1.667, "peak_rss_mb_32-true": 910.0, "peak_rss_mb_bf16-mixed": 800.0},
        {"configuration": "GAN step / plain step", "step_s_32-true": 1.25, "step_s_bf16-mixed": 1.5,
         "speedup_bf16-mixed": None, "peak_rss_mb_32-true": None, "peak_rss_mb_bf16-mixed": None}]


@pytest.mark.heavy(20)
def test_bench_threads_runs_each_setting_in_its_own_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(tmp_path))
    # OMP_NUM_THREADS reaches the fresh process (OpenMP reads it once, at start), alone and loaded.
    result = run_script("bench_threads.py", "--settings", "one-thread", "--steps", "1", "--rounds", "1",
                        "--busy", "1", "--publish")
    assert set(result) == {"benchmark", "cores", "cpu", "steps", "rounds", "busy_processes", "one-thread_threads",
                           "one-thread_alone_step_s", "one-thread_loaded_step_s", "one-thread_loaded_slowdown"}
    assert (result["benchmark"], result["one-thread_threads"], result["busy_processes"]) == ("threads", 1, 1)
    assert result["one-thread_loaded_slowdown"] == round(
        result["one-thread_loaded_step_s"] / result["one-thread_alone_step_s"], 2)
    # --publish writes the docs' table: a row per setting run, blank where a figure needs the default.
    [table] = json.loads((tmp_path / "threads.json").read_text())["tables"]
    assert table["name"] == "busy-cpu"
    assert table["rows"] == [{"setting": "`OMP_NUM_THREADS=1`", "threads": 1,
                              "alone_step_s": result["one-thread_alone_step_s"],
                              "loaded_step_s": result["one-thread_loaded_step_s"],
                              "loaded_slowdown": result["one-thread_loaded_slowdown"], "alone_vs_default": None}]


def test_bench_predict_tables_are_the_published_shape():
    """The two tables `--publish` writes, from a result of each kind (the script itself is timing
    work: its figures come from a run, its tables from these functions)."""
    sys.path.insert(0, str(SCRIPTS))
    import bench_predict
    result = {"model": "untrained unet/resnet18", "images": 4, "image_size": 32, "forward_only_images_per_s": 50.0,
              "predict_folder_images_per_s": 40.0, "throughput_ratio": 0.8, "peak_rss_mb_2": 500.0,
              "peak_rss_mb_4": 510.0, "memory_ratio": 1.02}
    table = bench_predict.pipeline_table(result, (2, 4))
    assert table["name"] == "pipeline" and table["rows"] == [
        {"model": "untrained unet/resnet18", "images": "4 of 32 px", "forward_only_images_per_s": 50.0,
         "predict_folder_images_per_s": 40.0, "throughput_ratio": 0.8, "peak_rss_mb_2": 500.0,
         "peak_rss_mb_4": 510.0, "memory_ratio": 1.02}]
    assert [column["key"] for column in table["columns"]] == list(table["rows"][0])
    row = {"row": "openvino bf16", "images_per_s": 60.0, "ratio_to_v0.1": 4.0, "ratio_to_openvino_fp32": 1.5,
           "mask_agreement_with_v0.1": 0.999, "dice": 0.9, "dice_change": -0.001, "seconds": 3.0}
    backends = bench_predict.backends_table({"rows": [row]})
    assert backends["name"] == "backends"
    assert backends["rows"] == [{key: value for key, value in row.items() if key != "seconds"}]


def test_bench_data_publishes_its_tables(tmp_path, monkeypatch):
    shared_dataset("kvasir-seg"), shared_dataset("camvid")  # skips without the real masks
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(tmp_path))
    result = run_script("bench_data.py", "--data", str(SHARED_DATA), "--masks", "3", "--repeats", "1", "--publish")

    encodings, sample = json.loads((tmp_path / "data.json").read_text())["tables"]
    assert [row["encoding"] for row in encodings["rows"]] == [row["encoding"] for row in result["encodings"]]
    assert encodings["rows"][4] == {key: value for key, value in result["encodings"][4].items() if key != "masks"}
    assert encodings["rows"][4]["encoding"] == "RGB colour table, 11 colours + a void colour"
    assert sample["rows"][0]["ms"] == result["kvasir_sample_192px_ms"]


def test_bench_metrics_times_scoring_and_a_whole_evaluate_with_and_without_structure(tmp_path, monkeypatch):
    from conftest import make_run
    from segan.config import Config, merge

    camvid = yaml.safe_load((SCRIPTS.parent / "datasets" / "camvid" / "config.yaml").read_text())["data"]
    rng = np.random.default_rng(0)
    for split, name in (("val", "a"), ("val", "b"), ("val", "c"), ("train", "d")):
        write(tmp_path / "data" / "camvid" / split / f"{name}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        write(tmp_path / "data" / "camvid" / f"{split}annot" / f"{name}.png", rng.integers(0, 12, (48, 64), dtype=np.uint8))
    run = make_run(tmp_path / "run", classes=camvid["classes"], resize="resize", size=64)
    merge(Config.load(run / "config.yaml"), {"data": {key: camvid[key] for key in (
        "train_split", "val_split", "image_dir", "mask_dir", "ignore_index")}}).save(run / "config.yaml")
    monkeypatch.setenv("SEGAN_BENCH_RESULTS", str(tmp_path / "results"))

    result = run_script("bench_metrics.py", "--data", str(tmp_path / "data"), "--rounds", "1", "--model", str(run),
                        "--publish")

    assert result["images"] == 3
    assert [row["row"] for row in result["rows"]] == ["overlap only (`--metrics none`)", "default families",
                                                      "every family"]
    assert [row["row"] for row in result["model_rows"]] == ["segan evaluate --model, `--metrics none`",
                                                            "segan evaluate --model, default families"]
    assert result["rows"][0]["vs_overlap"] == result["model_rows"][0]["vs_overlap"] == 1.0
    scoring, whole = json.loads((tmp_path / "results" / "metrics.json").read_text())["tables"]
    assert (scoring["name"], scoring["rows"], whole["name"], whole["rows"]) == (
        "camvid-val", result["rows"], "camvid-val-model", result["model_rows"])


def test_bench_accuracy_scores_a_run_at_native_size_through_segan_evaluate(tmp_path):
    """score_native's real path: `segan evaluate --model RUN` with the structure families, read back."""
    from conftest import make_run
    from segan.config import Config, merge
    from segan.data import make_demo_dataset
    sys.path.insert(0, str(SCRIPTS))
    import bench_accuracy
    data = make_demo_dataset(tmp_path / "data", n_train=2, n_val=3, size=48, seed=1)
    run = make_run(tmp_path / "run", resize="resize", size=64)
    merge(Config.load(run / "config.yaml"), {"data": {"root": str(data)}}).save(run / "config.yaml")

    images = bench_accuracy.score_native("isbi2012", run, "cpu")  # isbi2012: the regions family too

    evaluated = {row["name"]: row for row in csv_rows(run / "native" / "per_image.csv")}
    assert sorted(images) == sorted(evaluated) and len(images) == 3
    for name, figures in images.items():
        assert list(figures) == ["dice", "iou", "hd", "hd95", "assd", "nsd", "boundary_f1", "boundary_iou", "cldice",
                                 "betti0_error", "betti1_error", "rand_error", "vi"]
        assert figures["dice"] == float(evaluated[name]["dice"])
        assert figures["vi"] == (float(evaluated[name]["vi_foreground"]) if evaluated[name]["vi_foreground"] else None)


def csv_rows(path: Path) -> list[dict]:
    import csv
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_bench_synth_pairs_each_row_with_labeled_only_and_the_gap_to_all_labels():
    """bench_synth's tables, from the figures its runs record: per split, a row's report Dice minus
    labelled-only's, and the share of the gap to all-labels (one run, shared by the splits) closed."""
    sys.path.insert(0, str(SCRIPTS))
    import bench_synth

    def run(row: str, split: int, report: float, charged: float = 0.0) -> dict:
        return {"setup": "kvasir-seg-25", "row": row, "split": split, "charged_s": charged, "steps": 900,
                "val_dice": report - 0.01, "report_dice": report, "report_dice_per_image": report - 0.02}
    runs = [run("labeled-only", 0, 0.70), run("synthetic", 0, 0.75, 180.0), run("all-labels", 0, 0.80),
            run("labeled-only", 1, 0.60), run("synthetic", 1, 0.58, 170.0), run("all-labels", 1, 0.80)]
    generators = [{"name": "kvasir-seg-25, split 0", "setup": "kvasir-seg-25", "steps": 300, "train_s": 150.0, "best_val_l1": 0.31,
                   "deformed": {"median_ssim": 0.41, "copies": 2, "images": 400},
                   "undeformed": {"median_ssim": 0.62, "copies": 30, "images": 400}},
                  {"name": "kvasir-seg-25, split 1", "setup": "kvasir-seg-25", "steps": 310, "train_s": 151.0,
                   "val_l1": 0.35, "best_val_l1": 0.30,  # recorded since the last network draws: its L1 is shown
                   "deformed": {"median_ssim": 0.40, "copies": 0, "images": 400},
                   "undeformed": {"median_ssim": 0.60, "copies": 0, "images": 400}}]
    setup, drawers = bench_synth.tables(runs, generators)
    assert setup["name"] == "kvasir-seg-25" and [row["row"] for row in setup["rows"]] == [
        "labeled-only", "synthetic", "all-labels"]
    synthetic = setup["rows"][1]
    assert (synthetic["report_split0"], synthetic["report_split1"]) == (0.75, 0.58)
    assert synthetic["minus_labeled_only"] == "+0.0500, -0.0200"
    assert synthetic["gap_closed"] == "0.50, -0.10"  # 0.05 of 0.10; -0.02 of 0.20
    assert synthetic["charged_s"] == 175.0 and synthetic["report_dice"] == pytest.approx(0.665)
    assert setup["rows"][0]["gap_closed"] is None and setup["rows"][2]["minus_labeled_only"] == "+0.1000, +0.2000"
    assert bench_synth.gap_share(0.75, 0.84, 0.83) == "no gap"  # all-labels below labelled-only
    assert drawers["name"] == "kvasir-seg-25-generators"  # publishing another setup keeps this one
    assert drawers["rows"] == [{"generator": "kvasir-seg-25, split 0", "steps": 300, "train_s": 150.0,
                                "val_l1": 0.31, "median_ssim": 0.41, "copies": "2 of 400",
                                "copies_undeformed": "30 of 400"},
                               {"generator": "kvasir-seg-25, split 1", "steps": 310, "train_s": 151.0,
                                "val_l1": 0.35, "median_ssim": 0.40, "copies": "0 of 400",
                                "copies_undeformed": "0 of 400"}]


def test_bench_synth_adds_the_structure_scores_of_a_setup_that_names_them():
    """ISBI 2012 (membranes) is also scored by adapted Rand error and clDice, means over the splits."""
    sys.path.insert(0, str(SCRIPTS))
    import bench_synth

    runs = [{"setup": "isbi2012-3", "row": "labeled-only", "split": split, "charged_s": 0.0, "steps": 200,
             "val_dice": 0.8, "report_dice": 0.8, "report_dice_per_image": 0.8,
             "report_rand_error": rand, "report_cldice": cldice} for split, rand, cldice in ((0, 0.5, 0.7), (1, 0.3, 0.8))]
    table, _ = bench_synth.tables(runs, [])
    assert [c["label"] for c in table["columns"] if c["key"].startswith("report_") and "split" not in c["key"]] == [
        "report Dice (mean)", "report adapted Rand error (mean)", "report clDice (mean)"]
    assert (table["rows"][0]["report_rand_error"], table["rows"][0]["report_cldice"]) == (0.4, 0.75)
