"""Mask-to-image synthesis: new masks from the training masks, the memorisation check, `segan synth
train` (resume, files) and `segan synth sample`."""

import csv
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segan.checkpointing import load_checkpoint
from segan.cli import main
from segan.config import Config
from segan.data import EpochSampler, make_demo_dataset
from segan.data.synthetic import MixedBatchSampler, batch_make_up
from segan.synthesis.masks import MaskDeformer
from segan.synthesis.memorisation import nearest_training
from segan.synthesis.sampling import training_pairs_at_size
from segan.synthesis.masks import fingerprint

from conftest import smooth_image, tiny_config


def disk_masks(count: int = 4, side: int = 64) -> dict[str, np.ndarray]:
    masks = {}
    for index in range(count):
        mask = np.zeros((side, side), np.uint8)
        cv2.circle(mask, (20 + 6 * index, 30), 8 + index, 1, -1)
        cv2.rectangle(mask, (40, 40 + index), (55, 58), 2, -1)
        masks[f"m{index}"] = mask
    return masks


def test_no_drawn_mask_is_a_training_mask_and_each_draw_is_recorded():
    masks = disk_masks()
    known = {fingerprint(mask) for mask in masks.values()}
    deformer = MaskDeformer(masks, rotations=False, seed=0)
    drawn = [deformer.draw() for _ in range(40)]
    assert all(fingerprint(item.mask) not in known for item in drawn)
    assert all(item.mask.shape == (64, 64) and set(np.unique(item.mask)) <= {0, 1, 2} for item in drawn)
    records = json.loads(json.dumps([item.record() for item in drawn]))  # plain JSON for the manifest
    names = {transform["name"] for record in records for transform in record["transforms"]}
    assert "Affine" in names and not names & {"VerticalFlip", "RandomRotate90"}  # rotations: false
    pasted = [record["pasted"] for record in records if record["pasted"]]
    assert pasted and all(record["pasted"]["from"] != record["source"] for record in records if record["pasted"])
    # the same seed draws the same masks
    again = MaskDeformer(masks, rotations=False, seed=0)
    assert all(np.array_equal(again.draw().mask, item.mask) for item in drawn)


def test_a_mask_no_deformation_changes_is_refused_by_name():
    blank = {"empty": np.zeros((32, 32), np.uint8)}
    with pytest.raises(ValueError, match="training mask empty: 20 deformations all gave back a training mask"):
        MaskDeformer(blank, seed=0).draw()


def test_the_memorisation_check_flags_an_exact_copy(caplog):
    training = [smooth_image(64, 64, seed) for seed in range(6)]
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    found = nearest_training([training[3], noise], training)
    assert found.nearest[0] == 3 and found.ssim[0] == pytest.approx(1.0)
    assert found.ssim[1] < 0.5 and found.copies == 1 and not found.dominated
    with caplog.at_level(logging.WARNING):
        copied = nearest_training([training[1], training[2], noise], training)
    assert copied.dominated and copied.summary()["copies"] == 2
    assert "2 of 3 synthetic images (67%) are near copies of a training image" in caplog.text


# `segan synth train` killed by SIGKILL at a chosen batch, in a fresh process (never by timing).
SYNTH_SCRIPT = r"""
import os, signal, sys
from segan.cli import main
from segan.synthesis.drawing import DrawingModule
stop_at = int(os.environ["STOP_AT"])

def on_train_batch_end(self, outputs, batch, batch_idx):
    if self.trainer.fit_loop.epoch_loop.batch_progress.total.processed == stop_at:
        os.kill(os.getpid(), signal.SIGKILL)

DrawingModule.on_train_batch_end = on_train_batch_end
sys.exit(main(sys.argv[1:]))
"""
STEPS_PER_EPOCH = 2  # 8 training images, batch 4


def synth_train_args(data: Path, out: Path, epochs: int = 2) -> list[str]:
    return ["synth", "train", "--data", str(data), "--out", str(out), "--size", "64", "--epochs", str(epochs),
            "--batch-size", "4", "--d-channels", "8", "--accelerator", "cpu", "--precision", "32-true",
            "--num-workers", "0"]


def network_weights(run: Path) -> dict[str, torch.Tensor]:
    return {key: value for key, value in load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"].items()
            if key.startswith(("drawer.", "discriminator."))}


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("synth"), n_train=8, n_val=4, size=64, seed=3)


