"""The model server's limits: bodies over the cap are refused before they are read, scoring
never blocks /ping, and a flood queues instead of running all at once."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlrig.wait import wait_until
from tests.helpers import load_serving_module, serving_model_dir

serve = load_serving_module("mlrig_serve_limits")
JSON = "application/json"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in model (one prediction per row; tests swap in a slower `predict_fn`) with
    one input column, x."""
    return serving_model_dir(tmp_path_factory.mktemp("model"), ["x"])


def rows(n: int) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1.0]] * n}}).encode()


# -- the ASGI app driven directly ------------------------------------------------------------------
class Exchange:
    """One request through the ASGI app: what it read and what it answered."""

    def __init__(self, messages: list[dict[str, Any]], delay: float = 0.0) -> None:
        self.messages = messages
        self.delay = delay
        self.received = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.received >= len(self.messages):
            raise AssertionError("the app read past the end of the body")
        self.received += 1
        return self.messages[self.received - 1]

    async def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def json(self) -> Any:
        return json.loads(self.sent[1]["body"])


def scope(length: int | None = None, path: str = "/invocations") -> dict[str, Any]:
    headers = [(b"content-type", JSON.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def one_chunk(body: bytes) -> list[dict[str, Any]]:
    return [{"type": "http.request", "body": body, "more_body": False}]


def call(app: Any, ex: Exchange, sc: dict[str, Any]) -> Exchange:
    asyncio.run(app(sc, ex.receive, ex.send))
    return ex


def test_a_declared_length_over_the_limit_gets_413_without_a_read(model_dir: Path) -> None:
    app = serve.make_app(serve.Model(str(model_dir)), serve.Limits(max_body_bytes=1000))
    ex = call(app, Exchange([]), scope(length=1001))  # receive() would fail the test
    assert ex.received == 0
    assert ex.status == 413
    assert ex.json["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    assert "MLRIG_MAX_BODY_BYTES" in ex.json["message"]
    assert set(ex.json) == {"error_code", "message"}  # MLflow's error shape
    assert ex.headers[b"connection"] == b"close"  # the unread rest must not be parsed as a request


def test_a_chunked_body_is_stopped_as_soon_as_it_passes_the_limit(model_dir: Path) -> None:
    app = serve.make_app(serve.Model(str(model_dir)), serve.Limits(max_body_bytes=1000))
    endless = [{"type": "http.request", "body": b"x" * 300, "more_body": True}] * 100
    ex = call(app, Exchange(endless), scope())
    assert ex.status == 413 and ex.json["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
    assert ex.received == 4  # 1200 bytes: the first chunk past 1000, and not one more


def test_a_body_at_the_limit_is_scored(model_dir: Path) -> None:
    body = rows(3)
    app = serve.make_app(serve.Model(str(model_dir)), serve.Limits(max_body_bytes=len(body)))
    chunks = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    ex = call(app, Exchange(chunks), scope(length=len(body)))
    assert (ex.status, ex.json) == (200, {"predictions": [0, 0, 0]})
    ex = call(app, Exchange(one_chunk(body)), scope())  # no Content-Length at all
    assert ex.status == 200


def test_a_body_that_never_finishes_gets_408(model_dir: Path) -> None:
    limits = serve.Limits(body_timeout_seconds=0.2)
    app = serve.make_app(serve.Model(str(model_dir)), limits)
    trickle = [{"type": "http.request", "body": b"{", "more_body": True}] * 100
    ex = call(app, Exchange(trickle, delay=0.05), scope())
    assert ex.status == 408 and ex.json["error_code"] == "DEADLINE_EXCEEDED"
    assert ex.headers[b"connection"] == b"close"


def test_a_client_that_leaves_gets_no_answer(model_dir: Path) -> None:
    app = serve.make_app(serve.Model(str(model_dir)))
    ex = call(app, Exchange([{"type": "http.disconnect"}]), scope())
    assert ex.sent == []


def test_queued_requests_are_not_read_until_a_slot_frees(model_dir: Path) -> None:
    model = serve.Model(str(model_dir))
    release = threading.Event()
    model.predict_fn = lambda x: release.wait(10) and np.zeros(len(x), dtype=int)
    app = serve.make_app(model, serve.Limits(max_concurrent_scoring=1))
    first, second = Exchange(one_chunk(rows(2))), Exchange(one_chunk(rows(2)))

    async def both() -> None:
        one = asyncio.create_task(app(scope(), first.receive, first.send))
        two = asyncio.create_task(app(scope(), second.receive, second.send))
        await asyncio.sleep(0.3)
        assert (first.received, second.received) == (1, 0)  # its body still in the socket
        release.set()
        await asyncio.gather(one, two)

    asyncio.run(both())
    assert (first.status, second.status) == (200, 200)


def test_parquet_without_a_reader_in_the_image_is_a_clear_415(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve.scoring, "PARQUET_ENGINE", None)
    status, body, mime = serve.Model(str(model_dir)).invocations(b"PAR1", serve.PARQUET)
    assert (status, mime) == (415, "text/plain") and b"pyarrow" in body


def test_limits_come_from_the_environment() -> None:
    assert serve.Limits.from_env({}) == serve.Limits()
    assert serve.Limits().max_body_bytes == 64 * 2**20
    got = serve.Limits.from_env(
        {
            "MLRIG_MAX_BODY_BYTES": "1024",
            "MLRIG_MAX_CONCURRENT_SCORING": "4",
            "MLRIG_BODY_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert got == serve.Limits(1024, 4, 2.5)
    for bad in ({"MLRIG_MAX_BODY_BYTES": "64M"}, {"MLRIG_MAX_CONCURRENT_SCORING": "0"}):
        with pytest.raises(SystemExit, match="mlrig-serve"):
            serve.Limits.from_env(bad)


# -- a real uvicorn server on loopback -------------------------------------------------------------
@pytest.fixture
def running(model_dir: Path) -> Iterator[Callable[..., tuple[str, int, Any]]]:
    """Start the app under uvicorn with a given predictor and limits; stopped afterwards."""
    import uvicorn

    servers: list[tuple[Any, threading.Thread]] = []

    def start(
        predict: Callable[[Any], Any] | None = None, limits: Any = None
    ) -> tuple[str, int, Any]:
        model = serve.Model(str(model_dir))
        if predict is not None:
            model.predict_fn = predict
        config = uvicorn.Config(
            serve.make_app(model, limits or serve.Limits()),
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started, timeout=20, what="the model server starting")
        port = server.servers[0].sockets[0].getsockname()[1]
        return "127.0.0.1", port, model

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def post(host: str, port: int, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/invocations", body, {"Content-Type": JSON})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def ping_seconds(host: str, port: int, path: str) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    return time.perf_counter() - start


def test_ping_and_health_answer_within_100_ms_while_a_big_batch_scores(running: Any) -> None:
    scoring = threading.Event()

    def slow(x: Any) -> Any:  # a batch that takes 3 s, deterministically
        scoring.set()
        time.sleep(3)
        return np.zeros(len(x), dtype=int)

    host, port, _ = running(slow)
    answers: list[tuple[int, Any]] = []
    batch = threading.Thread(target=lambda: answers.append(post(host, port, rows(50_000))))
    batch.start()
    assert scoring.wait(20), "the batch never reached the model"
    latencies = [ping_seconds(host, port, path) for path in ("/ping", "/health") * 10]
    still_scoring = batch.is_alive()
    batch.join(30)
    assert still_scoring, "the pings must have been answered during the batch"
    assert max(latencies) <= 0.100, [f"{s * 1000:.0f} ms" for s in latencies]
    assert answers[0][0] == 200 and len(answers[0][1]["predictions"]) == 50_000


def test_a_flood_is_scored_at_most_n_at_a_time(running: Any) -> None:
    lock, active, peak = threading.Lock(), [0], [0]

    def counting(x: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return np.zeros(len(x), dtype=int)

    host, port, _ = running(counting, serve.Limits(max_concurrent_scoring=2))
    results: list[int] = []
    flood = [
        threading.Thread(target=lambda: results.append(post(host, port, rows(10))[0]))
        for _ in range(8)
    ]
    for t in flood:
        t.start()
    for t in flood:
        t.join(30)
    assert results == [200] * 8
    assert peak[0] == 2


def _raw_exchange(host: str, port: int, request: bytes) -> bytes:
    """Send bytes on a fresh socket and read until the server closes it (or 10 s pass)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_a_real_server_answers_413_before_the_body_is_sent(running: Any) -> None:
    host, port, _ = running(limits=serve.Limits(max_body_bytes=1000))
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    answer = _raw_exchange(host, port, head)  # not one byte of the gigabyte is sent
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error_code"] == "RESOURCE_LIMIT_EXCEEDED"


def test_a_real_server_stops_a_chunked_body_at_the_limit(running: Any) -> None:
    host, port, _ = running(limits=serve.Limits(max_body_bytes=1000))
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    answer = _raw_exchange(host, port, head + chunk * 2)  # 1200 bytes, and no final chunk
    assert b" 413 " in answer.partition(b"\r\n")[0]


# -- a big batch is decoded in slices, so no single C call holds the interpreter lock long -------
JSON_DOCS = [
    b' { "a" : [ [1,2] , [3, 4] ] , "b": {"c": [{"x": 1}, {"y": [1]}]} } ',
    b"[]",
    b"{}",
    b"[{}]",
    b"[[]]",
    b'"str"',
    b'{"a":NaN}',
    b'{"a":1,"a":2}',
    b'\xef\xbb\xbf{"a":1}',
    '{"\u00fc": "\u00e9"}'.encode(),
    '{"a": [[1]]}'.encode("utf-16"),
    b'{"d": {"data": [[1,2],[3,"x"]], "columns": ["a"]}}',
    b'{"r": [{"a": 1}, {"a": 2}]}',
    # and every error json.loads raises
    b'{"a":1,}',
    b"[[1],]",
    b'{"a" 1}',
    b'{"a":1} x',
    b"{1:2}",
    b"",
    b" ",
    b"[1, 2",
    b'{"a": [[1], [2]]',
    b"[[1,2]]]",
    b'{"a":[[1,2]] ,}',
    b"\xff{}",
]


@pytest.mark.parametrize("doc", JSON_DOCS)
def test_sliced_json_decoding_is_json_loads(doc: bytes) -> None:
    def outcome(loads: Callable[[bytes], Any]) -> tuple[str, Any]:
        try:
            return "ok", json.dumps(loads(doc))  # dumps: NaN == NaN
        except ValueError as exc:
            return "error", type(exc)

    assert outcome(serve._loads_sliced) == outcome(json.loads)


def test_sliced_prediction_encoding_is_json_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve.payload, "ROWS_PER_SLICE", 3)
    for predictions in ([], [1], list(range(10)), [{"a": 1.5}] * 7, "x"):
        want = json.dumps({"predictions": predictions}).encode()
        assert serve._dumps_predictions(predictions) == want


def test_collection_pauses_while_any_big_batch_scores_and_resumes_after() -> None:
    import gc

    assert gc.isenabled()
    with serve.GC_PAUSE:
        with serve.GC_PAUSE:  # two batches at once
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with serve.GC_PAUSE:
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()
