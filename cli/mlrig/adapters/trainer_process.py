"""The trainer's child process: one `mlrig retrain` run, its output streamed into a log file.

The child leads its own process group (so the whole tree — dvc and the stage scripts under
it — is signalled at once) and is asked by the kernel to die with the thread that started
it (PR_SET_PDEATHSIG). Grandchildren do not inherit that request: after the service was
killed, `kill_leftover_group` ends what is left of a recorded group before the repo is
recovered.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mlrig.errors import ServiceError

PR_SET_PDEATHSIG = 1
STDERR_KEPT = 20
FOLLOW_INTERVAL = 0.3


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request was in place
        os._exit(1)


@dataclass
class ChildResult:
    returncode: int
    last_stdout: str | None  # the last non-empty stdout line (`--json` puts the result there)
    stderr_tail: list[str] = field(default_factory=list)


class Child:
    """A running child; `wait` returns once it exited and all its output is in the log."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        on_line: Callable[[str], None],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        follow: Path | None = None,
    ) -> None:
        """`follow`: a file the child writes more output to (its pipeline's log); what it
        gains while the child runs is copied into the log too."""
        self._follow_from = _size(follow) if follow else 0
        self._log = log_path.open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._on_line = on_line
        self._last_stdout: str | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # prctl must run in the child, before exec
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            self._log.close()
            raise ServiceError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        if follow is not None:
            self._pumps.append(threading.Thread(target=self._tail, args=(follow,), daemon=True))
        for pump in self._pumps:
            pump.start()

    @property
    def pgid(self) -> int:
        return self.proc.pid  # it leads its own session, hence its own group

    def _pump(self, stream: IO[str], is_stdout: bool | None) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            with self._lock:
                self._log.write(line + "\n")
                self._log.flush()
                if line.strip() and is_stdout is not None:
                    if is_stdout:
                        self._last_stdout = line
                    else:
                        self._stderr.append(line)
            self._on_line(line)

    def _tail(self, path: Path) -> None:
        """Copy what `path` gains past its size at start, until the child exited."""
        pos = self._follow_from
        while True:
            exited = self.proc.poll() is not None
            if _size(path) < pos:  # replaced or truncated: read it from the start
                pos = 0
            try:
                with path.open("rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            whole = chunk[: chunk.rfind(b"\n") + 1] if not exited else chunk
            pos += len(whole)
            if whole:
                text = whole.decode("utf-8", "replace")
                self._pump(io.StringIO(text), None)
            if exited:
                return
            time.sleep(FOLLOW_INTERVAL)

    def running(self, timeout: float) -> bool:
        """Wait up to `timeout` for the child to exit; True while it still runs."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return True
        return False

    def modules(self) -> list[str]:
        """The `python -m MODULE` modules its descendants run now (oldest first)."""
        import psutil

        found = []
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        for proc in sorted(procs, key=lambda p: p.pid):
            with contextlib.suppress(psutil.Error):
                argv = proc.cmdline()
                if "-m" in argv[:-1]:
                    found.append(argv[argv.index("-m") + 1])
        return found

    def wait(self) -> ChildResult:
        code = self.proc.wait()
        for pump in self._pumps:
            pump.join()
        self._log.close()
        return ChildResult(code, self._last_stdout, list(self._stderr))

    def terminate(self, timeout: float) -> None:
        """SIGTERM to the whole group, SIGKILL to whatever is left after `timeout`."""
        _signal_group(self.pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        kill_leftover_group(self.pgid, not_before=0.0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_leftover_group(pgid: int, *, not_before: float, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process still in group `pgid` that started at or after `not_before`
    (epoch seconds: a recycled group id names only younger processes); returns their PIDs."""
    import psutil

    members = []
    for proc in psutil.process_iter(["create_time"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= not_before - 1:
                members.append(proc)
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(members, timeout=timeout)
    return [p.pid for p in members]
