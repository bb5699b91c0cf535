"""Captured traffic, read back: the JSON Lines the serving image writes in SageMaker Data
Capture's schema plus an `mlrig` object (docs/monitor.md), under
`<capture root>/yyyy/mm/dd/hh/<writer>-<seq>.jsonl`. Every record is input: it passes the
one record model (`shared.capture.ReadRecord`, the agreed format's tolerant base) before any
value is used, and what fails is counted, never guessed at.

A writer may still be appending to its newest file, so a last line without its newline that
does not parse is a cut line (counted, skipped); any other line that does not parse or validate
is a bad record (counted, the first reason kept).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mlrig.core.shared.capture import ReadRecord

if TYPE_CHECKING:
    import pandas as pd

MAX_LINE = 64 << 20  # one record's line; a longer one is refused, not parsed
_HOUR_PARTS = (re.compile(r"^\d{4}$"), re.compile(r"^\d{2}$"), re.compile(r"^\d{2}$"))
_HOUR = re.compile(r"^\d{2}$")
_FILE = re.compile(r"^[A-Za-z0-9._-]{1,200}\.jsonl$")
# a column name is shown in the terminal, the report and MLflow's metric keys: no control
# characters (a terminal's escapes), not too long
_COLUMN = re.compile(r"^[^\x00-\x1f\x7f-\x9f]{1,200}$")


@dataclass
class Window:
    """The captured rows of one model version between since and until."""

    since: datetime
    until: datetime
    files: int = 0
    records: int = 0
    cut_lines: int = 0
    bad_records: int = 0
    bad_reason: str | None = None
    other_versions: Counter[tuple[str, str]] = field(default_factory=Counter)
    versions: Counter[tuple[str, str]] = field(default_factory=Counter)
    run_ids: Counter[str] = field(default_factory=Counter)  # the runs the records name
    # the rows, kept as the requests sent them: (columns, row values) per run of requests
    # with the same columns (dataframe_split's own shape; a DataFrame is made once, at the end)
    blocks: list[tuple[list[str], list[list[Any]]]] = field(default_factory=list)
    n_rows: int = 0
    predictions: list[Any] = field(default_factory=list)  # one per row, None when unreadable
    inference_ids: list[str] = field(default_factory=list)  # one per row
    row_in_request: list[int] = field(default_factory=list)  # the row's index in its request
    unreadable_bodies: int = 0
    first_unreadable: str | None = None

    def add_rows(self, columns: list[str], values: list[list[Any]]) -> None:
        if self.blocks and self.blocks[-1][0] == columns:
            self.blocks[-1][1].extend(values)
        else:
            self.blocks.append((columns, list(values)))
        self.n_rows += len(values)

    def frame(self) -> pd.DataFrame:
        """Every row, one column per name any request used (absent values are null)."""
        import pandas as pd

        parts = [pd.DataFrame(values, columns=columns) for columns, values in self.blocks]
        if not parts:
            return pd.DataFrame()
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def bad(self, why: str) -> None:
        self.bad_records += 1
        self.bad_reason = self.bad_reason or why


def hour_dirs(root: Path, since: datetime, until: datetime) -> Iterator[Path]:
    """The yyyy/mm/dd/hh folders under root whose hour overlaps [since, until], oldest first
    (names that are not such a folder are not entered)."""
    if not root.is_dir():
        return
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hour = start
    # walk the hours of the span when it is short, else list what exists (a 30-day window
    # is 720 hours; listing is cheaper than that many stats once the tree is sparse)
    if until - start <= timedelta(hours=72):
        while hour <= until:
            where = root / f"{hour:%Y}" / f"{hour:%m}" / f"{hour:%d}" / f"{hour:%H}"
            if where.is_dir() and not where.is_symlink():
                yield where
            hour += timedelta(hours=1)
        return
    for path in sorted(root.glob("*/*/*/*")):
        parts = path.relative_to(root).parts
        if not all(p.fullmatch(n) for p, n in zip((*_HOUR_PARTS, _HOUR), parts, strict=True)):
            continue
        try:
            when = datetime(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), tzinfo=UTC)
        except ValueError:
            continue
        if start <= when <= until and path.is_dir() and not path.is_symlink():
            yield path


def _rows(request: Any) -> tuple[list[str], list[list[Any]]] | None:
    """(columns, row values) of a request in a scoring format the server accepts; None for
    anything else."""
    if not isinstance(request, dict) or len(request) != 1:
        return None
    ((key, data),) = request.items()
    if key == "dataframe_split" and isinstance(data, dict):
        columns, values = data.get("columns"), data.get("data")
        if not isinstance(columns, list) or not isinstance(values, list):
            return None
        if not all(isinstance(c, str) and _COLUMN.fullmatch(c) for c in columns):
            return None
        if not all(isinstance(r, list) and len(r) == len(columns) for r in values):
            return None
        return columns, values
    if key in ("dataframe_records", "instances", "inputs"):
        if isinstance(data, dict):  # {"col": [values]} (a column-oriented batch)
            if not all(isinstance(v, list) for v in data.values()):
                return (list(data), [list(data.values())]) if data else None
            lengths = {len(v) for v in data.values()}
            if len(lengths) != 1:
                return None
            (n,) = lengths
            names = list(data)
            return names, [[data[k][i] for k in names] for i in range(n)]
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            names = list(dict.fromkeys(k for r in data for k in r))
            return names, [[r.get(k) for k in names] for r in data]
    return None


def _predictions(response: Any, n: int) -> list[Any]:
    found = response.get("predictions") if isinstance(response, dict) else None
    if isinstance(found, list) and len(found) == n:
        return found
    return [None] * n


def parse_line(line: bytes) -> ReadRecord:
    """One record, validated; ValueError (pydantic's ValidationError is one) when it is not."""
    return ReadRecord.model_validate_json(line)


def read(
    root: Path,
    since: datetime,
    until: datetime,
    *,
    model: str | None = None,
    version: str | None = None,
) -> Window:
    """Every record under root captured in [since, until], of model/version when given;
    records of other versions are counted in other_versions, not read."""
    window = Window(since=since, until=until)
    for hour in hour_dirs(root, since, until):
        for path in sorted(hour.iterdir()):
            if not _FILE.fullmatch(path.name) or path.is_symlink() or not path.is_file():
                continue
            window.files += 1
            _read_file(path, window, model, version)
    return window


def _read_file(path: Path, window: Window, model: str | None, version: str | None) -> None:
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i == len(lines) - 1 and not complete
        if len(line) > MAX_LINE:
            window.bad(f"{path.name}: a line longer than {MAX_LINE >> 20} MiB")
            continue
        try:
            record = parse_line(line)
        except ValidationError as exc:
            if last:
                window.cut_lines += 1
                continue
            errors = exc.errors()
            loc = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
            msg = errors[0]["msg"] if errors else str(exc)
            window.bad(f"{path.name} line {i + 1}: {loc or 'record'}: {msg}")
            continue
        _add(record, window, model, version)


def _add(record: ReadRecord, window: Window, model: str | None, version: str | None) -> None:
    when = record.eventMetadata.inferenceTime
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if not window.since <= when <= window.until:
        return
    served = (record.mlrig.model, record.mlrig.version)
    if (model is not None and served[0] != model) or (version is not None and served[1] != version):
        window.other_versions[served] += 1
        return
    window.records += 1
    window.versions[served] += 1
    window.run_ids[record.mlrig.run_id or "none"] += 1
    try:
        request = record.captureData.endpointInput.value()
        response = record.captureData.endpointOutput.value()
    except ValueError as exc:
        _unreadable(window, record, str(exc))
        return
    found = _rows(request)
    if found is not None and not all(_COLUMN.fullmatch(c) for c in found[0]):
        found = None
    if found is None:
        _unreadable(window, record, "a request body in no scoring format the server accepts")
        return
    columns, values = found
    window.add_rows(columns, values)
    window.predictions.extend(_predictions(response, len(values)))
    window.inference_ids.extend([record.eventMetadata.inferenceId] * len(values))
    window.row_in_request.extend(range(len(values)))


def _unreadable(window: Window, record: ReadRecord, why: str) -> None:
    window.unreadable_bodies += 1
    window.first_unreadable = window.first_unreadable or (
        f"inference {record.eventMetadata.inferenceId}: {why[:120]}"
    )
