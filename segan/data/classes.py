"""Class statistics of the training masks: what class weights and rare-class crops come from.

Counted per image in the pass `segan data check` (and training's check before the first step)
makes over the masks, ignored pixels left out; `RUN/class_stats.json` keeps them beside a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class ClassStats:
    """Pixels of each class in each training image.

    Attributes:
        classes: class names, background first.
        images: the images' paths, one per row of `pixels`.
        pixels: (images, classes) pixel counts.
    """

    classes: list[str]
    images: list[str]
    pixels: np.ndarray

    def share(self) -> np.ndarray:
        """Each class's share of all labelled pixels."""
        total = self.pixels.sum()
        return self.pixels.sum(axis=0) / max(total, 1)

    def images_holding(self) -> np.ndarray:
        """How many images hold each class."""
        return (self.pixels > 0).sum(axis=0)

    def weights(self, method: str) -> list[float]:
        """Class weights for the cross-entropy, rounded to 4 decimals (the values a config records).

        - median-frequency (Eigen & Fergus 2015, SegNet): a class's frequency is its pixels over
          all pixels of the images that hold it; its weight is the median frequency over its own.
        - inverse-sqrt: 1 / sqrt(share of all pixels), scaled so the average pixel weighs 1 (the
          loss keeps its size).

        A class with no pixels gets 1: no target pixel would carry its weight anyway.
        """
        present = self.pixels.sum(axis=0) > 0
        weights = np.ones(len(self.classes))
        if method == "median-frequency":
            image_totals = self.pixels.sum(axis=1, keepdims=True)
            holding = (self.pixels > 0) * image_totals
            frequency = self.pixels.sum(axis=0)[present] / holding.sum(axis=0)[present]
            weights[present] = np.median(frequency) / frequency
        elif method == "inverse-sqrt":
            share = self.share()[present]
            raw = 1 / np.sqrt(share)
            weights[present] = raw / (raw * share).sum()
        else:
            raise ValueError(f"unknown class weighting '{method}'; choose median-frequency or inverse-sqrt")
        return [round(float(w), 4) for w in weights]

    def rare_class_probabilities(self) -> np.ndarray:
        """How often a rare-class crop goes to each class: inverse to its pixel share, among the
        classes some image holds (the background, class 0, included: it can be rare too)."""
        share = self.share()
        inverse = np.where(share > 0, 1 / np.where(share > 0, share, 1), 0.0)
        return inverse / inverse.sum()

    def subset(self, images: Sequence[str | Path]) -> ClassStats:
        """The statistics of `images` alone (e.g. the labelled part of a --labeled-fraction run)."""
        row = {image: i for i, image in enumerate(self.images)}
        rows = [row[str(image)] for image in images]
        return ClassStats(self.classes, [self.images[i] for i in rows], self.pixels[rows])

    def save(self, path: str | Path, weights: list[float] | None = None) -> None:
        """Writes the statistics (and the class weights used, if any) as JSON, atomically."""
        from ..atomic import atomic_write
        share, holding = self.share(), self.images_holding()
        summary = {name: {"share": round(float(share[i]), 6), "images": int(holding[i])}
                   for i, name in enumerate(self.classes)}
        payload = {"classes": self.classes, "summary": summary, "class_weights": weights,
                   "images": self.images, "pixels": self.pixels.tolist()}
        atomic_write(path, (json.dumps(payload) + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> ClassStats:
        values = json.loads(Path(path).read_text())
        return cls(values["classes"], values["images"], np.asarray(values["pixels"], dtype=np.int64))

    def format(self) -> list[str]:
        """Lines of a table: each class's pixel share, the images holding it, and the weights and
        rare-class crop share each setting would give."""
        share, holding, rare = self.share(), self.images_holding(), self.rare_class_probabilities()
        median, inverse = self.weights("median-frequency"), self.weights("inverse-sqrt")
        width = max(len(name) for name in self.classes)
        lines = [f"  {'class':<{width}}  pixels %  images  median-frequency  inverse-sqrt  rare-class crops %"]
        for i, name in enumerate(self.classes):
            lines.append(f"  {name:<{width}}  {100 * share[i]:8.3f}  {holding[i]:6d}  {median[i]:16.4f}"
                         f"  {inverse[i]:12.4f}  {100 * rare[i]:18.1f}")
        return lines
