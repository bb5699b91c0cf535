"""Reading the tracking server's audit lines back (`mlrig access log`).

The server writes one JSON object per line (mlrig/tracking/audit.py) into a log that also
holds MLflow's and uvicorn's own lines; `read_entries` keeps only the audit lines, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import BaseModel, Field, ValidationError

from mlrig.tracking import audit as tracking_audit


class AuditEntry(BaseModel):
    """One write request or auth failure, as the server recorded it."""

    ts: datetime
    user: str | None = None
    auth: str
    method: str
    path: str
    object: dict[str, str] = Field(default_factory=dict)
    status: int | None = None
    source: str = ""
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.status is not None and self.status >= 400


def parse_line(line: str) -> AuditEntry | None:
    """The entry on one log line; None for any other line (or a damaged audit line)."""
    text = line.strip()
    if not text.startswith("{") or tracking_audit.EVENT not in text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("event") != tracking_audit.EVENT:
        return None
    try:
        return AuditEntry.model_validate(doc)
    except ValidationError:
        return None


def read_entries(lines: Iterable[str], since: datetime | None = None) -> list[AuditEntry]:
    """Audit entries among `lines`, those at or after `since` when given (naive = UTC)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    entries = []
    for line in lines:
        entry = parse_line(line)
        if entry is not None and (since is None or entry.ts >= since):
            entries.append(entry)
    return entries
