"""Dataset reading: layouts and pairing, image and mask decoding, the torch Dataset, the demo set."""

from .dataset import SegmentationDataset
from .demo import make_demo_dataset
from .io import ImageReadError, read_image, read_mask
from .pairs import DatasetLayoutError, Pair, find_splits, pair_by_stem

__all__ = ["SegmentationDataset", "make_demo_dataset", "ImageReadError", "read_image", "read_mask",
           "DatasetLayoutError", "Pair", "find_splits", "pair_by_stem"]
