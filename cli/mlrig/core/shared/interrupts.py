"""SIGTERM and SIGHUP as an exception inside a block, so a cancelled `up` (a CI cancel,
`timeout`) cleans up exactly as it does on Ctrl-C instead of dying half-way."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from mlrig.errors import Terminated

__all__ = ["Terminated", "terminate_as_exception"]


@contextlib.contextmanager
def terminate_as_exception(name: str) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception so `up` rolls back as it does on Ctrl-C; a
    second signal during the clean-up is ignored rather than interrupting it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Terminated(
            f"`stack up` of '{name}' was stopped by {signal.Signals(signum).name}",
            hint=f"run `mlrig stack up --stack {name}` to finish it",
        )

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
