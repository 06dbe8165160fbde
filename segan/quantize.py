"""int8 inference: post-training quantisation of an exported OpenVINO generator with NNCF.

`segan export RUN --format openvino --int8` calls `quantize_export`:

1. **Calibrate**: NNCF's post-training quantisation sees up to `count` training images, each read
   and normalised by segan's own preprocessing (`prepare_image`, then padded to the stride, a
   large native-scale image cut to its centre tile), so calibration sees what inference sees.
2. **Check**: the float32 and the int8 model segment the validation split with the same
   `Predictor`; the int8 model's score (binary: pooled foreground Dice; multi-class: mIoU) may
   fall at most `max_drop` below the float32 model's.
3. **Fall back**: when it falls further, NNCF's accuracy-controlled quantisation runs with that
   score as its metric and `max_drop` as its bound: it returns the layers that cost most to float
   until the bound holds.

The figures of the check (both scores, the share of pixels whose class agrees) and the
calibration go into `predict.json`, beside the model.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
from pathlib import Path
import numpy as np
import torch

from .config import INT8_CALIBRATION_IMAGES, INT8_MAX_DROP, Config
from .preprocess import pad_to_multiple, prepare_image

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = INT8_CALIBRATION_IMAGES
MAX_DROP = INT8_MAX_DROP
CHECK_IMAGES = 100  # validation images the check segments


class QuantizationError(RuntimeError):
    """An int8 export that cannot be made: no calibration images, or NNCF not installed."""


def require_nncf() -> None:
    import importlib.util
    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        raise QuantizationError("--int8 quantises with NNCF in OpenVINO, which are not installed: "
                                "pip install 'segan[int8]' (or drop --int8 for the float32 export)")


def calibration_inputs(config: Config, stride: int, count: int = CALIBRATION_IMAGES, tile: int = 1024,
                       seed: int = 0) -> list[np.ndarray]:
    """Up to `count` training images (a fixed random choice) as the network sees them: normalised
    float32 (1, C, H, W), padded to `stride`; native-scale images larger than `tile` cut to their
    centre `tile` square, as prediction tiles them."""
    from .data import read_image
    from .data.pairs import find_split
    try:
        pairs = find_split(config.data, "train")
    except Exception as error:
        raise QuantizationError(f"--int8 calibrates on the run's training images, which cannot be read here "
                                f"({str(error)[:300]}); give the dataset folder with --data DIR") from None
    chosen = np.random.default_rng(seed).permutation(len(pairs))[:count]
    inputs = []
    for index in sorted(chosen):
        array = prepare_image(read_image(pairs[index].image, config.data.in_channels), config.data)
        _, height, width = array.shape
        top, left = max(0, (height - tile) // 2), max(0, (width - tile) // 2)
        array = array[:, top:top + tile, left:left + tile]
        inputs.append(pad_to_multiple(torch.from_numpy(np.ascontiguousarray(array))[None], stride).numpy())
    return inputs


def require_data(config: Config) -> None:
    """Stops before any export work when the run's training or validation images cannot be read."""
    calibration_inputs(config, 32, count=0)
    validation_pairs(config, count=0)


def validation_pairs(config: Config, count: int = CHECK_IMAGES) -> list:
    """The first `count` pairs of the run's validation split."""
    from .data.pairs import find_split
    try:
        return find_split(config.data, "val")[:count]
    except Exception as error:
        raise QuantizationError(f"--int8 checks the int8 model on the run's validation split, which cannot be read "
                                f"here ({str(error)[:300]}); give the dataset folder with --data DIR") from None


