"""The trainer's HTTP face (FastAPI on uvicorn): `POST /train`, `GET /train[/{id}]`, `/health`.

It knows nothing of jobs beyond the Backend protocol below, which mlrig's core implements;
every route but /health asks the backend whether the `Authorization` header may pass.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from mlrig.errors import PortInUse

if TYPE_CHECKING:
    from fastapi import FastAPI

RECENT_JOBS = 50
CHALLENGE = 'Bearer realm="mlrig trainer", Basic realm="mlrig trainer"'


class TrainRequest(BaseModel):
    """`POST /train`'s optional body."""

    model_config = ConfigDict(extra="forbid")
    push_image: bool | None = None


class Backend(Protocol):
    """Started (recovered, worker running) before the app serves; stopped by its lifespan."""

    def stop(self) -> None: ...
    def authorized(self, authorization: str | None) -> bool: ...
    def submit(self, push_image: bool | None) -> str: ...
    def job(self, job_id: str) -> dict[str, Any] | None: ...
    def jobs(self, limit: int) -> list[dict[str, Any]]: ...


def create_app(backend: Backend, on_ready: Callable[[], None] = lambda: None) -> FastAPI:
    from fastapi import Depends, FastAPI, Header, HTTPException

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        on_ready()
        try:
            yield
        finally:
            backend.stop()

    def authorized(authorization: str | None = Header(default=None)) -> None:
        if not backend.authorized(authorization):
            raise HTTPException(
                status_code=401,
                detail="missing or bad credentials",
                headers={"WWW-Authenticate": CHALLENGE},
            )

    app = FastAPI(
        title="mlrig trainer",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/train", status_code=202, dependencies=[Depends(authorized)])
    def train(request: TrainRequest | None = None) -> dict[str, str]:
        return {"id": backend.submit(request.push_image if request else None)}

    @app.get("/train", dependencies=[Depends(authorized)])
    def recent() -> dict[str, list[dict[str, Any]]]:
        return {"jobs": backend.jobs(RECENT_JOBS)}

    @app.get("/train/{job_id}", dependencies=[Depends(authorized)])
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
