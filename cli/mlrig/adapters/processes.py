"""Supervise long-running local services: start detached, record, verify, stop.

A PID file records the PID *and* the process start time and command, so mlrig never signals
a process it did not start, even after a reboot recycled the PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlrig.errors import ServiceError


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float
    exe_hint: str

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            raw = json.loads(path.read_text())
            return cls(int(raw["pid"]), float(raw["create_time"]), str(raw["exe_hint"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise ServiceError(
                f"PID file {path} is unreadable",
                hint="delete it if the service is not running, then retry",
            ) from None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, path)


class Status:
    RUNNING = "running"
    STOPPED = "stopped"
    FOREIGN = "foreign"  # the PID file names a live process mlrig did not start


def _process(pid: int):  # type: ignore[no-untyped-def]
    import psutil

    try:
        return psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def status(pid_file: Path) -> tuple[str, PidRecord | None]:
    rec = PidRecord.read(pid_file)
    if rec is None:
        return Status.STOPPED, None
    proc = _process(rec.pid)
    if proc is None:
        return Status.STOPPED, rec
    try:
        same_start = abs(proc.create_time() - rec.create_time) < 0.5
        if proc.status() == "zombie":
            return Status.STOPPED, rec
    except Exception:  # noqa: BLE001 - vanished between calls
        return Status.STOPPED, rec
    return (Status.RUNNING if same_start else Status.FOREIGN), rec


def describe(pid: int) -> str:
    proc = _process(pid)
    if proc is None:
        return f"PID {pid}"
    try:
        return f"PID {pid} ({' '.join(proc.cmdline())[:60]})"
    except Exception:  # noqa: BLE001
        return f"PID {pid}"


def start(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    umask: int = -1,
) -> PidRecord:
    """Start argv detached in its own session (its own process group) and record it.

    `umask` (e.g. 0o077) applies to the program and everything it starts, so files the
    service creates are private from the first byte."""
    import psutil

    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_file, "ab") as log:
        log.write(f"\n--- mlrig start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                umask=umask,
            )
        except FileNotFoundError as exc:
            raise ServiceError(f"cannot start {argv[0]}: not found") from exc
    rec = PidRecord(proc.pid, psutil.Process(proc.pid).create_time(), Path(argv[0]).name)
    rec.write(pid_file)
    return rec


def adopt(pid: int, exe_hint: str, pid_file: Path) -> PidRecord:
    """Record a process something else started (a container's main process) as supervised."""
    import psutil

    rec = PidRecord(pid, psutil.Process(pid).create_time(), exe_hint)
    rec.write(pid_file)
    return rec


def exited_early(rec: PidRecord) -> bool:
    proc = _process(rec.pid)
    if proc is None:
        return True
    try:
        if proc.status() == "zombie":
            proc.wait(0)
            return True
    except Exception:  # noqa: BLE001
        return True
    return False


def stop(pid_file: Path, *, timeout: float = 15.0) -> list[int]:
    """Stop the recorded process and its whole tree; return PIDs that would not die.

    Only a process whose start time matches the record is signalled.
    """
    import psutil

    state, rec = status(pid_file)
    if state == Status.FOREIGN and rec is not None:
        raise ServiceError(
            f"PID file {pid_file} names {describe(rec.pid)}, which mlrig did not start; "
            "left it running",
            hint="delete the stale PID file if the service is already gone",
        )
    if state != Status.RUNNING or rec is None:
        pid_file.unlink(missing_ok=True)
        return []
    root = psutil.Process(rec.pid)
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(rec.pid, signal.SIGTERM)
    for proc in tree[1:]:  # children that left the group still get asked
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, still = psutil.wait_procs(alive, timeout=5)
    pid_file.unlink(missing_ok=True)
    return [p.pid for p in still]


def tree(pid_file: Path) -> list[int]:
    """The recorded process and all its descendants, when the record is still running."""
    import psutil

    state, rec = status(pid_file)
    if state != Status.RUNNING or rec is None:
        return []
    try:
        root = psutil.Process(rec.pid)
        return [rec.pid, *(p.pid for p in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def owned_by(root: Path) -> list[int]:
    """Live processes that belong to the directory `root`: started there (cwd) or naming a
    path under it on their command line. Finds a server's worker that outlived its killed
    parent, and a service started by an `up` that died before recording it."""
    import psutil

    base = str(root.resolve())
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in mine:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cwd = proc.cwd()
            args = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
        if cwd == base or cwd.startswith(base + "/") or _names(args, base):
            found.append(proc.pid)
    return found


def _names(args: Sequence[str], base: str) -> bool:
    """Whether a command line names the folder `base` (resolved) or a path under it."""
    return any(a == base or base + "/" in a for a in args)


def naming(root: Path, pids: Sequence[int]) -> list[int]:
    """Those of `pids` whose command line names `root` or a path under it: a service (or a
    worker of one) started for that folder, not a shell or tool that merely stands in it."""
    import psutil

    base = str(root.resolve())
    found = []
    for pid in pids:
        try:
            args = psutil.Process(pid).cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
        if _names(args, base):
            found.append(pid)
    return found


def listener(port: int) -> int | None:
    """The PID listening on TCP `port` on this machine, when the system lets us see it."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def stop_pids(pids: Sequence[int], *, timeout: float = 10.0) -> list[int]:
    """SIGTERM then SIGKILL the given processes; return those still alive afterwards."""
    import psutil

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, still = psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in still]


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


@dataclass(frozen=True)
class Finished:
    """A program that ran to its end: exit code and captured output."""

    returncode: int
    stdout: str
    stderr: str


def run_captured(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Finished:
    """Run argv to completion, capturing its output as text; a missing program is an error.
    env: variables added to this process's environment for it."""
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, env=full_env)
    except FileNotFoundError as exc:
        raise ServiceError(f"cannot run {argv[0]}: not found") from exc
    return Finished(proc.returncode, proc.stdout, proc.stderr)