def validation_score(config: Config, network, pairs) -> tuple[float, list[np.ndarray]]:
    """`network`'s score on `pairs`, segmented by `Predictor` at native size (binary: pooled
    foreground Dice; multi-class: mIoU over the classes present), and its masks."""
    from . import metrics
    from .data import MaskEncoding, read_image, read_mask, read_roi
    from .inference import Predictor
    predictor = Predictor(network, config, "cpu", precision="fp32")
    encoding = MaskEncoding.from_config(config.data)
    confusion = torch.zeros(config.data.num_classes, config.data.num_classes, dtype=torch.long)
    masks = []
    for pair in pairs:
        mask = predictor.predict(read_image(pair.image, config.data.in_channels))
        truth = torch.from_numpy(read_mask(pair.mask, encoding)).long()
        if pair.roi is not None:  # outside the region of interest is not scored, as in segan evaluate
            truth[torch.from_numpy(~read_roi(pair.roi))] = -1
        confusion += metrics.confusion_matrix(torch.from_numpy(mask).long()[None], truth[None],
                                              config.data.num_classes, encoding.ignore_index)[0]
        masks.append(mask)
    headline = metrics.summary(confusion, config.data.binary)
    return headline["dice"] if config.data.binary else headline["iou"], masks


def quantize_export(config: Config, float_xml: Path, out_xml: Path, stride: int, count: int = CALIBRATION_IMAGES,
                    max_drop: float = MAX_DROP) -> dict:
    """Writes the int8 model of `float_xml` to `out_xml` (see the module docstring); returns what
    `predict.json` records under `int8`.

    NNCF runs in a process of its own: a process that has run its quantisation crashes when it
    later starts a subprocess (seen with git, Chromium and test workers), so the caller's process
    never imports it."""
    require_nncf()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_quantize_export, (config, float_xml, out_xml, stride, count, max_drop))


def _quantize_export(config: Config, float_xml: Path, out_xml: Path, stride: int, count: int,
                     max_drop: float) -> dict:
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: the caller's stdout stays its own
        return _quantize(config, float_xml, out_xml, stride, count, max_drop)


def _quantize(config: Config, float_xml: Path, out_xml: Path, stride: int, count: int, max_drop: float) -> dict:
    inputs = calibration_inputs(config, stride, count)
    pairs = validation_pairs(config)
    if not inputs or not pairs:
        raise QuantizationError(f"{config.data.root} has no training images to calibrate on or no validation images "
                                "to check with; give the dataset folder with --data DIR")
    import nncf
    import openvino

    from .backends import OpenVinoNetwork
    float_model = openvino.Core().read_model(str(float_xml))
    calibration = nncf.Dataset(inputs)
    log.info("quantising with %d calibration images", len(inputs))
    float_score, float_masks = validation_score(config, OpenVinoNetwork(float_xml, stride), pairs)
    quantized = nncf.quantize(float_model, calibration, subset_size=len(inputs))
    int8_score, int8_masks = validation_score(config, OpenVinoNetwork(quantized, stride), pairs)
    method = "post-training quantisation"
    if float_score - int8_score > max_drop:
        log.warning("int8 scores %.4f against float32's %.4f on validation: more than %.3f lost; running NNCF's "
                    "accuracy-controlled quantisation", int8_score, float_score, max_drop)
        quantized = nncf.quantize_with_accuracy_control(
            float_model, calibration, nncf.Dataset(pairs),
            validation_fn=lambda model, items: validation_score(config, OpenVinoNetwork(model, stride), list(items))[0],
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(inputs))
        int8_score, int8_masks = validation_score(config, OpenVinoNetwork(quantized, stride), pairs)
        method = "accuracy-controlled quantisation"
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(quantized, str(out_xml), compress_to_fp16=False)
    agreement = float(np.mean([(a == b).mean() for a, b in zip(float_masks, int8_masks)]))
    return {"method": method, "calibration": {"split": "train", "images": len(inputs), "seed": 0,
                                              "preprocessing": "segan's prepare_image, padded to the stride"},
            "check": {"split": "val", "images": len(pairs), "score": "Dice" if config.data.binary else "mIoU",
                      "float32": float_score, "int8": int8_score, "drop": float_score - int8_score,
                      "max_drop": max_drop, "pixel_agreement": agreement}}
