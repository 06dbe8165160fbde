"""Writing files so that a crash, a kill or a full disk never leaves half of one.

Every file segan writes goes to a temporary name in the same folder first and is then renamed
over the target, which POSIX makes atomic: a reader sees the old file or the new one, never a
truncated mix, and a failed write leaves the old file as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], None], durable: bool = False) -> None:
    """Writes `data` (bytes, or a function that writes to an open binary file) to `path` atomically.

    Args:
        path: the target; its folder is created if needed.
        data: the content, or a writer such as `lambda handle: torch.save(state, handle)`.
        durable: also flush the file to the disk before the rename (fsync), so that a power cut
            cannot leave an empty file under the new name. Costly per file; used for checkpoints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # gone after the rename; removes the remains of a failure
