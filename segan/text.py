"""Wording shared by error messages and reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def name_list(items: Iterable[str | os.PathLike], limit: int = 10, parens: bool = False) -> str:
    """The first `limit` items, comma-separated, then how many more there are.

    Paths show their file name only: the message around them names the folder. Strings (keys,
    "line 3: a.png") are shown as they are.

    Args:
        items: paths or strings, in the order to show them.
        limit: how many to show.
        parens: wrap the list in parentheses, for a list that follows a count.

    Returns:
        "a.png, b.png, ... 3 more" (or "(a.png, b.png, ... 3 more)"); "" when there are no items.
    """
    items = list(items)
    if not items:
        return ""
    shown = ", ".join(Path(item).name if isinstance(item, os.PathLike) else str(item) for item in items[:limit])
    listed = shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")
    return f"({listed})" if parens else listed


def count(number: int, noun: str) -> str:
    """ "1 image", "8 images": a number with its noun, plural unless one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
