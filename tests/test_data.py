import cv2
import numpy as np
import pytest
import torch

from segan.config import DataConfig
from segan.data import (DatasetLayoutError, ImageReadError, MaskEncoding, SegmentationDataset, find_splits,
                        make_demo_dataset, read_image, read_mask)
from segan.data.io import bit_depth, to_uint8
from segan.preprocess import EvalTransform
from segan.transforms import PRESETS, build_train_transform

from conftest import write


def make_pairs(root, names, split=None):
    base = root / split if split else root
    for name in names:
        write(base / "images" / f"{name}.png", np.full((16, 16, 3), 100, np.uint8))
        write(base / "masks" / f"{name}.png", np.zeros((16, 16), np.uint8))


def test_binary_mask_0_255_and_0_1_decode_alike(tmp_path):
    truth = np.zeros((8, 8), np.uint8)
    truth[2:5, 3:7] = 1
    assert np.array_equal(read_mask(write(tmp_path / "a.png", truth * 255)), truth)
    assert np.array_equal(read_mask(write(tmp_path / "b.png", truth)), truth)


def test_binary_jpeg_mask_noise_is_thresholded(tmp_path):
    truth = np.zeros((64, 64), np.uint8)
    truth[10:40, 20:50] = 1
    path = tmp_path / "m.jpg"
    cv2.imwrite(str(path), truth * 255, [cv2.IMWRITE_JPEG_QUALITY, 60])
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert len(np.unique(raw)) > 2, "the JPEG should carry noise for this test to mean anything"
    assert (read_mask(path) != truth).mean() < 0.01


def test_multiclass_mask_rejects_values_outside_classes(tmp_path):
    mask = np.array([[0, 1], [2, 9]], np.uint8)
    path = write(tmp_path / "m.png", mask)
    with pytest.raises(ImageReadError, match=r"m\.png.*\[9\]"):
        read_mask(path, MaskEncoding(3))
    ok = np.array([[0, 1], [2, 255]], np.uint8)
    assert np.array_equal(read_mask(write(tmp_path / "ok.png", ok), MaskEncoding(3)), ok)


def test_read_image_converts_channels(tmp_path):
    grey = write(tmp_path / "g.png", np.full((5, 7), 40, np.uint8))
    rgba = write(tmp_path / "c.png", np.dstack([np.full((5, 7), v, np.uint8) for v in (10, 20, 30, 255)]))
    sixteen = write(tmp_path / "s.png", np.full((5, 7), 40000, np.uint16))
    assert read_image(grey, 3).shape == (5, 7, 3)
    assert read_image(rgba, 3)[0, 0].tolist() == [30, 20, 10]  # BGR on disk, RGB in memory
    assert read_image(rgba, 1).shape == (5, 7, 1)
    assert read_image(sixteen, 1)[0, 0, 0] == 156  # 16-bit: round(40000 * 255 / 65535) = round(155.64)


def test_sixteen_bit_values_are_scaled_by_the_range_of_their_bit_depth():
    twelve = np.array([[0, 16, 1000], [2047, 2048, 4095]], np.uint16)  # 12-bit camera: max 4095
    # round(v * 255 / 4095): 0.996 -> 1, 62.27 -> 62, 127.47 -> 127, 127.53 -> 128, 255
    assert to_uint8(twelve).tolist() == [[0, 1, 62], [127, 128, 255]]
    sixteen = np.array([[0, 257, 32768], [40000, 65534, 65535]], np.uint16)
    # round(v * 255 / 65535): 257 is exactly 1, 127.502 -> 128, 155.64 -> 156, 254.996 -> 255
    assert to_uint8(sixteen).tolist() == [[0, 1, 128], [156, 255, 255]]
    assert to_uint8(sixteen).dtype == np.uint8
    # 8-bit values in a 16-bit container stay as they are; 4096 is past 12 bits, so 14-bit.
    assert to_uint8(np.array([[0, 7, 255]], np.uint16)).tolist() == [[0, 7, 255]]
    assert to_uint8(np.array([[4096]], np.uint16)).tolist() == [[64]]  # 4096 * 255 / 16383 = 63.76
    maxima = [0, 255, 256, 1023, 1024, 4095, 4096, 16383, 16384, 65535]
    assert [bit_depth(np.array([m], np.uint16)) for m in maxima] == [8, 8, 10, 10, 12, 12, 14, 14, 16, 16]


