"""Dataset reading: layouts and pairing, image reading and mask decoding, the torch Dataset, the demo set."""

from .dataset import EpochSampler, SegmentationDataset
from .demo import make_demo_dataset
from .encoding import MaskEncoding, read_mask, read_roi
from .io import ImageReadError, read_image
from .pairs import DatasetLayoutError, Layout, Matching, Pair, detect_layout, find_split, find_splits, match_folders

__all__ = ["EpochSampler", "SegmentationDataset", "make_demo_dataset", "MaskEncoding", "read_mask", "read_roi", "ImageReadError",
           "read_image", "DatasetLayoutError", "Layout", "Matching", "Pair", "detect_layout", "find_split",
           "find_splits", "match_folders"]
