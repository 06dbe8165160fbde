"""A synth run's own settings: what `segan synth train` changes from segan's defaults.

Kept apart from the training code, so that the command line can show these defaults without
importing torch and Lightning.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..config import Config, merge

# What a synth run changes from segan's defaults; its config.yaml records every setting. pix2pix's
# recipe (Adam 2e-4, L1 x 100, a 70 px PatchGAN), made small enough for a CPU: 128 px, an
# untrained ResNet-18 U-Net with a decoder half as wide as smp's, a 32-channel discriminator.
SETTINGS: dict[str, dict[str, Any]] = {
    "data": {"size": 128, "augment": "light", "val_native": False},
    "generator": {"arch": "unet", "encoder_name": "resnet18", "encoder_weights": None, "decoder_width": 128},
    "discriminator": {"base_channels": 32, "input_guard": "none"},
    "loss": {"adv_weight": 1.0, "adv_warmup_epochs": 0, "l1_weight": 100.0},
    "semi": {"mode": "none"},
    "train": {"lr": 2e-4, "d_lr": 2e-4, "out": "weights/synth"},
}
# A dataset recipe's data section, less what the synth run sets for itself, and less other images
# than the labelled pairs (data.labeled_fraction is kept: the drawing network learns from the
# same labelled pairs as the segmenter).
OWN_DATA_KEYS = ("size", "mean", "std", "augment", "val_native", "resize", "scale_range", "rare_class_crops",
                 "unlabeled", "synthetic", "synthetic_ratio")
SHOWN = 4  # validation masks in progress.png


def synth_config(recipe: Config | None = None) -> Config:
    """The synth run's settings: the defaults with `SETTINGS` on top, and the dataset's layout and
    classes from `recipe` (a dataset recipe such as datasets/camvid/config.yaml) where given."""
    config = merge(Config(), SETTINGS)
    if recipe is not None:
        data = {key: value for key, value in asdict(recipe.data).items() if key not in OWN_DATA_KEYS}
        config = merge(config, {"data": data})
    return config
