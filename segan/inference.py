"""The Predictor: a trained run's generator, with its preprocessing, padding, tiling and TTA."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from .backends import Network, TorchNetwork, load_exported
from .config import BACKENDS, Config
from .data.io import to_channels, to_uint8
from .hardware import resolve_inference_precision
from .models import output_channels
from .preprocess import (labels_from_probabilities, pad_multiple, pad_to_multiple, prepare_image, probabilities,
                         restore)


class RunFolderError(ValueError):
    """A run folder that is missing a piece or holds something unreadable."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def _window(size: int) -> np.ndarray:
    """1-D blending weights for a tile: a raised cosine that never reaches zero."""
    ramp = np.sin(np.linspace(0, math.pi, size, dtype=np.float32)) ** 2
    return np.maximum(ramp, 1e-3)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: equal steps of at most tile*(1-overlap), first at 0, last flush."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile * (1 - overlap))) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


class Predictor:
    """Segments images with a trained generator.

    Args:
        model: the generator (any smp model producing logits), or a `segan.backends` network
            (an exported model in ONNX Runtime or OpenVINO).
        config: the run's config (classes, channels, normalisation, training size and mode).
        device: torch device.
        precision: fp32, bf16, or auto (bf16 where the device has native bf16); for a torch
            model, bf16 runs it under autocast. Exported networks carry their own.
        tile_size: images whose longer side exceeds this are segmented in overlapping tiles
            (only when the run trained at native scale, `resize: crop`).
        tile_overlap: fraction of a tile shared with its neighbour.
        tta: average the probabilities over flips (and 90-degree rotations when the run says
            they keep labels valid).
        tta_scales: run each view at these scales of the image too (multi-scale TTA, e.g. 0.75,
            1.0, 1.25; sides rounded to the stride) and average the probabilities, resized back.
        threshold: a binary pixel is foreground where its probability is at least this.
    """

    def __init__(self, model: torch.nn.Module | Network, config: Config, device: str | torch.device = "cpu",
                 tile_size: int = 1024, tile_overlap: float = 0.25, tta: bool = False,
                 threshold: float = 0.5, precision: str = "auto", tta_scales: Sequence[float] = (1.0,)) -> None:
        self.device = torch.device(device) if isinstance(device, str) else device
        if isinstance(model, torch.nn.Module):
            model = TorchNetwork(model, self.device, resolve_inference_precision(precision, self.device))
        self.network: Network = model
        self.config = config
        stride = self.network.stride
        self.tile_size = max(stride, tile_size // stride * stride)
        self.tile_overlap = tile_overlap
        self.tta = tta
        if not tta_scales or min(tta_scales) <= 0:
            raise ValueError(f"tta_scales must be positive factors, got {list(tta_scales)}")
        self.tta_scales = tuple(tta_scales)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold

    @property
    def precision(self) -> str:
        return self.network.precision

    @classmethod
    def from_pretrained(cls, run: str | Path, device: str = "auto", backend: str = "torch", precision: str = "auto",
                        **kwargs) -> "Predictor":
        """Loads `RUN/config.yaml` and `RUN/generator/` (safetensors); needs no training data.

        `backend` (`segan.backends.BACKENDS`) picks what runs the network: the generator in torch,
        or the model `segan export` wrote, in ONNX Runtime or OpenVINO."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        run = Path(run)
        for part in ("config.yaml", "generator/config.json", "generator/model.safetensors"):
            if not (run / part).is_file():
                raise RunFolderError(f"{run} is not a complete segan run folder: {part} is missing "
                                     "(`segan train --out RUN` writes config.yaml when training starts and generator/ when it "
                                     "ends; a run that was interrupted has none yet: finish it with segan train --resume "
                                     "--out RUN)")
        config = Config.load(run / "config.yaml")
        try:
            saved = json.loads((run / "generator" / "config.json").read_text())
        except ValueError as error:
            raise RunFolderError(f"{run / 'generator' / 'config.json'} is damaged: {error}") from None
        expected = {"classes": output_channels(config.data.num_classes), "in_channels": config.data.in_channels}
        differ = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
        if differ:
            details = ", ".join(f"{k} {got} in the generator but {want} from config.yaml" for k, (got, want) in differ.items())
            raise RunFolderError(f"{run}: generator/ and config.yaml belong to different runs ({details}; "
                                 f"config.yaml lists classes {config.data.classes}). Keep the folder as segan train wrote it")
        try:
            model = smp.from_pretrained(str(run / "generator"))
        except Exception as error:  # a tampered or truncated file surfaces from deep inside torch
            raise RunFolderError(f"{run / 'generator'}: cannot load the generator ({type(error).__name__}: "
                                 f"{str(error)[:200]})") from None
        torch_device = resolve_device(device)
        precision = resolve_inference_precision(precision, torch_device)
        if backend != "torch":
            model = load_exported(run, backend, pad_multiple(model), precision, torch_device)
        return cls(model, config, torch_device, precision=precision, **kwargs)

    @property
    def binary(self) -> bool:
        return self.config.data.binary

    # --- preprocessing ------------------------------------------------------------------------

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return prepare_image(image, self.config.data)

    # --- the network ----------------------------------------------------------------------------

    def _views(self) -> list[tuple[int, bool]]:
        """(quarter turns, horizontal flip) pairs for TTA."""
        if not self.tta:
            return [(0, False)]
        if self.config.data.rotations:
            return [(k, flip) for k in range(4) for flip in (False, True)]
        return [(0, False), (0, True)]

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, C, H, W) for a normalised batch whose sides are multiples of the stride."""
        batch = batch.to(self.device, non_blocking=True)
        height, width = batch.shape[-2:]
        stride = self.network.stride
        total = None
        views = self._views()
        for scale in self.tta_scales:
            size = (max(stride, round(height * scale / stride) * stride), max(stride, round(width * scale / stride) * stride))
            scaled = batch if size == (height, width) else F.interpolate(batch, size=size, mode="bilinear",
                                                                         align_corners=False)
            for turns, flip in views:
                view = torch.rot90(scaled, turns, dims=(2, 3)) if turns else scaled
                view = view.flip(3) if flip else view
                probs = probabilities(self.network(view))
                probs = probs.flip(3) if flip else probs
                probs = torch.rot90(probs, -turns, dims=(2, 3)) if turns else probs
                if size != (height, width):
                    probs = F.interpolate(probs.float(), size=(height, width), mode="bilinear", align_corners=False)
                total = probs if total is None else total + probs
        return (total / (len(views) * len(self.tta_scales))).float()

    def _padded_forward(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        """Runs same-shaped CxHxW arrays as one batch, padded to the stride, cropped back."""
        _, height, width = arrays[0].shape
        batch = pad_to_multiple(torch.from_numpy(np.stack(arrays)), self.network.stride)
        probs = self.forward(batch)[:, :, :height, :width]
        return list(probs.cpu())

    def _tiled(self, array: np.ndarray, batch_size: int) -> torch.Tensor:
        """Probabilities of one large CxHxW array from overlapping tiles, blended with cosine weights."""
        _, height, width = array.shape
        tile = self.tile_size
        origins = [(y, x) for y in tile_starts(height, tile, self.tile_overlap)
                   for x in tile_starts(width, tile, self.tile_overlap)]
        channels = 1 if self.binary else self.config.data.num_classes
        total = torch.zeros(channels, height, width)
        weights = torch.zeros(1, height, width)
        window = torch.from_numpy(np.outer(_window(min(tile, height)), _window(min(tile, width))))[None]
        for start in range(0, len(origins), batch_size):
            chunk = origins[start:start + batch_size]
            tiles = [array[:, y:y + tile, x:x + tile] for y, x in chunk]
            for (y, x), probs in zip(chunk, self._padded_forward(tiles)):
                h, w = probs.shape[-2:]
                total[:, y:y + h, x:x + w] += probs * window[:, :h, :w]
                weights[:, y:y + h, x:x + w] += window[:, :h, :w]
        return total / weights

    def needs_tiling(self, array: np.ndarray) -> bool:
        return max(array.shape[-2:]) > self.tile_size

    def probabilities_batch(self, arrays: list[np.ndarray], batch_size: int = 8) -> list[torch.Tensor]:
        """Probabilities for prepared arrays at model scale. Same-shaped arrays share a batch;
        arrays over the tile limit are tiled."""
        out: list[torch.Tensor | None] = [None] * len(arrays)
        groups: dict[tuple, list[int]] = {}
        for index, array in enumerate(arrays):
            if self.needs_tiling(array):
                out[index] = self._tiled(array, batch_size)
            else:
                groups.setdefault(array.shape, []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                for index, probs in zip(chunk, self._padded_forward([arrays[i] for i in chunk])):
                    out[index] = probs
        return out  # type: ignore[return-value]

    # --- one image ------------------------------------------------------------------------------

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Probabilities for one uint8 image (HxW or HxWxC): float32 (C, H, W), C = 1 for binary."""
        image = self._channels(image)
        probs = self.probabilities_batch([self.prepare(image)])[0]
        return restore(probs, *image.shape[:2]).numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class-index mask (uint8 HxW; binary: 0/1) for one uint8 image (HxW or HxWxC)."""
        return self.labels(torch.from_numpy(self.predict_proba(image)))

    def labels(self, probs: torch.Tensor) -> np.ndarray:
        """uint8 HxW class indices from (C, H, W) probabilities (binary: probability >= threshold)."""
        return labels_from_probabilities(probs[None], self.threshold)[0].numpy().astype(np.uint8)

    def _channels(self, image: np.ndarray) -> np.ndarray:
        """An in-memory image as uint8 in the run's channel count, by the same rules as `read_image`
        (16-bit scaled by the range of its bit depth: `segan.data.io.to_uint8`)."""
        return to_channels(to_uint8(image), self.config.data.in_channels)