@pytest.mark.heavy(20)
def test_synth_train_resumes_exactly_and_sample_draws_new_pairs(tmp_path, synth_data):
    """A straight synth run and one killed inside its second epoch then resumed end with the same
    weights; sampling from the run writes pairs from masks none of which is a training mask."""
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(synth_train_args(synth_data, straight)) == 0
    summary = json.loads((straight / "summary.json").read_text())
    assert (summary["epochs"], summary["steps"]) == (2, 2 * STEPS_PER_EPOCH)
    validated = [float(row["val/l1"]) for row in csv.DictReader((straight / "metrics.csv").open()) if row.get("val/l1")]
    assert len(validated) == 2  # each epoch: the last network's L1 and the lowest, re-scored, are theirs
    assert (summary["val_l1"], summary["best_val_l1"]) == (round(validated[-1], 4), round(min(validated), 4))
    for name in ("config.yaml", "progress.png", "metrics.csv", "checkpoints/best.ckpt", "generator/model.safetensors"):
        assert (straight / name).is_file(), name
    drawer = load_file(straight / "generator" / "model.safetensors")  # the last epoch's network, not the best's
    last = network_weights(straight)
    assert all(torch.equal(value, last[f"drawer.{key}"]) for key, value in drawer.items())
    killed = subprocess.run([sys.executable, "-c", SYNTH_SCRIPT, *synth_train_args(synth_data, broken)],
                            capture_output=True, text=True, env=dict(os.environ, STOP_AT=str(STEPS_PER_EPOCH + 1)),
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert main(["synth", "train", "--resume", "--out", str(broken)]) == 0
    expected, got = network_weights(straight), network_weights(broken)
    assert expected.keys() == got.keys() and len(expected) > 0
    assert all(torch.equal(expected[key], got[key]) for key in expected)

    pairs = tmp_path / "pairs"
    assert main(["synth", "sample", str(straight), "--out", str(pairs), "--count", "10"]) == 0
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert len(manifest["pairs"]) == 10 and manifest["deformed"] is True
    config = Config.load(straight / "config.yaml")
    training = training_pairs_at_size(config)
    training_masks = {fingerprint(mask.astype(np.uint8)) for _, mask in training.values()}
    for record in manifest["pairs"]:
        mask = cv2.imread(str(pairs / record["mask"]), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(pairs / record["image"]), cv2.IMREAD_COLOR)
        assert mask.shape == (64, 64) and image.shape == (64, 64, 3)
        assert fingerprint(mask) not in training_masks
        assert record["source"] in training and record["nearest_training"] in training
        assert record["transforms"] and 0 <= record["ssim"] <= 1
    assert (pairs / "contact_sheet.png").is_file() and (pairs / "memorisation.png").is_file()

    # The pairs in a segmenter's training: every batch of 4 holds 2 of them, their loss logged apart.
    segmenter = tmp_path / "segmenter"
    tiny_config(synth_data, segmenter).save(tmp_path / "seg.yaml")
    assert main(["train", "--config", str(tmp_path / "seg.yaml"), "--synthetic", str(pairs),
                 "--synthetic-ratio", "0.5"]) == 0
    rows = [row for row in csv.DictReader((segmenter / "metrics.csv").open()) if row.get("train/seg_loss_synthetic")]
    assert len(rows) == 1 and float(rows[0]["train/seg_loss_synthetic"]) > 0 and float(rows[0]["train/seg_loss_real"]) > 0
    assert Config.load(segmenter / "config.yaml").data.synthetic == str(pairs)
    # A second sample into the same folder would mix two samples: refused, nothing changed.
    assert main(["synth", "sample", str(straight), "--out", str(pairs), "--count", "2"]) == 2
    assert len(list((pairs / "images").iterdir())) == 10


def test_sampling_from_a_folder_that_is_no_synth_run_says_what_to_do(tmp_path, capsys):
    assert main(["synth", "sample", str(tmp_path), "--out", str(tmp_path / "pairs"), "--count", "3"]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "segan synth train" in error
    assert not (tmp_path / "pairs").exists()


def test_each_mixed_batch_holds_its_share_of_synthetic_pairs_in_a_seeded_order():
    real = EpochSampler(10, seed=0, length=9)
    sampler = MixedBatchSampler(real, real_size=10, synthetic_size=5, real_per_batch=3, synthetic_per_batch=1, seed=2)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    assert all([index < 10 for index, _ in batch] == [True, True, True, False] for batch in batches)
    again = MixedBatchSampler(EpochSampler(10, seed=0, length=9), 10, 5, 3, 1, seed=2)
    again.set_epoch(1)
    assert list(again) == batches  # a resumed run sees the same batches
    assert batch_make_up(8, 0.5) == (4, 4) and batch_make_up(8, 0.01) == (7, 1) and batch_make_up(2, 0.9) == (1, 1)


def test_a_synthetic_folder_without_a_manifest_stops_training_before_it_starts(tmp_path, synth_data, capsys):
    out = tmp_path / "run"
    tiny_config(synth_data, out).save(tmp_path / "seg.yaml")
    (tmp_path / "pairs").mkdir()
    assert main(["train", "--config", str(tmp_path / "seg.yaml"), "--synthetic", str(tmp_path / "pairs")]) == 2
    error = capsys.readouterr().err
    assert f"--synthetic {tmp_path / 'pairs'}: no manifest.json" in error and "segan synth sample" in error
    assert not (out / "checkpoints").exists()
