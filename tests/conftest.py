"""Shared fixtures: a tiny demo dataset and tiny configs, so unit tests run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segan.config import Config, merge
from segan.data import make_demo_dataset
from segan.models import build_generator

# The tests run tiny tensors, where a second thread gains little, on machines others share: beside
# one busy process, torch's default of a thread per core made a training step 4.5x slower and one
# thread 1.07x (docs/benchmarks/threads.md). Subprocesses inherit the variable; one the caller set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# ../shared/data beside the repository (as in CI), or wherever SEGAN_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("SEGAN_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (`heavy(SECONDS)`, about what one takes on a 2-core AVX2 CPU; `slow`
    and a bare `heavy` count 10): the workers share them out first and the short ones fill in at the
    end, so both finish together instead of one waiting for a long test that another started last."""
    def seconds(item: pytest.Item) -> float:
        heavy = item.get_closest_marker("heavy")
        return (heavy.args[0] if heavy and heavy.args else 10) if heavy or item.get_closest_marker("slow") else 0
    items.sort(key=seconds, reverse=True)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=12, n_val=4, size=64, seed=0)


def tiny_config(root: Path, out: Path, **sections) -> Config:
    """A config that trains in seconds: 64 px, a depth-3 resnet18 U-Net, a 2-layer discriminator,
    in float32 (tests compare with float32 references; bf16 has tests of its own), without
    progress.png (tests/test_report.py checks it)."""
    base = {
        "data": {"root": str(root), "size": 64, "augment": "light", "num_workers": 0},
        "generator": {"encoder_name": "resnet18", "encoder_depth": 3},
        "discriminator": {"base_channels": 8, "n_layers": 2},
        "loss": {"adv_weight": 0.1, "adv_warmup_epochs": 0},
        "train": {"epochs": 1, "batch_size": 4, "accelerator": "cpu", "devices": 1, "precision": "32-true",
                  "progress_png": False, "out": str(out)},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return merge(Config(), base)


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found at {path} (it lives in ../shared/data beside the repo)")
    return path


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image of smooth random blobs: a network's output varies across it."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(height, width, 3)).astype(np.float32)
    return np.clip(128 + 60 * cv2.GaussianBlur(noise, (0, 0), 4) / 0.1, 0, 255).astype(np.uint8)


def make_run(folder: Path, classes=("background", "foreground"), in_channels=3, resize="crop", size=64,
             rotations=True, seed=0) -> Path:
    """A run folder as `segan train` leaves it, with a seeded untrained generator (no training needed)."""
    config = merge(Config(), {"data": {"classes": list(classes), "in_channels": in_channels, "resize": resize,
                                       "size": size, "rotations": rotations,
                                       "mean": [0.5] * in_channels, "std": [0.25] * in_channels},
                              "generator": {"encoder_name": "resnet18", "encoder_depth": 3}})
    torch.manual_seed(seed)
    generator = build_generator(config.generator, in_channels, len(classes))
    # Give the BatchNorm layers non-trivial statistics, so outputs vary across the image.
    generator.train()
    with torch.no_grad():
        for _ in range(3):
            generator(torch.randn(4, in_channels, 64, 64))
        # An untrained head answers ~0.5 everywhere; a sharper one makes agreement tests meaningful.
        generator.segmentation_head[0].weight *= 40
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / "config.yaml")
    generator.eval().save_pretrained(str(folder / "generator"))
    return folder


def write(path: Path, array, palette: list[int] | None = None) -> Path:
    """Writes `array` as an image file at `path`, creating its folder; returns `path`.

    uint8 and uint16 arrays are written as they are; anything else (nested lists, float zeros,
    booleans) as uint8, so a mask can be typed as `[[0, 255]]`. GIF goes through PIL, which OpenCV
    cannot write. With `palette` (flat RGB values), the array is written as the indices of a
    palette (mode P) PNG, as VOC and `segan predict` store multi-class masks.
    """
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is not None:
        image = Image.fromarray(array)  # mode L; putpalette turns it into P, keeping the values as indices
        image.putpalette(palette)
        image.save(path)
    elif path.suffix.lower() == ".gif":
        Image.fromarray(array).save(path)
    else:
        assert cv2.imwrite(str(path), array), path
    return path
