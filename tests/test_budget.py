"""Training to a time budget, on a clock that the test drives: every training batch takes 10
"seconds" and every validation batch 1, whatever the machine's speed."""

from __future__ import annotations

import csv
import json
import math

import pytest

import segan.budget as budget
from segan.config import parse_duration
from segan.training import ResumeError, SeganModule, train

from conftest import tiny_config

STEP_S, VALIDATION_BATCH_S = 10.0, 1.0


@pytest.fixture
def test_clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])

    def timed(method, seconds):
        def run(self, *args, **kwargs):
            now[0] += seconds
            return method(self, *args, **kwargs)
        return run

    monkeypatch.setattr(SeganModule, "training_step", timed(SeganModule.training_step, STEP_S))
    monkeypatch.setattr(SeganModule, "validation_step", timed(SeganModule.validation_step, VALIDATION_BATCH_S))
    return now


def lr_per_epoch(run) -> dict[int, float]:
    with (run / "metrics.csv").open(newline="") as handle:
        return {int(row["epoch"]): float(row["lr/generator"]) for row in csv.DictReader(handle)
                if row.get("lr/generator")}


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1h30m", 5400), ("2.5h", 9000), ("90s", 90), ("45", 45),
                                           ("1h 5s", 3605)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0m", "", "30 minutes", "-5m"])
def test_durations_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_budgeted_run_fits_its_schedule_to_the_budget_and_resumes_with_a_larger_one(demo_root, tmp_path, test_clock):
    # 12 images in batches of 4: an epoch is 3 steps (30 s) and one validation batch (1 s); the
    # sanity check before training is one more validation batch. Budget 150 s, minus a reserve of
    # 1.5 validations for the final scoring: after epoch 1 (32 s spent) 116.5 s are left, 3 more
    # epochs of 31 s; after epoch 4 (125 s) 23.5 s: no fifth epoch.
    run = tmp_path / "run"
    config = tiny_config(demo_root, run, train={"time_budget": "150s", "epochs": 1, "lr": 1e-3})
    result = train(config)
    assert result.epochs == 4  # train.epochs (1) is not what decided
    lrs = lr_per_epoch(run)
    assert sorted(lrs) == [0, 1, 2, 3]
    for epoch, lr in lrs.items():  # the cosine ends with the budget: its end is epoch 4
        assert lr == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * epoch / 4)), rel=1e-6)
    spent = json.loads((run / "summary.json").read_text())["time_budget"]
    assert spent == {"budget_s": 150.0, "spent_s": 126.0, "spent_share": 0.84, "epochs": 4, "epoch_s": 31.0,
                     "startup_s": 1.0, "validation_s": 4.0, "training_s": 120.0, "after_training_s": 1.0,
                     "ended_by": "budget"}

    with pytest.raises(ResumeError, match="already spent 125 s of its 150 s"):
        train(config, resume=True)

    # A larger budget continues the run: 125 s were spent (the checkpoint of epoch 4), 200 s allow
    # 2 more epochs (125 + 1 sanity + 62 = 188; 200 - 188 - 1.5 leaves no third).
    longer = tiny_config(demo_root, run, train={"time_budget": "200s", "epochs": 1, "lr": 1e-3})
    result = train(longer, resume=True)
    assert result.epochs == 6
    assert result.time_budget["spent_s"] == 189.0
    lrs = lr_per_epoch(run)
    assert lrs[4] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 6)), rel=1e-6)
    assert lrs[5] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 6)), rel=1e-6)


def test_an_epoch_longer_than_the_budget_stops_inside_it(demo_root, tmp_path, test_clock):
    # 15 s: the budget ends in the second of the first epoch's three steps (after the 1 s sanity check).
    run = tmp_path / "run"
    result = train(tiny_config(demo_root, run, train={"time_budget": "15s", "epochs": 5}))
    assert result.steps == 2
    assert result.time_budget["ended_by"] == "budget, inside an epoch"
    assert (run / "generator" / "model.safetensors").is_file()  # validated and exported all the same


def validated_epochs(run) -> list[int]:
    with (run / "metrics.csv").open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val/iou")]


def test_an_epoch_cut_short_is_validated_whatever_the_cadence(demo_root, tmp_path, monkeypatch):
    # Steps take 10 s in epoch 0 and 40 s after it (the machine got busy). 100 s budget: after epoch
    # 0 (1 s sanity check, 30 s of steps, 1 s validating) 3 epochs are planned; epoch 1, which
    # validate_every 5 would not validate, is cut at its second step (112 s > 100 - 2.5 s kept back)
    # and validated all the same, so its weights can still become the best.
    now = [0.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    steps, validations = SeganModule.training_step, SeganModule.validation_step

    def training_step(self, *args):
        now[0] += 10.0 if self.current_epoch == 0 else 40.0
        return steps(self, *args)

    def validation_step(self, *args):
        now[0] += VALIDATION_BATCH_S
        return validations(self, *args)

    monkeypatch.setattr(SeganModule, "training_step", training_step)
    monkeypatch.setattr(SeganModule, "validation_step", validation_step)
    run = tmp_path / "run"
    result = train(tiny_config(demo_root, run, train={"time_budget": "100s", "validate_every": 5}))
    assert result.steps == 5
    assert result.time_budget["ended_by"] == "budget, inside an epoch"
    assert validated_epochs(run) == [0, 1]


def test_the_epoch_after_which_the_budget_ends_the_run_is_validated(demo_root, tmp_path, monkeypatch):
    # validate_every 10, 200 s: after epoch 0 (32 s with the sanity check) 5 more epochs of 30 s
    # (and a tenth of a 1 s validation) are planned. Epoch 3's steps take 25 s (the machine got
    # busy): at its last batch 167 s are spent and no epoch of the now 45 s estimate fits, so the
    # run ends after epoch 3, which the cadence would not have validated. It is validated, so its
    # weights (trained at the lowest learning rate) can become the best.
    now = [0.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    steps, validations = SeganModule.training_step, SeganModule.validation_step

    def training_step(self, *args):
        now[0] += 25.0 if self.current_epoch == 3 else 10.0
        return steps(self, *args)

    def validation_step(self, *args):
        now[0] += VALIDATION_BATCH_S
        return validations(self, *args)

    monkeypatch.setattr(SeganModule, "training_step", training_step)
    monkeypatch.setattr(SeganModule, "validation_step", validation_step)
    run = tmp_path / "run"
    result = train(tiny_config(demo_root, run, train={"time_budget": "200s", "validate_every": 10}))
    assert result.epochs == 4 and result.time_budget["ended_by"] == "budget"
    assert validated_epochs(run) == [0, 3]
