"""One way to wait until something answers: `wait_until`, for core, adapters, tests and bench.

Polls a check until it returns a truthy value or the time is up. Exceptions of the kinds
named in `retry_on` count as "not yet" (a port that refuses connections while a server
starts); anything else propagates at once. On time-out it raises `WaitTimeout`, which names
what was awaited and the last error seen, so each caller can turn it into its own error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The awaited condition did not hold in time."""

    def __init__(self, what: str, timeout: float, last_error: BaseException | None) -> None:
        detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
        super().__init__(f"{what} did not happen within {timeout:g} s{detail}")
        self.what = what
        self.timeout = timeout
        self.last_error = last_error


class Abandoned(Exception):
    """Raised by a `give_up` check: waiting longer cannot help (the process died)."""


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float,
    what: str = "the condition",
    interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (OSError,),
    give_up: Callable[[], str | None] | None = None,
) -> T:
    """Return the first truthy result of `check()`, polling every `interval` seconds.

    `give_up`, when given, is asked before each try; a non-empty answer (why it is
    hopeless, e.g. "the process exited") raises `Abandoned` with that text at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if give_up is not None:
            reason = give_up()
            if reason:
                raise Abandoned(reason)
        try:
            result = check()
        except retry_on as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last_error)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
