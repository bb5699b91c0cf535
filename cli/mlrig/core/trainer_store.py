"""The trainer's jobs, kept in SQLite so a restart loses none; each job's output in a log file.

One row per `POST /train`. States move queued -> running -> succeeded | failed, and only
`claim_next` moves a job to running (in one write transaction, oldest first), so two workers
could never run two jobs at once even if there were two.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

State = Literal["queued", "running", "succeeded", "failed"]
INTERRUPTED = "interrupted: service stopped"
LOG_TAIL_LINES = 40

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    step TEXT,
    push_image INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    result TEXT,
    error TEXT,
    pgid INTEGER
)
"""


class Job(BaseModel):
    id: str
    state: State
    step: str | None = None
    push_image: bool | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    pgid: int | None = None  # the child's process group while it runs (never shown)

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data.pop("seq")
    data["result"] = json.loads(data["result"]) if data["result"] else None
    if data["push_image"] is not None:
        data["push_image"] = bool(data["push_image"])
    return Job.model_validate(data)


class JobStore:
    """The job table and the log folder under one state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "jobs.db"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:  # WAL: readers (GET) never wait for the worker's writes
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)
        finally:
            con.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short connection per operation (threads never share one), one transaction."""
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def log_path(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    def add(self, push_image: bool | None) -> Job:
        job_id = uuid.uuid4().hex
        push = None if push_image is None else int(push_image)
        with self._tx() as con:
            con.execute(
                "INSERT INTO jobs (id, state, push_image, created_at) VALUES (?, 'queued', ?, ?)",
                (job_id, push, _now()),
            )
        self.log_path(job_id).touch()
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._tx() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs first."""
        with self._tx() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def in_state(self, state: State) -> list[Job]:
        with self._tx() as con:
            rows = con.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq", (state,))
            return [_job(r) for r in rows.fetchall()]

    def claim_next(self) -> Job | None:
        """The oldest queued job, now running; None when nothing waits or one already runs."""
        with self._tx() as con:
            if con.execute("SELECT 1 FROM jobs WHERE state = 'running'").fetchone():
                return None
            row = con.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE jobs SET state = 'running', step = 'starting', started_at = ? WHERE id = ?",
                (_now(), row["id"]),
            )
        return self.get(row["id"])

    def set_step(self, job_id: str, step: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE jobs SET step = ? WHERE id = ?", (step, job_id))

    def set_pgid(self, job_id: str, pgid: int | None) -> None:
        with self._tx() as con:
            con.execute("UPDATE jobs SET pgid = ? WHERE id = ?", (pgid, job_id))

    def finish(
        self,
        job_id: str,
        state: Literal["succeeded", "failed"],
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        with self._tx() as con:
            con.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ?, pgid = NULL "
                "WHERE id = ?",
                (state, json.dumps(result) if result is not None else None, error, _now(), job_id),
            )

    def log_tail(self, job_id: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        try:
            with self.log_path(job_id).open(errors="replace") as fh:
                return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
        except FileNotFoundError:
            return []
