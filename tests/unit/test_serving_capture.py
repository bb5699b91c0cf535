"""Request capture in the model server: a sampled share of answered predictions written as
SageMaker Data Capture records (checked against the format's pydantic model), an inference id
on every answer, a bounded buffer that drops and counts, write errors counted while
predictions keep answering, files rotated by hour and size, and what is queued written when
the server stops (SIGTERM included)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.shared import capture as contract
from mlrig.core.shared.capture import CaptureRecord
from mlrig.wait import wait_until
from tests.helpers import load_serving_module, serving_model_dir

serve = load_serving_module("mlrig_serve_capture")
cap = serve.capture
JSON = "application/json"
IDENTITY = {
    "MLRIG_ENDPOINT": "churn",
    "MLRIG_MODEL_NAME": "churn-model",
    "MLRIG_MODEL_VERSION": "3",
    "MLRIG_IMAGE_DIGEST": "sha256:" + "ab" * 32,
    "MLRIG_RUN_ID": "0123456789abcdef0123456789abcdef",
}
HOUR = 3600.0
T0 = 1796646896.789  # 2026-12-07T12:34:56.789Z


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serving_model_dir(tmp_path_factory.mktemp("model"), ["x"])


def settings(directory: Path | str, **over: Any) -> Any:
    env = {"MLRIG_CAPTURE_PERCENT": "100", "MLRIG_CAPTURE_DIR": str(directory), **IDENTITY}
    return cap.Settings.from_env(env)._replace(**over)


def rows(n: int) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1.0]] * n}}).encode()


def records(directory: Path) -> list[dict[str, Any]]:
    """Every line of every capture file, validated as the agreed record."""
    out = []
    for path in sorted(directory.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            CaptureRecord.model_validate_json(line)
            out.append(json.loads(line))
    return out


def invoke(app: Any, body: bytes, ctype: str = JSON) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []
    msgs = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return msgs.pop(0)

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    sc = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", ctype.encode())],
    }
    asyncio.run(app(sc, receive, send))
    return int(sent[0]["status"]), dict(sent[0]["headers"]), sent[1]["body"]


def get_stats(app: Any) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    asyncio.run(
        app({"type": "http", "method": "GET", "path": "/capture", "headers": []}, None, send)
    )
    stats = contract.parse_stats(sent[1]["body"].decode())
    assert stats is not None, sent
    return stats.model_dump()


# -- sampling ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("percent", "expected"), [(0, 0), (10, 100), (25.5, 255), (100, 1000)])
def test_the_sampled_share_is_the_percent(tmp_path: Path, percent: float, expected: int) -> None:
    draws = iter(i / 1000 for i in range(1000))  # evenly over [0, 1)
    c = cap.Capture(settings(tmp_path, percent=percent), sample=lambda: next(draws))
    queued = sum(c.offer(f"id-{i}", b"{}", JSON, b"{}", JSON) for i in range(1000))
    assert queued == expected
    assert c.stats()["sampled"] == expected and c.stats()["queued"] == expected


def test_capture_is_off_unless_a_percent_is_set(model_dir: Path, tmp_path: Path) -> None:
    assert cap.Settings.from_env({}).percent == 0
    app = serve.make_app(serve.Model(str(model_dir)))  # no capture given: off
    status, headers, _ = invoke(app, rows(1))
    assert status == 200 and headers[b"x-inference-id"]
    assert get_stats(app)["sampled"] == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"MLRIG_CAPTURE_PERCENT": "ten"}, "not a number"),
        ({"MLRIG_CAPTURE_PERCENT": "101", "MLRIG_CAPTURE_DIR": "/c"}, "not 0-100"),
        ({"MLRIG_CAPTURE_PERCENT": "5"}, "MLRIG_CAPTURE_DIR not"),
        (
            {
                "MLRIG_CAPTURE_PERCENT": "5",
                "MLRIG_CAPTURE_DIR": "/c",
                "MLRIG_CAPTURE_QUEUE_RECORDS": "0",
            },
            "positive",
        ),  # noqa: E501
    ],
)
def test_unusable_settings_stop_the_server_with_one_line(env: dict[str, str], why: str) -> None:
    with pytest.raises(SystemExit, match=why):
        cap.Settings.from_env(env)


# -- the records -------------------------------------------------------------------------------
def test_captured_records_follow_the_format_and_carry_the_answers_id(
    model_dir: Path, tmp_path: Path
) -> None:
    c = cap.Capture(settings(tmp_path)).start()
    app = serve.make_app(serve.Model(str(model_dir)), capture=c)
    answers = [invoke(app, rows(n)) for n in (1, 2, 3)]
    csv = invoke(app, b"x\n1.5\n2.5\n", "text/csv")
    bad = invoke(app, b'{"dataframe_split": {"columns": ["nope"], "data": [[1]]}}')
    assert c.close()
    assert bad[0] == 400 and bad[1][b"x-inference-id"]  # an id on every answer
    got = records(tmp_path)
    assert len(got) == 4  # answered predictions only: the 400 is not a prediction
    ids = [h[b"x-inference-id"].decode() for _, h, _ in [*answers, csv]]
    assert [r["eventMetadata"]["inferenceId"] for r in got] == ids
    assert all(r["eventMetadata"]["eventId"] == r["eventMetadata"]["inferenceId"] for r in got)
    for r, n, (_, _, out) in zip(got, (1, 2, 3), answers, strict=False):
        data = r["captureData"]
        assert data["endpointInput"] == {
            "observedContentType": JSON,
            "mode": "INPUT",
            "data": rows(n).decode(),
            "encoding": "JSON",
        }
        assert json.loads(data["endpointOutput"]["data"]) == json.loads(out)
        assert data["endpointOutput"]["encoding"] == "JSON"
    csv_in = got[3]["captureData"]["endpointInput"]
    assert csv_in["encoding"] == "BASE64" and csv_in["observedContentType"] == "text/csv"
    assert base64.b64decode(csv_in["data"]) == b"x\n1.5\n2.5\n"
    assert got[0]["mlrig"] == {
        "endpoint": "churn",
        "model": "churn-model",
        "version": "3",
        "digest": IDENTITY["MLRIG_IMAGE_DIGEST"],
        "run_id": IDENTITY["MLRIG_RUN_ID"],
    }
    assert get_stats(app) | {"writer": ""} == {
        "percent": 100.0,
        "writer": "",
        "sampled": 4,
        "written": 4,
        "dropped": 0,
        "errors": 0,
        "queued": 0,
        "files": 1,
        "last_error": None,
    }


def test_files_are_named_by_the_records_utc_hour_and_writer(tmp_path: Path) -> None:
    times = iter([T0, T0 + 1, T0 + HOUR])
    c = cap.Capture(settings(tmp_path), clock=lambda: next(times))
    for i in range(3):
        c.offer(f"00000000-0000-4000-8000-00000000000{i}", b"{}", JSON, b"{}", JSON)
    c.start()
    assert c.close()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert files == [
        f"2026/12/07/12/{c.writer_id}-000001.jsonl",
        f"2026/12/07/13/{c.writer_id}-000002.jsonl",
    ]
    first = records(tmp_path)[0]["eventMetadata"]
    assert first["inferenceTime"] == "2026-12-07T12:34:56.789Z"


def test_every_folder_and_file_is_the_owners_only(tmp_path: Path) -> None:
    """Captures hold request bodies: each hour's folders and files are owner-only, whatever
    the process's umask (`doctor`'s file-modes check reads the stack's folder)."""
    old = os.umask(0o022)
    try:
        c = cap.Capture(settings(tmp_path), clock=lambda: T0)
        c.offer("00000000-0000-4000-8000-000000000001", b"{}", JSON, b"{}", JSON)
        c.start()
        assert c.close()
    finally:
        os.umask(old)
    made = [tmp_path / "2026", *(tmp_path / "2026").rglob("*")]
    assert len(made) == 5  # yyyy, mm, dd, hh and one file
    assert {p.stat().st_mode & 0o077 for p in made} == {0}


