"""Stage 1: take a snapshot of the data source named in params.yaml (`ingest.source`).

The source is one of
- a local path or glob, relative to the repository or absolute (a glob's files are read in
  sorted order and concatenated);
- a URL one of DVC's filesystems reads (`s3://bucket/key`, `remote://<dvc remote>/path`, ...),
  globs included; an `s3://` URL on the bucket of a DVC remote uses that remote's settings
  (endpoint, region, profile);
- a SQLAlchemy URL, when `ingest.query` is set: the query's result.

The snapshot is written as canonical CSV (the same table gives the same bytes, so the same
DVC hash) to data/snapshot/data.csv, with a record {source, ingested_at, rows, md5} in
data/snapshot/record.json. DVC runs this stage every time (always_changed); when the bytes
equal the snapshot already there, neither file is touched, so dvc.lock does not change and
no later stage re-runs. A local source's files are also fingerprinted (`source_md5` in the
record): when they are the bytes the snapshot was made from, the stage stops before reading
them, so a retrain with nothing new does not even import pandas.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import data

if TYPE_CHECKING:
    import pandas as pd

REPRO_OF_ENV = "MLRIG_REPRO_OF"  # a verification re-run: it trains on the recorded snapshot
GLOB_CHARS = frozenset("*?[")
SECRET_WORDS = ("pass", "secret", "token", "key", "credential", "signature")


def fail(message: str) -> SystemExit:
    """One line on stderr and a non-zero exit: the stage failed, nothing was written."""
    return SystemExit(f"ingest: {message}")


def is_url(source: str) -> bool:
    scheme = urlsplit(source).scheme
    return "://" in source and len(scheme) > 1  # C:\\x is a path, not a URL


def public_source(source: str) -> str:
    """The source without credentials: no user:password@, no secret-looking query values."""
    if not is_url(source):
        return source
    parts = urlsplit(source)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not any(word in k.lower() for word in SECRET_WORDS)]
    if "@" not in parts.netloc and len(kept) == len(pairs):
        return source  # nothing to strip (and sqlite:////abs/path keeps its four slashes)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept)))


# -- readers --------------------------------------------------------------------------------
def local_files(source: str, root: Path = data.ROOT) -> list[Path]:
    """The files a local source names, in the order they are read."""
    pattern = Path(source).expanduser()
    pattern = pattern if pattern.is_absolute() else root / pattern
    if GLOB_CHARS & set(source):
        return sorted(Path(f) for f in glob.glob(str(pattern), recursive=True) if Path(f).is_file())
    return [pattern] if pattern.is_file() else []


def read_local(source: str, root: Path = data.ROOT) -> pd.DataFrame:
    import pandas as pd

    files = local_files(source, root)
    if not files:
        raise fail(f"no file matches ingest.source {source!r}")
    return pd.concat([data.read_csv(f) for f in files], ignore_index=True)


def source_fingerprint(source: str, query: str | None, root: Path = data.ROOT) -> str | None:
    """MD5 over a local source's files (names and bytes, in read order); None for a URL or
    a query, which must be read to know whether anything changed."""
    if query or is_url(source):
        return None
    files = local_files(source, root)
    if not files:
        return None
    digest = hashlib.md5(usedforsecurity=False)
    for file in files:
        content = file.read_bytes()
        digest.update(f"{file.name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def unchanged(
    source: str,
    fingerprint: str | None,
    csv: Path = data.SNAPSHOT_CSV,
    record_file: Path = data.RECORD_FILE,
) -> dict[str, Any] | None:
    """The record, when the source's files are those the snapshot there was made from."""
    if fingerprint is None or not (record_file.is_file() and csv.is_file()):
        return None
    try:
        record = json.loads(record_file.read_text())
    except ValueError:
        return None
    same = (
        record.get("source_md5") == fingerprint
        and record.get("source") == public_source(source)
        and record.get("md5") == md5(csv.read_bytes())
    )
    return record if same else None


