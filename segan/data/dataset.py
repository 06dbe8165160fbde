"""The torch Dataset that turns pairs into normalised tensors."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import read_image, read_mask
from .pairs import Pair


class SegmentationDataset(Dataset):
    """Yields `dict(image=float CxHxW tensor, mask=long HxW tensor, name=str)`.

    Args:
        pairs: image/mask file pairs.
        transform: an albumentations pipeline called as `transform(image=, mask=)`; it must end
            in normalisation (see `segan.transforms`).
        in_channels: 1 or 3.
        num_classes: class count including background (2 = binary).
        ignore_index: mask value left out of loss and scores.
    """

    def __init__(self, pairs: Sequence[Pair], transform: Callable, in_channels: int = 3,
                 num_classes: int = 2, ignore_index: int = 255) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        image = read_image(pair.image, self.in_channels)
        mask = read_mask(pair.mask, self.num_classes, self.ignore_index)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{pair.image} is {image.shape[1]}x{image.shape[0]} but its mask {pair.mask} "
                             f"is {mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size")
        sample = self.transform(image=image, mask=mask)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
        mask = torch.from_numpy(np.ascontiguousarray(sample["mask"])).long()
        return dict(image=image, mask=mask, name=pair.image.stem)
