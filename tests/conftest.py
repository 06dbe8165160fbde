"""Shared fixtures: a tiny demo dataset and tiny configs, so unit tests run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from segan.config import Config, merge
from segan.data import make_demo_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=12, n_val=4, size=64, seed=0)


def tiny_config(root: Path, out: Path, **sections) -> Config:
    """A config that trains in seconds: 64 px, a depth-3 resnet18 U-Net, a 2-layer discriminator."""
    base = {
        "data": {"root": str(root), "size": 64, "augment": "light", "num_workers": 0},
        "generator": {"encoder_name": "resnet18", "encoder_depth": 3},
        "discriminator": {"base_channels": 8, "n_layers": 2},
        "loss": {"adv_weight": 0.1, "adv_warmup_epochs": 0},
        "train": {"epochs": 1, "batch_size": 4, "accelerator": "cpu", "devices": 1, "out": str(out)},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return merge(Config(), base)


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found at {path} (it lives in ../shared/data beside the repo)")
    return path
