"""The torch Dataset that turns pairs into normalised tensors."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .classes import ClassStats
from .encoding import MaskEncoding, read_mask, read_roi
from .io import read_image
from .pairs import Pair


class SegmentationDataset(Dataset):
    """Yields `dict(image=float CxHxW tensor, mask=long HxW tensor, name=str)`.

    Args:
        pairs: image/mask file pairs.
        transform: an albumentations pipeline called as `transform(image=, mask=)`; it must end
            in normalisation (see `segan.transforms`).
        in_channels: 1 or 3.
        encoding: how mask values become class indices (default binary). Pixels outside a
            pair's region of interest become `encoding.ignore_index`.
        augment_seed: with an `EpochSampler`, which asks for `(index, cycle)`, the transform is
            seeded from (augment_seed, cycle, index): each sample's augmentation is then the same
            whichever worker process draws it and whether or not the run was resumed.
        class_stats: the pairs' class pixels (in pair order), for rare-class crops.
        rare_class_crops: with an `EpochSampler`, the probability that a sample is instead a crop
            centred on a pixel of a class drawn inverse to its pixel share, from an image that
            holds it (DAFormer's rare class sampling, nnU-Net's forced-foreground patches).
    """

    def __init__(self, pairs: Sequence[Pair], transform: Callable, in_channels: int = 3,
                 encoding: MaskEncoding | None = None, augment_seed: int = 0,
                 class_stats: ClassStats | None = None, rare_class_crops: float = 0.0) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.in_channels = in_channels
        self.encoding = encoding or MaskEncoding()
        self.augment_seed = augment_seed
        if rare_class_crops and class_stats is None:
            raise ValueError("rare-class crops need the class statistics of the pairs")
        self.rare_class_crops = rare_class_crops
        if rare_class_crops:
            self.class_probabilities = class_stats.rare_class_probabilities()
            self.holders = [np.nonzero(class_stats.pixels[:, c])[0] for c in range(len(class_stats.classes))]

    def __len__(self) -> int:
        return len(self.pairs)

    def draw(self, index: int, cycle: int) -> tuple[int, int | None]:
        """The pair a sampled `(index, cycle)` trains on, and the class its crop centres on
        (None: a plain sample), drawn from (augment_seed, cycle, index)."""
        rng = np.random.default_rng([self.augment_seed, cycle, index, 2])
        if not self.rare_class_crops or rng.random() >= self.rare_class_crops:
            return index, None
        focus = int(rng.choice(len(self.class_probabilities), p=self.class_probabilities))
        return int(self.holders[focus][rng.integers(len(self.holders[focus]))]), focus

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        focus = None
        if isinstance(item, tuple):
            index, cycle = item
            if hasattr(self.transform, "set_random_seed"):  # albumentations keeps its own generators
                seed = np.random.SeedSequence([self.augment_seed, cycle, index]).generate_state(1)[0]
                self.transform.set_random_seed(int(seed))
            index, focus = self.draw(index, cycle)
        else:
            index = item
        pair = self.pairs[index]
        image = read_image(pair.image, self.in_channels)
        mask = read_mask(pair.mask, self.encoding)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{pair.image} is {image.shape[1]}x{image.shape[0]} but its mask {pair.mask} "
                             f"is {mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size")
        if pair.roi is not None:
            inside = read_roi(pair.roi)
            if inside.shape != mask.shape:
                raise ValueError(f"region of interest {pair.roi} is {inside.shape[1]}x{inside.shape[0]} but "
                                 f"{pair.image} is {image.shape[1]}x{image.shape[0]}")
            mask[~inside] = self.encoding.ignore_index if self.encoding.ignore_index is not None else 255
        sample = self.transform(image=image, mask=mask) if focus is None else \
            self.transform(image=image, mask=mask, focus_class=focus)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
        mask = torch.from_numpy(np.ascontiguousarray(sample["mask"])).long()
        return dict(image=image, mask=mask, name=pair.image.stem)


class EpochSampler(Sampler):
    """Shuffles `size` samples in an order that depends on (seed, epoch) alone, and yields
    `(index, cycle)`, where cycle counts the passes through the set (the epoch, when an epoch is
    one pass), so the dataset can seed each sample's augmentation the same way and a sample seen
    twice in an epoch is augmented twice anew. With `length`, each epoch takes that many samples
    from an endless stream of seeded permutations.

    A resumed run, or one whose workers start anew, then sees exactly the batches an
    uninterrupted run would have. The trainer calls `set_epoch` before each epoch.
    """

    def __init__(self, size: int, seed: int = 0, length: int | None = None) -> None:
        self.size = size
        self.seed = seed
        self.length = size if length is None else length  # more than `size`: permutations follow each other
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Each epoch starts where the stream of permutations left off, so a long unlabelled set
        # is walked through over the epochs rather than its first part every time.
        start = self.epoch * self.length
        cycle, offset = divmod(start, self.size)
        yielded = 0
        while yielded < self.length:
            state = np.random.SeedSequence([self.seed, cycle]).generate_state(1)[0]
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(int(state))).tolist()
            for index in order[offset:offset + self.length - yielded]:
                yield index, cycle
                yielded += 1
            cycle, offset = cycle + 1, 0
