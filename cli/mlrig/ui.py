"""Shared rich consoles: stdout for results, stderr for progress and errors."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@cache
def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def spinner(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr while the block runs, when stderr is a terminal. Elsewhere (CI, a
    pipe) rich's status draws nothing, so rich is not imported for it: a command that works
    while a server answers then imports it when it first prints, not before it starts."""
    if not sys.stderr.isatty():
        return nullcontext()
    return err_console().status(message)
