"""Learning from unlabelled images: the unlabelled stream, its views, pseudo-labels and gating.

Three ways for images without masks to teach the generator (`semi.mode`):

- self-training (after UniMatch, Yang et al. 2023): the prediction on a weak view (the
  training geometry only) gives pseudo-labels where it is at least `confidence` sure; the
  generator learns them on a strong view (colour jitter, greyscale, blur, CutMix) and on the
  weak view with its encoder features dropped out (Dropout2d). No discriminator.
- adversarial (after AdvSemiSeg, Hung et al. 2018): the discriminator, trained on labelled
  pairs only, rates the generator's prediction on an unlabelled image patch by patch; where it
  rates it "real" above `d_confidence` the prediction becomes its own pseudo-label, and the
  adversarial term pushes unlabelled predictions toward what D calls real. D gates nothing for
  `gate_warmup_epochs` (an untrained D passes everything).
- adversarial+self-training: self-training whose pseudo-labels must also pass the
  discriminator once its gate is open.

Masks of the images that `data.labeled_fraction` leaves unlabelled are read only to measure the
pseudo-labels' precision, under `torch.no_grad`, and never reach a loss.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .config import Config, DataConfig, SemiConfig
from .data import ImageReadError, MaskEncoding, Pair, read_image, read_mask
from .preprocess import labels_from_probabilities, prepare_image, probabilities
from .transforms import seed_compose

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlabeledItem:
    """An image without a mask for training; `hidden_mask` only for measuring pseudo-labels."""

    image: Path
    hidden_mask: Path | None = None


def split_labeled(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[UnlabeledItem]]:
    """Keeps a seeded `fraction` of `pairs` labelled (at least one) and turns the rest into
    unlabelled items whose masks are hidden from training."""
    order = list(pairs)
    # A stream of its own: the validation hold-out uses `seed` directly.
    random.Random(f"labels-{seed}").shuffle(order)
    keep = max(1, round(len(order) * fraction))
    labeled = sorted(order[:keep], key=lambda pair: pair.image)
    hidden = [UnlabeledItem(pair.image, pair.mask) for pair in sorted(order[keep:], key=lambda pair: pair.image)]
    return labeled, hidden


def find_unlabeled(paths: Sequence[str], root: str = "") -> list[UnlabeledItem]:
    """Images from folders (recursive), files, globs and list files (one image path per line,
    relative to the list's folder), each relative to the dataset `root` unless absolute. Every
    image is decoded once here: an unreadable one is reported and left out, the rest are used."""
    from .batch_predict import collect_inputs
    from .data.io import IMAGE_SUFFIXES
    entries: list[str] = []
    for entry in paths:
        path = Path(entry) if Path(entry).is_absolute() or not root else Path(root) / entry
        if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:  # a list file
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            entries += [str(path.parent / line) for line in lines if not line.startswith("#")]
        else:
            entries.append(str(path))
    # No output folder to keep apart from the inputs here: a path that is no input's.
    items, _ = collect_inputs(entries, Path("/nonexistent-segan-output"))
    readable, unreadable = [], []
    for item in items:
        try:
            read_image(item.path, 1)
            readable.append(UnlabeledItem(item.path))
        except ImageReadError as error:
            unreadable.append(str(error))
    if unreadable:
        shown = "\n  ".join(unreadable[:20]) + (f"\n  ... and {len(unreadable) - 20} more" if len(unreadable) > 20 else "")
        log.warning("%d unlabelled image(s) cannot be read and are left out:\n  %s", len(unreadable), shown)
    if not readable:
        raise ImageReadError(f"no readable unlabelled images in {', '.join(map(str, paths))}")
    return readable


def strong_photometric(in_channels: int) -> A.Compose:
    """UniMatch's strong colour perturbations (CutMix is applied to the batch, see `cutmix`)."""
    ops: list = [A.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5 if in_channels == 3 else 0,
                               hue=0.25 if in_channels == 3 else 0, p=0.8)]
    if in_channels == 3:
        ops.append(A.ToGray(p=0.2))
    ops.append(A.GaussianBlur(sigma_limit=(0.1, 2.0), blur_limit=0, p=0.5))
    return A.Compose(ops)


