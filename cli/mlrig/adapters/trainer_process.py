"""The trainer's child process: one `mlrig retrain` run, its output streamed into a log file.

The command runs under a guard (this module run as `python -m`), which leads its own session
and process group and is the reaper of every process below it (PR_SET_CHILD_SUBREAPER), so
nothing the job starts can slip out of its tree. The kernel signals the guard when the
thread that started it dies (PR_SET_PDEATHSIG): the guard then SIGKILLs the whole tree and
exits, so a killed service leaves no `dvc` or `python -m <package>.train` behind to register
a model. When the command ends, the guard kills what it left running too.
`kill_leftover_group` remains for a group that outlived even its guard.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mlrig.errors import ServiceError

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PARENT_GONE = signal.SIGUSR1  # what the kernel sends the guard when the service is gone
STDERR_KEPT = 20
FOLLOW_INTERVAL = 0.3
FOLLOW_BITE = 1024 * 1024
GUARD = "mlrig.adapters.trainer_process"


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _signal_when_parent_dies(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        _prctl(PR_SET_PDEATHSIG, PARENT_GONE)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return preexec


def guarded(argv: Sequence[str]) -> list[str]:
    """`argv` run under the guard, which takes the parent's PID to notice it died early."""
    return [sys.executable, "-m", GUARD, str(os.getpid()), "--", *argv]


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
        try:  # never through a symlink planted where the log goes
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ServiceError(f"cannot write the job's log {log_path}: {exc.strerror}") from exc
        self._log = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._on_line = on_line
        self._last_stdout: str | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        try:
            self.proc = subprocess.Popen(
                guarded(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_signal_when_parent_dies(os.getpid()),  # prctl: in the child
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
        return self.proc.pid  # the guard leads its own session, hence its own group

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
            try:  # a file in the repo: never followed through a symlink, read in bounded bites
                with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read(FOLLOW_BITE)
            except OSError:
                chunk = b""
            partial = not exited and len(chunk) < FOLLOW_BITE
            whole = chunk[: chunk.rfind(b"\n") + 1] if partial else chunk
            pos += len(whole)
            if whole:
                text = whole.decode("utf-8", "replace")
                self._pump(io.StringIO(text), None)
            if len(chunk) == FOLLOW_BITE:  # more is there already
                continue
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
        return path.lstat().st_size
    except OSError:
        return 0


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_leftover_group(pgid: int, *, not_before: float, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process still in group `pgid` that started at or after `not_before`
    (epoch seconds: a recycled group id names only younger processes); returns their PIDs.
    Never this process or its own group, whatever `pgid` a stored job names."""
    import psutil

    if pgid <= 1 or pgid in (os.getpgrp(), os.getpid()):
        return []
    members = []
    for proc in psutil.process_iter(["create_time", "uids"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if (
                proc.pid != os.getpid()
                and os.getpgid(proc.pid) == pgid
                and (uids := proc.info["uids"]) is not None
                and uids.real == os.getuid()
                and proc.info["create_time"] >= not_before - 1
            ):
                members.append(proc)
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(members, timeout=timeout)
    return [p.pid for p in members]


# -- the guard (run as `python -m mlrig.adapters.trainer_process PARENT_PID -- ARGV...`) --------
def _kill_tree() -> None:
    """SIGKILL every descendant (orphans of this subreaper included) and reap them."""
    import psutil

    me = psutil.Process()
    for _attempt in range(100):  # until none is left (one may fork while the others die)
        try:
            left = me.children(recursive=True)
        except psutil.Error:
            continue
        if not left:
            return
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)


def _guard(parent: int, argv: Sequence[str]) -> int:
    import psutil  # noqa: F401  (imported now: never for the first time inside a handler)

    def parent_gone(_sig: int, _frame: object) -> None:
        # the kernel may signal once per thread of the dead parent: act on the first only
        signal.signal(PARENT_GONE, lambda _sig, _frame: None)
        _kill_tree()
        os.killpg(os.getpgrp(), signal.SIGKILL)  # and whatever of the group it missed, itself last

    signal.signal(PARENT_GONE, parent_gone)
    # A group SIGTERM/SIGINT reaches the command itself, which winds down; the guard waits
    # for it (a no-op handler, not SIG_IGN: an ignored signal would stay ignored after exec).
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _sig, _frame: None)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:
        return 128 + PARENT_GONE
    try:
        proc = subprocess.Popen(list(argv))
    except OSError as exc:
        print(f"error: cannot start {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    code = proc.wait()
    _kill_tree()  # what the command left running ends with it
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--" or not sys.argv[1].isdigit():
        sys.exit("usage: python -m mlrig.adapters.trainer_process PARENT_PID -- ARGV...")
    sys.exit(_guard(int(sys.argv[1]), sys.argv[3:]))
