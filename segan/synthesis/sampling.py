"""`segan synth sample`: new (image, mask) pairs drawn by a trained synth run from new masks.

Each pair starts from a training mask deformed by `MaskDeformer` (never a training mask
unchanged); the synth run's drawing network paints its image. The pairs are written as
PAIRS/images/synth_NNNNN.png and PAIRS/masks/synth_NNNNN.png (class indices; the ignore index
where the source mask was ignored), with PAIRS/manifest.json recording for each pair its source
mask, its deformations, and its nearest training image with their SSIM (`nearest_training`); and
two pictures: PAIRS/contact_sheet.png (mask | drawn, the first pairs) and PAIRS/memorisation.png
(the histogram of those SSIMs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from ..atomic import atomic_write
from ..batch_predict import colour_mask
from ..config import Config
from ..data import MaskEncoding, read_image, read_mask
from ..training import training_pairs
from .drawing import build_drawer, draw, to_uint8
from .masks import DrawnMask, MaskDeformer
from .memorisation import COPY_SSIM, Memorisation, nearest_training

log = logging.getLogger(__name__)

SHEET_PAIRS = 16  # pairs on the contact sheet
SHEET_COLUMNS = 4  # pairs in each of its rows
BATCH = 8  # masks drawn per forward pass


@dataclass
class SampleResult:
    """What `sample` wrote: the folder, the pair count and the memorisation summary."""

    out: str
    pairs: int
    memorisation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_drawer(synth_dir: Path) -> tuple[Config, torch.nn.Module]:
    """A synth run's config and its exported drawing network (SYNTH/generator, safetensors)."""
    from safetensors.torch import load_file
    config_path, weights = synth_dir / "config.yaml", synth_dir / "generator" / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{synth_dir} is not a finished synth run (it needs config.yaml and "
                                "generator/model.safetensors); train one with: segan synth train --data DIR --out "
                                f"{synth_dir}")
    config = Config.load(config_path)
    drawer = build_drawer(config)
    try:
        drawer.load_state_dict(load_file(str(weights)))
    except Exception as error:  # safetensors' own error type is no OSError
        raise OSError(f"{weights} cannot be loaded ({str(error).splitlines()[0]}); train the synth run again, or "
                      "restore the file") from None
    return config, drawer.eval()


