"""Shared rich consoles: stdout for results, stderr for progress and errors.

On a terminal rich sizes them to it. Anywhere else (a pipe, a file, CI) a table keeps every
address and log path whole: the width is $COLUMNS when set, else wide enough that nothing is
cut or wrapped (rich would use 80 columns, or the width of a terminal on stdin).
"""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

UNLIMITED = 10_000  # columns: wider than any table mlrig prints, so none is cut or folded


def width_for(stream: TextIO | None) -> int | None:
    """The width a console on `stream` gets: None (rich measures the terminal) on a
    terminal; elsewhere $COLUMNS when it is set, else UNLIMITED."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else UNLIMITED


@cache
def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, width=width_for(sys.stdout))


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, width=width_for(sys.stderr))


def spinner(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr while the block runs, when stderr is a terminal. Elsewhere (CI, a
    pipe) rich's status draws nothing, so rich is not imported for it: a command that works
    while a server answers then imports it when it first prints, not before it starts."""
    if not sys.stderr.isatty():
        return nullcontext()
    return err_console().status(message)
