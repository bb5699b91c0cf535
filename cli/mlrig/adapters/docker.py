"""docker-py behind one door: lazy import, API version negotiation, stream error checks.

docker-py does not raise when a build or push stream reports an error; `consume_stream`
does, so no caller can report success for a failed build or push.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from mlrig.errors import DependencyMissing, RemoteError, ServiceError

ENGINE_HINT = "start it with `scripts/setup.sh` (as root) or `mlrig setup engine`"


@cache
def client() -> Any:
    """A DockerClient that negotiates the API version with whatever engine answers."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise DependencyMissing("docker-py is not installed", hint="pip install docker") from exc
    try:
        cli = docker.from_env(version="auto", timeout=300)
        cli.ping()
    except Exception as exc:  # docker.errors.DockerException and requests errors alike
        raise ServiceError("no Docker engine answers", hint=ENGINE_HINT) from exc
    return cli


def engine_version() -> str | None:
    try:
        return str(client().version().get("Version"))
    except ServiceError:
        return None


def image_exists(ref: str) -> bool:
    import docker.errors

    try:
        client().images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def consume_stream(
    chunks: Iterable[dict[str, Any]],
    action: str,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Read a decoded build/push/pull stream to the end, raising on any error chunk."""
    seen = []
    for chunk in chunks:
        seen.append(chunk)
        if on_chunk:
            on_chunk(chunk)
        err = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        if err:
            raise RemoteError(f"{action} failed: {str(err).strip().splitlines()[-1]}")
    return seen


def pull(ref: str) -> bool:
    """Try to pull ref; False when the registry cannot be reached (offline machines)."""
    try:
        consume_stream(client().api.pull(ref, stream=True, decode=True), f"pulling {ref}")
    except Exception:  # noqa: BLE001 - any failure means "not available here"
        return False
    return True