def training_pairs_at_size(config: Config, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The training split's (image, mask) pairs at the synth run's scale, by image name: resized
    to data.size square (resize mode) or one crop of that size each (crop mode, at a seeded place)."""
    data = config.data
    encoding = MaskEncoding.from_config(data)
    rng = np.random.default_rng(seed)
    pairs = {}
    for pair in training_pairs(config)[0]["train"]:  # the labelled ones (data.labeled_fraction)
        image, mask = read_image(pair.image, data.in_channels), read_mask(pair.mask, encoding)
        if data.resize == "resize":
            image = cv2.resize(image, (data.size, data.size), interpolation=cv2.INTER_AREA).reshape(
                data.size, data.size, data.in_channels)
            mask = cv2.resize(mask, (data.size, data.size), interpolation=cv2.INTER_NEAREST)
        else:
            height, width = mask.shape
            if min(height, width) < data.size:
                raise ValueError(f"{pair.mask} is {width}x{height}, smaller than the synth run's {data.size} px crops")
            y, x = int(rng.integers(height - data.size + 1)), int(rng.integers(width - data.size + 1))
            image, mask = image[y:y + data.size, x:x + data.size], mask[y:y + data.size, x:x + data.size]
        pairs[pair.image.stem] = (np.ascontiguousarray(image), np.ascontiguousarray(mask))
    return pairs


def sample(synth_dir: str | Path, out: str | Path, count: int, seed: int = 0, deform: bool = True,
           progress: Callable[[int, int], None] | None = None) -> SampleResult:
    """Writes `count` new pairs drawn by the synth run `synth_dir` into `out` (see the module docstring).

    Args:
        synth_dir: a finished `segan synth train` run.
        out: the folder to write; must not hold pairs already.
        count: pairs to draw.
        seed: seeds the masks' deformations.
        deform: False draws from the training masks unchanged: only for the benchmark's ablation
            (such pairs are near copies of the training pairs, and teach nothing new).
        progress: called with (pairs done, count) after each batch.
    """
    synth_dir, out = Path(synth_dir), Path(out)
    if count < 1:
        raise ValueError(f"--count must be 1 or more, got {count}")
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds synthetic pairs (manifest.json); nothing was changed. Write "
                              "them elsewhere with --out NEW_FOLDER, or delete that folder first")
    config, drawer = load_drawer(synth_dir)
    training = training_pairs_at_size(config, seed)
    names = sorted(training)
    masks = {name: mask for name, (_, mask) in training.items()}
    deformer = MaskDeformer(masks, config.data.rotations, 0, config.data.ignore_index, seed) if deform else None
    drawn_masks = [deformer.draw() if deformer else DrawnMask(masks[names[index % len(names)]],
                                                                  names[index % len(names)]) for index in range(count)]
    images = _draw_all(drawer, [drawn.mask for drawn in drawn_masks], config.data.num_classes, progress)
    memorisation = nearest_training(images, [training[name][0] for name in names])
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    records = []
    for index, (drawn, image) in enumerate(zip(drawn_masks, images)):
        name = f"synth_{index:05d}.png"
        _write_png(out / "images" / name, image)
        _write_png(out / "masks" / name, drawn.mask.astype(np.uint8))
        records.append({"image": f"images/{name}", "mask": f"masks/{name}", **drawn.record(),
                        "nearest_training": names[memorisation.nearest[index]],
                        "ssim": round(float(memorisation.ssim[index]), 4)})
    summary = memorisation.summary()
    _pictures(out, drawn_masks, images, memorisation, config.data.classes)
    manifest = {"synth_run": str(synth_dir.resolve()), "count": count, "seed": seed, "deformed": deform,
                "classes": config.data.classes, "ignore_index": config.data.ignore_index, "size": config.data.size,
                "memorisation": summary, "pairs": records}
    atomic_write(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return SampleResult(str(out), count, summary)


def _draw_all(drawer: torch.nn.Module, masks: list[np.ndarray], num_classes: int,
              progress: Callable[[int, int], None] | None) -> list[np.ndarray]:
    from ..models import one_hot
    images: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(masks), BATCH):
            batch = torch.from_numpy(np.stack(masks[start:start + BATCH])).long()
            images += list(to_uint8(draw(drawer, one_hot(batch, num_classes))))
            if progress is not None:
                progress(len(images), len(masks))
    return images


def _write_png(path: Path, picture: np.ndarray) -> None:
    rgb = picture[..., ::-1] if picture.ndim == 3 and picture.shape[-1] == 3 else picture
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb))
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write(path, encoded.tobytes())


def _pictures(out: Path, drawn: list[DrawnMask], images: list[np.ndarray], memorisation: Memorisation,
              classes: list[str]) -> None:
    from ..plots import picture_grid, save, ssim_histogram
    binary = len(classes) == 2
    panels = []
    for index, (item, image) in enumerate(zip(drawn[:SHEET_PAIRS], images)):
        shown = colour_mask(np.where(item.mask < len(classes), item.mask, 0), binary)
        panels += [(f"{index}: mask from {item.source}", shown),
                   (f"drawn; SSIM {memorisation.ssim[index]:.2f} to nearest", image)]
    rows = [panels[start:start + 2 * SHEET_COLUMNS] for start in range(0, len(panels), 2 * SHEET_COLUMNS)]
    title = (f"{out.name}: mask | image drawn from it, the first {len(panels) // 2} of {len(images)} "
             f"(SSIM to the nearest training image; {COPY_SSIM:g} or more counts as a copy)")
    save(picture_grid(rows, title, panel_width=1.8), out / "contact_sheet.png")
    save(ssim_histogram(memorisation.ssim, COPY_SSIM), out / "memorisation.png")
