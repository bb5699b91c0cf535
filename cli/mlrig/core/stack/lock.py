"""One writer at a time per stack: a file lock held around `up`, `down` and rehearsals.

A second writer waits a bounded time (MLRIG_LOCK_TIMEOUT seconds, default 300: longer than
a first `up` takes) and then refuses with one line instead of racing the first one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from mlrig import paths
from mlrig.errors import Conflict

TIMEOUT_ENV = "MLRIG_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


def timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


@contextlib.contextmanager
def hold(name: str, *, what: str = "change") -> Iterator[None]:
    """Hold stack `name`'s writer lock for the block (re-entrant within one process)."""
    import filelock

    from mlrig.core.shared.files import private_dir, storage_error

    path = paths.lock_file(name)
    wait = timeout()
    try:
        private_dir(path.parent)
        lock = filelock.FileLock(
            path, timeout=wait, mode=0o600, poll_interval=0.2, is_singleton=True
        )
        lock.acquire()
    except filelock.Timeout:
        raise Conflict(
            f"another mlrig command is changing stack '{name}' (up, down or rehearse); "
            f"waited {wait:g} s for it before this {what}",
            hint=f"let it finish and retry (set {TIMEOUT_ENV} to wait longer)",
        ) from None
    except OSError as exc:
        raise storage_error(exc, path) from exc
    try:
        yield
    finally:
        lock.release()
