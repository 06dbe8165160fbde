import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from segan.cli import main

from conftest import shared_dataset


def test_data_demo_writes_layout(tmp_path, capsys):
    assert main(["data", "demo", str(tmp_path / "d"), "--n-train", "2", "--n-val", "1", "--size", "32"]) == 0
    assert len(list((tmp_path / "d" / "train" / "images").glob("*.png"))) == 2
    assert len(list((tmp_path / "d" / "validation" / "masks").glob("*.png"))) == 1


def test_train_on_a_missing_folder_exits_nonzero_with_a_message(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_bad_config_value_fails_before_training(tmp_path, capsys):
    data = tmp_path / "d"
    main(["data", "demo", str(data), "--n-train", "2", "--n-val", "1", "--size", "32"])
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--arch", "nonsense"])
    assert code == 2
    assert "nonsense" in capsys.readouterr().err


@pytest.mark.slow
def test_train_end_to_end_on_real_kvasir_subset(tmp_path):
    """A short run on a few real Kvasir-SEG images (JPEG images, noisy JPEG masks)."""
    kvasir = shared_dataset("kvasir-seg")
    subset = tmp_path / "kvasir"
    for split, count in (("train", 16), ("validation", 8)):
        for kind in ("images", "masks"):
            (subset / split / kind).mkdir(parents=True)
        for image in sorted((kvasir / split / "images").glob("*.jpg"))[:count]:
            for kind in ("images", "masks"):
                (subset / split / kind / image.name).symlink_to(kvasir / split / kind / image.name)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "segan", "train", "--data", str(subset), "--out", str(run),
                           "--size", "64", "--epochs", "2", "--batch-size", "4", "--num-workers", "1",
                           "--warmup-epochs", "1", "--accelerator", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 8
    assert 0.0 < summary["best_val_dice"] <= 1.0
    assert json.loads(done.stdout.strip().splitlines()[-1]) == summary


@pytest.mark.slow
def test_camvid_multiclass_train_predict_evaluate_from_the_cli(tmp_path):
    """11 classes with void = 11 ignored, {split}/ + {split}annot/ layout, recipe config, no code."""
    camvid = shared_dataset("camvid")
    subset = tmp_path / "camvid"
    for split, count in (("train", 8), ("val", 4)):
        for folder in (split, f"{split}annot"):
            (subset / folder).mkdir(parents=True)
        for image in sorted((camvid / split).glob("*.png"))[:count]:
            for folder in (split, f"{split}annot"):
                (subset / folder / image.name).symlink_to(camvid / folder / image.name)
    recipe = Path(__file__).resolve().parents[1] / "datasets" / "camvid" / "config.yaml"
    run, preds = tmp_path / "run", tmp_path / "preds"

    def segan(*args):
        done = subprocess.run([sys.executable, "-m", "segan", *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert segan("data", "check", str(subset), "--config", str(recipe), "--no-progress")["ok"]
    segan("train", "--config", str(recipe), "--data", str(subset), "--out", str(run), "--size", "64", "--epochs", "1",
          "--batch-size", "4", "--num-workers", "0", "--accelerator", "cpu")
    predicted = segan("predict", "--model", str(run), "--input", str(subset / "val"), "--output", str(preds),
                      "--no-progress")
    assert predicted["written"] == 4 and predicted["classes"][3] == "Road"
    scored = segan("evaluate", "--pred", str(preds), "--gt", str(subset / "valannot"), "--ignore-index", "11")
    metrics = json.loads((preds / "evaluation" / "metrics.json").read_text())
    assert list(metrics["per_class"]) == predicted["classes"]  # class names travel from the run to the report
    assert 0.0 <= scored["iou"] <= 1.0
    by_model = segan("evaluate", "--model", str(run), "--data", str(subset), "--out", str(tmp_path / "ev"))
    assert by_model["iou"] == pytest.approx(scored["iou"], abs=1e-9)
