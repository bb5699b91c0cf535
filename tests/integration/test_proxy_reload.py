"""The endpoint proxy's reloads drop no request: real nginx with the config mlrig renders, a
keep-alive-capable client (aiohttp's pool, as the deploy bench's) posting at 100 req/s
while the master is HUPed 40 times, each reload waited out as `deploy` waits it (new
workers serving, old ones drained).

The failure this guards: a reloading nginx's old worker closes its idle keep-alive
connections at once; a client that sends on one just then gets a reset
(ClientOSError) or an empty answer (ServerDisconnectedError). With client keep-alive on,
this test failed 3 runs in 4 (1-5 failed of ~860 requests a run); with the rendered
`keepalive_timeout 0`, 0 failed in 5 runs (~4,300 requests, 200 reloads). Needs nginx only
(no engine); about 10 s.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlrig.adapters import nginx
from mlrig.core.deploy import _render
from mlrig.core.deploy.state import Backend, Endpoint
from mlrig.core.stack.local._services import free_port
from mlrig.errors import DependencyMissing
from mlrig.wait import wait_until
from tests.helpers import require

pytestmark = pytest.mark.integration

RELOADS = 40
RATE = 100.0  # requests a second
ANSWER = b'{"predictions": [1]}'


class _Model(BaseHTTPRequestHandler):
    """A stand-in for the model container: HTTP/1.1 with keep-alive, as uvicorn."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's handler name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(invocations URL, nginx master PID) for one public endpoint in front of _Model."""
    try:
        nginx.binary()
        found = True
    except DependencyMissing:
        found = False
    require(found, "nginx (apt-get install nginx)")
    work = tmp_path_factory.mktemp("proxy")
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
    conf = work / "nginx.conf"
    conf.write_text(_render.render(port, [endpoint], work, work, work / "error.log", user=user))
    master = subprocess.Popen(nginx.argv(conf, work, work / "error.log"))
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=10, interval=0.05, what="nginx listening")
        yield f"http://127.0.0.1:{port}/endpoints/ep/invocations", master.pid
    finally:
        master.terminate()
        master.wait(timeout=30)
        model.shutdown()
        model.server_close()


def _hammer(url: str, stop: threading.Event, outcomes: Counter[str]) -> None:
    """POST at RATE on a fixed schedule over one pooled session until stop is set; each
    outcome counted: "200", another status, or the exception's kind."""
    import aiohttp

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(url, data=b'{"inputs": [[1.0]]}') as resp:
                body = await resp.read()
                outcomes["200" if resp.status == 200 and body == ANSWER else str(resp.status)] += 1
        except Exception as exc:  # noqa: BLE001 - reset, disconnected, refused: each counted
            outcomes[type(exc).__name__] += 1

    async def run() -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            start, i = loop.time(), 0
            while not stop.is_set():
                if (wait := start + i / RATE - loop.time()) > 0:
                    await asyncio.sleep(wait)
                task = asyncio.create_task(one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)

    asyncio.run(run())


def test_reloads_under_steady_traffic_fail_no_request(proxy: tuple[str, int]) -> None:
    url, master = proxy
    outcomes: Counter[str] = Counter()
    stop = threading.Event()
    client = threading.Thread(target=_hammer, args=(url, stop, outcomes))
    client.start()
    answered_before: list[int] = []
    try:
        wait_until(lambda: outcomes["200"] >= 20, timeout=30, interval=0.05, what="traffic")
        for _ in range(RELOADS):
            answered_before.append(outcomes["200"])
            old = nginx.reload(master)
            assert nginx.drained(old), "the old workers did not exit"
            wait_until(
                lambda n=answered_before[-1]: outcomes["200"] >= n + 20,
                timeout=30,
                interval=0.02,
                what="answers after the reload",
            )
    finally:
        stop.set()
        client.join(timeout=60)
    assert not client.is_alive()
    failed = {kind: n for kind, n in outcomes.items() if kind != "200"}
    assert failed == {}, f"{failed} of {sum(outcomes.values())} requests over {RELOADS} reloads"
    assert outcomes["200"] >= answered_before[-1] + 5  # traffic ran through every reload
