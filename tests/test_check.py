"""`segan data check`: right about good datasets, and names the files of every bad case."""

import json

import numpy as np
import pytest

from segan.cli import main
from segan.config import Config, DataConfig
from segan.data.check import check_dataset

from conftest import shared_dataset, write

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


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
    ("values", r"mask values \[7\] in 1 mask \(256 pixels\)"),
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


def binary_dataset_with_odd_values(root):
    """Four 0/1 masks; 1.png also holds 7 (6 pixels) and 2.png stores its foreground as 2 (64 pixels)."""
    good_dataset(root, values=(0, 1))
    odd = np.zeros((16, 16), np.uint8); odd[:4] = 1; odd[10, :6] = 7
    write(root / "masks" / "1.png", odd)
    two = np.zeros((16, 16), np.uint8); two[:4] = 2
    write(root / "masks" / "2.png", two)
    return root


def test_every_binary_mask_with_unplaceable_values_is_an_error_naming_file_values_counts(tmp_path, capsys):
    root = binary_dataset_with_odd_values(tmp_path / "d")
    report = check_dataset(DataConfig(root=str(root), val_fraction=0.25), progress=False)
    assert not report.ok
    files = sorted((entry["file"], entry["values"], entry["ignored"]) for entry in report.unknown_values)
    assert files == [(str(root / "masks" / "1.png"), {7: 6}, False), (str(root / "masks" / "2.png"), {2: 64}, False)]
    assert report.errors[0].startswith("2 of 4 masks hold values the mask encoding cannot place (binary ")
    assert "; the masks hold values 0, 1, 2, 7. Say what they are with --value-map" in report.errors[0]
    assert sorted(report.errors[1:]) == [f"mask values [2] in 1 mask (64 pixels): {root / 'masks' / '2.png'}",
                                         f"mask values [7] in 1 mask (6 pixels): {root / 'masks' / '1.png'}"]

    assert main(["data", "check", str(root), "--no-progress", "--report", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert f"mask values [7] in 1 mask (6 pixels): {root / 'masks' / '1.png'}" in out and "mask values [2]" in out
    saved = json.loads((tmp_path / "r.json").read_text())["unknown_values"]
    assert sorted((e["file"], e["values"]) for e in saved) == [(str(root / "masks" / "1.png"), {"7": 6}),
                                                             (str(root / "masks" / "2.png"), {"2": 64})]


def test_allow_unknown_values_turns_the_errors_into_one_warning_per_split(tmp_path):
    root = binary_dataset_with_odd_values(tmp_path / "d")
    report = check_dataset(DataConfig(root=str(root), val_fraction=0.25, allow_unknown_values=True), progress=False)
    assert report.ok, report.errors
    assert sorted((e["file"], e["values"], e["ignored"]) for e in report.unknown_values) == [
        (str(root / "masks" / "1.png"), {7: 6}, True), (str(root / "masks" / "2.png"), {2: 64}, True)]
    expected = []
    for split in report.splits:
        files = [e for e in report.unknown_values if e["split"] == split.name]
        if files:
            pixels = sum(n for e in files for n in e["values"].values())
            listed = "; ".join(f"{e['file']} ({v}: {n} pixels)" for e in files for v, n in e["values"].items())
            expected.append(f"[{split.name}] {len(files)} masks hold values the mask encoding cannot place; "
                            f"allow_unknown_values ignores their {pixels} pixels (as 255): {listed}")
    assert [w for w in report.warnings if "allow_unknown_values" in w] == expected
    assert sum(split.class_pixels[-1] for split in report.splits) == 6 + 64  # counted as ignored


def test_training_preflight_lists_every_file_with_unplaceable_values(tmp_path):
    from segan.config import Config
    from segan.data import DatasetLayoutError
    from segan.training import preflight

    root = binary_dataset_with_odd_values(tmp_path / "d")
    config = Config()
    config.data.root, config.data.val_fraction = str(root), 0.25
    with pytest.raises(DatasetLayoutError) as caught:
        preflight(config)
    assert f"mask values [7] in 1 mask (6 pixels): {root / 'masks' / '1.png'}" in str(caught.value)
    assert f"mask values [2] in 1 mask (64 pixels): {root / 'masks' / '2.png'}" in str(caught.value)


def test_multi_class_masks_read_as_binary_get_one_diagnosis_and_a_screenful(tmp_path, capsys):
    """CamVid without its recipe: every mask holds 0-11, so one dataset-level diagnosis comes first,
    then the files grouped by their unplaceable values, three named a group; the report has all."""
    root = tmp_path / "d"
    for i in range(40):
        write(root / "images" / f"{i}.png", np.zeros((16, 16, 3), np.uint8))
        write(root / "masks" / f"{i}.png", (np.arange(256) % (12 if i < 30 else 3)).astype(np.uint8).reshape(16, 16))
    assert main(["data", "check", str(root), "--no-progress", "--report", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    errors = out[out.index("3 errors:"):out.index("NOT READY")].strip().splitlines()
    assert errors[1].startswith("  - every mask holds values the mask encoding cannot place (binary ")
    assert errors[1].endswith("; the masks hold values 0-11: multi-class? give --classes with one name per value "
                              "(12 names, background first), or --config with the dataset's recipe (e.g. "
                              "datasets/camvid/config.yaml). Otherwise: say what they are with --value-map / "
                              "data.value_map (stored value: class index, e.g. 2:1), give --classes with one name "
                              "per class if the masks are multi-class, or pass --allow-unknown-values / "
                              "data.allow_unknown_values to ignore those pixels")
    assert errors[2].startswith(f"  - mask values [2, 3, 4, 5, 6, 7, 8, 9, 10, 11] in 30 masks (6360 pixels): ")
    assert errors[2].endswith(", ... 27 more (--report FILE lists every one)")
    assert errors[3].startswith(f"  - mask values [2] in 10 masks (850 pixels): ")
    assert len(errors) == 4  # the count line, the diagnosis, two groups: not one line per file
    assert len(json.loads((tmp_path / "r.json").read_text())["unknown_values"]) == 40


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