def test_a_file_past_its_size_is_closed_and_the_next_one_started(tmp_path: Path) -> None:
    c = cap.Capture(settings(tmp_path, file_bytes=2000), clock=lambda: T0)
    body = json.dumps({"inputs": [[0.5] * 40]}).encode()  # one record ~ 700 bytes
    for i in range(10):
        c.offer(f"00000000-0000-4000-8000-{i:012d}", body, JSON, b'{"predictions":[0]}', JSON)
    c.write_batch(c._take())
    c.offer("00000000-0000-4000-8000-000000000010", body, JSON, b'{"predictions":[0]}', JSON)
    c.write_batch(c._take())  # a later batch appends to the open file while it has room
    c.close()
    files = sorted(tmp_path.rglob("*.jsonl"))
    line = len(files[0].read_bytes().splitlines(keepends=True)[0])  # every record's size
    per_file = 2000 // line
    assert per_file >= 2
    expected = [per_file] * (11 // per_file) + ([11 % per_file] if 11 % per_file else [])
    assert [len(p.read_bytes().splitlines()) for p in files] == expected
    assert all(p.stat().st_size <= 2000 for p in files)
    assert len(records(tmp_path)) == 11 and c.stats()["files"] == len(expected)


# -- never slowing or failing a prediction -----------------------------------------------------
def test_a_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    c = cap.Capture(settings(tmp_path, max_records=5))  # no writer thread: nothing drains
    assert sum(c.offer(str(i), b"{}", JSON, b"{}", JSON) for i in range(8)) == 5
    assert (c.stats()["queued"], c.stats()["dropped"]) == (5, 3)
    by_bytes = cap.Capture(settings(tmp_path, max_bytes=100))
    assert by_bytes.offer("a", b"x" * 60, JSON, b"{}", JSON)
    assert not by_bytes.offer("b", b"x" * 60, JSON, b"{}", JSON)  # 124 bytes > 100
    assert not by_bytes.offer("c", b"x" * 200, JSON, b"{}", JSON)  # bigger than the buffer
    assert by_bytes.stats()["dropped"] == 2


def test_write_errors_are_counted_and_predictions_keep_answering(
    model_dir: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # every folder under it fails (ENOTDIR), even for root
    c = cap.Capture(settings(blocker)).start()
    app = serve.make_app(serve.Model(str(model_dir)), capture=c)
    answers = [invoke(app, rows(1)) for _ in range(5)]
    assert c.close()
    assert [a[0] for a in answers] == [200] * 5
    stats = get_stats(app)
    assert (stats["written"], stats["errors"]) == (0, 5)
    assert stats["last_error"].startswith("NotADirectoryError")


def test_the_writer_survives_a_failing_disk_and_writes_again_once_it_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cap.Capture(settings(tmp_path), clock=lambda: T0)
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:10]))  # part of a line, then the disk is full
        raise OSError(28, "No space left on device")

    c.offer("00000000-0000-4000-8000-000000000001", b"{}", JSON, b"{}", JSON)
    monkeypatch.setattr(cap.os, "write", full)
    c.write_batch(c._take())
    monkeypatch.setattr(cap.os, "write", real_write)
    c.offer("00000000-0000-4000-8000-000000000002", b"{}", JSON, b"{}", JSON)
    c.write_batch(c._take())
    c.close()
    stats = c.stats()
    assert (stats["written"], stats["errors"], stats["files"]) == (1, 1, 2)
    assert stats["last_error"] == "OSError: No space left on device"
    first, second = sorted(tmp_path.rglob("*.jsonl"))
    assert len(first.read_bytes()) == 10  # the cut line readers skip
    CaptureRecord.model_validate_json(second.read_text())  # a new file, whole records


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    c = cap.Capture(settings(tmp_path, flush_seconds=3600)).start()  # never wakes on its own
    for i in range(50):
        c.offer(f"00000000-0000-4000-8000-{i:012d}", b"{}", JSON, b"{}", JSON)
    assert c.stats()["written"] == 0
    assert c.close()
    assert len(records(tmp_path)) == 50
    assert not c.offer("late", b"{}", JSON, b"{}", JSON)  # stopped: dropped, counted


