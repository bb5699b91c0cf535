"""The endpoints' request logs kept bounded. nginx writes one JSON line per request into
`logs/endpoints/NAME.log` (~0.8 GB a day at 50 req/s) and cannot rotate by itself; a small
process started beside it (`ensure`) looks every INTERVAL seconds, rotates a log that has
reached MAX_BYTES (NAME.log -> NAME.log.1 ... NAME.log.KEEP, the oldest dropped:
`shared.rotation`) and has nginx reopen its logs (SIGUSR1, what `nginx -s reopen` sends;
nginx flushes its buffered lines into the renamed file first). So an endpoint keeps at most
(KEEP + 1) x MAX_BYTES of log, and readers read across the rotated files. The process exits
when nginx is no longer running; `stack down` stops it with nginx.

Run as `python -m mlrig.core.stack.local.access_logs STACK FOLDER` (FOLDER names the stack's
folder on the command line, so its orphans are found like every service's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mlrig.adapters import nginx, processes
from mlrig.core.shared import rotation
from mlrig.core.shared.files import PRIVATE_UMASK
from mlrig.core.stack.local.state import Layout

SERVICE = "nginx-logs"  # its PID file and its own log, beside nginx's
ENDPOINT_LOGS = "endpoints"
MAX_BYTES = 64 << 20  # ~2 h at 50 req/s; `deploy logs` and canary reads look 32 MiB back
KEEP = 5  # 384 MiB at most per endpoint: ~11 h at 50 req/s
INTERVAL = 5.0  # 50 KB at 50 req/s: a log overshoots MAX_BYTES by that much at most


def folder(layout: Layout) -> Path:
    return layout.logs_dir / ENDPOINT_LOGS


def ensure(
    layout: Layout, *, max_bytes: int = MAX_BYTES, keep: int = KEEP, interval: float = INTERVAL
) -> None:
    """Start the keeper when nginx runs and no keeper does (after nginx starts, and at
    every deploy, so a killed keeper comes back)."""
    if processes.status(layout.pid_file("nginx"))[0] != processes.Status.RUNNING:
        return
    if processes.status(layout.pid_file(SERVICE))[0] == processes.Status.RUNNING:
        return
    limits = ["--max-bytes", str(max_bytes), "--keep", str(keep), "--interval", str(interval)]
    processes.start(
        [sys.executable, "-m", __name__, layout.name, str(folder(layout)), *limits],
        pid_file=layout.pid_file(SERVICE),
        log_file=layout.log_file(SERVICE),
        cwd=layout.root,
        umask=PRIVATE_UMASK,
    )


def sweep(logs: Path, max_bytes: int, keep: int) -> list[Path]:
    """Rotate every log in `logs` that has reached max_bytes; the ones rotated, and those
    rotated earlier that nginx has not reopened yet (a signal that did not arrive would
    otherwise leave it appending to NAME.log.1 for good)."""
    done = [
        log.with_suffix("")
        for log in sorted(logs.glob("*.log.1"))
        if not log.with_suffix("").exists()
    ]
    for log in sorted(logs.glob("*.log")):
        try:
            full = log.stat().st_size >= max_bytes
        except FileNotFoundError:  # an endpoint deleted meanwhile
            continue
        if full and rotation.rotate(log, keep):
            done.append(log)
    return done


def watch(
    nginx_pid_file: Path,
    logs: Path,
    *,
    max_bytes: int = MAX_BYTES,
    keep: int = KEEP,
    interval: float = INTERVAL,
) -> None:
    """Sweep `logs` every `interval` seconds while the nginx of `nginx_pid_file` runs."""
    while True:
        state, rec = processes.status(nginx_pid_file)
        if state != processes.Status.RUNNING or rec is None:
            return
        try:
            rotated = sweep(logs, max_bytes, keep)
        except OSError as exc:  # said in its log, tried again: the keeper must not die
            print(f"mlrig nginx-logs: {exc}", file=sys.stderr, flush=True)
            rotated = []
        if rotated:
            nginx.reopen(rec.pid)
        time.sleep(interval)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("stack")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    parser.add_argument("--keep", type=int, default=KEEP)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    if args.keep < 1 or args.max_bytes < 1 or args.interval <= 0:
        parser.error("--keep, --max-bytes and --interval must be positive")
    layout = Layout(args.stack)
    if args.folder.resolve() != folder(layout).resolve():
        parser.error(f"{args.folder} is not the endpoint logs of stack {args.stack}")
    watch(
        layout.pid_file("nginx"),
        args.folder,
        max_bytes=args.max_bytes,
        keep=args.keep,
        interval=args.interval,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
