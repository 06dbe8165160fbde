"""`segan data check`: right about good datasets, and names the files of every bad case."""

import json

import cv2
import numpy as np
import pytest

from segan.cli import main
from segan.config import Config, DataConfig
from segan.data.check import check_dataset

from conftest import shared_dataset

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def good_dataset(root, n=4, size=(16, 16), values=(0, 255)):
    for i in range(n):
        write(root / "images" / f"{i}.png", np.full((*size, 3), 90, np.uint8))
        m = np.full(size, values[0], np.uint8)
        m[: size[0] // 4] = values[1]
        write(root / "masks" / f"{i}.png", m)
    return root


def test_good_dataset_is_ok_with_counts(tmp_path):
    report = check_dataset(DataConfig(root=str(good_dataset(tmp_path)), val_fraction=0.25), progress=False)
    assert report.ok and not report.warnings
    assert [(s.name, s.pairs) for s in report.splits] == [("train", 3), ("val", 1)]
    train = report.splits[0]
    assert dict(train.stored_values) == {0: 3 * 192, 255: 3 * 64}
    assert train.class_pixels == [3 * 192, 3 * 64, 0]
    assert report.config["image_dir"] == "images" and report.config["mask_dir"] == "masks"


@pytest.mark.parametrize("case, expected", [
    ("unmatched", "lonely.png"),
    ("size", "2.png is 16x16 but its mask"),
    ("values", r"mask values \[7\]"),
    ("corrupt", "3.png: not a readable image"),
    ("empty", "no images"),
])
def test_blocking_problems_name_the_files_and_exit_1(tmp_path, capsys, case, expected):
    root = tmp_path / "d"
    if case == "empty":
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir(parents=True)
    else:
        good_dataset(root)
    if case == "unmatched":
        write(root / "images" / "lonely.png", np.zeros((16, 16, 3), np.uint8))
    elif case == "size":
        write(root / "masks" / "2.png", np.zeros((8, 8), np.uint8))
    elif case == "values":
        write(root / "masks" / "1.png", np.full((16, 16), 7, np.uint8))
    elif case == "corrupt":
        (root / "images" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = ["data", "check", str(root), "--no-progress", "--report", str(tmp_path / "r.json")]
    if case == "values":
        args += ["--classes", "a", "b", "c"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "NOT READY" in out
    import re
    assert re.search(expected, out), out
    report = json.loads((tmp_path / "r.json").read_text())
    assert not report["ok"] and any(re.search(expected, e) for e in report["errors"])


def test_non_image_file_is_a_warning_not_an_error(tmp_path, capsys):
    root = good_dataset(tmp_path / "d")
    (root / "images" / "notes.txt").write_text("hello")
    assert main(["data", "check", str(root), "--no-progress"]) == 0
    assert "notes.txt" in capsys.readouterr().out


def test_inverted_looking_binary_masks_are_flagged(tmp_path):
    root = good_dataset(tmp_path / "d", values=(255, 0))  # foreground stored dark: 75% "foreground"
    report = check_dataset(DataConfig(root=str(root)), progress=False)
    assert report.ok and any("data.invert" in w for w in report.warnings)
    inverted = check_dataset(DataConfig(root=str(root), invert=True), progress=False)
    assert not any("data.invert" in w for w in inverted.warnings)


@pytest.mark.parametrize("name, pairs, fractions", [
    ("isbi2012", {"train": 24, "val": 6}, {"membrane": (0.15, 0.3)}),
    ("kvasir-seg", {"train": 800, "validation": 100}, {"polyp": (0.1, 0.2)}),
    ("camvid", {"train": 367, "val": 101}, {"Road": (0.25, 0.35), "Pole": (0.001, 0.02)}),
])
def test_check_is_right_about_the_real_datasets(name, pairs, fractions):
    root = shared_dataset(name)
    data = Config.load(ROOT / "datasets" / name / "config.yaml").data
    data.root = str(root)
    report = check_dataset(data, progress=False)
    assert report.ok, report.errors
    assert {s.name: s.pairs for s in report.splits} == pairs
    for split in report.splits:
        total = sum(split.class_pixels)
        for cls, (low, high) in fractions.items():
            assert low < split.class_pixels[data.classes.index(cls)] / total < high
    if name == "camvid":
        assert all(s.class_pixels[-1] > 0 for s in report.splits)  # void (11) counted as ignored