# -- the real server process: SIGTERM flushes --------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(model_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`main()` of the image's server in its own process, capturing everything into
    tmp_path/captures with a writer that only writes when asked to stop."""
    port = _free_port()
    script = textwrap.dedent(
        """
        import sys, uvicorn
        sys.path.insert(0, sys.argv[1])
        real = uvicorn.run
        def run(*a, **k):  # httptools is the image's; h11 is what this venv has
            k["http"] = "h11"
            return real(*a, **k)
        uvicorn.run = run
        from mlrig_serve.app import main
        main()
        """
    )
    serving = Path(serve.__file__).parent.parent
    env = {
        **os.environ,
        **IDENTITY,
        "MLRIG_MODEL_DIR": str(model_dir),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "MLRIG_CAPTURE_PERCENT": "100",
        "MLRIG_CAPTURE_DIR": str(tmp_path / "captures"),
        "MLRIG_CAPTURE_FLUSH_SECONDS": "3600",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script, str(serving)], env=env, stderr=subprocess.PIPE
    )
    try:
        wait_until(
            lambda: _get(port, "/ping")[0] == 200,
            timeout=60,
            what="the server",
            retry_on=(OSError,),
            give_up=lambda: "exited" if proc.poll() is not None else None,
        )
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_sigterm_writes_the_queued_records_before_the_server_exits(
    server: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    proc, port = server
    ids = []
    for n in range(1, 21):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/invocations", rows(n), {"Content-Type": JSON})
        resp = conn.getresponse()
        assert resp.status == 200
        ids.append(resp.getheader("X-Inference-Id"))
        resp.read()
        conn.close()
    stats = json.loads(_get(port, "/capture")[1])
    assert (stats["queued"], stats["written"]) == (20, 0)  # all still in memory
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    got = records(tmp_path / "captures")
    assert [r["eventMetadata"]["inferenceId"] for r in got] == ids
