"""Mask-to-image synthesis: new (image, mask) pairs for small label sets (`segan synth`).

- `settings`: a synth run's own defaults;
- `drawing`: the GAN that draws, a U-Net from mask to image against a conditional PatchGAN;
- `training`: `segan synth train`, the drawing GAN trained in a run folder;
- `masks`: new masks, deformed from the training masks (never a training mask unchanged);
- `memorisation`: how close each synthetic image comes to a training image;
- `sampling`: `segan synth sample`, new pairs drawn from new masks, with a manifest and pictures.

Nothing is imported here: the command line reads `settings` without loading torch.
"""
