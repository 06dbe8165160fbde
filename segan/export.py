"""`segan export`: a run's generator as ONNX or OpenVINO, with what a predictor needs beside it.

Writes into `RUN/export/`:
- `model.onnx`: input `image` (float32, N x C x H x W, N, H and W dynamic: H and W multiples of
  `pad_multiple`), output `logits` (float32, N x K x H x W);
- `openvino/model.xml` + `.bin` (`--format openvino`), converted from that ONNX file with float32
  weights (OpenVINO picks bf16 at run time through its precision hint, not in the file), or with
  `--int8` the model NNCF quantised from it (`segan.quantize`);
- `predict.json`: normalisation, size policy, pad multiple, threshold, classes, palette, the
  output activation, and the self-check below.

The export checks itself: the torch generator and the exported model segment a real image (by
default the first validation image of the run's data) and the largest logit difference is
printed and recorded; above `TOLERANCE` the export is refused and nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import quantize
from .atomic import atomic_write
from .backends import EXPORT_DIR, ONNX_FILE, OPENVINO_FILE, OnnxRuntimeNetwork, OpenVinoNetwork, require_package
from .config import EXPORT_FORMATS, Config
from .preprocess import pad_multiple, pad_to_multiple, prepare_image

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # largest |logit difference| accepted between torch and the exported model (float32)
OPSET = 17


class ExportError(RuntimeError):
    """An export that cannot be made, or that does not reproduce the torch model."""


def check_image(config: Config, image: str | Path | None) -> tuple[np.ndarray, str]:
    """The image the export is checked on: `image`, else the first validation image of the run's
    data, else (data not on this machine) a synthetic demo image, said so."""
    from .data import read_image
    from .data.pairs import find_split
    if image is not None:
        return read_image(Path(image), config.data.in_channels), str(image)
    try:
        first = find_split(config.data, "val")[0].image
        return read_image(first, config.data.in_channels), str(first)
    except Exception as error:  # the data may live on another machine
        from .data.demo import make_sample
        log.warning("checking the export on a synthetic image: the run's data (%s) cannot be read here (%s); "
                    "give --image PATH to check on a real one", config.data.root, str(error)[:200])
        sample = make_sample(np.random.default_rng(0), config.data.size)[0]
        return (sample.mean(axis=2, keepdims=True).astype(np.uint8) if config.data.in_channels == 1 else sample,
                "synthetic demo image")


def predict_settings(config: Config, stride: int, threshold: float) -> dict:
    """Everything a predictor outside segan needs to reproduce `segan predict`."""
    from .batch_predict import PALETTE
    data = config.data
    mean, std = data.normalization()
    return {
        "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": data.in_channels,
                  "from": "uint8 image, RGB (or grey) order; 16-bit images scaled to 8 bits by their bit depth"},
        "normalization": {"mean": [m * 255 for m in mean], "std": [s * 255 for s in std],
                          "rule": "(pixel - mean) / std, per channel, on 0-255 values"},
        "size_policy": {"mode": data.resize, "size": data.size,
                        "rule": (f"resize to {data.size}x{data.size} (bilinear), then resize the probabilities back"
                                 if data.resize == "resize" else
                                 "native resolution; segan predict tiles images larger than its --tile-size")},
        "pad_multiple": stride,
        "padding": "mirror the image at the bottom and right up to multiples of pad_multiple; crop the output back",
        "output": {"name": "logits", "activation": "sigmoid" if data.binary else "softmax over channels"},
        "threshold": threshold if data.binary else None,
        "classes": list(data.classes),
        "palette": PALETTE[:data.num_classes].tolist(),
    }


def _write_onnx(model: torch.nn.Module, channels: int, stride: int, path: Path) -> None:
    example = torch.zeros(1, channels, 2 * stride, 2 * stride)
    axes = {0: "batch", 2: "height", 3: "width"}

    def writer(handle) -> None:
        # The TorchScript exporter: it needs no onnxscript and gives dynamic H and W in one pass.
        torch.onnx.export(model, (example,), handle, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=OPSET, dynamo=False)
    atomic_write(path, writer)


def _write_openvino(onnx_path: Path, xml_path: Path) -> None:
    import openvino
    model = openvino.convert_model(str(onnx_path))
    with tempfile.TemporaryDirectory(dir=xml_path.parent.parent) as staging:
        staged = Path(staging) / xml_path.name
        openvino.save_model(model, str(staged), compress_to_fp16=False)
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        # .bin first: an .xml never names weights that are not there yet
        staged.with_suffix(".bin").replace(xml_path.with_suffix(".bin"))
        staged.replace(xml_path)


def export_run(run: str | Path, format: str = "onnx", image: str | Path | None = None, threshold: float = 0.5,
               int8: bool = False, data_root: str | Path | None = None,
               calibration_images: int = quantize.CALIBRATION_IMAGES, max_drop: float = quantize.MAX_DROP) -> dict:
    """Exports `run`'s generator (see the module docstring) and checks it.

    Args:
        run: a run folder written by `segan train`.
        format: onnx or openvino (openvino writes the ONNX file too, as its source).
        image: the image to check the export on; default the run's first validation image.
        threshold: the binary threshold predict.json records (the one predict uses by default).
        int8: openvino only: quantise the OpenVINO model to int8 (`segan.quantize`), calibrated on
            `calibration_images` training images and checked on the validation split, where it may
            lose at most `max_drop` of Dice (binary) or mIoU.
        data_root: the dataset folder, where it is not the run's own (`data.root`).

    Returns:
        predict.json's content, with the files written and the check's figures.
    """
    from .inference import Predictor
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if int8 and format != "openvino":
        raise ExportError("--int8 quantises the OpenVINO model: give --format openvino --int8")
    require_package("onnxruntime")  # the ONNX file is checked in ONNX Runtime, whatever the format
    if format == "openvino":
        require_package("openvino")
    if int8:
        quantize.require_nncf()
    run = Path(run)
    predictor = Predictor.from_pretrained(run, device="cpu", precision="fp32")
    model = predictor.network.model.to(memory_format=torch.contiguous_format).eval()
    config, stride = predictor.config, pad_multiple(model)
    if data_root is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(data_root)))
    if int8:
        quantize.require_data(config)  # before anything is written
    out = run / EXPORT_DIR
    onnx_path = out / ONNX_FILE
    _write_onnx(model, config.data.in_channels, stride, onnx_path)
    exported = {"onnx": OnnxRuntimeNetwork(onnx_path, stride)}
    files = [onnx_path]
    if format == "openvino":
        xml_path = out / OPENVINO_FILE
        _write_openvino(onnx_path, xml_path)
        exported["openvino"] = OpenVinoNetwork(xml_path, stride)
        files += [xml_path, xml_path.with_suffix(".bin")]

    array, source = check_image(config, image)
    batch = pad_to_multiple(torch.from_numpy(prepare_image(array, config.data))[None], stride)
    with torch.inference_mode():
        reference = model(batch)
    differences = {name: float((network(batch) - reference).abs().max()) for name, network in exported.items()}
    worst = max(differences.values())
    if not worst <= TOLERANCE:  # NaN fails too
        for path in files:
            path.unlink(missing_ok=True)
        raise ExportError(f"the exported model does not reproduce the torch generator on {source}: largest logit "
                          f"difference {worst:.3g} (tolerance {TOLERANCE}); nothing was kept. Please report this "
                          f"with the run's config.yaml")
    settings = {"format": format, "files": {path.name: str(path.relative_to(out)) for path in files},
                **predict_settings(config, stride, threshold),
                "check": {"image": source, "input_shape": list(batch.shape),
                          "max_abs_logit_difference": differences, "tolerance": TOLERANCE},
                "precision": "int8" if int8 else "float32", "torch": torch.__version__, "opset": OPSET}
    if int8:  # the float model passed its check: quantise it, in place of the float one
        with tempfile.TemporaryDirectory(dir=out) as staging:
            staged = Path(staging) / xml_path.name
            settings["int8"] = quantize.quantize_export(config, xml_path, staged, stride, calibration_images, max_drop)
            staged.with_suffix(".bin").replace(xml_path.with_suffix(".bin"))
            staged.replace(xml_path)
    atomic_write(out / "predict.json", (json.dumps(settings, indent=2) + "\n").encode())
    return settings
