"""segan: GAN-based image segmentation.

A segmentation-models-pytorch generator predicts masks; a conditional PatchGAN discriminator
judges (image, mask) pairs; PyTorch Lightning runs the training.
"""

from .config import Config
from .evaluation import evaluate_folders, evaluate_model
from .inference import Predictor
from .training import TrainResult, train

__version__ = "0.1.0"
__all__ = ["Config", "Predictor", "TrainResult", "evaluate_folders", "evaluate_model", "train", "__version__"]
