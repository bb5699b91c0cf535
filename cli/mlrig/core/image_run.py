"""Run a serving image locally until it is healthy, and smoke-check it with the model's own
input example (`mlrig image run [--smoke]`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import http
from mlrig.core.image_last_built import last_built
from mlrig.errors import PortInUse, ServiceError, UsageError
from mlrig.wait import Abandoned, WaitTimeout, wait_until

EXAMPLE_FILE = "/opt/model/serving_input_example.json"


@dataclass(frozen=True)
class Running:
    container: str
    url: str
    seconds_to_healthy: float
    smoke_predictions: list[Any] | None = None


def _example(container: str) -> bytes:
    example = docker_adapter.read_container_file(container, EXAMPLE_FILE)
    if example is None:
        raise UsageError(
            "the model in this image has no input example, so --smoke cannot check it",
            hint="log the model with input_example=...",
        )
    return example


def smoke_check(url: str, example: bytes) -> list[Any]:
    """POST the model's own input example; the answer must be one prediction per row."""
    resp = http.post(f"{url}/invocations", example, content_type="application/json", timeout=30)
    if resp.status != 200:
        raise ServiceError(
            f"the model answered {resp.status} to its own input example: {resp.text[:200]}"
        )
    preds = resp.json().get("predictions")
    doc = json.loads(example)
    inner = next(
        (
            doc[k]
            for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
            if k in doc
        ),
        None,
    )
    rows = inner.get("data") if isinstance(inner, dict) and "data" in inner else inner
    if not isinstance(preds, list) or (isinstance(rows, list) and len(preds) != len(rows)):
        raise ServiceError(f"unexpected answer to the input example: {resp.text[:200]}")
    return preds


def _wait_healthy(ref: str, name: str, container: str, url: str, timeout: float) -> None:
    def exited() -> str | None:
        return "exited" if docker_adapter.container_status(container) == "exited" else None

    try:
        wait_until(
            lambda: http.status(f"{url}/ping", timeout=1) == 200,
            timeout=timeout,
            what=f"{ref} to answer /ping",
            interval=0.05,
            retry_on=(OSError,),
            give_up=exited,
        )
    except (WaitTimeout, Abandoned):
        logs = docker_adapter.container_logs(container, tail=3).strip()
        last = logs.splitlines()[-1] if logs else "no output"
        raise ServiceError(
            f"{ref} did not become healthy: {last}",
            hint=f"see `docker logs {name}` before it is removed",
        ) from None


def run(
    image: str | None = None,
    *,
    port: int = 8080,
    smoke: bool = False,
    keep: bool = False,
    timeout: float = 120.0,
) -> Running:
    """Start the image on host networking (never pulls) and wait until it is healthy."""
    from mlrig.core.local_stack import port_is_free

    ref = image or last_built()
    docker_adapter.client()  # raises "no Docker engine answers" first
    if not docker_adapter.image_exists(ref):
        raise UsageError(
            f"image {ref} does not exist on this engine",
            hint="build it with `mlrig image build` (run never pulls)",
        )
    if not 1024 <= port <= 65535:
        raise UsageError(f"port {port} is out of range", hint="pick 1024-65535")
    if not port_is_free(port):
        raise PortInUse(f"port {port} is already in use", hint="pass --port with a free one")
    name = f"mlrig-serve-{port}"
    start = time.monotonic()
    container = docker_adapter.run_container(ref, name=name, environment={"PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(ref, name, container, url, timeout - (time.monotonic() - start))
        healthy = time.monotonic() - start
        preds = smoke_check(url, _example(container)) if smoke else None
    except BaseException:
        docker_adapter.remove_container(container)
        raise
    if smoke and not keep:
        docker_adapter.remove_container(container)
    return Running(name, url, healthy, preds)