class UnlabeledDataset(Dataset):
    """Yields `dict(weak=CxHxW, strong=CxHxW, hidden=HxW)`: the weak view (the training geometry),
    a strong view of the same crop, and the hidden mask in that geometry (all `ignore` when the
    image has none). Asked for `(index, cycle)` by an `EpochSampler`, it seeds its views from
    (seed, cycle, index) like the labelled set."""

    def __init__(self, items: Sequence[UnlabeledItem], geometry: A.Compose, data: DataConfig,
                 encoding: MaskEncoding, augment_seed: int = 0) -> None:
        self.items = list(items)
        self.geometry = geometry
        self.strong = strong_photometric(data.in_channels)
        self.data = data
        self.encoding = encoding
        self.augment_seed = augment_seed
        self.ignore = 255 if encoding.ignore_index is None else encoding.ignore_index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, cycle = item if isinstance(item, tuple) else (item, 0)
        weak_seed, strong_seed = np.random.SeedSequence([self.augment_seed, cycle, index, 1]).generate_state(2)
        self.geometry.set_random_seed(int(weak_seed))
        seed_compose(self.strong, int(strong_seed))
        entry = self.items[index]
        image = read_image(entry.image, self.data.in_channels)
        hidden = (read_mask(entry.hidden_mask, self.encoding) if entry.hidden_mask is not None
                  else np.full(image.shape[:2], self.ignore, np.uint8))
        weak = self.geometry(image=image, mask=hidden)
        strong = self.strong(image=weak["image"])["image"]
        if strong.ndim == 2:
            strong = strong[:, :, None]
        return dict(weak=torch.from_numpy(prepare_image(weak["image"], self.data)),
                    strong=torch.from_numpy(prepare_image(strong, self.data)),
                    hidden=torch.from_numpy(np.ascontiguousarray(weak["mask"])).long())


def cutmix(images: torch.Tensor, targets: list[torch.Tensor], probability: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pastes a random box from the previous image of the batch into each image with
    `probability`, and the same box of each target (pseudo-labels, their mask) with it.

    The boxes come from Python's RNG (seeded and checkpointed like torch's): drawing them as
    tensors and reading them back would make the host wait for the device."""
    if probability <= 0 or len(images) < 2:
        return images, targets
    mixed_images, mixed_targets = images.clone(), [t.clone() for t in targets]
    height, width = images.shape[-2:]
    for i in range(len(images)):
        if random.random() >= probability:
            continue
        area = random.uniform(0.02, 0.4) * height * width
        ratio = random.uniform(0.3, 1 / 0.3)
        h = min(height, max(1, int(round((area * ratio) ** 0.5))))
        w = min(width, max(1, int(round((area / ratio) ** 0.5))))
        y = random.randint(0, height - h)
        x = random.randint(0, width - w)
        j = (i - 1) % len(images)
        mixed_images[i, :, y:y + h, x:x + w] = images[j, :, y:y + h, x:x + w]
        for mixed, original in zip(mixed_targets, targets):
            mixed[i, y:y + h, x:x + w] = original[j, y:y + h, x:x + w]
    return mixed_images, mixed_targets


def feature_perturbed_logits(model: nn.Module, image: torch.Tensor, rate: float) -> torch.Tensor:
    """The smp model's logits with Dropout2d on every encoder feature map (UniMatch's FP view)."""
    features = [F.dropout2d(feature, rate, training=True) for feature in model.encoder(image)]
    return model.segmentation_head(model.decoder(features))


def evaluated(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """`model(image)` in eval mode (batch-norm statistics, no dropout), the mode left as it was."""
    training = model.training
    model.eval()
    try:
        return model(image)
    finally:
        model.train(training)


def pseudo_labels(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, confidence) per pixel: the predicted class, by the one threshold rule of
    `labels_from_probabilities`, and its probability."""
    labels = labels_from_probabilities(probs)
    if probs.shape[1] == 1:
        return labels, torch.maximum(probs[:, 0], 1 - probs[:, 0])
    return labels, probs.max(dim=1).values


def pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (BCE for one channel) on the selected pixels, divided by all pixels, so a
    batch where few pass the threshold teaches little rather than loudly (UniMatch)."""
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    else:
        per_pixel = F.cross_entropy(logits, labels, reduction="none")
    return (per_pixel * selected).sum() / selected.numel()


@dataclass
class UnlabeledStep:
    """What one unlabelled batch gave: the loss for the generator, figures to log, and the
    pseudo-labels checked against hidden masks: (correct, checked) pixel counts."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]
    precision_counts: torch.Tensor


class SemiSupervision:
    """The unlabelled part of the generator's step for `config.semi.mode`.

    Args:
        config: the run's config.
        discriminate: `(image, mask probabilities) -> per-patch logits`, the module's guarded
            discriminator call; used by the adversarial modes.
        adversarial_loss: the module's `AdversarialLoss`.
    """

    def __init__(self, config: Config, discriminate: Callable, adversarial_loss: nn.Module) -> None:
        self.semi: SemiConfig = config.semi
        self.adv_weight = config.loss.adv_weight
        self.discriminate = discriminate
        self.adversarial_loss = adversarial_loss

    def d_confidence(self, image: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's probability of "real" per pixel (patch logits upsampled) and its loss for calling
        these predictions fake (logged: D's loss on unlabelled inputs)."""
        logits = self.discriminate(image, probs)
        loss = self.adversarial_loss(logits, False)
        real = torch.sigmoid(F.interpolate(logits, size=probs.shape[-2:], mode="bilinear", align_corners=False))
        return real[:, 0], loss

    def step(self, generator: nn.Module, batch: dict, gate_open: bool, ignore_index: int = 255,
             teacher: nn.Module | None = None) -> UnlabeledStep:
        """The unlabelled loss of one batch (`UnlabeledDataset` items) and its statistics;
        self-training's pseudo-labels come from `teacher` (in eval mode) when one is given."""
        weak, strong, hidden = batch["weak"], batch["strong"], batch["hidden"]
        stats: dict[str, torch.Tensor] = {}
        if self.semi.mode == "adversarial":
            logits = generator(weak)
            probs = probabilities(logits)
            with torch.no_grad():
                labels, _ = pseudo_labels(probs)
                real, d_loss = self.d_confidence(weak, probs.detach())
                selected = (real >= self.semi.d_confidence) if gate_open else torch.zeros_like(real, dtype=torch.bool)
            stats["d_loss_unlabeled"] = d_loss
            loss = pseudo_label_loss(logits, labels, selected.float())
            # Push unlabelled predictions toward what D calls real (Hung's L_adv on unlabelled data).
            loss = loss + self.adv_weight * self.adversarial_loss(self.discriminate(weak, probs), True,
                                                                  for_discriminator=False)
        else:
            with torch.no_grad():
                probs = probabilities(generator(weak) if teacher is None else evaluated(teacher, weak))
                labels, confidence = pseudo_labels(probs)
                selected = confidence >= self.semi.confidence
                if self.semi.uses_discriminator:
                    real, d_loss = self.d_confidence(weak, probs)
                    stats["d_loss_unlabeled"] = d_loss
                    if gate_open:
                        selected &= real >= self.semi.d_confidence
            mixed, (mixed_labels, mixed_selected) = cutmix(strong, [labels, selected.float()], self.semi.cutmix)
            strong_loss = pseudo_label_loss(generator(mixed), mixed_labels, mixed_selected)
            perturbed = feature_perturbed_logits(generator, weak, self.semi.feature_dropout)
            loss = 0.5 * strong_loss + 0.5 * pseudo_label_loss(perturbed, labels, selected.float())
        with torch.no_grad():
            stats["pseudo_share"] = selected.float().mean()
            # Hidden masks: only measured, never learnt from. Counted, not divided here: a batch
            # may hold none (a folder of unlabelled images), and asking would wait for the device.
            checked = selected & (hidden != ignore_index)
            counts = torch.stack([((labels == hidden) & checked).sum(), checked.sum()])
        return UnlabeledStep(loss, stats, counts)
