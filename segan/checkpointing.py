"""Writing checkpoints so that no crash leaves a damaged one, and reading them safely.

Lightning writes a checkpoint in place: a `kill -9` or a full disk during the write leaves a
truncated `last.ckpt`, and the run can no longer resume. `AtomicCheckpointIO` writes it with
`segan.atomic.atomic_write` (temporary file, fsync, rename): the old checkpoint or the new one
is there, never half of one.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from .atomic import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, damaged, or for another model."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves with write-to-temporary, fsync, rename; loads with `weights_only=True` and clear errors."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        # A full disk or an interrupt leaves the old checkpoint as it was.
        atomic_write(path, lambda handle: torch.save(checkpoint, handle), durable=True)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location or "cpu")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)` that names the file and says what to do when it fails."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path} holds objects other than tensors and plain data, so it is not loaded "
                              f"(segan never unpickles code from a file). Use a checkpoint written by segan. "
                              f"({str(error).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is damaged (truncated or not a checkpoint): {str(error).splitlines()[0]}. "
                              "Delete it and resume from another checkpoint (best.ckpt), or start again.") from None
