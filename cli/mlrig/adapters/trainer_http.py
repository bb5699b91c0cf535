"""The trainer's HTTP face (FastAPI on uvicorn): `POST /train`, `GET /train[/{id}]`, `/health`.

It knows nothing of jobs beyond the Backend protocol below, which mlrig's core implements.
A guard in front of the routes looks at the request's headers before anyone reads its body:
every path but /health must carry an `Authorization` header the backend accepts (401
otherwise, the body unread), and no body may exceed MAX_BODY (413: by its Content-Length,
or while a chunked one streams in). Both refusals close the connection, so the rest of a
body is never read.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from mlrig.errors import Conflict, PortInUse

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

RECENT_JOBS = 50
CHALLENGE = 'Bearer realm="mlrig trainer", Basic realm="mlrig trainer"'
MAX_BODY = 16 * 1024  # a /train body is a few dozen bytes
OPEN_PATHS = frozenset({"/health"})


# `mlrig retrain --remote`'s task size when the request names none (1 vCPU, 4096 MiB)
DEFAULT_CPU, DEFAULT_MEMORY = 1024, 4096


class TrainRequest(BaseModel):
    """`POST /train`'s optional body: `push_image` is JSON true, false or null; `remote`
    (true: `mlrig retrain --remote`) with `cpu` (vCPU), `memory` (MiB) and `spot`, the
    size checked against Fargate's table; nothing else."""

    model_config = ConfigDict(extra="forbid")
    push_image: StrictBool | None = None
    remote: StrictBool = False
    cpu: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=16)
    memory: StrictInt | None = Field(default=None, gt=0)
    spot: StrictBool = False

    @model_validator(mode="after")
    def _sized(self) -> TrainRequest:
        from mlrig.tracking.container import parse_size

        if not self.remote:
            if self.cpu is not None or self.memory is not None or self.spot:
                raise ValueError('cpu, memory and spot size a remote task: add "remote": true')
            return self
        units = DEFAULT_CPU if self.cpu is None else round(self.cpu * 1024)
        if self.cpu is not None and abs(units - self.cpu * 1024) > 1e-6:
            raise ValueError(f"cpu {self.cpu} is no number of vCPU Fargate offers")
        parse_size(f"{units}:{self.memory or DEFAULT_MEMORY}")  # names the sizes that exist
        return self

    def compute(self) -> dict[str, Any] | None:
        """The job's task options (None: in the trainer's own process)."""
        if not self.remote:
            return None
        cpu = None if self.cpu is None else round(self.cpu * 1024)
        return {"cpu": cpu, "memory_mib": self.memory, "spot": self.spot}


class Backend(Protocol):
    """Started (recovered, worker running) before the app serves; stopped by its lifespan."""

    def stop(self) -> None: ...
    def authorized(self, authorization: str | None) -> bool: ...
    def submit(  # Conflict: no more now (429)
        self, push_image: bool | None, compute: dict[str, Any] | None = None
    ) -> str: ...
    def job(self, job_id: str) -> dict[str, Any] | None: ...
    def jobs(self, limit: int) -> list[dict[str, Any]]: ...


class Guard:
    """ASGI middleware: credentials from the headers first, then the body, capped, read
    whole and handed to the app; what is refused is answered without reading the body."""

    def __init__(
        self, app: ASGIApp, *, allows: Callable[[str | None], bool], max_body: int = MAX_BODY
    ) -> None:
        self.app = app
        self.allows = allows
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.datastructures import Headers

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"] not in OPEN_PATHS and not self.allows(headers.get("authorization")):
            await _refuse(send, 401, "missing or bad credentials", {"WWW-Authenticate": CHALLENGE})
            return
        length = headers.get("content-length")
        if length is not None and (
            not (length.isascii() and length.isdigit()) or int(length) > self.max_body
        ):
            await _refuse(send, 413, f"a request body here is at most {self.max_body} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:  # chunked, or longer than it said
                await _refuse(send, 413, f"a request body here is at most {self.max_body} bytes")
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message, then whatever the server says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """A one-line JSON error that also closes the connection (the body stays unread)."""
    import json

    content = json.dumps({"detail": detail}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content, "more_body": False})


def create_app(backend: Backend, on_ready: Callable[[], None] = lambda: None) -> FastAPI:
    from fastapi import FastAPI, HTTPException

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        on_ready()
        try:
            yield
        finally:
            backend.stop()

    app = FastAPI(
        title="mlrig trainer",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(Guard, allows=backend.authorized)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/train", status_code=202)
    def train(request: TrainRequest | None = None) -> dict[str, str]:
        try:
            if request is None:
                return {"id": backend.submit(None)}
            return {"id": backend.submit(request.push_image, request.compute())}
        except Conflict as exc:
            raise HTTPException(status_code=429, detail=exc.one_line()) from None

    @app.get("/train")
    def recent() -> dict[str, list[dict[str, Any]]]:
        return {"jobs": backend.jobs(RECENT_JOBS)}

    @app.get("/train/{job_id}")
    def one(job_id: str) -> dict[str, Any]:
        job = backend.job(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job

    return app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: any free one), or PortInUse before anything started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use", hint="pass another --port"
            ) from exc
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    return sock


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Serve until SIGINT/SIGTERM; the app's lifespan stops the backend on the way out."""
    import uvicorn

    config = uvicorn.Config(app, log_level="info", access_log=True, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
