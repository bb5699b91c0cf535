"""SIGTERM and SIGHUP as an exception inside a block, so a cancelled `up` (a CI cancel,
`timeout`) cleans up exactly as it does on Ctrl-C instead of dying half-way."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from mlrig.errors import Terminated

__all__ = ["Terminated", "shielded", "terminate_as_exception"]

_shields: list[list[Terminated]] = []  # the open `shielded` blocks: what arrived in each


@contextlib.contextmanager
def terminate_as_exception(
    name: str, *, what: str | None = None, hint: str | None = None
) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception so `up` (or `what`, with its own `hint`) rolls
    back as it does on Ctrl-C; a second signal during the clean-up is ignored rather than
    interrupting it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        exc = Terminated(
            f"{what or f'`stack up` of {name!r}'} was stopped by {signal.Signals(signum).name}",
            hint=hint or f"run `mlrig stack up --stack {name}` to finish it",
        )
        if _shields:
            _shields[-1].append(exc)
            return
        raise exc

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Inside `terminate_as_exception`: a signal arriving in this block (a step that must
    finish once begun, such as switching traffic) is raised when the block has finished."""
    held: list[Terminated] = []
    _shields.append(held)
    try:
        yield
    finally:
        _shields.pop()
    if held:
        raise held[0]
