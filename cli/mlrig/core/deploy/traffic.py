"""What an endpoint's requests did, read from the JSON lines nginx writes per request
(`_render.LOG_FORMAT`, one file per endpoint, rotated by size by `access_logs` and read
across its rotated files): each line validated here, the one boundary for a file another
process writes; a retried request split into its attempts, one per backend it tried; and
the numbers a canary is judged by (`CanaryLimits`): requests, 5xx share and p99 per
backend."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.core.shared import rotation
from mlrig.core.stack.local import access_logs
from mlrig.core.stack.local.state import Layout

TAIL_BYTES = 32 << 20  # how far back `since` reads look (a few hours at 50 req/s)


def logs_dir(layout: Layout) -> Path:
    return access_logs.folder(layout)


def log_file(layout: Layout, name: str) -> Path:
    return logs_dir(layout) / f"{name}.log"


class CanaryLimits(BaseModel):
    """When a canary fails. Judged once it answered `min_requests` (fewer say nothing):
    more than `max_error_rate` of its answers 5xx; a share of 4xx more than that over the
    stable version's (same clients, so a model that raises, which MLflow's protocol answers
    with 400, shows here; judged when the stable answered `min_requests` too); or its p99
    over both `p99_factor` times
    the stable version's p99 (when the stable answered `min_requests` too) and
    `p99_floor_ms` (so a 5 ms model is not aborted for answering in 20 ms)."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    p99_factor: float = Field(default=3.0, gt=0)
    p99_floor_ms: float = Field(default=500.0, ge=0)


@dataclass(frozen=True)
class Attempt:
    port: int
    status: int | None  # None: no answer (connection refused, timeout)
    ms: float | None


class Request(BaseModel):
    """One line of the access log."""

    model_config = ConfigDict(extra="ignore")

    msec: float  # epoch seconds, millisecond resolution
    status: int = Field(ge=0, le=999)
    request_time: float = Field(ge=0)
    method: str = Field(max_length=16)
    uri: str = Field(max_length=4096)
    upstream_addr: str = Field(default="", max_length=2048)
    upstream_status: str = Field(default="", max_length=512)
    upstream_response_time: str = Field(default="", max_length=512)
    request_id: str = Field(default="", max_length=64)

    def attempts(self) -> list[Attempt]:
        """A backend per try: nginx separates the tries of one request with commas."""
        addrs = _split(self.upstream_addr)
        statuses = _split(self.upstream_status)
        times = _split(self.upstream_response_time)
        found = []
        for i, addr in enumerate(addrs):
            host, _, port = addr.rpartition(":")
            if host != "127.0.0.1" or not port.isdigit():
                continue
            status = statuses[i] if i < len(statuses) else "-"
            took = times[i] if i < len(times) else "-"
            found.append(
                Attempt(
                    int(port),
                    int(status) if status.isdigit() else None,
                    float(took) * 1000 if _number(took) else None,
                )
            )
        return found


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")] if value and value != "-" else []


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@dataclass(frozen=True)
class Batch:
    requests: list[Request]
    skipped: int  # lines that are not a request record (ignored, counted)
    end: rotation.Mark  # after the last whole line read: where the next read starts


def read(path: Path, *, start: rotation.Mark | None = None, tail_bytes: int | None = None) -> Batch:
    """The whole lines written after `start` (None: all kept) across the log and its rotated
    files (`rotation`), oldest first; with `tail_bytes`, at most that much of their end."""
    lines, end = rotation.read(path, start, tail_bytes=tail_bytes)
    requests, skipped = [], 0
    for line in lines:
        try:
            requests.append(Request.model_validate_json(line))
        except ValidationError:
            skipped += 1
    return Batch(requests, skipped, end)


@dataclass(frozen=True)
class Numbers:
    requests: int
    errors: int  # 5xx answers and tries that got no answer
    p99_ms: float | None
    rejected: int = 0  # 4xx answers (MLflow's protocol answers a model's exception with 400)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def rejected_rate(self) -> float:
        return self.rejected / self.requests if self.requests else 0.0

    def describe(self) -> str:
        if not self.requests:
            return "no requests"
        p99 = f", p99 {self.p99_ms:.0f} ms" if self.p99_ms is not None else ""
        return f"{self.requests} requests, {self.error_rate:.1%} 5xx{p99}"


def numbers(requests: Iterable[Request], port: int) -> Numbers:
    """A backend's model calls (`/invocations`): every try nginx sent it, counted."""
    count = errors = rejected = 0
    times = []
    for req in requests:
        if not req.uri.endswith("/invocations"):
            continue
        for a in req.attempts():
            if a.port != port:
                continue
            count += 1
            errors += a.status is None or a.status >= 500
            rejected += a.status is not None and 400 <= a.status < 500
            if a.ms is not None:
                times.append(a.ms)
    return Numbers(count, errors, percentile(times, 99), rejected)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def verdict(canary: Numbers, stable: Numbers, limits: CanaryLimits) -> str | None:
    """Why the canary fails its limits, or None (also when it answered too few to judge)."""
    if canary.requests < limits.min_requests:
        return None
    if canary.error_rate > limits.max_error_rate:
        return (
            f"{canary.errors} of its {canary.requests} requests failed "
            f"({canary.error_rate:.0%} 5xx, the limit is {limits.max_error_rate:.0%})"
        )
    compared = stable.requests >= limits.min_requests
    excess = canary.rejected_rate - stable.rejected_rate
    if compared and excess > limits.max_error_rate:
        return (
            f"{canary.rejected_rate:.0%} of its answers were 4xx against the stable version's "
            f"{stable.rejected_rate:.0%} (a model that raises answers 400; the limit is "
            f"{limits.max_error_rate:.0%} more)"
        )
    if canary.p99_ms is None:
        return None
    bound = limits.p99_floor_ms
    if compared and stable.p99_ms is not None:
        bound = max(bound, limits.p99_factor * stable.p99_ms)
    if canary.p99_ms > bound:
        return (
            f"its p99 is {canary.p99_ms:.0f} ms, over the limit of {bound:.0f} ms "
            f"(stable: {stable.describe()})"
        )
    return None
