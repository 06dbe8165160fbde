"""Layouts and pairing rules: each published layout is found, and every bad case names its files."""

import numpy as np
import pytest

from segan.config import DataConfig
from segan.data import DatasetLayoutError, MaskEncoding, SegmentationDataset, detect_layout, find_split, find_splits
from segan.data.pairs import name_key, read_pairs_file
from segan.preprocess import EvalTransform

from conftest import shared_dataset, write


def image(value=100, size=(16, 16)):
    return np.full((*size, 3), value, np.uint8)


def mask(size=(16, 16)):
    return np.zeros(size, np.uint8)


def stems(pairs):
    return [p.image.stem for p in pairs]


def test_split_annot_layout_like_camvid(tmp_path):
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for name in names:
            write(tmp_path / split / f"{name}.png", image())
            write(tmp_path / f"{split}annot" / f"{name}.png", mask())
    data = DataConfig(root=str(tmp_path))
    layout = detect_layout(data)
    assert (layout.image_dir, layout.mask_dir) == ("{split}", "{split}annot")
    splits = find_splits(data)
    assert stems(splits["train"]) == ["a", "b"] and stems(splits["val"]) == ["c"]


def test_image_label_layout_like_isbi_holds_out_validation(tmp_path):
    for name in range(10):
        write(tmp_path / "train" / "image" / f"{name}.png", image())
        write(tmp_path / "train" / "label" / f"{name}.png", mask())
    write(tmp_path / "test" / "0.png", image())  # unlabelled test images beside it change nothing
    splits = find_splits(DataConfig(root=str(tmp_path), val_fraction=0.2, split_seed=0))
    assert len(splits["train"]) == 8 and len(splits["val"]) == 2


def test_any_two_folders_given_by_path(tmp_path):
    for name in ("x", "y", "z"):
        write(tmp_path / "somewhere" / "pics" / f"{name}.jpg", image())
        write(tmp_path / "elsewhere" / "gt" / f"{name}.png", mask())
    data = DataConfig(root=str(tmp_path / "unrelated"), image_dir=str(tmp_path / "somewhere" / "pics"),
                      mask_dir=str(tmp_path / "elsewhere" / "gt"), val_fraction=0.34)
    (tmp_path / "unrelated").mkdir()
    splits = find_splits(data)
    assert sorted(stems(splits["train"] + splits["val"])) == ["x", "y", "z"] and len(splits["val"]) == 1
    with pytest.raises(DatasetLayoutError, match="both data.image_dir and data.mask_dir"):
        find_splits(DataConfig(root=str(tmp_path), image_dir="somewhere/pics"))


def drive_like(root, split="training", numbers=(21, 22, 23), kind="training"):
    for n in numbers:
        write(root / split / "images" / f"{n}_{kind}.tif", image(size=(8, 10)))
        manual = mask((8, 10))
        manual[2:5, 2:6] = 255
        write(root / split / "1st_manual" / f"{n}_manual1.gif", manual)
        fov = np.full((8, 10), 255, np.uint8)
        fov[:, :3] = 0
        write(root / split / "mask" / f"{n}_{kind}_mask.gif", fov)


def drive_config(root, **extra):
    return DataConfig(root=str(root), train_split="training", image_dir="{split}/images", mask_dir="{split}/1st_manual",
                      roi_dir="{split}/mask", image_name=r"^(?P<id>\d+)_", mask_name=r"^(?P<id>\d+)_manual1$",
                      roi_name=r"^(?P<id>\d+)_", val_fraction=0.34, **extra)


def test_regex_keys_pair_drive_names_and_roi_is_ignored_in_the_loss(tmp_path):
    drive_like(tmp_path)
    drive_like(tmp_path, "test", (1, 2), "test")
    splits = find_splits(drive_config(tmp_path))
    pairs = splits["train"] + splits["val"]
    assert sorted(p.image.name for p in pairs) == ["21_training.tif", "22_training.tif", "23_training.tif"]
    for pair in pairs:
        number = pair.image.name.split("_")[0]
        assert pair.mask.name == f"{number}_manual1.gif" and pair.roi.name == f"{number}_training_mask.gif"
    test = find_split(drive_config(tmp_path), "test")  # a split with other names pairs by the same keys
    assert [p.mask.name for p in test] == ["1_manual1.gif", "2_manual1.gif"]
    transform = EvalTransform(DataConfig(size=8, resize="crop", mean=[0.0] * 3, std=[1.0] * 3))
    sample = SegmentationDataset(pairs, transform)[0]
    labels = sample["mask"].numpy()
    assert (labels[:, :3] == 255).all()  # outside the field of view: ignored
    assert labels[2:5, 3:6].tolist() == [[1] * 3] * 3 and labels[0, 5] == 0


