"""The tracking server's audit trail: one JSON line per write request and per auth failure.

Logger `mlrig.audit`, written to the server's stderr (the local stack's server log, the AWS
task's log stream) as the bare JSON object, one per line:
  {"event": "mlrig.audit", "ts": "2026-01-02T03:04:05.678Z", "user": "repo-demo",
   "auth": "oidc", "method": "POST", "path": "/api/2.0/mlflow/runs/create",
   "object": {"experiment_id": "1"}, "status": 200, "source": "127.0.0.1"}
plus "reason" on an auth failure. `user` is the identity the request acted as (for a failed
Basic login, the name it claimed; none for a failed bearer token); `auth` is basic, oidc or
none; `status` is the HTTP status answered (null when MLflow's ASGI artifact route serves the
request after the line is written: the grant check and the transfer follow it).
No credential, token or request body is ever written; `object` holds only the names a
request gives of what it touches. `mlrig.core.access._log.read_entries` parses these lines.

Server-side and neutral: imports nothing from mlrig (the server image copies it alone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "mlrig.audit"
EVENT = "mlrig.audit"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Search endpoints read by POST (their filters do not fit a query string): not writes.
# MLflow's GraphQL endpoint only reads too: its schema's "mutations" are searches
# (tests/unit/test_tracking_oidc.py pins that, so an MLflow that adds a writing one is seen).
READ_BY_POST_SUFFIXES = ("/search", "/search-datasets", "/get-many", "/graphql")
MAX_FIELD_CHARS = 256
# Request fields that name what a write touches, and the key each is recorded under.
_FIELDS = {
    "experiment_id": "experiment_id",
    "run_id": "run_id",
    "run_uuid": "run_id",
    "version": "version",
    "alias": "alias",
    "username": "user",
    "key": "key",
    "resource_type": "resource_type",
    "resource_id": "resource_id",
    "resource_pattern": "resource_pattern",
    "permission": "permission",
    "role_name": "role",
    "operationName": "graphql_operation",
}
_ARTIFACT_PREFIXES = (
    "/api/2.0/mlflow-artifacts/artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/",
)


def is_write(method: str, path: str) -> bool:
    return method.upper() in WRITE_METHODS and not path.endswith(READ_BY_POST_SUFFIXES)


def _clip(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + "..."


def object_of(path: str, *sources: Any) -> dict[str, str]:
    """What the request names: ids and names from its JSON body and query, in that order."""
    found: dict[str, str] = {}
    name_key = (
        "model"
        if "registered-models" in path or "model-versions" in path
        else "experiment_name"
        if "/experiments/" in path
        else "name"
    )
    for source in sources:
        if not isinstance(source, dict):
            continue
        for field, value in source.items():
            key = {"name": name_key, "experiment_name": "experiment_name"}.get(field)
            key = key or _FIELDS.get(field)
            clipped = _clip(value) if key else None
            if key and clipped is not None and key not in found:
                found[key] = clipped
    for prefix in _ARTIFACT_PREFIXES:
        if path.startswith(prefix):
            found.setdefault("artifact", _clip(path[len(prefix) :]) or "")
    return found


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_mlrig_audit", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._mlrig_audit = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # MLflow's and uvicorn's handlers would repeat it, prefixed
    return logger


def line(
    *,
    user: str | None,
    auth: str,
    method: str,
    path: str,
    obj: dict[str, str],
    status: int | None,
    source: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> str:
    entry: dict[str, Any] = {
        "event": EVENT,
        "ts": (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user": _clip(user) if user else None,
        "auth": auth,
        "method": method,
        "path": _clip(path),
        "object": obj,
        "status": status,
        "source": source,
    }
    if reason:
        entry["reason"] = reason
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=True)


def emit(**fields: Any) -> None:
    """Write one audit line; never lets a logging problem fail the request."""
    with contextlib.suppress(Exception):  # the request's answer matters more than its record
        _logger().info(line(**fields))
