"""Debian's nginx as the local stack's endpoint proxy: the binary, a config check, and a
graceful reload that waits until the new workers serve and the old ones have drained."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from mlrig.adapters import processes
from mlrig.errors import DependencyMissing, ServiceError

BINARY = "/usr/sbin/nginx"


def binary() -> str:
    """Debian's nginx, else one on PATH; one line naming the package when there is none."""
    if os.access(BINARY, os.X_OK):
        return BINARY
    found = shutil.which("nginx")
    if found:
        return found
    raise DependencyMissing(
        "nginx is not installed: the local stack's endpoints are served through it",
        hint="install Debian's package: `sudo apt-get install nginx`",
    )


def argv(conf: Path, prefix: Path, error_log: Path) -> list[str]:
    """The master in the foreground (the config says `daemon off`), supervised by mlrig."""
    return [binary(), "-p", f"{prefix}/", "-c", str(conf), "-e", str(error_log)]


def check(conf: Path, prefix: Path, error_log: Path) -> str | None:
    """`nginx -t` on conf: None when nginx accepts it, else its complaint (one line)."""
    done = processes.run_captured([*argv(conf, prefix, error_log), "-t", "-q"])
    if done.returncode == 0:
        return None
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if "emerg" in ln or "[" in ln]
    return (lines[0] if lines else done.stderr.strip() or "nginx -t failed").strip()


def workers(master: int) -> set[int]:
    import psutil

    try:
        return {c.pid for c in psutil.Process(master).children()}
    except psutil.NoSuchProcess:
        return set()


def reload(master: int, *, timeout: float = 10.0) -> set[int]:
    """HUP the master and wait until a new worker runs (the new config serves); return the
    old workers, which finish their requests in flight and exit (`drained`)."""
    old = workers(master)
    try:
        os.kill(master, signal.SIGHUP)
    except ProcessLookupError:
        raise ServiceError(f"nginx (PID {master}) is not running") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if workers(master) - old:
            return old
        time.sleep(0.02)
    raise ServiceError(f"nginx (PID {master}) did not start new workers within {timeout:g} s")


def reopen(master: int) -> bool:
    """Have nginx reopen its log files (SIGUSR1, what `nginx -s reopen` sends): each worker
    flushes its buffered lines into the file it had open, then opens (creates) the named one
    again. False when the master is gone."""
    try:
        os.kill(master, signal.SIGUSR1)
    except ProcessLookupError:
        return False
    return True


def drained(old: set[int], *, timeout: float = 30.0) -> bool:
    """Wait until the workers of the previous config have exited (their requests done)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(pid) for pid in old):
            return True
        time.sleep(0.02)
    return False