def test_list_file_pairs_get_their_regions_of_interest_by_the_image_key(tmp_path):
    """--roi-dir with --pairs-file: each listed image gets the ROI whose key is its own, as folders pair."""
    drive_like(tmp_path)
    lines = [f"training/images/{n}_training.tif training/1st_manual/{n}_manual1.gif" for n in (21, 22)]
    lines.append("training/images/23_training.tif training/1st_manual/23_manual1.gif "
                 "training/mask/21_training_mask.gif")
    (tmp_path / "training.txt").write_text("\n".join(lines) + "\n")
    data = DataConfig(root=str(tmp_path), train_split="training", pairs_file="{split}.txt", roi_dir="{split}/mask",
                      image_name=r"^(?P<id>\d+)_", roi_name=r"^(?P<id>\d+)_", val_fraction=0.34)
    assert detect_layout(data).describe() == "list file {split}.txt, regions of interest {split}/mask/"
    splits = find_splits(data)
    named = sorted((p.image.name, p.mask.name, p.roi.name) for p in splits["train"] + splits["val"])
    assert named == [("21_training.tif", "21_manual1.gif", "21_training_mask.gif"),
                     ("22_training.tif", "22_manual1.gif", "22_training_mask.gif"),
                     ("23_training.tif", "23_manual1.gif", "21_training_mask.gif")]  # named on its line: kept

    (tmp_path / "training" / "mask" / "22_training_mask.gif").unlink()
    matching = read_pairs_file(tmp_path / "training.txt", tmp_path, roi_dir=tmp_path / "training" / "mask",
                               image_name=r"^(?P<id>\d+)_", roi_name=r"^(?P<id>\d+)_")
    assert [p.image.name for p in matching.pairs] == ["21_training.tif", "23_training.tif"]
    assert matching.missing_roi == [tmp_path / "training" / "images" / "22_training.tif"]
    with pytest.raises(DatasetLayoutError, match=r"training\.txt \+ \S+mask: 1 image\(s\) without a "
                                                 r"region-of-interest mask \(22_training\.tif\)"):
        find_splits(data)
    with pytest.raises(DatasetLayoutError, match=r"folder not found: \S+nowhere"):
        find_splits(DataConfig(root=str(tmp_path), train_split="training", pairs_file="{split}.txt",
                               roi_dir="nowhere"))


def test_name_templates():
    key = name_key("{id}_manual1")
    assert key("21_manual1") == "21" and key("21_manual2") is None
    assert name_key("img_{id}")("img_007") == "007"
    assert name_key(r"(\d+)")("case_12_t1") == "12"
    with pytest.raises(DatasetLayoutError, match="regular expression"):
        name_key("([unclosed")


def test_template_pairing_names_files_that_do_not_fit(tmp_path):
    write(tmp_path / "images" / "01_training.tif", image())
    write(tmp_path / "images" / "02_training.tif", image())
    write(tmp_path / "images" / "notes_scan.tif", image())
    write(tmp_path / "masks" / "01_manual1.png", mask())
    write(tmp_path / "masks" / "02_manual1.png", mask())
    data = DataConfig(root=str(tmp_path), image_name="{id}_training", mask_name="{id}_manual1")
    with pytest.raises(DatasetLayoutError, match="notes_scan.tif"):
        find_splits(data)


def test_duplicate_keys_are_refused_by_name(tmp_path):
    write(tmp_path / "images" / "1_a.png", image())
    write(tmp_path / "images" / "1_b.png", image())
    write(tmp_path / "masks" / "1.png", mask())
    with pytest.raises(DatasetLayoutError, match=r"1_a\.png and 1_b\.png.*'1'"):
        find_splits(DataConfig(root=str(tmp_path), image_name=r"^(\d+)_"))


def test_unmatched_masks_are_named(tmp_path):
    for name in ("a", "b"):
        write(tmp_path / "images" / f"{name}.png", image())
        write(tmp_path / "masks" / f"{name}.png", mask())
    write(tmp_path / "masks" / "orphan.png", mask())
    with pytest.raises(DatasetLayoutError, match=r"1 mask\(s\) without an image \(orphan.png\)"):
        find_splits(DataConfig(root=str(tmp_path)))


