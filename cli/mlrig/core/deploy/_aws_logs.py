"""`mlrig deploy logs NAME` on an AWS stack: the endpoint's CloudWatch Logs, merged by time.

Two log groups, named by the endpoint program (mlrig.infra.endpoint.config): the model
function's (`/aws/lambda/mlrig-STACK-ep-NAME`: Lambda's START/END/REPORT lines and the
image's own output; its streams say which published version wrote them) and a warm
endpoint's Fargate tasks' (`/mlrig/STACK/endpoints/NAME`). Either may be missing (a Lambda
endpoint has no warm group and the other way round); both missing is one line. Reading needs
`logs:FilterLogEvents` on them, no Pulumi CLI and no state. Every event passes
`cloud_logs.LogLine` (cleaned, credentials redacted) before it becomes an entry.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from mlrig.contract import StackOutputs
from mlrig.core.deploy._log_entry import Entry
from mlrig.core.shared import cloud_logs
from mlrig.errors import UsageError

# Lambda's stream names: YYYY/MM/DD/[VERSION]ID, VERSION a published version or $LATEST
_LAMBDA_STREAM = re.compile(r"\d{4}/\d\d/\d\d/\[(?P<version>\$LATEST|\d{1,10})\][0-9a-f]+")
# awslogs' stream names: PREFIX/CONTAINER/TASK_ID (PREFIX: the endpoint's name)
_TASK_STREAM = re.compile(r"[a-z0-9-]+/[A-Za-z0-9_-]+/(?P<task>[0-9a-f]{8})[0-9a-f]*")


def groups(outputs: StackOutputs, name: str) -> dict[str, str]:
    """The endpoint's log groups, by kind."""
    from mlrig.infra.endpoint.config import function_log_group, warm_log_group

    return {
        "lambda": function_log_group(outputs.name, name),
        "warm": warm_log_group(outputs.name, name),
    }


def source(kind: str, stream: str) -> str:
    """Who wrote a line: `lambda:N` (published version N), `warm:TASK` (a task's ID's first
    8 hex digits), or the kind alone when the stream's name says no more."""
    if kind == "lambda" and (m := _LAMBDA_STREAM.fullmatch(stream)):
        return "lambda" if m.group("version") == "$LATEST" else f"lambda:{m.group('version')}"
    if kind == "warm" and (m := _TASK_STREAM.fullmatch(stream)):
        return f"warm:{m.group('task')}"
    return kind


def entries(
    outputs: StackOutputs,
    name: str,
    since: datetime,
    tail: int,
    *,
    until: datetime | None = None,
) -> list[Entry]:
    """The last `tail` lines since `since` of the endpoint's log groups, oldest first."""
    region = outputs.region or "us-east-1"
    end = until or datetime.now(UTC)
    found: list[Entry] = []
    missing = []
    for kind, group in groups(outputs, name).items():
        events = cloud_logs.group_events(group, since, end, tail, region=region)
        if events is None:
            missing.append(group)
            continue
        for event in events:
            who = source(kind, event.logStreamName)
            found += [
                Entry(event.at, who, line, stream=event.logStreamName) for line in event.lines()
            ]
    if len(missing) == len(groups(outputs, name)):
        raise UsageError(
            f"endpoint {name!r} of stack '{outputs.name}' has no log group in {region} "
            f"({' nor '.join(missing)})",
            hint="see the stack's endpoints with `mlrig deploy list`; deploy one with "
            "`mlrig deploy`",
        )
    found.sort(key=lambda e: e.at)
    return found[-tail:]
