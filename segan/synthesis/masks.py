"""New masks to synthesise images from: training masks changed so that none is a training mask.

A pix2pix generator learns, with its L1 loss, to return each training image from that image's
mask, and it ignores its input noise; given a training mask it returns a near copy of the training
image, which teaches a segmenter nothing new. So every mask `segan synth sample` draws is a
training mask deformed: flipped (turned too, where `data.rotations` allows it), scaled, turned and
shifted (affine, the uncovered border becoming background), bent (elastic), and, half the time,
given one object cut from another training mask. A draw equal to any training mask is drawn
again. Each draw records what was done, for the sample's manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import albumentations as A
import cv2
import numpy as np

from ..transforms import seed_compose

PASTE_PROBABILITY = 0.5  # of a draw receiving an object cut from another training mask
ATTEMPTS = 20  # draws of one mask before giving up (only masks no deformation changes get there)


@dataclass
class DrawnMask:
    """A new mask and how it was made from the training masks.

    Attributes:
        mask: HxW class indices.
        source: the name of the training mask deformed.
        transforms: the deformations applied, each with its parameters (albumentations' replay).
        pasted: where an object was cut from and put: {"from", "class", "box": [x, y, w, h],
            "offset": [dx, dy]}; None when nothing was pasted.
    """

    mask: np.ndarray
    source: str
    transforms: list[dict[str, Any]] = field(default_factory=list)
    pasted: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of this draw (everything but the mask itself)."""
        return {"source": self.source, "transforms": self.transforms, "pasted": self.pasted}


def fingerprint(mask: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(mask).tobytes() + str(mask.shape).encode()).hexdigest()


def deformation(rotations: bool, background: int) -> A.ReplayCompose:
    """The deformations of one draw, recorded as they are applied."""
    flips: list = [A.HorizontalFlip(p=0.5)] + ([A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)] if rotations else [])
    return A.ReplayCompose([
        *flips,
        A.Affine(scale=(0.8, 1.2), rotate=(-20, 20), translate_percent=(-0.1, 0.1), border_mode=cv2.BORDER_CONSTANT,
                 fill_mask=background, p=1.0),
        A.ElasticTransform(alpha=40, sigma=8, border_mode=cv2.BORDER_CONSTANT, fill_mask=background, p=0.5),
    ])


def _applied(replay: dict) -> list[dict[str, Any]]:
    """The transforms a replay says were applied, with their parameters as plain JSON values."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return None  # displacement fields and matrices: the name and scalars say enough
        return value
    kept = ("scale", "rotate", "translate_px", "translate_percent", "shear", "alpha", "sigma", "factor")
    return [{"name": item["__class_fullname__"],
             **{key: plain(value) for key, value in (item.get("params") or {}).items() if key in kept}}
            for item in replay["transforms"] if item.get("applied")]


class MaskDeformer:
    """Draws new masks from training masks (see the module docstring).

    Args:
        masks: the training masks by name (HxW class indices, all of one shape).
        rotations: whether vertical flips and quarter turns keep the labels valid (`data.rotations`).
        background: the class that uncovered borders become.
        ignore_index: pixels of this value are never pasted as objects.
        seed: seeds every draw; the same seed draws the same masks.
    """

    def __init__(self, masks: Mapping[str, np.ndarray], rotations: bool = True, background: int = 0,
                 ignore_index: int = 255, seed: int = 0) -> None:
        if not masks:
            raise ValueError("no training masks to deform")
        self.masks = dict(masks)
        self.names = sorted(self.masks)
        self.background, self.ignore_index = background, ignore_index
        self.known = {fingerprint(mask) for mask in self.masks.values()}
        self.rng = np.random.default_rng(seed)
        self.compose = deformation(rotations, background)
        seed_compose(self.compose, seed)

    def draw(self, source: str | None = None) -> DrawnMask:
        """A new mask deformed from `source` (a training mask chosen at random when None).

        Raises:
            ValueError: no draw of `source` differs from every training mask (a mask of one class).
        """
        source = source or self.names[self.rng.integers(len(self.names))]
        for _ in range(ATTEMPTS):
            done = self.compose(image=np.zeros((*self.masks[source].shape, 1), np.uint8), mask=self.masks[source])
            drawn = DrawnMask(done["mask"], source, _applied(done["replay"]))
            if self.rng.random() < PASTE_PROBABILITY:
                self.paste(drawn)
            if fingerprint(drawn.mask) not in self.known:
                return drawn
        raise ValueError(f"training mask {source}: {ATTEMPTS} deformations all gave back a training mask (one class "
                         "everywhere?); leave such masks out of synthesis")

    def paste(self, drawn: DrawnMask) -> None:
        """Puts one object (a connected region of one class) cut from another training mask into
        `drawn`, shifted at random; nothing when no other mask has one."""
        others = [name for name in self.names if name != drawn.source]
        self.rng.shuffle(others)
        for name in others:
            other = self.masks[name]
            classes = [value for value in np.unique(other) if value not in (self.background, self.ignore_index)]
            if not classes:
                continue
            value = int(classes[self.rng.integers(len(classes))])
            count, labels, stats, _ = cv2.connectedComponentsWithStats((other == value).astype(np.uint8), connectivity=8)
            component = int(self.rng.integers(1, count))
            x, y, width, height = (int(v) for v in stats[component, :4])
            rows, columns = drawn.mask.shape
            dx, dy = int(self.rng.integers(-x, columns - x - width + 1)), int(self.rng.integers(-y, rows - y - height + 1))
            ys, xs = np.nonzero(labels == component)
            drawn.mask = drawn.mask.copy()
            drawn.mask[ys + dy, xs + dx] = value
            drawn.pasted = {"from": name, "class": value, "box": [x, y, width, height], "offset": [dx, dy]}
            return
