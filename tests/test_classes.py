"""Class statistics, class weights, rare-class crops and rescaling (segan/data/classes.py and
their users): exact weights on a hand-made mask set, the sampler's class frequencies over many
draws, and a tiny multi-class run with every lever on."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segan.config import Config, DataConfig
from segan.data import SegmentationDataset
from segan.data.check import check_dataset
from segan.data.classes import ClassStats
from segan.transforms import build_train_transform

from conftest import tiny_config, write

CLASSES = ["background", "road", "pole"]


def hand_made_set(root: Path) -> Path:
    """Three 10x10 training masks: (background, road, pole) pixels 80/20/0, 50/0/50, 90/10/0."""
    for name, (road, pole) in {"a": (20, 0), "b": (0, 50), "c": (10, 0)}.items():
        mask = np.zeros(100, np.uint8)
        mask[:road] = 1
        mask[100 - pole:] = 2
        write(root / "train" / "masks" / f"{name}.png", mask.reshape(10, 10))
        write(root / "train" / "images" / f"{name}.png", np.full((10, 10, 3), 128, np.uint8))
    write(root / "val" / "masks" / "v.png", np.zeros((10, 10), np.uint8))
    write(root / "val" / "images" / "v.png", np.full((10, 10, 3), 128, np.uint8))
    return root


def test_class_weights_from_a_hand_made_mask_set(tmp_path):
    report = check_dataset(DataConfig(root=str(hand_made_set(tmp_path)), classes=CLASSES), progress=False)
    stats = next(split.class_stats for split in report.splits if split.name == "train")
    assert stats.pixels.tolist() == [[80, 20, 0], [50, 0, 50], [90, 10, 0]]
    # Median frequency: each class's pixels over the pixels of the images holding it:
    # background 220/300, road 30/200 = 0.15, pole 50/100 = 0.5; the median is 0.5.
    assert stats.weights("median-frequency") == [round(0.5 / (220 / 300), 4), round(0.5 / 0.15, 4), 1.0]
    assert stats.weights("median-frequency") == [0.6818, 3.3333, 1.0]
    # Inverse square root of the shares 220/300, 30/300, 50/300, scaled so the mean pixel weighs 1:
    # 1/sqrt(s) = 1.1677, 3.1623, 2.4495; sum(s / sqrt(s)) = 1.5808.
    assert stats.weights("inverse-sqrt") == [0.7387, 2.0004, 1.5495]
    shares = np.array([220, 30, 50]) / 300
    assert stats.rare_class_probabilities() == pytest.approx((1 / shares) / (1 / shares).sum())
    # segan data check shows them
    text = report.format()
    assert "class statistics (loss.class_weights, data.rare_class_crops)" in text
    assert "road" in text and "3.3333" in text and "2.0004" in text


def test_a_class_without_pixels_weighs_one_and_is_never_a_crops_focus():
    stats = ClassStats(CLASSES, ["a", "b"], np.array([[90, 10, 0], [70, 30, 0]]))
    assert stats.weights("median-frequency")[2] == 1.0 and stats.weights("inverse-sqrt")[2] == 1.0
    assert stats.rare_class_probabilities()[2] == 0.0


def test_rare_class_crops_draw_classes_inverse_to_their_share():
    """Over many draws: half the samples are rare-class crops, their classes drawn in proportion
    to 1 / share, each from an image that holds its class."""
    pixels = np.array([[80, 20, 0], [50, 0, 50], [90, 10, 0], [100, 0, 0]])
    stats = ClassStats(CLASSES, ["a", "b", "c", "d"], pixels)
    dataset = SegmentationDataset([None] * 4, transform=None, class_stats=stats, rare_class_crops=0.5)
    draws = [dataset.draw(index, epoch) for epoch in range(2500) for index in range(4)]
    focused = [(index, focus) for index, focus in draws if focus is not None]
    assert len(focused) / len(draws) == pytest.approx(0.5, abs=0.015)
    frequencies = np.bincount([focus for _, focus in focused], minlength=3) / len(focused)
    assert frequencies == pytest.approx(stats.rare_class_probabilities(), abs=0.015)
    assert all(pixels[index, focus] > 0 for index, focus in focused)
    # the plain samples keep the sampler's index, and every draw is the same when asked again
    assert all(index == i % 4 for i, (index, focus) in enumerate(draws) if focus is None)
    assert dataset.draw(3, 7) == dataset.draw(3, 7)


def test_a_rare_class_crop_is_centred_on_a_pixel_of_its_class():
    image = np.zeros((40, 40, 3), np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[30, 5] = 2
    transform = build_train_transform("none", 8, "crop", [0.0] * 3, [1.0] * 3, seed=0)
    out = transform(image=image, mask=mask, focus_class=2)["mask"]
    assert out.shape == (8, 8) and out[4, 4] == 2  # centred: rows 26-33, columns 1-8
    corner = np.zeros((40, 40), np.uint8)
    corner[0, 39] = 2
    assert transform(image=image, mask=corner, focus_class=2)["mask"][0, 7] == 2  # the window stays inside


def test_scale_range_rescales_before_the_crop():
    image = cv2.resize(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64), (64, 64))
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    mask = (np.arange(64)[None, :] >= 32).repeat(64, axis=0).astype(np.uint8)
    transform = build_train_transform("none", 32, "crop", [0.0] * 3, [1.0] * 3, scale_range=(0.5, 0.5), seed=0)
    out = transform(image=rgb, mask=mask)
    # halved to exactly 32 x 32, so the crop is the whole rescaled image
    assert np.array_equal(out["mask"], cv2.resize(mask, (32, 32), interpolation=cv2.INTER_NEAREST))
    expected = cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    assert np.abs(out["image"] - expected).max() < 1e-6


def test_tiny_multiclass_run_with_every_lever_records_the_values_used(tmp_path):
    from segan.training import train
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, count in (("train", 6), ("val", 2)):
        for i in range(count):
            mask = np.zeros((64, 64), np.uint8)
            mask[:, : rng.integers(20, 40)] = 1  # road: a wide band
            mask[5:60, rng.integers(45, 60)] = 2  # pole: one pixel wide
            image = np.stack([mask * 100 + rng.integers(0, 40, (64, 64))] * 3, axis=2).astype(np.uint8)
            write(root / split / "masks" / f"{i}.png", mask)
            write(root / split / "images" / f"{i}.png", image)
    def config(epochs: int) -> Config:
        return tiny_config(root, tmp_path / "run",
                           data={"classes": CLASSES, "resize": "crop", "size": 32, "scale_range": [0.75, 1.5],
                                 "rare_class_crops": 0.5},
                           loss={"terms": {"dice": 1.0, "ce": 1.0, "focal": 0.5, "lovasz": 0.5},
                                 "class_weights": "median-frequency", "ohem_keep": 0.25, "ohem_threshold": 0.7},
                           train={"epochs": epochs, "batch_size": 2})
    result = train(config(1))
    assert result.steps == 3
    saved = Config.load(tmp_path / "run" / "config.yaml")
    stats = json.loads((tmp_path / "run" / "class_stats.json").read_text())
    # the values used, computed from the training masks, in config.yaml and beside it
    expected = ClassStats(CLASSES, stats["images"], np.asarray(stats["pixels"])).weights("median-frequency")
    assert saved.loss.class_weights == stats["class_weights"] == expected
    assert expected[2] > expected[1] > expected[0]  # the one-pixel pole weighs most
    assert saved.loss.terms == {"dice": 1.0, "ce": 1.0, "focal": 0.5, "lovasz": 0.5}
    assert (saved.loss.ohem_keep, saved.loss.ohem_threshold) == (0.25, 0.7)
    assert (saved.data.scale_range, saved.data.rare_class_crops) == ([0.75, 1.5], 0.5)
    # resumed with the same settings (the weighting by name): the recorded values go on
    assert train(config(2), resume=True).steps == 6
    assert Config.load(tmp_path / "run" / "config.yaml").loss.class_weights == expected
