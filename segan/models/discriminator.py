"""The conditional PatchGAN discriminator: it judges an image and a mask stacked as channels."""

from __future__ import annotations

import torch
from torch import nn

from ..config import DiscriminatorConfig


def receptive_field(n_layers: int) -> int:
    """Receptive field in pixels of one output logit: 70 for the pix2pix default of 3 layers."""
    field = 1
    for _ in range(2):  # two stride-1 4x4 convolutions at the end
        field += 3
    for _ in range(n_layers):  # each stride-2 4x4 convolution
        field = 2 * field + 2
    return field


class PatchDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN with the image as condition; outputs a per-patch logit map.

    Args:
        image_channels: channels of the image.
        mask_channels: channels of the mask encoding (1 for binary, else the class count).
        base_channels: channels of the first layer; doubled per layer up to 8x.
        n_layers: stride-2 layers; sets the receptive field (see `receptive_field`).
        spectral_norm: spectral normalisation on every convolution (then no other normalisation);
            without it, instance normalisation as in pix2pix.
    """

    def __init__(self, image_channels: int, mask_channels: int, base_channels: int = 16, n_layers: int = 3,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        self.receptive_field = receptive_field(n_layers)

        def conv(c_in: int, c_out: int, stride: int, norm: bool) -> list[nn.Module]:
            layer = nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1)
            if spectral_norm:
                return [nn.utils.parametrizations.spectral_norm(layer), nn.LeakyReLU(0.2, inplace=True)]
            return [layer] + ([nn.InstanceNorm2d(c_out, affine=True)] if norm else []) + [nn.LeakyReLU(0.2, inplace=True)]

        channels = base_channels
        layers = conv(image_channels + mask_channels, channels, stride=2, norm=False)
        for index in range(1, n_layers):
            wider = base_channels * min(2 ** index, 8)
            layers += conv(channels, wider, stride=2, norm=True)
            channels = wider
        wider = base_channels * min(2 ** n_layers, 8)
        layers += conv(channels, wider, stride=1, norm=True)
        head = nn.Conv2d(wider, 1, kernel_size=4, stride=1, padding=1)
        layers.append(nn.utils.parametrizations.spectral_norm(head) if spectral_norm else head)
        self.model = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([image, mask], dim=1))


def build_discriminator(config: DiscriminatorConfig, image_channels: int, mask_channels: int) -> PatchDiscriminator:
    return PatchDiscriminator(image_channels, mask_channels, base_channels=config.base_channels,
                              n_layers=config.n_layers, spectral_norm=config.spectral_norm)
