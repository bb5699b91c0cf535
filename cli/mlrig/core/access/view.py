"""What `mlrig access show` and `mlrig access log` read: who exists on a stack's MLflow, with
which role and grants, and the server's audit trail of writes and failed logins."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from mlrig.contract import StackOutputs
from mlrig.core.access import plan as access_plan
from mlrig.core.access.accounts import admin_client, admin_name, read_state
from mlrig.core.access.file import is_machine
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


def log(outputs: StackOutputs, since: str | None = None) -> list[AuditEntry]:
    """The audit entries of a local stack, oldest first: its MLflow server's log and the
    endpoint changes mlrig made (`logs/audit.log`)."""
    from mlrig.core.access import _log as audit
    from mlrig.core.stack.local.state import Layout

    when = parse_since(since)
    if outputs.kind != "local":
        raise UsageError(
            f"stack '{outputs.name}' is on AWS: its server log is the tracking task's log stream",
            hint="read it in CloudWatch Logs (the audit lines are the JSON ones with "
            '"event": "mlrig.audit")',
        )
    layout = Layout(outputs.name)
    entries = []
    # the server's lines, then mlrig's own (endpoints: mlrig.core.access.audit), in time order
    for path in (layout.log_file("mlflow"), layout.log_file("audit")):
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as fh:
                entries += audit.read_entries(fh, when)
    return sorted(entries, key=lambda e: e.ts)
