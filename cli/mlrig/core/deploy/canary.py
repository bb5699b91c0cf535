"""Judging a canary: during `deploy --canary`'s bake window (its container still answers
its own /ping, and its requests in nginx's log stay within `CanaryLimits`), and again
before `promote` over everything it answered since it started."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from mlrig.core.deploy import traffic
from mlrig.core.deploy.state import Endpoint
from mlrig.core.shared import rotation
from mlrig.core.shared.progress import Progress
from mlrig.errors import UsageError

POLL = 1.0  # seconds between looks (nginx flushes its log buffer every second)
MISSED_PINGS = 2  # consecutive unanswered pings that fail the canary
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h)?$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str, option: str = "--bake") -> float:
    """`60s`, `2m`, `1h`, `90` (seconds) or `0`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(
            f"{option} {text!r} is not a duration", hint="use e.g. 60s, 5m or 0 (no bake)"
        )
    return float(match.group(1)) * _SECONDS[match.group(2) or "s"]


def judge(ep: Endpoint, requests: list[traffic.Request]) -> tuple[traffic.Numbers, str | None]:
    """The canary's numbers and why it fails its limits (None: it does not, or too few)."""
    stable, canary = ep.backends
    limits = ep.canary_limits or traffic.CanaryLimits()
    mine = traffic.numbers(requests, canary.port)
    return mine, traffic.verdict(mine, traffic.numbers(requests, stable.port), limits)


def since_started(ep: Endpoint, log: Path) -> tuple[traffic.Numbers, str | None]:
    """`judge` over the requests logged since the canary started (the log's recent end)."""
    assert ep.canary is not None
    start = ep.canary.since.timestamp()
    batch = traffic.read(log, tail_bytes=traffic.TAIL_BYTES)
    return judge(ep, [r for r in batch.requests if r.msec >= start])


def bake(
    ep: Endpoint,
    log: Path,
    seconds: float,
    *,
    start: rotation.Mark,
    alive: Callable[[], str | None],
    progress: Progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Watch the canary for `seconds`: why it failed (its container stopped answering
    `alive`, or its requests logged after `start` broke its limits), or None when it
    held. `alive` returns why the canary does not answer, None when it does."""
    assert ep.canary is not None
    progress(f"watching the canary (v{ep.canary.version}) for {seconds:g} s")
    deadline = clock() + seconds
    seen: list[traffic.Request] = []
    offset, missed, last = start, 0, False
    while True:
        batch = traffic.read(log, start=offset)
        offset = batch.end
        seen += batch.requests
        why = alive()
        missed = missed + 1 if why else 0
        if missed >= MISSED_PINGS:
            return why
        numbers, why = judge(ep, seen)
        if why:
            return why
        if last:
            progress(f"the canary held: {numbers.describe()}")
            return None
        if clock() >= deadline:
            last = True  # one more look: what nginx buffered during the last second
        sleep(POLL)