def dvc_filesystem(url: str, root: Path = data.ROOT) -> tuple[Any, str]:
    """(fsspec filesystem, path) for url, through DVC's own filesystems and config."""
    from dvc.fs import get_cloud_fs
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
    conf: dict[str, Any] = {"url": url}
    target = urlsplit(url)
    for remote in (config.get("remote") or {}).values():
        base = urlsplit(str(remote.get("url", "")))
        if (base.scheme, base.netloc) == (target.scheme, target.netloc):
            conf = {**remote, "url": url}  # the stack's bucket: the remote's endpoint
            break
    cls, kwargs, path = get_cloud_fs(config, **conf)
    return cls(**kwargs), path


def remote_is_file(fs: Any, path: str, url: str) -> bool:
    """Whether the URL's server has a file at path. fsspec's `isfile` answers False for a
    server it cannot reach as for a missing file; here an unreachable server (or one that
    refuses with anything but 404/410) is its own one-line failure."""
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        cause = exc.__cause__  # what the HTTP filesystem turned into "not found"
        status = getattr(cause, "status", None)
        if cause is None or status in (404, 410):
            return False
        reason = (
            f"the server answered {status}"
            if isinstance(status, int)
            else (str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
        )
        public = public_source(url)
        raise fail(f"could not reach {public}: {reason.replace(url, public)[:300]}") from None
    return info.get("type", "file") != "directory"


def read_url(url: str, root: Path = data.ROOT) -> pd.DataFrame:
    import pandas as pd

    fs, path = dvc_filesystem(url, root)
    if GLOB_CHARS & set(path):
        files = sorted(f for f in fs.glob(path) if fs.isfile(f))
    else:
        files = [path] if remote_is_file(fs, path, url) else []
    if not files:
        raise fail(f"no file matches ingest.source {public_source(url)!r}")
    frames = []
    for file in files:
        with fs.open(file, "rb") as fh:
            frames.append(data.read_csv(fh))
    return pd.concat(frames, ignore_index=True)


def read_sql(url: str, query: str) -> pd.DataFrame:
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(sqlalchemy.text(query), conn)
    finally:
        engine.dispose()


def read_source(source: str, query: str | None, root: Path = data.ROOT) -> pd.DataFrame:
    if query:
        return read_sql(source, query)
    if is_url(source):
        return read_url(source, root)
    return read_local(source, root)


# -- the snapshot ---------------------------------------------------------------------------
def canonical_csv(frame: pd.DataFrame) -> bytes:
    """One text for one table: no index, '\\n' line ends, floats as Python prints them."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def md5(content: bytes) -> str:
    """The hash DVC records for a file (plain MD5 of its bytes)."""
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def write_atomic(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def snapshot(
    frame: pd.DataFrame,
    source: str,
    csv: Path = data.SNAPSHOT_CSV,
    record_file: Path = data.RECORD_FILE,
    fingerprint: str | None = None,
) -> dict[str, Any] | None:
    """Write the snapshot and its record; None (and nothing written) when the bytes are
    those of the snapshot already there."""
    content = canonical_csv(frame)
    if record_file.is_file() and csv.is_file() and csv.read_bytes() == content:
        return None
    record: dict[str, Any] = {
        "source": public_source(source),
        "ingested_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "rows": len(frame),
        "md5": md5(content),
    }
    if fingerprint is not None:
        record["source_md5"] = fingerprint
    write_atomic(csv, content)
    write_atomic(record_file, (json.dumps(record, indent=2) + "\n").encode())
    return record


def main() -> None:
    p = data.params()["ingest"]
    source, query = str(p["source"]), p.get("query") or None
    if os.environ.get(REPRO_OF_ENV) and data.SNAPSHOT_CSV.is_file():
        print("ingest: a verification re-run keeps the recorded snapshot")
        return
    fingerprint = source_fingerprint(source, query)
    kept = unchanged(source, fingerprint)
    if kept is not None:
        print(f"ingest: {kept['source']} unchanged ({kept['rows']} rows), snapshot kept")
        return
    try:
        frame = read_source(source, query)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader's error: one line naming the source
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(f"cannot read {public_source(source)!r}: {detail}") from None
    record = snapshot(frame, source, fingerprint=fingerprint)
    if record is None:
        print(f"ingest: {public_source(source)} unchanged ({len(frame)} rows), snapshot kept")
    else:
        print(f"ingest: snapshot of {record['source']}: {record['rows']} rows, md5 {record['md5']}")


if __name__ == "__main__":
    main()
