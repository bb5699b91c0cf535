"""The HTTP side: MLflow's scoring protocol (/ping, /health, /version, /invocations) on a bare
ASGI app, bodies read under the limits and scored on worker threads off the event loop; `main`
loads the model, fits the limits to the container's memory and runs uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import payload
from .capture import INFERENCE_ID_HEADER, Capture, Settings, new_inference_id
from .limits import MAX_JSON_DEPTH, BadRequest, Limits, _too_large, memory_limit, resident_bytes
from .scoring import Model

MODEL_DIR = os.environ.get("MLRIG_MODEL_DIR", "/opt/model")


# -- ASGI -------------------------------------------------------------------------------------
class Disconnected(Exception):
    """The client left before its body arrived: there is no one to answer."""


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses these before the app sees them
    return None


async def _read_body(receive: Any, limits: Limits) -> bytes:
    """The body, chunk by chunk, refused with 413 the moment it passes `limit` (chunked
    uploads declare no length, so this is the only place they can be stopped)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise Disconnected
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


def _error_body(exc: BadRequest) -> bytes:
    return json.dumps({"error_code": exc.code, "message": str(exc)}).encode()


def make_app(model: Model, limits: Limits | None = None, capture: Capture | None = None) -> Any:
    limits = limits or Limits.from_env()
    capture = capture or Capture(Settings())  # off
    model.max_columns = limits.max_columns
    model.request_memory = limits.max_body_bytes * model.expansion
    version = model.mlflow_version.encode()
    # Parsing and predicting run on these threads, never on the event loop, so /ping and
    # /health answer while a big batch scores. The semaphore admits that many requests to
    # read and score at once; the rest wait with their bodies still in the socket, so a flood
    # queues instead of multiplying memory.
    executor = ThreadPoolExecutor(
        max_workers=limits.max_concurrent_scoring, thread_name_prefix="mlrig-score"
    )
    slots = asyncio.Semaphore(limits.max_concurrent_scoring)

    async def invocations(
        scope: dict[str, Any], receive: Any, inference_id: str
    ) -> tuple[int, bytes, str]:
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > limits.max_body_bytes:
            raise _too_large(limits)  # answered before a byte is read
        async with slots:
            try:
                body = await asyncio.wait_for(
                    _read_body(receive, limits), limits.body_timeout_seconds
                )
            except TimeoutError:
                raise BadRequest(
                    f"The request body did not arrive within {limits.body_timeout_seconds:g} s.",
                    status=408,
                    code="DEADLINE_EXCEEDED",
                ) from None
            ctype_in = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(executor, score, body, ctype_in)
            if answer[0] == 200:  # sampled into the capture buffer, never waits on a write
                capture.offer(inference_id, body, ctype_in, answer[1], answer[2])
            return answer

    def score(body: bytes, ctype_in: str) -> tuple[int, bytes, str]:
        big = len(body) >= payload.SLICED_JSON_BYTES
        with payload.GC_PAUSE if big else contextlib.nullcontext():
            return model.invocations(body, ctype_in)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        extra: list[tuple[bytes, bytes]] = []
        if path in ("/ping", "/health") and method in ("GET", "HEAD"):
            status, body, ctype = 200, b"\n", "application/json"
        elif path == "/version" and method == "GET":
            status, body, ctype = 200, version, "application/json"
        elif path == "/capture" and method == "GET":  # the capture counters, for status
            status, body, ctype = 200, json.dumps(capture.stats()).encode(), "application/json"
        elif path == "/invocations" and method == "POST":
            inference_id = new_inference_id()  # on every answer, captured or not
            extra.append((INFERENCE_ID_HEADER, inference_id.encode()))
            try:
                status, body, ctype = await invocations(scope, receive, inference_id)
            except Disconnected:
                return
            except BadRequest as exc:
                status, ctype, body = exc.status, "application/json", _error_body(exc)
                if exc.status in (408, 413):  # the body was not read to its end
                    extra.append((b"connection", b"close"))
            except RecursionError:  # a parser past the interpreter's depth: the input's fault
                deep = BadRequest(f"The input is nested deeper than {MAX_JSON_DEPTH} levels.")
                status, ctype, body = 400, "application/json", _error_body(deep)
            except Exception as exc:  # the server must answer, never die on one request
                traceback.print_exc()
                status, ctype = 500, "application/json"
                body = json.dumps({"error_code": "INTERNAL_ERROR", "message": repr(exc)}).encode()
        elif path in ("/ping", "/health", "/version", "/invocations", "/capture"):
            status, body, ctype = 405, b'{"detail":"Method Not Allowed"}', "application/json"
        else:
            status, body, ctype = 404, b'{"detail":"Not Found"}', "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    import uvicorn

    configured = Limits.from_env()
    model = Model(MODEL_DIR, configured.max_columns)
    memory, in_use = memory_limit(), resident_bytes()
    limits = configured.fit_memory(memory, in_use, model.expansion)
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a container's server
    print(
        f"mlrig-serve: model loaded, listening on {host}:{port}; {limits}",
        file=sys.stderr,
        flush=True,
    )
    if limits.memory_bound:
        print(
            f"mlrig-serve: body cap {limits.max_body_bytes} bytes (MLRIG_MAX_BODY_BYTES "
            f"{configured.max_body_bytes}): memory limit {memory}, {in_use} in use after "
            f"loading the model, {model.expansion}x a body while it is scored, "
            f"{limits.max_concurrent_scoring} at once",
            file=sys.stderr,
            flush=True,
        )
    capture = Capture(Settings.from_env()).start()
    if capture.enabled:
        print(
            f"mlrig-serve: capturing {capture.settings.percent:g}% of predictions to "
            f"{capture.settings.directory} (writer {capture.writer_id})",
            file=sys.stderr,
            flush=True,
        )
    # uvicorn shuts down on SIGTERM, then raises it again: this handler turns it into an
    # exit through the finally below, so what capture has queued is written first.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(
            make_app(model, limits, capture),
            host=host,
            port=port,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level=os.environ.get("LOG_LEVEL", "warning"),
            timeout_keep_alive=30,
        )
    finally:
        if not capture.close():
            print("mlrig-serve: capture did not finish writing in time", file=sys.stderr)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)
