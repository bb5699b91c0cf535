"""Canary judging: nginx's per-request JSON lines (parsed at one boundary, retries split per
backend), the numbers and limits a canary is judged by, the bake loop, the pushed-image tags
a deploy trusts, `deploy logs`' merge, and a SIGTERM held while traffic switches. One test
runs the real nginx with the rendered log format against two local backends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from mlrig.adapters.mlflow_rest import ModelVersion
from mlrig.core.deploy import _images, _render, canary, logs, traffic
from mlrig.core.deploy.state import Endpoint
from mlrig.core.shared import interrupts, rotation
from mlrig.errors import Terminated, UsageError
from tests.helpers import deploy_backend as backend
from tests.helpers import sample

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STABLE, CANARY = 9001, 9002


def line(port: int | str, status: int, ms: float, *, at: float = 0.0, uri: str = "") -> bytes:
    ups = str(port) if isinstance(port, str) else f"127.0.0.1:{port}"
    rec = {
        "msec": at or NOW.timestamp(),
        "status": status,
        "request_time": ms / 1000,
        "method": "POST",
        "uri": uri or "/endpoints/churn/invocations",
        "upstream_addr": ups,
        "upstream_status": str(status),
        "upstream_response_time": f"{ms / 1000:.3f}",
        "request_id": "ab12",
    }
    return json.dumps(rec).encode() + b"\n"


def with_canary(limits: traffic.CanaryLimits | None = None) -> Endpoint:
    return Endpoint(
        name="churn",
        backends=[backend("1", STABLE, 90), backend("2", CANARY, 10)],
        created_at=NOW,
        canary_limits=limits,
    )


def test_a_retried_request_counts_against_each_backend_it_tried(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    rec = json.loads(line(CANARY, 200, 5))
    rec.update(
        upstream_addr=f"127.0.0.1:{CANARY}, 127.0.0.1:{STABLE}",
        upstream_status="502, 200",
        upstream_response_time="0.001, 0.004",
    )
    log.write_bytes(json.dumps(rec).encode() + b"\n" + line("-", 401, 0) + b"not json\n")
    batch = traffic.read(log)
    assert batch.skipped == 1 and len(batch.requests) == 2
    assert batch.requests[0].attempts() == [
        traffic.Attempt(CANARY, 502, 1.0),
        traffic.Attempt(STABLE, 200, 4.0),
    ]
    assert batch.requests[1].attempts() == []  # refused by the key check: no backend
    assert traffic.numbers(batch.requests, CANARY) == traffic.Numbers(1, 1, 1.0)
    assert traffic.numbers(batch.requests, STABLE) == traffic.Numbers(1, 0, 4.0)


def test_reads_go_on_from_an_offset_and_skip_a_half_written_line(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    log.write_bytes(line(CANARY, 200, 5) + line(CANARY, 500, 5)[:20])
    first = traffic.read(log)
    whole = len(line(CANARY, 200, 5))
    assert len(first.requests) == 1
    assert (first.end.inode, first.end.offset) == (log.stat().st_ino, whole)
    with log.open("ab") as f:
        f.write(line(CANARY, 500, 5)[20:])
    more = traffic.read(log, start=first.end)
    assert [r.status for r in more.requests] == [500]
    log.write_bytes(line(STABLE, 200, 1))  # truncated: shorter than the offset
    assert [r.status for r in traffic.read(log, start=more.end).requests] == [200]
    assert traffic.read(tmp_path / "none.log") == traffic.Batch([], 0, rotation.Mark())
    # a tail read drops the first, possibly cut, line
    log.write_bytes(line(STABLE, 200, 1) * 3)
    tail = traffic.read(log, tail_bytes=len(line(STABLE, 200, 1)) * 2 + 3)
    assert len(tail.requests) == 2


def test_an_oversized_or_odd_line_is_skipped_not_trusted(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    rec = json.loads(line(CANARY, 200, 5))
    log.write_bytes(
        json.dumps({**rec, "uri": "x" * 5000}).encode()
        + b"\n"
        + json.dumps({**rec, "status": "abc"}).encode()
        + b"\n"
        + json.dumps({**rec, "upstream_addr": "10.0.0.1:80"}).encode()
        + b"\n"
    )
    batch = traffic.read(log)
    assert batch.skipped == 2
    assert batch.requests[0].attempts() == []  # not a loopback backend of ours


def numbers(errors: int, count: int, p99: float | None) -> traffic.Numbers:
    return traffic.Numbers(count, errors, p99)


def test_limits_need_enough_requests_then_judge_errors_and_p99() -> None:
    limits = traffic.CanaryLimits()
    calm = numbers(0, 100, 10.0)
    assert traffic.verdict(numbers(19, 19, 10.0), calm, limits) is None  # too few to judge
    assert traffic.verdict(numbers(1, 20, 10.0), calm, limits) is None  # 5% is the limit
    why = traffic.verdict(numbers(2, 20, 10.0), calm, limits)
    assert why and "2 of its 20 requests failed (10% 5xx" in why
    # p99: over 3x the stable's and over the 500 ms floor
    assert traffic.verdict(numbers(0, 50, 400.0), calm, limits) is None  # under the floor
    why = traffic.verdict(numbers(0, 50, 700.0), calm, limits)
    assert why and "over the limit of 500 ms" in why
    slow = numbers(0, 100, 300.0)
    assert traffic.verdict(numbers(0, 50, 800.0), slow, limits) is None  # under 3x 300 ms
    assert "900 ms" in (traffic.verdict(numbers(0, 50, 901.0), slow, limits) or "")
    # a stable with too few requests to compare: the floor alone
    assert traffic.verdict(numbers(0, 50, 501.0), numbers(0, 3, 1.0), limits)
    strict = traffic.CanaryLimits(max_error_rate=0, min_requests=1)
    assert traffic.verdict(numbers(1, 1, 1.0), calm, strict)
    # 4xx: judged against the stable's share (the same clients send both the same bodies)
    bad_input = traffic.Numbers(100, 0, 10.0, rejected=8)
    assert traffic.verdict(traffic.Numbers(40, 0, 10.0, rejected=5), bad_input, limits) is None
    why = traffic.verdict(traffic.Numbers(40, 0, 10.0, rejected=40), bad_input, limits)
    assert why and "100% of its answers were 4xx against the stable version's 8%" in why
    assert (
        traffic.verdict(traffic.Numbers(40, 0, 1.0, rejected=40), numbers(0, 3, 1.0), limits)
        is None
    )
    assert traffic.percentile([5.0, 1.0, 3.0], 99) == 5.0
    assert traffic.percentile(list(map(float, range(1, 101))), 99) == 99.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_bake_aborts_on_5xx_and_holds_otherwise(tmp_path: Path) -> None:
    log, clock = tmp_path / "churn.log", Clock()
    log.write_bytes(line(CANARY, 500, 5) * 50)  # before the canary's offset: not its
    start = rotation.end(log)
    log.write_bytes(log.read_bytes() + line(CANARY, 200, 5) * 30 + line(STABLE, 200, 5) * 30)
    said: list[str] = []

    def bake(ep: Endpoint, alive: object = lambda: None) -> str | None:
        return canary.bake(
            ep,
            log,
            10,
            start=start,
            alive=alive,
            progress=said.append,  # type: ignore[arg-type]
            clock=clock,
            sleep=clock.sleep,
        )

    assert bake(with_canary()) is None
    assert "held: 30 requests, 0.0% 5xx" in said[-1]
    assert clock.now >= 10

    with log.open("ab") as f:
        f.write(line(CANARY, 503, 5) * 5)
    clock.now = 0
    why = bake(with_canary())
    assert why and "5 of its 35 requests failed" in why and clock.now == 0  # at once

    # the limits the canary was deployed with are the ones applied
    assert bake(with_canary(traffic.CanaryLimits(max_error_rate=0.2))) is None


def test_the_bake_aborts_when_the_canary_stops_answering_ping(tmp_path: Path) -> None:
    log, clock = tmp_path / "churn.log", Clock()
    answers = iter([None, "its container stopped answering /ping", None, "gone", "gone"])
    why = canary.bake(
        with_canary(),
        log,
        60,
        start=rotation.Mark(),
        alive=lambda: next(answers),
        progress=lambda _m: None,
        clock=clock,
        sleep=clock.sleep,
    )
    assert why == "gone"  # two misses in a row; one alone is forgiven
    assert clock.now == 4.0


def test_promote_judges_what_the_canary_answered_since_it_started(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    before = (NOW - timedelta(minutes=5)).timestamp()
    log.write_bytes(line(CANARY, 500, 5, at=before) * 40 + line(CANARY, 200, 5) * 40)
    found, why = canary.since_started(with_canary(), log)
    assert why is None and found.requests == 40
    with log.open("ab") as f:
        f.write(line(CANARY, 500, 5) * 10)
    found, why = canary.since_started(with_canary(), log)
    assert why and found.errors == 10


def test_durations() -> None:
    assert canary.parse_duration("60s") == 60 and canary.parse_duration("2m") == 120
    assert canary.parse_duration("0") == 0 and canary.parse_duration("1.5") == 1.5
    with pytest.raises(UsageError, match="not a duration"):
        canary.parse_duration("soon")


def version(tags: dict[str, str]) -> ModelVersion:
    return ModelVersion("m", "3", None, tags)


def test_a_version_s_image_tags_are_checked_before_any_use() -> None:
    out = sample()
    host = out.registry.host
    good = {"mlrig.image.digest": "sha256:" + "b" * 64, "mlrig.image.repository": f"{host}/m"}
    assert _images.tags_of(version({}), out) is None  # never pushed: build and push it
    tags = _images.tags_of(version(good), out)
    assert tags is not None and tags.digest == good["mlrig.image.digest"]
    for bad in (
        {**good, "mlrig.image.digest": "sha256:../../x"},
        {**good, "mlrig.image.repository": "evil.example.com/m"},  # another registry
        {**good, "mlrig.image.repository": f"{host}/m; rm -rf /"},
        {"mlrig.image.repository": f"{host}/m"},
    ):
        with pytest.raises(UsageError, match="do not name a digest"):
            _images.tags_of(version(bad), out)
    with pytest.raises(UsageError, match="undone"):
        _images.refuse_undone(version({"mlrig.undone": "true"}))
    _images.refuse_undone(version({"mlrig.undone": "false"}))


def test_logs_merge_requests_and_container_lines_by_time(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.stack.local.state import Layout

    layout = Layout("dev")
    log = traffic.log_file(layout, "churn")
    log.parent.mkdir(parents=True)
    t0 = NOW.timestamp()
    log.write_bytes(
        line(STABLE, 200, 3, at=t0 - 3600)
        + line(STABLE, 200, 3, at=t0 + 1)
        + line(CANARY, 500, 9, at=t0 + 3)
    )
    lines = {
        "c1": [("2026-01-01T00:00:02.123456789Z", "stable says hi")],
        "c2": [
            ("2026-01-01T00:00:04Z", "Traceback: \x1b[31mboom Authorization: Basic QWxhZGRpbg=="),
            ("garbage", "x"),
        ],
    }
    monkeypatch.setattr(docker_adapter, "container_log_lines", lambda c, since, tail: lines[c])
    found = logs.entries(layout, with_canary(), NOW, 100)
    assert [(e.source, e.text.split(" <- ")[-1]) for e in found] == [
        ("nginx", "v1 200"),
        ("v1", "stable says hi"),
        ("nginx", "v2 500"),
        ("v2", "Traceback: boom Authorization: [redacted]"),  # cleaned as on AWS
    ]
    assert found[0].text.startswith("POST /endpoints/churn/invocations 200 3 ms")
    assert found[2].as_json()["request"]["status"] == 500  # type: ignore[index]
    assert [e.source for e in logs.entries(layout, with_canary(), NOW, 2)] == ["nginx", "v2"]


def test_a_sigterm_while_traffic_switches_is_raised_when_the_switch_is_done() -> None:
    done: list[str] = []
    with (
        pytest.raises(Terminated, match="stopped by SIGTERM"),
        interrupts.terminate_as_exception("churn", what="`mlrig deploy`", hint="see status"),
    ):
        with interrupts.shielded():
            signal.raise_signal(signal.SIGTERM)
            done.append("switched")
        done.append("not reached")
    assert done == ["switched"]


class _Backend(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        code = self.server.code  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[dict[int, ThreadingHTTPServer]]:
    servers = {}
    for code in (200, 500):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
        server.code = code  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[code] = server
    yield {s.server_address[1]: s for s in servers.values()}
    for s in servers.values():
        s.shutdown()
        s.server_close()


def test_nginx_logs_lines_the_parser_reads(
    tmp_path: Path, backends: dict[int, ThreadingHTTPServer]
) -> None:
    """The real nginx, the rendered config and log format, a stable answering 200 and a
    canary answering 500: the lines it writes are read back per backend."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    from mlrig.core.stack.local.stack import free_port

    by_code = {s.code: p for p, s in backends.items()}  # type: ignore[attr-defined]
    ok_port, bad = by_code[200], by_code[500]
    ep = Endpoint(
        name="churn",
        public=True,
        backends=[backend("1", ok_port, 50), backend("2", bad, 50)],
        created_at=NOW,
    )
    (tmp_path / "run").mkdir()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    user = "root" if os.geteuid() == 0 else None  # as the deploy does
    text = _render.render(
        port, [ep], tmp_path, tmp_path / "run", tmp_path / "e.log", user, access_logs=tmp_path
    )
    conf.write_text(text.replace("proxy_next_upstream error timeout http_502 http_503;", ""))
    argv = [nginx, "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "e.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from tests.helpers import wait_for_http

        wait_for_http(f"http://127.0.0.1:{port}/nothing", timeout=10, status=404)
        for _ in range(40):
            requests.post(f"http://127.0.0.1:{port}/endpoints/churn/invocations", timeout=5)
    finally:
        proc.terminate()  # a fast shutdown flushes the log buffer
        proc.wait(timeout=10)
    batch = traffic.read(tmp_path / "churn.log")
    assert batch.skipped == 0 and len(batch.requests) == 40
    good, failing = traffic.numbers(batch.requests, ok_port), traffic.numbers(batch.requests, bad)
    assert good.requests + failing.requests == 40 and good.errors == 0
    assert failing.errors == failing.requests > 0
    assert traffic.verdict(failing, good, traffic.CanaryLimits(min_requests=1))


def test_the_command_passes_the_limits_bake_and_force_to_the_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from mlrig.core.deploy import endpoints
    from mlrig.main import app

    seen: dict[str, Any] = {}

    def deploy(ref: str | None, **kw: Any) -> Any:
        seen.update(kw, ref=ref)
        raise UsageError("stop here")

    def promote(name: str, **kw: Any) -> Any:
        seen.update(kw, name=name)
        raise UsageError("stop here")

    from mlrig.core.deploy import backend

    monkeypatch.setattr(endpoints, "deploy", deploy)
    monkeypatch.setattr(endpoints, "promote", promote)
    monkeypatch.setattr(backend, "for_stack", lambda _stack: endpoints)
    runner = CliRunner()
    args = ["deploy", "models:/m/2", "--canary", "10", "--bake", "2m", "--max-error-rate", "1"]
    result = runner.invoke(app, [*args, "--min-requests", "50", "--p99-floor", "200"])
    assert result.exit_code == 2 and seen["bake"] == 120 and seen["canary"] == 10
    assert seen["limits"] == traffic.CanaryLimits(
        max_error_rate=0.01, min_requests=50, p99_factor=3.0, p99_floor_ms=200.0
    )
    assert runner.invoke(app, ["deploy", "promote", "churn", "--force"]).exit_code == 2
    assert seen["name"] == "churn" and seen["force"] is True
    bad = runner.invoke(app, ["deploy", "models:/m/2", "--bake", "later"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    assert runner.invoke(app, ["deploy", "logs", "churn", "--tail", "0"]).exit_code == 2


def test_a_sigterm_while_ref_is_resolved_and_built_is_one_line_and_deploys_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resolving REF may build and push its image (minutes a CI cancel can cut): a SIGTERM
    there is the deploy's own Terminated line, before any endpoint is locked or touched."""
    from mlrig.core.deploy import endpoints

    touched: list[str] = []

    class Store:
        def lock(self, name: str) -> Any:
            touched.append(name)
            raise AssertionError("an endpoint was locked")

    monkeypatch.setattr(
        endpoints.Site, "open", staticmethod(lambda stack: type("S", (), {"store": Store()})())
    )
    monkeypatch.setattr(endpoints.nginx, "binary", lambda: "/usr/sbin/nginx")

    def building(site: Any, ref: str, progress: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("the build went on after SIGTERM")

    monkeypatch.setattr(endpoints, "resolve", building)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="resolving it, building and pushing its image") as err:
        endpoints.deploy("models:/churn/8", endpoint="churn")
    assert "nothing was deployed" in (err.value.hint or "")
    assert touched == [] and signal.getsignal(signal.SIGTERM) == previous