def test_twelve_bit_png_round_trip(tmp_path):
    """12-bit microscopy in a 16-bit PNG reads back at full brightness, colour channels in RGB order."""
    eight = np.array([[0, 1, 2, 100], [127, 128, 254, 255]], np.uint8)
    twelve = np.rint(eight.astype(np.float64) * 4095 / 255).astype(np.uint16)  # 255 -> 4095
    path = write(tmp_path / "twelve.png", twelve)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really stored as 16 bits
    assert np.array_equal(read_image(path, 1)[:, :, 0], eight)
    colour = np.dstack([twelve, twelve // 2, np.zeros_like(twelve)])  # B, G, R as OpenCV writes them
    rgb = read_image(write(tmp_path / "colour.png", colour), 3)
    assert rgb[1, 3].tolist() == [0, 127, 255]  # R 0, G 4095 // 2 = 2047 -> 127.47 -> 127, B 4095 -> 255
    assert np.array_equal(rgb[:, :, 2], eight)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_image_names_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(path)


def test_split_layout_with_validation(tmp_path):
    make_pairs(tmp_path, ["a", "b", "c"], "train")
    make_pairs(tmp_path, ["d"], "validation")
    splits = find_splits(DataConfig(root=str(tmp_path)))
    assert [p.image.stem for p in splits["train"]] == ["a", "b", "c"]
    assert [p.image.stem for p in splits["val"]] == ["d"]


def test_flat_layout_holds_back_a_seeded_fraction(tmp_path):
    make_pairs(tmp_path, [f"{i:02d}" for i in range(10)])
    first = find_splits(DataConfig(root=str(tmp_path), val_fraction=0.3, split_seed=1))
    again = find_splits(DataConfig(root=str(tmp_path), val_fraction=0.3, split_seed=1))
    other = find_splits(DataConfig(root=str(tmp_path), val_fraction=0.3, split_seed=2))
    assert len(first["val"]) == 3 and len(first["train"]) == 7
    assert first == again
    assert first["val"] != other["val"]
    assert not {p.image for p in first["val"]} & {p.image for p in first["train"]}


def test_unmatched_files_are_named(tmp_path):
    make_pairs(tmp_path, ["a", "b"], "train")
    write(tmp_path / "train" / "images" / "lonely.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetLayoutError, match="lonely"):
        find_splits(DataConfig(root=str(tmp_path)))


def test_unknown_layout_and_empty_folder(tmp_path):
    with pytest.raises(DatasetLayoutError, match="no dataset layout"):
        find_splits(DataConfig(root=str(tmp_path)))
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images"):
        find_splits(DataConfig(root=str(tmp_path)))


def test_dataset_yields_normalised_tensors_and_checks_sizes(tmp_path):
    make_pairs(tmp_path, ["a"], "train")
    write(tmp_path / "train" / "masks" / "a.png", np.zeros((8, 8), np.uint8))  # wrong size
    make_pairs(tmp_path, ["b"], "train")
    pairs = find_splits(DataConfig(root=str(tmp_path), val_fraction=0.5))  # no validation split beside train: train is divided
    transform = EvalTransform(DataConfig(size=32, resize="resize", mean=[0.5] * 3, std=[0.25] * 3))
    dataset = SegmentationDataset(pairs["train"] + pairs["val"], transform)
    by_name = {dataset.pairs[i].image.stem: i for i in range(len(dataset))}
    sample = dataset[by_name["b"]]
    assert sample["image"].dtype.is_floating_point and sample["image"].shape == (3, 32, 32)
    assert float(sample["image"].mean()) == pytest.approx((100 / 255 - 0.5) / 0.25, abs=1e-3)
    with pytest.raises(ValueError, match=r"a\.png.*same size"):
        dataset[by_name["a"]]


def test_demo_dataset_is_deterministic_and_trainable_shape(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_train=3, n_val=2, size=32, seed=5)
    b = make_demo_dataset(tmp_path / "b", n_train=3, n_val=2, size=32, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    splits = find_splits(DataConfig(root=str(a)))
    transform = build_train_transform("heavy", 32, "resize", [0.5] * 3, [0.25] * 3)
    sample = SegmentationDataset(splits["train"], transform)[0]
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape == (32, 32)
    assert set(sample["mask"].unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("resize", ["resize", "crop"])
def test_presets_keep_image_and_mask_aligned(preset, resize):
    image = np.zeros((40, 48, 3), np.uint8)
    image[:, :24] = 255
    mask = (image[:, :, 0] > 0).astype(np.uint8)
    transform = build_train_transform(preset, 32, resize, [0.0] * 3, [1.0] * 3)
    for _ in range(5):
        out = transform(image=image, mask=mask)
        bright = out["image"][:, :, 0] > 0.5
        valid = out["mask"] != 255
        # the mask follows the image through every geometric op (allow edge interpolation)
        assert (bright[valid] == (out["mask"][valid] == 1)).mean() > 0.9


def test_the_transforms_of_a_seeded_pipeline_draw_independently():
    """Reseeded per sample, flips and 90-degree turns of equal probability still happen
    independently: a corner block lands in each quadrant (albumentations' own per-transform
    seeding would give each the same draw, so all or none would happen)."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:8, :4] = 255
    mask = (image[:, :, 0] > 0).astype(np.uint8)
    transform = build_train_transform("light", 32, "resize", [0.0] * 3, [1.0] * 3)
    quadrants = []
    for seed in range(400):
        transform.set_random_seed(seed)
        ys, xs = np.nonzero(transform(image=image, mask=mask)["mask"])
        quadrants.append((ys.mean() > 16, xs.mean() > 16))
    counts = {quadrant: quadrants.count(quadrant) for quadrant in set(quadrants)}
    assert len(counts) == 4 and min(counts.values()) > 60, counts


def test_palette_png_masks_read_as_indices(tmp_path):
    from PIL import Image
    indices = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [7, 7, 7] * 252)
    image.save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png", MaskEncoding(4)), indices)
    binary = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    binary.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    binary.save(tmp_path / "binary.png")
    assert read_mask(tmp_path / "binary.png").tolist() == [[0, 1]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_augmentation_repeats_with_the_seed(tmp_path, num_workers):
    """albumentations ignores global seeds; the run's seed must still make batches repeat."""
    import lightning as L
    from segan.config import Config, merge
    from segan.training import build_dataloaders
    root = make_demo_dataset(tmp_path / "d", n_train=8, n_val=2, size=32, seed=0)

    def first_batches(seed):
        config = merge(Config(), {"data": {"root": str(root), "size": 32, "augment": "heavy", "num_workers": num_workers},
                                  "train": {"seed": seed, "batch_size": 4}})
        L.seed_everything(seed, workers=True, verbose=False)
        loader, _ = build_dataloaders(config)
        return [batch["image"] for batch in loader]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_an_epoch_longer_than_the_set_cycles_through_it():
    from segan.data import EpochSampler
    sampler = EpochSampler(4, seed=0, length=10)
    first = list(sampler)
    assert [cycle for _, cycle in first] == [0] * 4 + [1] * 4 + [2] * 2
    assert sorted(index for index, _ in first[:4]) == sorted(index for index, _ in first[4:8]) == [0, 1, 2, 3]
    sampler.set_epoch(1)
    second = list(sampler)
    assert [cycle for _, cycle in second] == [2] * 2 + [3] * 4 + [4] * 4
    assert sorted(index for index, _ in first[8:] + second[:2]) == [0, 1, 2, 3]  # the stream goes on
    one_pass = EpochSampler(4, seed=0)
    one_pass.set_epoch(3)
    assert [cycle for _, cycle in one_pass] == [3] * 4  # an epoch of one pass: the cycle is the epoch


def test_min_epoch_steps_augments_each_pass_anew(tmp_path):
    from segan.config import Config, merge
    from segan.training import build_dataloaders
    root = make_demo_dataset(tmp_path / "d", n_train=4, n_val=1, size=32, seed=0)
    config = merge(Config(), {"data": {"root": str(root), "size": 32, "augment": "heavy", "num_workers": 0},
                              "train": {"batch_size": 4, "min_epoch_steps": 3}})
    loader, _ = build_dataloaders(config)
    batches = [batch for batch in loader]
    assert len(batches) == 3  # the 4 images three times
    names = [sorted(batch["name"]) for batch in batches]
    assert names[0] == names[1] == names[2]
    by_name = [dict(zip(batch["name"], batch["image"])) for batch in batches]
    assert not any(torch.equal(by_name[0][name], by_name[1][name]) for name in by_name[0])
