"""segan: GAN-based image segmentation.

A segmentation-models-pytorch generator predicts masks; a conditional PatchGAN discriminator
judges (image, mask) pairs; PyTorch Lightning runs the training.
"""

from .config import Config
from .training import TrainResult, train

__version__ = "0.1.0"
__all__ = ["Config", "TrainResult", "train", "__version__"]