def test_non_image_files_are_skipped_with_a_warning(tmp_path, caplog):
    for name in ("a", "b"):
        write(tmp_path / "images" / f"{name}.png", image())
        write(tmp_path / "masks" / f"{name}.png", mask())
    (tmp_path / "images" / "README.txt").write_text("notes")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\0")
    splits = find_splits(DataConfig(root=str(tmp_path), val_fraction=0.5))
    assert sorted(stems(splits["train"] + splits["val"])) == ["a", "b"]
    assert "README.txt" in caplog.text and "DS_Store" not in caplog.text


def list_file_dataset(root):
    for name in ("a", "b", "c"):
        write(root / "imgs" / f"{name}.jpg", image())
        write(root / "labels" / f"{name}_L.png", mask())


def test_list_file_whitespace_csv_and_header(tmp_path):
    list_file_dataset(tmp_path)
    (tmp_path / "train.txt").write_text("imgs/a.jpg labels/a_L.png\nimgs/b.jpg   labels/b_L.png\n\n")
    (tmp_path / "val.csv").write_text("image,mask\nimgs/c.jpg, labels/c_L.png\n")
    splits = find_splits(DataConfig(root=str(tmp_path)))  # train.txt is found; val.csv is not the .txt pattern
    assert sorted(stems(splits["train"] + splits["val"])) == ["a", "b"]
    csv = read_pairs_file(tmp_path / "val.csv", tmp_path)
    assert [p.mask.name for p in csv.pairs] == ["c_L.png"]
    data = DataConfig(root=str(tmp_path), pairs_file="{split}.csv", train_split="val", val_fraction=0.5)
    with pytest.raises(DatasetLayoutError, match="at least 2"):
        find_splits(data)


def test_list_file_with_a_foreign_prefix(tmp_path):
    list_file_dataset(tmp_path)
    lines = "".join(f"/SegNet/Data/imgs/{n}.jpg /SegNet/Data/labels/{n}_L.png\n" for n in "abc")
    (tmp_path / "train.txt").write_text(lines)
    detected = read_pairs_file(tmp_path / "train.txt", tmp_path)
    explicit = read_pairs_file(tmp_path / "train.txt", tmp_path, strip_prefix="/SegNet/Data/")
    assert detected.pairs == explicit.pairs and [p.image.name for p in detected.pairs] == ["a.jpg", "b.jpg", "c.jpg"]
    assert detected.pairs[0].image == tmp_path / "imgs" / "a.jpg"


def test_list_file_names_missing_files(tmp_path):
    list_file_dataset(tmp_path)
    (tmp_path / "train.txt").write_text("imgs/a.jpg labels/a_L.png\nimgs/zz.jpg labels/zz_L.png\n")
    with pytest.raises(DatasetLayoutError, match=r"line 2: imgs/zz.jpg"):
        find_splits(DataConfig(root=str(tmp_path), pairs_file="{split}.txt"))
    (tmp_path / "bad.txt").write_text("only_one_path.jpg\n")
    with pytest.raises(DatasetLayoutError, match="line 1"):
        read_pairs_file(tmp_path / "bad.txt", tmp_path)


def test_empty_split_folder_and_missing_named_split(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no images"):
        find_splits(DataConfig(root=str(tmp_path)))
    with pytest.raises(DatasetLayoutError, match="no split 'test'"):
        find_split(DataConfig(root=str(tmp_path)), "test")


def test_split_seed_is_apart_from_the_training_seed(tmp_path):
    for name in range(10):
        write(tmp_path / "images" / f"{name}.png", image())
        write(tmp_path / "masks" / f"{name}.png", mask())
    same = [find_splits(DataConfig(root=str(tmp_path)))["val"] for _ in range(2)]
    other = find_splits(DataConfig(root=str(tmp_path), split_seed=3))["val"]
    assert same[0] == same[1] and same[0] != other


def test_camvid_list_files_match_its_folders():
    """CamVid's train.txt lists /SegNet/CamVid/... paths: stripped, they are exactly the folder pairs."""
    camvid = shared_dataset("camvid")
    by_folder = find_splits(DataConfig(root=str(camvid)))
    by_list = find_splits(DataConfig(root=str(camvid), pairs_file="{split}.txt"))
    assert by_list == by_folder
    assert len(by_folder["train"]) == 367 and len(by_folder["val"]) == 101
    encoding = MaskEncoding(11, ignore_index=11)
    transform = EvalTransform(DataConfig(size=64, resize="resize", mean=[0.0] * 3, std=[1.0] * 3))
    dataset = SegmentationDataset(by_folder["val"][:2], transform, encoding=encoding)
    assert set(dataset[0]["mask"].unique().tolist()) <= set(range(11)) | {11}
