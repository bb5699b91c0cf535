"""Values read back from MLflow, validated: the one boundary a run's tags and an image's
labels cross before trace or checkout hands them to git, DVC, a path or a query.

A tag is input, not an instruction: anyone who can write to a run (its trainer, an editor of
the experiment, a CI token) chooses its values. What mlrig itself records is narrow, so that
is all that passes:

- `mlrig.git.remote`: `https://` or `ssh://` URLs, scp-like `[user@]host:path`, or an
  absolute local path. The path is what the local stack's and the demo's bare `origin` record
  (`git remote get-url origin` of a path remote); no other local form (`file://`, relative
  paths) is recorded, so none passes. Nothing starting with `-`, no `<transport>::` helper
  (`ext::`), no whitespace or control characters, no password.
- `mlrig.exp.ref`: DVC's experiment layout, `refs/exps/<2 hex>/<rest of the baseline>/<name>`,
  that `git check-ref-format` accepts.
- `dvc.dep.*`, `dvc.out.*` and the keys of `mlrig.git.dirty_files`: relative POSIX paths
  inside the workspace (no root, no `..`, no control characters).

A refused tag is left out of what trace resolves and checkout restores, and is reported
(`Refused.line()`), so the run is never restorable from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from mlrig.adapters import git
from mlrig.core.provenance import record as p
from mlrig.core.shared import capture

MAX_VALUE = 2048  # longer than any remote, ref or path mlrig records
TAG_USER = "mlflow.user"  # the MLflow user the run was logged as (MLflow's own tag)

_BLANK = re.compile(r"[\x00-\x20\x7f]")  # control characters and whitespace
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")
_URL = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?:(?P<user>[^@/]*)@)?(?P<host>[^@/:]*)"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<path>/.*)?$"
)
_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.+)$")
_EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{1,62}/[A-Za-z0-9][A-Za-z0-9._+-]*$")
_WINDOW_VALUE = re.compile(r"^[0-9A-Za-z:.+, -]{1,40}$")  # 2026-04-02T10:00:00Z, 7 days 00:00:00
# a served version's fields: the rules of capture.Served, the one model of them
RUN_ID = re.compile(capture.RUN_ID_PATTERN)
DIGEST = re.compile(capture.DIGEST_PATTERN)
VERSION = re.compile(capture.VERSION_PATTERN)
MODEL_NAME = re.compile(capture.MODEL_PATTERN)
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._:/-]{0,254}@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Refused:
    """A value read back from MLflow that mlrig will not act on, and why."""

    tag: str
    why: str
    kind: str = "tag"  # or "label" (an image's)

    def line(self) -> str:
        return f"{self.kind} {self.tag} refused: {self.why}"


def _shown(value: str) -> str:
    """The value as a message may quote it: one line, short, never a URL's password."""
    text = repr(value[:80] + ("…" if len(value) > 80 else ""))
    return re.sub(r"://[^/@\s]*:[^/@\s]*@", "://***@", text)


def remote_problem(url: str) -> str | None:
    """Why url is not a git remote trace and checkout may read from; None when it is."""
    if not url or len(url) > MAX_VALUE:
        return "empty or too long"
    if url.startswith("-"):
        return f"{_shown(url)} starts with '-' (git would read it as an option)"
    if _BLANK.search(url):
        return f"{_shown(url)} holds whitespace or control characters"
    if "::" in url:
        return f"{_shown(url)} names a git transport helper (<transport>::<address>)"
    if url.startswith("/"):
        parts = PurePosixPath(url).parts
        return f"{_shown(url)} climbs with '..'" if ".." in parts else None
    if "://" in url:
        m = _URL.fullmatch(url)
        if m is None or m["scheme"] not in ("https", "ssh"):
            return f"{_shown(url)}: only https://, ssh://, user@host:path or an absolute path"
        user = m["user"]
        if user is not None and ":" in user:
            return f"{_shown(url)} holds a password"
        if not _HOST.fullmatch(m["host"]) or (user is not None and not _USER.fullmatch(user)):
            return f"{_shown(url)} does not name a host"
        return None
    if m := _SCP.fullmatch(url):
        user, host, path = m["user"], m["host"], m["path"]
        if not _HOST.fullmatch(host) or (user is not None and not _USER.fullmatch(user)):
            return f"{_shown(url)} does not name a host"
        if path.startswith("-"):
            return f"{_shown(url)} has a path starting with '-'"
        return None
    return f"{_shown(url)}: only https://, ssh://, user@host:path or an absolute path"


