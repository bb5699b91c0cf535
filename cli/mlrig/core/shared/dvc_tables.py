"""DVC-stored data read by hash: one file, or a directory out of partitions.

A dependency DVC records with an md5 ending in `.dir` is a directory; its object in the cache
or a remote (`files/md5/<2>/<30>.dir`) is a JSON manifest `[{"relpath", "md5"}, ...]` whose
own md5 is the hash before `.dir`. The manifest is input (whoever can write to the remote
writes it), so it crosses one boundary, `parse_manifest`, before any of its names reaches a
path or its hashes a lookup: a relpath is relative and stays inside the directory, an md5 is
32 hex digits, no relpath twice.

`read_table` reads a table dependency either way: a single CSV or Parquet file, or a
partitioned snapshot (`data/snapshots/<YYYY-MM-DDTHHMM>.parquet`, each a plain file name),
whose partitions are fetched one by one, each checked against its md5, and concatenated in
name order (`partition_order`: a minute's `-2` after the minute's first). Any object missing
or holding other bytes is one line naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from mlrig.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    import pandas as pd

DIR_SUFFIX = ".dir"
TABLES = (".csv", ".parquet")
MAX_ENTRIES = 100_000  # a manifest longer than this is not a snapshot mlrig wrote
MD5 = re.compile(r"^[0-9a-f]{32}$")


def _md5(value: str) -> str:
    if not MD5.fullmatch(value):
        raise ValueError("is not 32 hex digits")
    return value


Md5 = Annotated[str, AfterValidator(_md5)]  # a DVC file hash, as a manifest or a run lists it
DVC_HASH = re.compile(r"^[0-9a-f]{32}(\.dir)?$")  # a file's md5, or a directory's
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# a partition: a plain file name (no folder) ending in a table's suffix
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.(csv|parquet)$")

# the layout's partition name: the ingest minute (UTC), then -2, -3 for more in that minute
_STAMPED = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{4})(?:-([1-9][0-9]{0,5}))?\.(csv|parquet)$")

# an object's bytes by its DVC hash (md5, or md5.dir), None when the store has none
Fetch = Callable[[str], bytes | None]


class NotPartitioned(ConfigError):
    """A directory dependency holding other files than partitions: not a snapshot."""


def is_dir(md5: str) -> bool:
    return md5.endswith(DIR_SUFFIX)


class Entry(BaseModel):
    """One file of a directory out, as DVC's manifest lists it."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # DVC 2 wrote no extra keys either

    relpath: str
    md5: Md5

    @field_validator("relpath")
    @classmethod
    def _inside(cls, value: str) -> str:
        pure = PurePosixPath(value)
        if not value or len(value) > 1024 or _CONTROL.search(value) or "\\" in value:
            raise ValueError("is empty, too long or holds control characters or '\\'")
        if pure.is_absolute() or ".." in pure.parts or value.startswith("~"):
            raise ValueError("leaves the directory")
        if any(part in ("", ".") for part in value.split("/")):
            raise ValueError("is not a normalised path")
        return value


class Manifest(RootModel[list[Entry]]):
    @field_validator("root")
    @classmethod
    def _unique(cls, entries: list[Entry]) -> list[Entry]:
        if len(entries) > MAX_ENTRIES:
            raise ValueError(f"lists more than {MAX_ENTRIES} files")
        seen: set[str] = set()
        for entry in entries:
            if entry.relpath in seen:
                raise ValueError(f"lists {entry.relpath!r} twice")
            seen.add(entry.relpath)
        return sorted(entries, key=lambda e: e.relpath)


def partition_order(name: str) -> tuple[str, int, str]:
    """Name order, except that `<minute>-2` follows `<minute>` (plain string order puts '-'
    before '.') and `-10` follows `-9`: the order ingest wrote them in."""
    match = _STAMPED.fullmatch(name)
    if match is None:
        return (name, 0, name)
    return (match[1], int(match[2] or 1), name)


def _shown(value: object) -> str:
    text = str(value)
    return repr(_CONTROL.sub("?", text[:80]) + ("…" if len(text) > 80 else ""))


