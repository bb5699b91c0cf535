"""What `mlrig access show` and `mlrig access log` read: who exists on a stack's MLflow, with
which role and grants, and the server's audit trail of writes and failed logins (a local
server's log file, or an AWS tracking task's CloudWatch log group)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from mlrig.contract import StackOutputs
from mlrig.core.access import plan as access_plan
from mlrig.core.access.accounts import admin_client, admin_name, read_state
from mlrig.core.access.file import is_machine
from mlrig.core.shared.progress import Progress, no_progress
from mlrig.errors import UsageError

if TYPE_CHECKING:
    from mlrig.core.access._log import AuditEntry


@dataclass(frozen=True)
class GrantRow:
    kind: str  # experiment | registered_model
    resource: str  # its name ("*": every one, through the user's role)
    permission: str
    via: str = "direct"  # direct, or the MLflow role that carries it


@dataclass(frozen=True)
class UserRow:
    name: str
    kind: str  # admin | person | machine
    role: str  # none | reader | editor | admin
    grants: tuple[GrantRow, ...]
    create: bool = False  # holds the access file's `create: true` (access_plan.CREATOR_ROLE)


def show(outputs: StackOutputs) -> list[UserRow]:
    state = read_state(admin_client(outputs))
    admin = admin_name(outputs)
    rows = []
    for user in sorted(state.users, key=lambda u: u.name):
        grants: list[GrantRow] = []
        for role in user.roles:
            for g in role.grants:
                if g.resource_type not in ("experiment", "registered_model"):
                    continue
                name = g.pattern
                if g.resource_type == "experiment" and g.pattern != "*":
                    name = state.experiments.get(g.pattern, f"#{g.pattern}")
                via = "direct" if role.synthetic else role.name
                grants.append(GrantRow(g.resource_type, name, g.permission, via))
        kind = "admin" if user.name == admin else "machine" if is_machine(user.name) else "person"
        rows.append(
            UserRow(
                user.name,
                kind,
                access_plan.role_of(user.is_admin, user.role_names),
                tuple(sorted(grants, key=_grant_key)),
                access_plan.CREATOR_ROLE in user.role_names,
            )
        )
    return rows


def _grant_key(g: GrantRow) -> tuple[str, str, str]:
    return (g.kind, g.resource, g.via)


_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`1h`, `30m`, `2d`, `45s` ago, or an ISO 8601 time (UTC unless it says otherwise)."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    match = _AGO.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration nor an ISO time",
            hint="use e.g. 1h, 30m, 2d or 2026-01-02T03:04:05",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


AWS_MAX_ENTRIES = 10_000  # the server's newest audit lines read from CloudWatch at most


def log(
    outputs: StackOutputs, since: str | None = None, progress: Progress = no_progress
) -> list[AuditEntry]:
    """The stack's audit entries, oldest first: its MLflow server's lines (a local stack's
    server log; an AWS stack's tracking task log group in CloudWatch) and the endpoint
    changes mlrig made from this machine (`logs/audit.log` under the stack's folder)."""
    from mlrig.core.access import _log as audit
    from mlrig.core.stack.local.state import Layout

    when = parse_since(since)
    layout = Layout(outputs.name)
    entries = _aws_server_entries(outputs, when, progress) if outputs.kind == "aws" else []
    # the server's lines, then mlrig's own (endpoints: mlrig.core.access.audit), in time order
    files = [layout.log_file("audit")]
    if outputs.kind == "local":
        files.insert(0, layout.log_file("mlflow"))
    for path in files:
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as fh:
                entries += audit.read_entries(fh, when)
    return sorted(entries, key=lambda e: e.ts)


def _aws_server_entries(
    outputs: StackOutputs, when: datetime | None, progress: Progress
) -> list[AuditEntry]:
    """The audit lines of the tracking server's log group (its task's stderr, as the local
    server's log holds them), since `when` (default: the group's whole retention)."""
    from mlrig.core.access import _log as audit
    from mlrig.core.shared import cloud_logs
    from mlrig.infra.config import server_log_group
    from mlrig.tracking import audit as tracking_audit

    group = server_log_group(outputs.name)
    region = outputs.region or "us-east-1"
    start = when or datetime.fromtimestamp(0, UTC)
    events = cloud_logs.group_events(
        group,
        start,
        datetime.now(UTC),
        AWS_MAX_ENTRIES,
        region=region,
        pattern=f'"{tracking_audit.EVENT}"',  # CloudWatch filters: only the audit lines travel
    )
    if events is None:
        raise UsageError(
            f"stack '{outputs.name}' has no tracking server log group {group} in {region}",
            hint=f"is its tracking server up? check with `mlrig stack status --stack "
            f"{outputs.name}`",
        )
    if len(events) >= AWS_MAX_ENTRIES:
        progress(
            f"only the server's newest {AWS_MAX_ENTRIES} audit lines are shown: older ones "
            f"are in log group {group} (CloudWatch Logs Insights can query them)"
        )
    # by the line's own time too, as the local log is (CloudWatch's is the writer's stamp)
    return audit.read_entries((line for event in events for line in event.lines()), when)