def exp_ref_problem(ref: str) -> str | None:
    """Why ref is not an experiment ref as DVC writes them; None when it is."""
    if not _EXP_REF.fullmatch(ref) or not git.check_ref_format(ref):
        return f"{_shown(ref)} is not an experiment ref (refs/exps/<baseline>/<name>)"
    return None


def path_problem(path: str) -> str | None:
    """Why path is not a relative path inside the workspace; None when it is."""
    if not path or len(path) > MAX_VALUE or _CONTROL.search(path):
        return f"{_shown(path)} is empty, too long or holds control characters"
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        return f"{_shown(path)} is not relative to the workspace"
    if ".." in pure.parts or "\\" in path:
        return f"{_shown(path)} leaves the workspace"
    return None


def _dirty_problem(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None  # unreadable: provenance_resolve counts it as "too many" (not restorable)
    if not isinstance(value, dict):
        return None
    for key in value:
        if key != p.DIRTY_TOO_MANY and (why := path_problem(str(key))):
            return why
    return None


def window_problem(key: str, value: str) -> str | None:
    """Why a mlrig.temporal.* tag is not one of the split's times or durations, or None."""
    name = key.removeprefix(p.TAG_TEMPORAL_PREFIX)
    if name not in p.WINDOW_KEYS:
        return f"not a window preprocess records ({', '.join(p.WINDOW_KEYS)})"
    if not _WINDOW_VALUE.fullmatch(value):
        return "not a time or a duration"
    return None


def checked(tags: Mapping[str, str]) -> tuple[dict[str, str], list[Refused]]:
    """The run's tags without those mlrig must not act on, and one Refused per tag left out."""
    kept: dict[str, str] = {}
    refused: list[Refused] = []
    for key, value in tags.items():
        why: str | None = None
        if key == p.TAG_GIT_REMOTE:
            why = remote_problem(value)
        elif key == p.TAG_EXP_REF:
            why = exp_ref_problem(value)
        elif key.startswith((p.TAG_DEP_PREFIX, p.TAG_OUT_PREFIX)):
            prefix = p.TAG_DEP_PREFIX if key.startswith(p.TAG_DEP_PREFIX) else p.TAG_OUT_PREFIX
            why = path_problem(key.removeprefix(prefix))
        elif key == p.TAG_DIRTY_FILES:
            why = _dirty_problem(value)
        elif key.startswith(p.TAG_TEMPORAL_PREFIX):
            why = window_problem(key, value)
        if why:
            refused.append(Refused(key if len(key) <= 120 else _shown(key), why))
        else:
            kept[key] = value
    return kept, refused


def refused_reason(run_id: str, refused: list[Refused]) -> str:
    """Why a run with refused tags is not restorable (the first tag named, the count after)."""
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return f"run {run_id} is not restorable: {refused[0].line()}{more}"


def image_refs(refs: list[str]) -> list[str]:
    """The `host/repository@sha256:…` references of a model version's push tag; others dropped."""
    return [r for r in refs if IMAGE_REF.fullmatch(r)]


_LABEL_FIELDS = {
    p.LABEL_RUN_ID: "run_id",
    p.LABEL_MODEL_NAME: "model",
    p.LABEL_MODEL_VERSION: "version",
}


def checked_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], list[Refused]]:
    """An image's labels without a run ID, model name or version mlrig would not look up:
    checked by capture.Served, the model a capture record's version passes too."""
    named = {field: labels[key] for key, field in _LABEL_FIELDS.items() if key in labels}
    bad = capture.Served.problems(named)
    kept: dict[str, str] = {}
    refused: list[Refused] = []
    for key, value in labels.items():
        if _LABEL_FIELDS.get(key) in bad:
            refused.append(Refused(key, f"{_shown(value)} is not what mlrig writes", "label"))
        else:
            kept[key] = value
    return kept, refused


def printable(value: str | None, limit: int = 200) -> str | None:
    """A value to show on one line: control characters (a terminal's escapes) as '?'."""
    return None if value is None else _CONTROL.sub("?", value[:limit])


def repository_identity_of(user: str | None, identity: str | None) -> bool | None:
    """Whether the run was logged as the repository's machine identity; None: unknown."""
    if not user or not identity:
        return None
    return user == identity
