import pytest
import torch

from segan.config import DiscriminatorConfig
from segan.models import PatchDiscriminator, build_discriminator, receptive_field


@pytest.mark.parametrize("n_layers, field", [(1, 16), (2, 34), (3, 70), (4, 142)])
def test_receptive_field_formula(n_layers, field):
    assert receptive_field(n_layers) == field


@pytest.mark.parametrize("size, n_layers, out", [(64, 3, 6), (256, 3, 30), (128, 2, 30)])
def test_output_is_a_patch_logit_map(size, n_layers, out):
    disc = PatchDiscriminator(image_channels=3, mask_channels=1, base_channels=8, n_layers=n_layers)
    logits = disc(torch.randn(2, 3, size, size), torch.rand(2, 1, size, size))
    assert logits.shape == (2, 1, out, out)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_measured_receptive_field(n_layers):
    """The input pixels that move the centre logit span exactly receptive_field(n_layers).

    Measured on the spectral-norm variant (the default): instance normalisation, used without
    spectral norm, lets every pixel move every logit through its statistics.
    """
    torch.manual_seed(0)
    disc = PatchDiscriminator(image_channels=1, mask_channels=1, base_channels=4, n_layers=n_layers).eval()
    size = 256
    image = torch.randn(1, 1, size, size, requires_grad=True)
    logits = disc(image, torch.rand(1, 1, size, size))
    h, w = logits.shape[-2:]
    logits[0, 0, h // 2, w // 2].backward()
    touched = image.grad[0, 0].abs() > 0
    rows = touched.any(dim=1).nonzero().flatten()
    cols = touched.any(dim=0).nonzero().flatten()
    assert int(rows[-1] - rows[0] + 1) == receptive_field(n_layers)
    assert int(cols[-1] - cols[0] + 1) == receptive_field(n_layers)


def test_discriminator_sees_image_and_mask():
    disc = build_discriminator(DiscriminatorConfig(base_channels=8, n_layers=2), image_channels=3, mask_channels=5)
    first = disc.model[0]
    weight = first.parametrizations.weight.original if hasattr(first, "parametrizations") else first.weight
    assert weight.shape[1] == 3 + 5
    image = torch.randn(1, 3, 64, 64)
    a = disc(image, torch.zeros(1, 5, 64, 64))
    b = disc(image, torch.ones(1, 5, 64, 64))
    assert not torch.allclose(a, b)
