"""Reading a CloudWatch log group back (`mlrig deploy logs` and `mlrig access log` on AWS).

Every event read is input: `LogLine` is the one boundary it passes before anything prints
it. A timestamp outside any real date or a message that is not text is dropped; control
characters (a terminal escape a model printed) are removed; credentials a line may carry (an
`Authorization` header, an endpoint key `ID:SECRET`, Basic/Bearer values, AWS key IDs,
`password=`/`token=`/`secret=` values) are replaced by `[redacted]`; a line is cut at
MAX_LINE characters.

`last_events` finds the newest `tail` events of a window without reading the whole window:
FilterLogEvents reads forward in time only, so it asks for the last minute first, then each
time a window four times longer just before it, until `tail` events are found or the
window's start is reached, and keeps at most `tail` events in memory.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_LINE = 8192
FIRST_WINDOW_MS = 60_000
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")  # ANSI CSI and two-byte escapes
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REDACTIONS = [
    # a header by name, in any rendering (HTTP, a dict's repr, JSON): its whole value
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|x-api-key|cookie|set-cookie)"
            r"([\"']?\s*[:=]\s*[\"']?)([^\"'\r\n]*)"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"(?i)\b(basic|bearer)(\s+)[A-Za-z0-9+/=._~-]{6,}"), r"\1\2[redacted]"),
    # an endpoint key as deploy shows it once: kXXXXXXXX:SECRET (the ID is no secret)
    (re.compile(r"\b(k[0-9a-f]{8}):[A-Za-z0-9_-]{16,}"), r"\1:[redacted]"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[redacted]"),
    (
        re.compile(
            r"(?i)\b(aws_secret_access_key|aws_session_token|secret_access_key|session_token"
            r"|password|passwd|secret|token)([\"']?\s*[:=]\s*[\"']?)([^\s\"',;}&]+)"
        ),
        r"\1\2[redacted]",
    ),
]


def clean(line: str) -> str:
    """One line as it may be printed: no control characters, no credentials, bounded."""
    text = _CONTROL.sub("", _ESCAPES.sub("", line))
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + " [cut]"


class LogLine(BaseModel):
    """One CloudWatch event as mlrig uses it; its message cleaned line by line."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    timestamp: int = Field(ge=0, le=_MAX_MS)  # ms since the epoch, as the writer stamped it
    message: str
    logStreamName: str = Field(default="", max_length=512)  # noqa: N815 - AWS's field name
    eventId: str = Field(default="", max_length=128)  # noqa: N815

    @field_validator("message")
    @classmethod
    def _clean(cls, message: str) -> str:
        return "\n".join(clean(line) for line in message.splitlines())

    @field_validator("logStreamName")
    @classmethod
    def _clean_stream(cls, name: str) -> str:
        return clean(name)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    def lines(self) -> list[str]:
        """The message's non-blank lines (a traceback is one event of many lines)."""
        return [line for line in self.message.splitlines() if line.strip()]


def parse(raw: Any) -> LogLine | None:
    """The event, or None when it is not one (dropped: nothing else reads it)."""
    try:
        return LogLine.model_validate(raw)
    except ValidationError:
        return None


def _key(event: LogLine) -> tuple[int, str]:
    return (event.timestamp, event.eventId)


def last_events(
    fetch: Callable[[int, int], Iterable[Any]],
    since: datetime,
    until: datetime,
    tail: int,
    first_window_ms: int = FIRST_WINDOW_MS,
) -> list[LogLine]:
    """The newest `tail` events with since <= time <= until, oldest first. `fetch(start_ms,
    end_ms)` yields the raw events of that closed interval (in any order)."""
    since_ms, end = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    found: list[LogLine] = []
    width = first_window_ms
    while end >= since_ms and len(found) < tail:
        start = max(since_ms, end - width + 1)
        valid = (e for raw in fetch(start, end) if (e := parse(raw)) is not None)
        found = sorted(heapq.nlargest(tail - len(found), valid, key=_key), key=_key) + found
        end, width = start - 1, width * 4
    return found


def group_events(
    group: str,
    since: datetime,
    until: datetime,
    tail: int,
    *,
    region: str,
    pattern: str = "",
) -> list[LogLine] | None:
    """`last_events` of a CloudWatch log group; None when the group does not exist."""
    from mlrig.adapters import aws as aws_adapter

    def fetch(start_ms: int, end_ms: int) -> Iterable[Any]:
        return aws_adapter.log_events(
            group, start_ms=start_ms, end_ms=end_ms, region=region, pattern=pattern
        )

    try:
        return last_events(fetch, since, until, tail)
    except aws_adapter.LogGroupNotFound:
        return None
