"""Inference backends: what turns a normalised batch into logits for `Predictor`.

One registry, `BACKENDS`, maps each `--backend` name to a loader. Every network it returns takes
a float32 (B, C, H, W) tensor whose sides are multiples of its `stride` and returns float32
logits (B, K, H, W) on the CPU or the predictor's device; the predictor does everything else
(preprocessing, padding, tiling, TTA, thresholds), so masks differ between backends only by the
arithmetic of the network itself.

- torch: the run's generator, in NHWC layout, under bf16 autocast when `precision` is bf16.
- onnxruntime: `RUN/export/model.onnx` (`segan export RUN --format onnx`), float32.
- openvino: `RUN/export/openvino/model.xml` (`segan export RUN --format openvino`, int8 with
  `--int8`), its float layers in float32 or bf16 (OpenVINO's `INFERENCE_PRECISION_HINT`).
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from .preprocess import network_input, network_layout, pad_multiple

EXPORT_DIR = "export"
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "openvino/model.xml"
# exported backend -> (the `segan export --format` that writes its model, that model's file)
EXPORTS = {"onnxruntime": ("onnx", ONNX_FILE), "openvino": ("openvino", OPENVINO_FILE)}
# backend -> (python package, pip extra that installs it)
PACKAGES = {"torch": ("torch", None), "onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


class BackendError(RuntimeError):
    """A backend that cannot run here: its package or its exported model is missing."""


class Network(Protocol):
    stride: int

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


def require_package(backend: str) -> None:
    """Raises `BackendError` naming the pip extra when `backend`'s package is not installed."""
    package, extra = PACKAGES[backend]
    if importlib.util.find_spec(package) is None:
        raise BackendError(f"--backend {backend} needs the {package} package, which is not installed: "
                           f"pip install 'segan[{extra}]' (or use --backend torch)")


class TorchNetwork:
    """The generator itself. NHWC layout and bf16 autocast are what make it fast on CPUs with
    native bf16 (docs/benchmarks/predict.md); the output is always float32."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.model = network_layout(model.to(device).eval())
        self.stride = pad_multiple(model)
        self.precision = precision

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = network_input(batch.to(self.device, non_blocking=True))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16" \
            else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return self.model(batch).float()


def _array(batch: torch.Tensor) -> np.ndarray:
    """A batch as the exported runtimes take it: a contiguous float32 array on the host."""
    return np.ascontiguousarray(batch.cpu().numpy(), dtype=np.float32)


class OnnxRuntimeNetwork:
    """An exported ONNX model in ONNX Runtime (CPU, or CUDA when its GPU build is installed)."""

    def __init__(self, path: Path, stride: int, precision: str = "fp32", device: torch.device | None = None) -> None:
        if precision == "bf16":
            raise BackendError("--backend onnxruntime runs float32 only; for bf16 use --backend openvino or torch")
        import onnxruntime
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] \
            if device is not None and device.type == "cuda" else ["CPUExecutionProvider"]
        available = set(onnxruntime.get_available_providers())
        self.session = onnxruntime.InferenceSession(str(path), providers=[p for p in providers if p in available])
        self.input = self.session.get_inputs()[0].name
        self.stride = stride
        self.precision = precision

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: _array(batch)})[0])


class OpenVinoNetwork:
    """An exported OpenVINO model on the CPU, its float layers in float32 or bf16 (int8 layers of a
    quantised model stay int8). `model`: the model file, an `openvino.Model`, or one compiled already."""

    def __init__(self, model, stride: int, precision: str = "fp32", device: torch.device | None = None) -> None:
        import openvino
        if not isinstance(model, openvino.CompiledModel):
            model = openvino.Core().compile_model(str(model) if isinstance(model, Path) else model, "CPU",
                                                  {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})
        self.model = model
        self.stride = stride
        self.precision = precision

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.model(_array(batch))[0], dtype=np.float32))


def load_exported(run: Path, backend: str, stride: int, precision: str, device: torch.device) -> Network:
    """The exported model of `run` for `backend` (onnxruntime or openvino)."""
    require_package(backend)
    format_name, file = EXPORTS[backend]
    path = Path(run) / EXPORT_DIR / file
    if not path.is_file():
        raise BackendError(f"{path} not found: --backend {backend} runs the exported model; write it with "
                           f"segan export {run} --format {format_name}")
    loader: Callable[..., Network] = OnnxRuntimeNetwork if backend == "onnxruntime" else OpenVinoNetwork
    return loader(path, stride, precision, device)

