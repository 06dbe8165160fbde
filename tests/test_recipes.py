"""datasets/: every recipe loads, and its layout reads a folder laid out as the dataset publishes it."""

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np

from segan.config import Config
from segan.data import find_split, find_splits, read_mask
from segan.data.encoding import MaskEncoding

from conftest import shared_dataset, write

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
RECIPES = sorted(p.parent.name for p in DATASETS.glob("*/config.yaml"))


def load_fetch():
    spec = importlib.util.spec_from_file_location("fetch", DATASETS / "fetch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def recipe(name, root):
    data = Config.load(DATASETS / name / "config.yaml").data
    data.root = str(root)
    return data


def test_every_known_dataset_has_a_recipe_and_a_fetch_entry():
    assert set(RECIPES) >= {"isbi2012", "kvasir-seg", "camvid", "drive", "oxford-pet", "voc2012"}
    assert set(load_fetch().RECIPES) == set(RECIPES)
    for name in RECIPES:
        MaskEncoding.from_config(Config.load(DATASETS / name / "config.yaml").data)  # encodings are valid


# VOC stores its class masks as palette PNGs.
VOC_PALETTE = [(i * 53) % 256 for i in range(768)]


def test_voc2012_recipe_after_fetch_prepare(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    names = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    for split, ids in names.items():
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            write(root / "JPEGImages" / f"{i}.jpg", np.zeros((6, 8, 3), np.uint8))
            labels = np.zeros((6, 8), np.uint8)
            labels[1:3, 1:3], labels[0, :] = 15, 255  # person, void border
            write(root / "SegmentationClass" / f"{i}.png", labels, palette=VOC_PALETTE)
    write(root / "JPEGImages" / "2008_999999.jpg", np.zeros((6, 8, 3), np.uint8))  # detection-only image
    load_fetch().prepare_voc2012(tmp_path)
    data = recipe("voc2012", root)
    splits = find_splits(data)
    assert [p.image.stem for p in splits["train"]] == names["train"] and len(splits["val"]) == 1
    decoded = read_mask(splits["val"][0].mask, MaskEncoding.from_config(data))
    assert decoded[1, 1] == 15 and decoded[0, 0] == 255 and decoded[5, 7] == 0


def test_oxford_pet_recipe_after_fetch_prepare(tmp_path):
    for split, ids in (("trainval", ["Abyssinian_1", "beagle_2", "pug_3"]), ("test", ["pug_9"])):
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"{split}.txt").write_text("".join(f"{i} 1 1 1\n" for i in ids))
        for i in ids:
            write(tmp_path / "images" / f"{i}.jpg", np.zeros((6, 8, 3), np.uint8))
            trimap = np.full((6, 8), 2, np.uint8)
            trimap[2:4, 2:5], trimap[1, 2:5] = 1, 3
            write(tmp_path / "annotations" / "trimaps" / f"{i}.png", trimap)
    (tmp_path / "annotations" / "trimaps" / "._Abyssinian_1.png").write_bytes(b"mac resource fork")
    load_fetch().prepare_oxford_pet(tmp_path)
    data = recipe("oxford-pet", tmp_path)
    splits = find_splits(data)
    assert len(splits["train"]) + len(splits["val"]) == 3
    test = find_split(data, "test")
    decoded = read_mask(test[0].mask, MaskEncoding.from_config(data))
    assert decoded[2, 2] == 1 and decoded[1, 2] == 255 and decoded[0, 0] == 0


def test_drive_recipe_on_its_published_layout(tmp_path):
    for split, kind, numbers in (("training", "training", (21, 22, 23, 24, 25)), ("test", "test", (1, 2))):
        for n in numbers:
            write(tmp_path / split / "images" / f"{n:02d}_{kind}.tif", np.zeros((6, 8, 3), np.uint8))
            write(tmp_path / split / "1st_manual" / f"{n:02d}_manual1.gif", np.zeros((6, 8), np.uint8))
            write(tmp_path / split / "mask" / f"{n:02d}_{kind}_mask.gif", np.full((6, 8), 255, np.uint8))
    load_fetch().check_drive(tmp_path)
    data = recipe("drive", tmp_path)
    splits = find_splits(data)
    assert len(splits["train"]) == 4 and len(splits["val"]) == 1
    assert all(p.roi is not None for p in splits["train"])
    assert [p.image.name for p in find_split(data, "test")] == ["01_test.tif", "02_test.tif"]


def test_fetch_verify_accepts_the_recorded_files_and_refuses_a_changed_one(tmp_path, capsys):
    fetch = load_fetch()
    isbi = shared_dataset("isbi2012")
    assert fetch.main(["isbi2012", str(isbi), "--verify"]) == 0
    copy = tmp_path / "isbi"
    shutil.copytree(isbi, copy)
    (copy / "train" / "label" / "3.png").write_bytes(b"changed")
    (copy / "test" / "7.png").unlink()
    assert fetch.main(["isbi2012", str(copy), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "label/3.png: sha256 differs" in err and "missing" in err and "test/7.png" in err
