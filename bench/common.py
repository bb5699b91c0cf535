"""What the benchmarks share: the UTC stamp that names a run, and where its results go.

Imported as `common` (each script runs as `python bench/NAME.py`, so bench/ is on sys.path).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def utc_stamp(zulu: bool = True) -> str:
    """e.g. 20261126T134845Z: sorts by time, safe in a file name."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S" + ("Z" if zulu else ""))


def record(stem: str, doc: object, table: str) -> None:
    """Keep one run: results/STEM.json (every sample) and results/STEM.md (the table)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table if table.endswith("\n") else table + "\n")