def parse_manifest(data: bytes, path: str) -> list[Entry]:
    """The manifest of the directory `path`, its entries in name order; anything else is one
    line naming the first bad entry."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise ConfigError(f"the DVC manifest of {path} is not JSON") from None
    try:
        return list(Manifest.model_validate(raw).root)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = [str(p) for p in err["loc"]]
        index = next((int(p) for p in where if p.isdigit()), None)
        field = where[-1] if where and not where[-1].isdigit() else None
        entry = raw[index] if isinstance(raw, list) and index is not None else None
        reason = str(err["msg"]).removeprefix("Value error, ")
        if index is None:
            what = reason
        elif err["type"] == "missing":
            what = f"entry {index + 1} has no {field}"
        elif field and isinstance(entry, dict):
            what = f"entry {index + 1} {field} {_shown(entry.get(field))}: {reason}"
        else:
            what = f"entry {index + 1}: {reason}"
        raise ConfigError(
            f"the DVC manifest of {path}: {what}",
            hint="the remote's copy is not what DVC wrote: push it again (`dvc push`)",
        ) from None


def verified(fetch: Fetch, md5: str, what: str, where: str) -> bytes:
    """The object md5 from the store `where`, checked: missing or other bytes is one line."""
    data = fetch(md5)
    if data is None:
        raise ConfigError(
            f"{what} (md5 {md5}) is missing from the DVC remote {where}",
            hint="push it from the commit that made it: `dvc push`",
        )
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5.removesuffix(DIR_SUFFIX):
        raise ServiceError(
            f"the DVC remote {where} holds other bytes than md5 {md5} for {what}",
            hint="the remote's copy is damaged: push it again from the commit (`dvc push`)",
        )
    return data


def manifest(fetch: Fetch, path: str, md5: str, where: str) -> list[Entry]:
    """The verified, validated manifest of the directory dependency (path, md5)."""
    return parse_manifest(verified(fetch, md5, f"the manifest of {path}", where), path)


@dataclass(frozen=True)
class Table:
    path: str
    md5: str
    frame: pd.DataFrame
    partitions: tuple[Entry, ...] = ()  # a directory's files, in partition_order; () for a file
    rows: tuple[int, ...] = ()  # each partition's rows


def parse_table(path: str, data: bytes) -> pd.DataFrame:
    import pandas as pd

    try:
        if path.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad table
        raise ConfigError(f"{path} is not a table pandas reads ({type(exc).__name__})") from exc


def read_table(fetch: Fetch, path: str, md5: str, where: str) -> Table:
    """The table a dependency (path, md5) holds, every object md5-checked: a CSV or Parquet
    file, or a directory of partitions concatenated in name order."""
    if not DVC_HASH.fullmatch(md5):
        raise ConfigError(f"{path}: md5 {_shown(md5)} is not a DVC hash")
    if not is_dir(md5):
        return Table(path, md5, parse_table(path, verified(fetch, md5, path, where)))
    import pandas as pd

    entries = manifest(fetch, path, md5, where)
    if not entries:
        raise ConfigError(f"the directory {path} (md5 {md5}) holds no partitions")
    bad = next((e for e in entries if not _PARTITION.fullmatch(e.relpath)), None)
    if bad is not None:
        raise NotPartitioned(
            f"the directory {path} holds {_shown(bad.relpath)}, not a partition "
            "(a plain file name ending in .parquet or .csv)"
        )
    entries.sort(key=lambda e: partition_order(e.relpath))
    frames = []
    for entry in entries:
        name = f"{path.rstrip('/')}/{entry.relpath}"
        frames.append(parse_table(name, verified(fetch, entry.md5, f"partition {name}", where)))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return Table(path, md5, frame, tuple(entries), tuple(len(f) for f in frames))


# -- what the train run logged of its partitions (mlrig/partitions.json) ---------------------
PARTITIONS_ARTIFACT = "mlrig/partitions.json"  # the run's artifact: [{"name", "md5", "rows"}]
SNAPSHOTS_DIR = "data/snapshots"  # the partitioned snapshot's directory out


class LoggedPartition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    md5: Md5
    rows: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not _PARTITION.fullmatch(value):
            raise ValueError("is not a partition's file name")
        return value


_LOGGED = TypeAdapter(list[LoggedPartition])


def partitions_problem(table: Table, logged: bytes, run_id: str) -> str | None:
    """Why the partitions the run logged (mlrig/partitions.json) are not the files of the
    directory it recorded; None when every name, md5 and row count agrees."""
    try:
        listed = _LOGGED.validate_json(logged)
    except ValidationError as exc:
        err = exc.errors()[0]
        at = ".".join(str(p) for p in err["loc"]) or "it"
        return f"run {run_id}'s {PARTITIONS_ARTIFACT} is not a partition list ({at}: {err['msg']})"
    have = {e.relpath: (e.md5, r) for e, r in zip(table.partitions, table.rows, strict=True)}
    want = {p.name: (p.md5, p.rows) for p in listed}
    if have == want:
        return None
    names = sorted(set(have) ^ set(want)) or sorted(n for n in have if have[n] != want[n])
    name = names[0]
    if name not in have:
        what = f"lists {name}, which the directory does not hold"
    elif name not in want:
        what = f"does not list {name}, which the directory holds"
    else:
        (md5, rows), (md5_logged, rows_logged) = have[name], want[name]
        what = (
            f"lists {name} with md5 {md5_logged}, the directory's has {md5}"
            if md5 != md5_logged
            else f"lists {name} with {rows_logged} rows, the directory's has {rows}"
        )
    return f"run {run_id}'s {PARTITIONS_ARTIFACT} {what} ({table.path}, md5 {table.md5})"
