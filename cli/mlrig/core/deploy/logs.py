"""`mlrig deploy logs NAME`: on the local stack, an endpoint's recent requests as nginx
logged them (which version answered, status, time) and its model containers' own output,
merged by time; on an AWS stack, its CloudWatch Logs (`_aws_logs`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from mlrig.core.deploy import traffic
from mlrig.core.deploy._log_entry import Entry
from mlrig.core.deploy.state import Endpoint, check_name
from mlrig.core.shared import cloud_logs
from mlrig.core.stack.local.state import Layout

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _engine_time(stamp: str) -> datetime | None:
    """The engine's RFC 3339 stamp (nanoseconds: cut to what datetime holds)."""
    match = _STAMP.match(stamp)
    if not match:
        return None
    frac = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + frac + zone).astimezone(UTC)


def _request_line(req: traffic.Request, versions: dict[int, str]) -> str:
    tried = [
        f"v{versions.get(a.port, '?')} {a.status if a.status is not None else 'no answer'}"
        for a in req.attempts()
    ]
    via = f" <- {', '.join(tried)}" if tried else ""
    return f"{req.method} {req.uri} {req.status} {req.request_time * 1000:.0f} ms{via}"


def entries(layout: Layout, ep: Endpoint, since: datetime, tail: int) -> list[Entry]:
    """The last `tail` entries since `since`, oldest first."""
    from mlrig.adapters import docker as docker_adapter

    start = since.timestamp()
    backends = [*ep.backends, *([ep.previous] if ep.previous else [])]
    versions = {b.port: b.version for b in backends}
    found: list[Entry] = []
    batch = traffic.read(traffic.log_file(layout, ep.name), tail_bytes=traffic.TAIL_BYTES)
    for req in batch.requests[-tail:] if tail else []:
        if req.msec >= start:
            found.append(
                Entry(
                    datetime.fromtimestamp(req.msec, UTC),
                    "nginx",
                    _request_line(req, versions),
                    req.model_dump(),
                )
            )
    for b in ep.backends:  # the containers serving now (a previous one is removed)
        for stamp, text in docker_adapter.container_log_lines(b.container, since=start, tail=tail):
            at = _engine_time(stamp)
            if at is not None:  # a container's output is input: cleaned as on AWS
                found.append(Entry(at, f"v{b.version}", cloud_logs.clean(text)))
    found.sort(key=lambda e: e.at)
    return found[-tail:] if tail else []


def read(
    name: str, *, stack: str | None = None, since: str | None = "10m", tail: int = 100
) -> list[Entry]:
    """`mlrig deploy logs`: the endpoint's entries since `since` (1h, 30m, an ISO time;
    default the last 10 minutes): `entries` on the local stack, its CloudWatch Logs on AWS."""
    from mlrig.core.access.view import parse_since
    from mlrig.core.deploy import aws
    from mlrig.core.deploy.endpoints import Site
    from mlrig.errors import UsageError

    if tail < 1:
        raise UsageError(f"--tail {tail} is not a count of lines", hint="pass 1 or more")
    when = parse_since(since or "10m")
    assert when is not None
    check_name(name)
    if aws.is_aws(stack):
        from mlrig.core.deploy import _aws_logs

        return _aws_logs.entries(aws.aws_outputs(stack), name, when, tail)
    site = Site.open(stack)
    ep = site.store.get(name)
    return entries(site.layout, ep, when, tail)
