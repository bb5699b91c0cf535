"""One audit line per change of an endpoint, local or on AWS (mlrig.core.access.audit: the
stack's trail that `mlrig access log` reads), written after the change took effect."""

from __future__ import annotations

from typing import Protocol

from mlrig.core.access import audit
from mlrig.errors import ServiceError


class Served(Protocol):
    """What a line names of a version: the local stack's Backend, an AWS endpoint's Serving."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def weight(self) -> int: ...


def log(
    stack: str,
    action: str,
    name: str,
    backend: Served | None = None,
    *,
    key_id: str | None = None,
) -> None:
    """Record `action` on endpoint `name` (the version it concerns, or the key's ID). The
    change is made when this runs: a log that cannot be written says so, naming the change."""
    obj = {"endpoint": name, "key_id": key_id or ""}
    if backend is not None:
        obj |= {
            "model": backend.model,
            "version": backend.version,
            "digest": backend.digest,
            "traffic": str(backend.weight),
        }
    try:
        audit.record(stack, action, f"/endpoints/{name}", obj)
    except OSError as exc:
        raise ServiceError(
            f"{action} of endpoint {name!r} is done, but its audit line could not be written "
            f"to {audit.path(stack)} ({exc.strerror or type(exc).__name__})",
            hint="free space or fix that folder's permissions; the endpoint serves as changed",
        ) from None
