"""Capture's writer under Lambda as an internal extension, in-process: it writes only after
the runtime reports the invocation's answer, stops short of the invocation's deadline, splits
a batch into bounded PUTs and counts a refused PUT without raising. The wire protocol against
a Runtime/Extensions API stand-in and the real image is tests/integration/test_serving_lambda.py.
"""

from __future__ import annotations

import importlib
import itertools
import json
import sys
import threading
import time
from typing import Any

import pytest

from tests.helpers import load_serving_module

serve = load_serving_module("mlrig_serve_extension")
_writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in docker/
extension = importlib.import_module("mlrig_serve_extension.extension")
s3put = importlib.import_module("mlrig_serve_extension.s3put")
sys.dont_write_bytecode = _writes
cap = serve.capture
T0 = 1796646600.0  # 2026-12-07T12:30:00Z
IDENTITY = {
    "MLRIG_ENDPOINT": "churn",
    "MLRIG_MODEL_NAME": "churn",
    "MLRIG_MODEL_VERSION": "7",
    "MLRIG_IMAGE_DIGEST": "sha256:" + "7" * 64,
    "MLRIG_RUN_ID": "0123456789abcdef0123456789abcdef",
}


@pytest.fixture
def puts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, float]]:
    """put_object replaced by a recorder: (key, records in the body, timeout)."""
    seen: list[tuple[str, int, float]] = []

    def put(bucket: str, key: str, body: bytes, *, timeout: float = 10.0, **_: Any) -> None:
        if "refuse" in key:
            raise s3put.PutError(f"S3 PUT {bucket}/{key}: HTTP 403 AccessDenied")
        seen.append((key, body.count(b"\n"), timeout))

    monkeypatch.setattr(s3put, "put_object", put)
    return seen


def capture(prefix: str = "captures/churn", **over: Any) -> Any:
    env = {"MLRIG_CAPTURE_PERCENT": "100", "MLRIG_CAPTURE_DIR": f"s3://b/{prefix}", **IDENTITY}
    settings = cap.Settings.from_env(env)._replace(**over)
    ticks = itertools.count(T0, 0.5)  # each look at the clock half a second on (one hour)
    return cap.Capture(settings, clock=lambda: next(ticks))


def offer(c: Any, n: int, size: int = 10) -> None:
    for _ in range(n):
        assert c.offer(cap.new_inference_id(), b"x" * size, "application/json", b"[0]", "j")


def event(request_id: str, seconds_left: float) -> dict[str, Any]:
    return {
        "eventType": "INVOKE",
        "requestId": request_id,
        "deadlineMs": int((time.time() + seconds_left) * 1000),
    }


def test_the_write_waits_for_the_runtimes_answer(puts: list) -> None:
    c = capture(flush_seconds=0.001)
    offer(c, 3)
    ext = extension.CaptureExtension(c, "127.0.0.1:9")
    order: list[str] = []
    done = threading.Event()

    def after() -> None:
        order.append(f"wrote {ext.after_invocation(event('r1', 30))}")
        done.set()

    threading.Thread(target=after, daemon=True).start()
    assert not done.wait(0.2) and puts == []  # no answer posted yet: nothing written
    order.append("answered")
    ext.answered("r1")
    assert done.wait(10)
    assert order == ["answered", "wrote 3"]
    assert [n for _key, n, _t in puts] == [3]


def test_an_answer_posted_before_the_event_arrives_is_remembered(puts: list) -> None:
    c = capture(flush_seconds=0.001)
    offer(c, 1)
    ext = extension.CaptureExtension(c, "127.0.0.1:9")
    ext.answered("r1")
    assert ext.after_invocation(event("r1", 30)) == 1


def test_nothing_is_written_past_the_invocations_deadline(puts: list) -> None:
    c = capture(flush_seconds=0.001)
    offer(c, 2)
    ext = extension.CaptureExtension(c, "127.0.0.1:9")
    ext.answered("late")
    # less than the margin left: the records stay queued for the next invocation
    assert ext.after_invocation(event("late", extension.MARGIN_S / 2)) == 0
    assert puts == [] and c.stats()["queued"] == 2
    ext.answered("r2")
    assert ext.after_invocation(event("r2", 5)) == 2
    ((_key, n, timeout),) = puts
    assert n == 2 and 0 < timeout <= 5 - extension.MARGIN_S


def test_a_batch_is_split_into_bounded_puts(puts: list) -> None:
    c = capture(max_records=2000)
    offer(c, cap.PUT_RECORDS * 2 + 1)
    big = capture(max_bytes=64 * 2**20)
    offer(big, 3, size=cap.PUT_BYTES // 2)
    for each in (c, big):
        each.write_batch(each._take())
    counts = [n for _key, n, _t in puts]
    assert counts == [cap.PUT_RECORDS, cap.PUT_RECORDS, 1, 1, 1, 1]
    assert len({key for key, _n, _t in puts}) == len(puts)  # each PUT its own object


def test_a_refused_put_counts_errors_and_never_raises(puts: list) -> None:
    c = capture(prefix="captures/refuse", flush_seconds=0.001)
    offer(c, 2)
    assert c.flush_due(timeout=1.0) == 2
    stats = c.stats()
    assert (stats["written"], stats["errors"], stats["queued"]) == (0, 2, 0)
    assert "403 AccessDenied" in stats["last_error"]


def test_registration_asks_for_invoke_events_only_and_keeps_the_identifier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str, dict[str, str], Any]] = []

    def call(address: str, method: str, path: str, headers: dict, body: Any = None) -> Any:
        calls.append((method, path, headers, json.loads(body) if body else None))
        return {"lambda-extension-identifier": "ext-1"}, b"{}"

    monkeypatch.setattr(extension, "_call", call)
    ext = extension.CaptureExtension(capture(), "127.0.0.1:9").register()
    assert ext.identifier == "ext-1"
    ((method, path, headers, body),) = calls
    assert (method, path, body) == ("POST", "/register", {"events": ["INVOKE"]})
    assert headers["Lambda-Extension-Name"] == extension.NAME

    monkeypatch.setattr(extension, "_call", lambda *a, **k: ({}, b"{}"))
    with pytest.raises(extension.ExtensionError, match="no Lambda-Extension-Identifier"):
        extension.CaptureExtension(capture(), "127.0.0.1:9").register()
