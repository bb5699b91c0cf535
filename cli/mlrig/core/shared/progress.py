"""How core reports progress: a callable that takes one line; commands pass a renderer."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def no_progress(_message: str) -> None:
    """The default when nobody is listening."""
