"""The stack's audit trail of what mlrig itself changes on a local stack (endpoints: deploy,
canary, promote, abort, rollback, delete, key create and revoke), in the tracking server's own
line format (`mlrig.tracking.audit.line`) so `mlrig access log` reads both as one trail.

The lines go to `logs/audit.log` under the stack's folder (0600, appended one whole line per
write); the server's lines stay in its own log, which only the server writes. Who: the
operating-system account that ran the command (`auth` "local", `source` "cli"); what: the
action as `method`, the endpoint's route as `path`, and names (model, version, digest, share,
key ID) in `object`, never a key's secret.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from mlrig.core.shared.files import private_dir
from mlrig.core.stack.local.state import Layout
from mlrig.tracking import audit as tracking_audit

AUTH = "local"
SOURCE = "cli"


def path(stack: str) -> Path:
    return Layout(stack).log_file("audit")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: still one line
        return f"uid {os.getuid()}"


def record(stack: str, action: str, route: str, obj: dict[str, str]) -> None:
    """Append one line; OSError when the log cannot be written (the caller decides)."""
    line = tracking_audit.line(
        user=_user(),
        auth=AUTH,
        method=action.upper(),
        path=route,
        obj={k: v for k, v in obj.items() if v},
        status=None,
        source=SOURCE,
    )
    target = path(stack)
    private_dir(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())  # one write: concurrent lines never interleave
    finally:
        os.close(fd)
