"""The trainer's jobs, kept in SQLite so a restart loses none; each job's output in a log file.

One row per `POST /train`. States move queued -> running -> succeeded | failed, and only
`claim_next` moves a job to running (in one write transaction, oldest first), so two workers
could never run two jobs at once even if there were two. `add` refuses a job beyond
`max_queued` waiting ones, in the same transaction as the insert.

The folder belongs to one service at a time: `lock` takes `trainer.lock` beside jobs.db
(held until released), and only its holder may treat a `running` row as left over. A row is
input like any file an earlier process left: a job id that is no 32-digit hex (what `add`
makes) or a process group id <= 1 is refused before it names a path or a process, and a
remote job's task is a container id or an ECS task ARN before it reaches an argument.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.errors import ConfigError, Conflict

if TYPE_CHECKING:
    import filelock

State = Literal["queued", "running", "succeeded", "failed"]
INTERRUPTED = "interrupted: service stopped"
LOG_TAIL_LINES = 40
JOB_ID = r"^[0-9a-f]{32}$"
# a local task's container id, or an ECS task's ARN (what `retrain --remote --attach` takes)
TASK_ID = (
    r"^([0-9a-f]{12,64}"
    r"|arn:aws[a-z-]*:ecs:[a-z0-9-]{1,32}:[0-9]{12}:task/[A-Za-z0-9_-]{1,255}/[0-9a-f]{32})$"
)
LOCK = "trainer.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    step TEXT,
    push_image INTEGER,
    compute TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    result TEXT,
    error TEXT,
    pgid INTEGER,
    task TEXT
)
"""


class QueueFull(Conflict):
    """`add` found `max_queued` jobs waiting already."""


def valid_id(job_id: str) -> bool:
    return re.fullmatch(JOB_ID, job_id) is not None


class Compute(BaseModel):
    """A job run as `mlrig retrain --remote`: the task's size (None: retrain's default)."""

    model_config = ConfigDict(extra="forbid")
    cpu: int | None = Field(default=None, gt=0, le=16384)  # CPU units
    memory_mib: int | None = Field(default=None, gt=0, le=122880)
    spot: bool = False


class Job(BaseModel):
    id: str = Field(pattern=JOB_ID)
    state: State
    step: str | None = None
    push_image: bool | None = None
    compute: Compute | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    pgid: int | None = Field(default=None, gt=1)  # the child's group while it runs (never shown)
    # a remote job's task, as the caller's record named it while the job ran (never shown):
    # what start-up recovery attaches to when the service died before the job ended
    task: str | None = Field(default=None, pattern=TASK_ID)

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _job(row: sqlite3.Row, db: Path) -> Job:
    data = dict(row)
    data.pop("seq")
    try:
        data["result"] = json.loads(data["result"]) if data["result"] else None
        data["compute"] = json.loads(data["compute"]) if data.get("compute") else None
        if data["push_image"] is not None:
            data["push_image"] = bool(data["push_image"])
        return Job.model_validate(data)
    except (ValueError, TypeError, ValidationError) as exc:
        where = exc.errors()[0]["loc"] if isinstance(exc, ValidationError) else ("result",)
        raise ConfigError(
            f"{db} holds a job mlrig did not write (bad {'.'.join(map(str, where))})",
            hint="stop the trainer and move that file aside; it starts a new one",
        ) from None


class JobStore:
    """The job table and the log folder under one state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "jobs.db"
        self.logs = root / "logs"
        from mlrig.core.shared.files import private_dir, private_umask

        private_dir(self.logs)
        # owner-only whatever the process's umask (the demo runs a Trainer in its own
        # process); SQLite gives the -wal and -shm files the database file's mode
        with private_umask():
            con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
            try:  # WAL: readers (GET) never wait for the worker's writes
                con.execute("PRAGMA journal_mode=WAL")
                con.execute(_SCHEMA)
                columns = {row[1] for row in con.execute("PRAGMA table_info(jobs)")}
                for column in ("compute", "task"):  # a store an earlier mlrig made
                    if column not in columns:
                        con.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
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

    def lock(self) -> filelock.BaseFileLock:
        """This folder's service lock, taken now (released by the caller), or Conflict when
        another service holds it. Not per thread: the service may stop from another one."""
        import filelock

        lock = filelock.FileLock(self.root / LOCK, timeout=0, mode=0o600, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise Conflict(
                f"another `mlrig trainer serve` runs this repository's jobs ({self.root})",
                hint="use that one, or stop it first: one trainer per repository",
            ) from None
        return lock

    def log_path(self, job_id: str) -> Path:
        if not valid_id(job_id):
            raise ConfigError(f"{job_id!r} is no job id mlrig made")
        return self.logs / f"{job_id}.log"

    def add(
        self,
        push_image: bool | None,
        *,
        compute: Compute | None = None,
        max_queued: int | None = None,
        unless_busy: bool = False,
    ) -> Job:
        """A new queued job. unless_busy (the monitor schedule's retrain): refused while any
        job is queued or running, checked in the insert's own transaction."""
        job_id = uuid.uuid4().hex
        push = None if push_image is None else int(push_image)
        with self._tx() as con:
            if unless_busy:
                busy = con.execute(
                    "SELECT id, state FROM jobs WHERE state IN ('queued', 'running') "
                    "ORDER BY seq LIMIT 1"
                ).fetchone()
                if busy is not None:
                    raise QueueFull(
                        f"job {busy['id']} is {busy['state']} already: no second retrain",
                        hint="it runs the same pipeline on the same data",
                    )
            if max_queued is not None:
                (waiting,) = con.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'queued'"
                ).fetchone()
                if waiting >= max_queued:
                    raise QueueFull(
                        f"{waiting} jobs are queued already, the most this trainer keeps",
                        hint="retry once one has started (GET /train lists them)",
                    )
            con.execute(
                "INSERT INTO jobs (id, state, push_image, compute, created_at) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (job_id, push, compute.model_dump_json() if compute else None, _now()),
            )
        self.log_path(job_id).touch(mode=0o600)
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        if not valid_id(job_id):
            return None
        with self._tx() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row, self.db) if row else None

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs first."""
        with self._tx() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r, self.db) for r in rows]

    def in_state(self, state: State) -> list[Job]:
        with self._tx() as con:
            rows = con.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq", (state,))
            return [_job(r, self.db) for r in rows.fetchall()]

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

    def set_task(self, job_id: str, task: str) -> None:
        if re.fullmatch(TASK_ID, task) is None:
            raise ConfigError(f"{task[:80]!r} is no task id mlrig made")
        with self._tx() as con:
            con.execute("UPDATE jobs SET task = ? WHERE id = ?", (task, job_id))

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
        if not valid_id(job_id):
            return []
        try:
            with self.log_path(job_id).open(errors="replace") as fh:
                return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
        except FileNotFoundError:
            return []
