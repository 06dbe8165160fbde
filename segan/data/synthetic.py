"""Synthetic pairs in training (`segan train --synthetic PAIRS`): reading a folder `segan synth
sample` wrote, and batches that hold a fixed share of them.

Each training batch holds `round(ratio x batch size)` synthetic pairs (at least one, and at least
one real pair) and real pairs for the rest. An epoch keeps the steps it has without synthetic pairs
(one pass over the real pairs, or `train.min_epoch_steps`), so runs with and without them compare
step for step; both kinds are walked through across epochs, each in a seeded order and augmented
anew, as unlabelled images are. Samples say which they are (`synthetic`), so the step logs the
two losses apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from torch.utils.data import Dataset, Sampler

from .dataset import EpochSampler, SegmentationDataset
from .encoding import MaskEncoding
from .pairs import DatasetLayoutError, Pair


def read_synthetic(folder: str | Path, classes: Sequence[str], ignore_index: int | None) -> list[Pair]:
    """The pairs of a `segan synth sample` folder, checked against the run's classes.

    Raises:
        DatasetLayoutError: no manifest.json, other classes than the run's, or a missing file.
    """
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetLayoutError(f"--synthetic {folder}: no manifest.json there; give a folder written by segan synth "
                                 "sample")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = [(record["image"], record["mask"]) for record in manifest["pairs"]]
        manifest_classes = list(manifest["classes"])
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetLayoutError(f"{manifest_path} is not a manifest segan synth sample wrote ({error!r}); sample the "
                                 "pairs again into a new folder") from None
    if manifest_classes != list(classes):
        raise DatasetLayoutError(f"{manifest_path}: its pairs are of the classes {manifest_classes}, the run's are "
                                 f"{list(classes)}; sample pairs from a synth run trained on this dataset")
    if manifest.get("ignore_index") != ignore_index:
        raise DatasetLayoutError(f"{manifest_path}: its masks mark ignored pixels with {manifest.get('ignore_index')}, "
                                 f"the run with {ignore_index}; give --ignore-index {manifest.get('ignore_index')}")
    pairs = [Pair(folder / image, folder / mask) for image, mask in listed]
    missing = [str(path) for pair in pairs for path in (pair.image, pair.mask) if not path.is_file()]
    if missing:
        raise DatasetLayoutError(f"{manifest_path} lists {len(missing)} file(s) that are not there, e.g. {missing[0]}; "
                                 "sample the pairs again into a new folder")
    return pairs


def synthetic_encoding(num_classes: int, ignore_index: int | None) -> MaskEncoding:
    """Synthetic masks hold class indices, binary ones too (0/1, not 0/255): an identity value
    map says so, where the binary rule would take an ignore index of 255 for foreground."""
    values = {index: index for index in range(num_classes)}
    if ignore_index is not None:
        values[ignore_index] = ignore_index
    return MaskEncoding(num_classes=num_classes, ignore_index=ignore_index, value_map=values)


class MixedDataset(Dataset):
    """Real samples at indices 0..len(real)-1, synthetic ones after them; each sample marked."""

    def __init__(self, real: SegmentationDataset, synthetic: SegmentationDataset) -> None:
        self.real, self.synthetic = real, synthetic

    def __len__(self) -> int:
        return len(self.real) + len(self.synthetic)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, cycle = item
        if index < len(self.real):
            return {**self.real[(index, cycle)], "synthetic": False}
        return {**self.synthetic[(index - len(self.real), cycle)], "synthetic": True}


class MixedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of `real_per_batch` real and `synthetic_per_batch` synthetic samples, both in seeded
    orders that depend on (seed, epoch) alone (`EpochSampler`), so a resumed run sees the batches
    of the uninterrupted one.

    Args:
        real: the real samples' sampler; its length sets the epoch's.
        real_size: how many real samples there are (synthetic indices start there).
        synthetic_size: how many synthetic samples there are.
        real_per_batch, synthetic_per_batch: each batch's make-up.
        seed: the synthetic order's seed (the real one has its own).
    """

    def __init__(self, real: EpochSampler, real_size: int, synthetic_size: int, real_per_batch: int,
                 synthetic_per_batch: int, seed: int) -> None:
        self.real, self.real_size = real, real_size
        self.real_per_batch, self.synthetic_per_batch = real_per_batch, synthetic_per_batch
        self.batches = max(1, len(real) // real_per_batch)
        self.synthetic = EpochSampler(synthetic_size, seed, length=self.batches * synthetic_per_batch)

    def set_epoch(self, epoch: int) -> None:
        self.real.set_epoch(epoch)
        self.synthetic.set_epoch(epoch)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        real, synthetic = iter(self.real), iter(self.synthetic)
        for _ in range(self.batches):
            batch = [next(real) for _ in range(self.real_per_batch)]
            batch += [(index + self.real_size, cycle) for index, cycle in
                      (next(synthetic) for _ in range(self.synthetic_per_batch))]
            yield batch


def batch_make_up(batch_size: int, ratio: float) -> tuple[int, int]:
    """(real, synthetic) samples per batch for a synthetic share `ratio`: each at least one."""
    if batch_size < 2:
        raise ValueError(f"--synthetic needs batches of 2 or more (one real, one synthetic), got {batch_size}")
    synthetic = min(batch_size - 1, max(1, round(ratio * batch_size)))
    return batch_size - synthetic, synthetic
