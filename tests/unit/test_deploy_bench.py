"""The deploy benchmark's clients (bench/deploy/traffic.py) count what they must: every
scheduled request once, a non-200 or a refused connection as failed, each in its phase, and
the answering version from X-Model-Version. Against a loopback stand-in server; no timing
assertions."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest

from mlrig.core.stack.local.stack import free_port
from mlrig.wait import wait_until
from tests.helpers import REPO_ROOT


def load_traffic() -> ModuleType:
    path = REPO_ROOT / "bench" / "deploy" / "traffic.py"
    spec = importlib.util.spec_from_file_location("bench_deploy_traffic", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


traffic = load_traffic()


class Model(BaseHTTPRequestHandler):
    """Every 5th request a 500, the rest a 200 from version 7; keeps a count of each."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the endpoint's nginx
    seen: dict[str, Any] = {"ok": 0, "failed": 0, "auth": set()}
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            n = self.seen["ok"] + self.seen["failed"] + 1
            failed = n % 5 == 0
            self.seen["failed" if failed else "ok"] += 1
            self.seen["auth"].add(self.headers.get("Authorization"))
        body = b"[0]"
        self.send_response(500 if failed else 200)
        self.send_header("X-Model-Version", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def model() -> Iterator[tuple[str, dict[str, Any]]]:
    Model.seen = {"ok": 0, "failed": 0, "auth": set()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/invocations", Model.seen
    finally:
        server.shutdown()
        server.server_close()


def test_open_loop_counts_every_request_and_every_failure_in_its_phase(
    model: tuple[str, dict[str, Any]],
) -> None:
    url, seen = model
    gen = traffic.OpenLoop(url, b'{"x": 1}', "kid:secret", rate=200)
    gen.start("first")
    wait_until(lambda: len(gen.shots) >= 20, timeout=30, what="20 answers", interval=0.01)
    gen.phase = "second"
    wait_until(
        lambda: sum(s.phase == "second" for s in gen.shots) >= 20,
        timeout=30,
        what="20 more",
        interval=0.01,
    )
    shots = gen.stop()

    phases = {p["phase"]: p for p in traffic.summarize(shots)}
    assert list(phases) == ["first", "second"]
    assert len(shots) == seen["ok"] + seen["failed"]
    assert sum(p["non_200"] for p in phases.values()) == seen["failed"] > 0
    assert sum(p["versions"].get("7", 0) for p in phases.values()) == seen["ok"]
    assert all(p["no_answer"] == 0 and p["p99_ms"] >= p["p50_ms"] > 0 for p in phases.values())
    assert seen["auth"] == {"Basic a2lkOnNlY3JldA=="}  # kid:secret
    latencies = traffic.latencies_ms(shots)
    assert {k: len(v) for k, v in latencies.items()} == {k: p["sent"] for k, p in phases.items()}


def test_a_refused_connection_is_a_failed_request_not_a_lost_one() -> None:
    gen = traffic.OpenLoop(f"http://127.0.0.1:{free_port()}/x", b"{}", "k:s", rate=100)
    gen.start("down")
    wait_until(lambda: len(gen.shots) >= 5, timeout=30, what="5 refusals", interval=0.01)
    (phase,) = traffic.summarize(gen.stop())
    assert phase["sent"] == phase["non_200"] == phase["no_answer"] >= 5
    assert phase["versions"] == {}
    assert all(e.startswith("ClientConnectorError: ") for e in phase["errors"])


def test_percentiles_interpolate_between_ranks() -> None:
    assert traffic.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert traffic.percentile([float(x) for x in range(1, 101)], 99) == pytest.approx(99.01)
    assert traffic.percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        traffic.percentile([], 50)
    assert traffic.paired_difference_ms([0.003, 0.005], [0.001, 0.001]) == pytest.approx(3.0)
