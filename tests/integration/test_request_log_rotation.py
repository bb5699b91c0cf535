"""The endpoints' request log rotates under real nginx: the keeper `ensure` starts (with a
2 KB limit and 3 kept files instead of 64 MiB and 5) rotates the log nginx writes and has it
reopen; a reader following the log as the canary's bake does (`traffic.read` from its last
mark) sees every request exactly once across the rotations; the kept files never exceed
the cap; and the keeper exits when nginx stops. Needs nginx only (no engine); about 10 s.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlrig.adapters import nginx, processes
from mlrig.core.deploy import _render, traffic
from mlrig.core.deploy.state import Backend, Endpoint
from mlrig.core.shared import rotation
from mlrig.core.shared.files import PRIVATE_UMASK
from mlrig.core.stack.local import access_logs
from mlrig.core.stack.local._services import free_port
from mlrig.core.stack.local.state import Layout
from mlrig.errors import DependencyMissing
from mlrig.wait import wait_until
from tests.helpers import require

pytestmark = pytest.mark.integration

MAX_BYTES = 2000  # ~8 of nginx's lines: a rotation every flush of a round
KEEP = 3
ROUNDS, PER_ROUND = 8, 12
ANSWER = b'{"predictions": [1]}'


class _Model(BaseHTTPRequestHandler):
    """A stand-in for the model container."""

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's handler name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass


@pytest.fixture
def served(mlrig_home: Path) -> Iterator[tuple[Layout, str]]:
    """(the stack's layout, the endpoint's URL): nginx started as `deploy` starts it, with
    the access log `deploy` renders, and the keeper beside it."""
    try:
        nginx.binary()
        found = True
    except DependencyMissing:
        found = False
    require(found, "nginx (apt-get install nginx)")
    layout = Layout("rot")
    for folder in (layout.run_dir, access_logs.folder(layout), layout.root / "endpoints"):
        folder.mkdir(parents=True, exist_ok=True)
    model = ThreadingHTTPServer(("127.0.0.1", free_port()), _Model)
    model.daemon_threads = True
    threading.Thread(target=model.serve_forever, daemon=True).start()
    backend = Backend(
        model="m",
        version="1",
        digest="sha256:" + "0" * 64,
        image="local/m@sha256:" + "0" * 64,
        container="none",
        port=model.server_address[1],
        weight=100,
        since=datetime.now(UTC),
    )
    endpoint = Endpoint(name="ep", public=True, backends=[backend], created_at=datetime.now(UTC))
    port = free_port()
    user = pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else None
    work = layout.root / "endpoints"
    conf = work / "nginx.conf"
    conf.write_text(
        _render.render(
            port,
            [endpoint],
            work,
            layout.run_dir,
            layout.log_file("nginx-error"),
            user=user,
            access_logs=access_logs.folder(layout),
        )
    )
    processes.start(
        nginx.argv(conf, work, layout.log_file("nginx-error")),
        pid_file=layout.pid_file("nginx"),
        log_file=layout.log_file("nginx"),
        cwd=layout.root,
        umask=PRIVATE_UMASK,
    )
    try:
        access_logs.ensure(layout, max_bytes=MAX_BYTES, keep=KEEP, interval=0.2)

        def listening() -> bool:  # a connect, not a request: every request is counted
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=10, interval=0.05, what="nginx listening")
        yield layout, f"http://127.0.0.1:{port}/endpoints/ep/invocations"
    finally:
        processes.stop(layout.pid_file("nginx"))
        processes.stop(layout.pid_file(access_logs.SERVICE))
        model.shutdown()
        model.server_close()


def _post(url: str) -> bool:
    try:
        # a loopback http:// URL built by the fixture
        with urllib.request.urlopen(url, data=b'{"inputs": [[1.0]]}', timeout=5) as resp:  # noqa: S310
            return bool(resp.status == 200 and resp.read() == ANSWER)
    except OSError:
        return False


def test_the_request_log_rotates_by_size_and_a_follower_loses_nothing(
    served: tuple[Layout, str],
) -> None:
    layout, url = served
    log = traffic.log_file(layout, "ep")
    keeper = layout.pid_file(access_logs.SERVICE)
    assert processes.status(keeper)[0] == processes.Status.RUNNING
    seen: list[str] = []
    mark = rotation.Mark()
    most_files = 0
    heads: set[bytes] = set()  # each NAME.log nginx (re)opened, by its first line
    sent = 0

    def follow() -> bool:
        nonlocal mark, most_files
        most_files = max(most_files, len(rotation.files(log)))
        with contextlib.suppress(FileNotFoundError):
            heads.add(log.read_bytes()[:80])
        batch = traffic.read(log, start=mark)
        assert batch.skipped == 0
        seen.extend(r.request_id for r in batch.requests)
        mark = batch.end
        return len(seen) >= sent

    for _ in range(ROUNDS):
        for _ in range(PER_ROUND):
            assert _post(url)
            sent += 1
        wait_until(follow, timeout=15, interval=0.1, what=f"{sent} requests logged")
    assert len(seen) == sent and len(set(seen)) == sent  # each request once, none lost
    assert len(heads - {b""}) >= ROUNDS // 2  # rotated (and reopened) round after round
    assert most_files <= KEEP + 1  # NAME.log and NAME.log.1..3, never more
    # the kept files hold the newest requests only: the oldest were dropped
    kept = [r.request_id for r in traffic.read(log).requests]
    assert 0 < len(kept) < sent
    assert kept == seen[-len(kept) :]
    # nginx stops: so does its keeper
    processes.stop(layout.pid_file("nginx"))
    wait_until(
        lambda: processes.status(keeper)[0] != processes.Status.RUNNING,
        timeout=10,
        what="the keeper to exit",
    )
