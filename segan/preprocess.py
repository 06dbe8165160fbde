"""The one preprocessing path from a decoded image to the network and back.

Validation during training, `segan evaluate --model` and `segan predict` all call these
functions, so a model is scored on exactly the input it will see in use: the same resize, the
same normalisation, the same padding to the encoder's stride, the same threshold.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .config import DataConfig

# smp encoders downsample 32x at depth 5; used only when a network does not say its own stride.
DEFAULT_STRIDE = 32


def pad_multiple(model: torch.nn.Module) -> int:
    """The side multiple a network's input needs: its encoder's `output_stride` (8 for a
    depth-3 U-Net, 16 for DeepLabV3+), else 32."""
    return int(getattr(getattr(model, "encoder", None), "output_stride", None) or DEFAULT_STRIDE)


def prepare_image(image: np.ndarray, data: DataConfig) -> np.ndarray:
    """uint8 HxWxC (in the run's channel count) to the normalised float32 CxHxW network input at
    the scale the model trained at: `data.size` square (resize mode) or native (crop mode).
    Not padded: `pad_to_multiple` does that on the batch, after normalisation."""
    if data.resize == "resize" and image.shape[:2] != (data.size, data.size):
        image = cv2.resize(image, (data.size, data.size), interpolation=cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[:, :, None]
    mean, std = data.normalization()
    mean = np.asarray(mean, np.float32) * 255
    std = np.asarray(std, np.float32) * 255
    return np.ascontiguousarray(((image.astype(np.float32) - mean) / std).transpose(2, 0, 1))


def prepare_mask(mask: np.ndarray, data: DataConfig) -> np.ndarray:
    """A class-index mask at the scale `prepare_image` gives its image (nearest neighbour, so no
    class index is invented)."""
    if data.resize == "resize" and mask.shape[:2] != (data.size, data.size):
        mask = cv2.resize(mask, (data.size, data.size), interpolation=cv2.INTER_NEAREST)
    return mask


class EvalTransform:
    """`prepare_image` and `prepare_mask` as a dataset transform (`transform(image=, mask=)`,
    returning HxWxC like an albumentations pipeline); where validation is native
    (`DataConfig.validates_native`) the mask stays as stored, to score the prediction `restore`d
    to it."""

    def __init__(self, data: DataConfig) -> None:
        self.data = data

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict:
        return {"image": prepare_image(image, self.data).transpose(1, 2, 0),
                "mask": mask if self.data.validates_native else prepare_mask(mask, self.data)}


def restore(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Probabilities at model scale (..., C, h, w) back to an image's own size (bilinear)."""
    if probs.shape[-2:] == (height, width):
        return probs
    batched = probs if probs.ndim == 4 else probs[None]
    resized = F.interpolate(batched, size=(height, width), mode="bilinear", align_corners=False)
    return resized if probs.ndim == 4 else resized[0]


def pad_to_multiple(batch: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pads a normalised (B, C, H, W) batch at the bottom and right to sides divisible by
    `multiple`, mirroring the image (replicating its edge when it is too small to mirror), so
    the border the network sees looks like image, not like a black frame. Crop the output back
    with `[..., :H, :W]`."""
    height, width = batch.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return batch
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(batch, (0, pad_w, 0, pad_h), mode=mode)


def network_input(batch: torch.Tensor) -> torch.Tensor:
    """A padded batch in the layout the networks run in: NHWC (channels_last), which oneDNN's
    CPU convolutions and GPU tensor cores run fastest. Validation and predict both pass through
    here, so they run the same kernels and score the same, in bf16 as in float32."""
    return batch.contiguous(memory_format=torch.channels_last)


def network_layout(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with its weights in the layout of `network_input` (in place; returned)."""
    return module.to(memory_format=torch.channels_last)


def padded_logits(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The network's float32 logits for a batch of any side: padded to its stride, cropped back.
    Float32 as predict's are: under bf16 autocast the network answers in bf16, and a bf16 sigmoid
    would round pixels near the threshold onto it."""
    height, width = batch.shape[-2:]
    return model(network_input(pad_to_multiple(batch, pad_multiple(model))))[..., :height, :width].float()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for one channel (binary), softmax over channels otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def labels_from_probabilities(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class index per pixel from (B, C, H, W) probabilities: the one threshold rule.

    Binary (one channel): foreground where the probability is at least `threshold`, so a logit
    of exactly 0 at the default 0.5 is foreground; training metrics, predict, TTA, evaluate and
    the threshold sweep all use this rule. Multi-class: the most probable class.
    """
    if probs.shape[1] == 1:
        return (probs[:, 0] >= threshold).long()
    return probs.argmax(dim=1)


def labels(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class index per pixel (B, H, W) from logits, by `labels_from_probabilities`."""
    return labels_from_probabilities(probabilities(logits), threshold)
