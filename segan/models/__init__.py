"""Networks: the smp generator and the conditional PatchGAN discriminator."""

from .discriminator import PatchDiscriminator, build_discriminator, receptive_field
from .generator import ARCHITECTURES, build_generator, labels, one_hot, output_channels, probabilities

__all__ = ["PatchDiscriminator", "build_discriminator", "receptive_field", "ARCHITECTURES", "build_generator",
           "labels", "one_hot", "output_channels", "probabilities"]
