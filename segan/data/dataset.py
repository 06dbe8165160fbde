"""The torch Dataset that turns pairs into normalised tensors."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

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
    """

    def __init__(self, pairs: Sequence[Pair], transform: Callable, in_channels: int = 3,
                 encoding: MaskEncoding | None = None) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.in_channels = in_channels
        self.encoding = encoding or MaskEncoding()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
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
        sample = self.transform(image=image, mask=mask)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
        mask = torch.from_numpy(np.ascontiguousarray(sample["mask"])).long()
        return dict(image=image, mask=mask, name=pair.image.stem)
