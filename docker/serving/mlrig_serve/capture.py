"""Request capture: a sampled share of answered predictions written as JSON lines in
SageMaker Data Capture's schema plus an `mlrig` object (model, version, digest, run id).

The request path only samples, stamps and appends to a bounded in-memory buffer (a full
buffer drops the record and counts it); a writer thread takes the buffer in batches, encodes
the records and appends them to `<dir>/yyyy/mm/dd/hh/<writer>-<seq>.jsonl` (the UTC hour of
each record; a new file past `file_bytes`). A failed write (full disk, permissions) counts its
records as errors, closes the file (its last line may be cut; readers skip it) and the next
batch starts a new one: capture never slows or fails a prediction. `close()` flushes what is
queued (the server calls it on SIGTERM). `stats()` is what GET /capture answers.

On AWS (MLRIG_CAPTURE_DIR `s3://BUCKET/captures/ENDPOINT`) each batch becomes objects per
hour folder, `yyyy/mm/dd/hh/<writer>-<seq>.jsonl`, each written complete by one SigV4-signed
PUT (`s3put`, the task's or function's own credentials) of at most PUT_RECORDS records and
PUT_BYTES bytes; a refused PUT counts its records as errors and is not retried. In the warm
(Fargate) container the writer thread flushes on its timer, as on the local stack. Lambda
freezes the process between invocations, so there the thread is not started: the capture
extension (`extension`) calls `flush_due()` after each invocation's answer is posted, which
writes the buffer when it is due (its oldest record is MLRIG_CAPTURE_FLUSH_SECONDS old, or it
is half full); the answer never waits for it.

Environment: MLRIG_CAPTURE_PERCENT (0-100, default 0 = off), MLRIG_CAPTURE_DIR, and the
record's identity MLRIG_ENDPOINT, MLRIG_MODEL_NAME, MLRIG_MODEL_VERSION, MLRIG_IMAGE_DIGEST,
MLRIG_RUN_ID; tunables MLRIG_CAPTURE_QUEUE_RECORDS (1000), MLRIG_CAPTURE_QUEUE_BYTES (16 MiB),
MLRIG_CAPTURE_FILE_BYTES (64 MiB), MLRIG_CAPTURE_FLUSH_SECONDS (0.5).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

INFERENCE_ID_HEADER = b"x-inference-id"
EVENT_VERSION = "0"
PUT_RECORDS = 500  # one S3 object holds at most this many records ...
PUT_BYTES = 4 * 2**20  # ... and this many bytes (a larger record is one object alone)


class Settings(NamedTuple):  # not a dataclass: tests load this file without registering it
    percent: float = 0.0
    directory: str | None = None
    endpoint: str | None = None
    model: str = ""
    version: str = ""
    digest: str = ""
    run_id: str = ""
    max_records: int = 1000
    max_bytes: int = 16 * 2**20
    file_bytes: int = 64 * 2**20
    flush_seconds: float = 0.5

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """The settings, or SystemExit with one line when a value is not usable."""
        env = dict(os.environ if env is None else env)
        d = cls()
        try:
            settings = cls(
                percent=float(env.get("MLRIG_CAPTURE_PERCENT", d.percent)),
                directory=env.get("MLRIG_CAPTURE_DIR") or None,
                endpoint=env.get("MLRIG_ENDPOINT") or None,
                model=env.get("MLRIG_MODEL_NAME", ""),
                version=env.get("MLRIG_MODEL_VERSION", ""),
                digest=env.get("MLRIG_IMAGE_DIGEST", ""),
                run_id=env.get("MLRIG_RUN_ID", ""),
                max_records=int(env.get("MLRIG_CAPTURE_QUEUE_RECORDS", d.max_records)),
                max_bytes=int(env.get("MLRIG_CAPTURE_QUEUE_BYTES", d.max_bytes)),
                file_bytes=int(env.get("MLRIG_CAPTURE_FILE_BYTES", d.file_bytes)),
                flush_seconds=float(env.get("MLRIG_CAPTURE_FLUSH_SECONDS", d.flush_seconds)),
            )
        except ValueError as exc:
            raise SystemExit(f"mlrig-serve: a capture setting is not a number: {exc}") from exc
        if not 0 <= settings.percent <= 100:
            raise SystemExit(
                f"mlrig-serve: MLRIG_CAPTURE_PERCENT {settings.percent:g} is not 0-100"
            )
        if settings.percent > 0 and not settings.directory:
            raise SystemExit("mlrig-serve: MLRIG_CAPTURE_PERCENT is set but MLRIG_CAPTURE_DIR not")
        if min(settings.max_records, settings.max_bytes, settings.file_bytes) < 1 or not (
            settings.flush_seconds > 0
        ):
            raise SystemExit(f"mlrig-serve: capture limits must be positive, got {settings}")
        return settings


class _Pending(NamedTuple):
    inference_id: str
    at: float  # epoch seconds
    request: bytes
    request_type: str
    response: bytes
    response_type: str


def new_inference_id() -> str:
    return str(uuid.uuid4())


def _data(body: bytes, content_type: str, mode: str) -> dict[str, str]:
    """The body as SageMaker records it: the text itself when it is UTF-8 JSON (the server
    answered 200 to it, so JSON content was parsed), else base64."""
    if "json" in content_type.lower():
        try:
            return {
                "observedContentType": content_type,
                "mode": mode,
                "data": body.decode("utf-8"),
                "encoding": "JSON",
            }
        except UnicodeDecodeError:
            pass
    return {
        "observedContentType": content_type,
        "mode": mode,
        "data": base64.b64encode(body).decode("ascii"),
        "encoding": "BASE64",
    }


def _timestamp(at: float) -> tuple[str, str]:
    """(inferenceTime as 2026-12-07T12:34:56.789Z, the record's yyyy/mm/dd/hh folder)."""
    t = time.gmtime(at)
    millis = int(at * 1000) % 1000
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{millis:03d}Z",
        time.strftime("%Y/%m/%d/%H", t),
    )


class Capture:
    """The sampler, the bounded buffer and the writer thread of one server process."""

    def __init__(
        self,
        settings: Settings,
        *,
        sample: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.writer_id = uuid.uuid4().hex[:12]
        self._sample, self._clock = sample, clock
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._folder = ""  # the yyyy/mm/dd/hh of the open file
        self._file_size = 0
        self._seq = 0
        self.sampled = self.written = self.dropped = self.errors = self.files = 0
        self.last_error: str | None = None
        self._s3: tuple[str, str] | None = None  # (bucket, key prefix) when writing to S3
        directory = settings.directory or ""
        if directory.startswith("s3://"):
            bucket, _, prefix = directory[5:].partition("/")
            self._s3 = (bucket, prefix.strip("/"))

    @property
    def enabled(self) -> bool:
        return self.settings.percent > 0

    # -- the request path: no I/O, no encoding ---------------------------------------------
    def offer(
        self,
        inference_id: str,
        request: bytes,
        request_type: str,
        response: bytes,
        response_type: str,
    ) -> bool:
        """Queue this exchange when it is sampled and the buffer has room; True if queued."""
        pct = self.settings.percent
        if pct <= 0 or (pct < 100 and self._sample() * 100 >= pct):
            return False
        size = len(request) + len(response)
        rec = _Pending(inference_id, self._clock(), request, request_type, response, response_type)
        with self._lock:
            self.sampled += 1
            if (
                self._stopping.is_set()
                or len(self._pending) >= self.settings.max_records
                or self._pending_bytes + size > self.settings.max_bytes
            ):
                self.dropped += 1
                return False
            self._pending.append(rec)
            self._pending_bytes += size
            half_full = len(self._pending) * 2 >= self.settings.max_records
        if half_full:
            self._wake.set()
        return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            queued = len(self._pending)
            return {
                "percent": self.settings.percent,
                "writer": self.writer_id,
                "sampled": self.sampled,
                "written": self.written,
                "dropped": self.dropped,
                "errors": self.errors,
                "queued": queued,
                "files": self.files,
                "last_error": self.last_error,
            }

    # -- the writer thread -----------------------------------------------------------------
    def start(self) -> Capture:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlrig-capture", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 8.0) -> bool:
        """Stop taking records, write what is queued and close the file; True when the
        writer finished within timeout (the engine kills the container 10 s after SIGTERM)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def flush_due(self, timeout: float | None = None) -> int:
        """Write the buffer now when it is due (see the module's doc); the number of records
        taken. For a process that is frozen between calls (Lambda), in place of the thread;
        timeout bounds each S3 PUT (the invocation's deadline)."""
        with self._lock:
            if not self._pending:
                return 0
            age = self._clock() - self._pending[0].at
            due = (
                age >= self.settings.flush_seconds
                or len(self._pending) * 2 >= self.settings.max_records
                or self._stopping.is_set()
            )
        if not due:
            return 0
        batch = self._take()
        try:
            self.write_batch(batch, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - capture never fails the invocation
            with self._lock:
                self.errors += len(batch)
                self.last_error = f"{type(exc).__name__}: {exc}"
        return len(batch)

    def _take(self) -> list[_Pending]:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        return batch

    def _run(self) -> None:
        while True:
            self._wake.wait(self.settings.flush_seconds)
            self._wake.clear()
            batch = self._take()
            if batch:
                try:
                    self.write_batch(batch)
                except Exception as exc:  # noqa: BLE001 - the writer outlives any record
                    with self._lock:
                        self.errors += len(batch)
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    self._close_file()
            if self._stopping.is_set():
                with self._lock:
                    done = not self._pending
                if done:
                    break
        self._close_file()

    def _line(self, rec: _Pending) -> tuple[str, bytes]:
        when, folder = _timestamp(rec.at)
        s = self.settings
        doc = {
            "captureData": {
                "endpointInput": _data(rec.request, rec.request_type, "INPUT"),
                "endpointOutput": _data(rec.response, rec.response_type, "OUTPUT"),
            },
            "eventMetadata": {
                "eventId": rec.inference_id,
                "inferenceId": rec.inference_id,
                "inferenceTime": when,
            },
            "eventVersion": EVENT_VERSION,
            "mlrig": {
                "endpoint": s.endpoint,
                "model": s.model,
                "version": s.version,
                "digest": s.digest,
                "run_id": s.run_id,
            },
        }
        return folder, (json.dumps(doc, separators=(",", ":")) + "\n").encode()

    def write_batch(self, batch: list[_Pending], timeout: float | None = None) -> None:
        """Append the batch, one write per file; a failure counts that chunk's records."""
        if self._s3 is not None:
            return self._put_batch(batch, timeout or 10.0)
        chunk: list[bytes] = []
        size = 0
        for rec in batch:
            folder, line = self._line(rec)
            projected = self._file_size + size  # of the file this chunk goes to
            if folder != self._folder or (
                projected and projected + len(line) > self.settings.file_bytes
            ):
                self._flush(chunk)
                chunk, size = [], 0
                self._close_file()
                self._folder = folder
            chunk.append(line)
            size += len(line)
        self._flush(chunk)

    def _put_batch(self, batch: list[_Pending], timeout: float) -> None:
        """Objects of at most PUT_RECORDS/PUT_BYTES per hour folder, each PUT complete; a
        refused PUT counts its records as errors (they are lost, never retried)."""
        from .s3put import PutError, put_object

        assert self._s3 is not None
        bucket, prefix = self._s3
        parts: list[tuple[str, list[bytes]]] = []
        sizes: dict[int, int] = {}
        open_part: dict[str, int] = {}  # folder -> index of its part being filled
        for rec in batch:
            folder, line = self._line(rec)
            i = open_part.get(folder)
            if i is None or len(parts[i][1]) >= PUT_RECORDS or sizes[i] + len(line) > PUT_BYTES:
                i = open_part[folder] = len(parts)
                parts.append((folder, []))
                sizes[i] = 0
            parts[i][1].append(line)
            sizes[i] += len(line)
        for folder, lines in parts:
            self._seq += 1
            key = f"{prefix}/{folder}/{self.writer_id}-{self._seq:06d}.jsonl".lstrip("/")
            try:
                put_object(bucket, key, b"".join(lines), timeout=timeout)
            except (PutError, RuntimeError) as exc:
                with self._lock:
                    self.errors += len(lines)
                    self.last_error = str(exc)
                # no one asks a Lambda function's GET /capture: its log says it
                print(f"mlrig-serve: capture lost {len(lines)} record(s): {exc}", file=sys.stderr)
                continue
            with self._lock:
                self.written += len(lines)
                self.files += 1

    def _flush(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        try:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            data = memoryview(b"".join(chunk))
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
                self._file_size += n
        except OSError as exc:
            with self._lock:
                self.errors += len(chunk)
                self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            self._close_file()
            return
        with self._lock:
            self.written += len(chunk)

    def _open(self) -> None:
        assert self.settings.directory is not None
        folder = self.settings.directory
        if not os.path.exists(folder):  # the mount exists; image run's folder may not yet
            os.makedirs(folder, mode=0o700, exist_ok=True)
        for part in self._folder.split("/"):  # each level owner-only (makedirs' mode is the
            folder = os.path.join(folder, part)  # leaf's only; captures hold request bodies)
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o700)
        self._seq += 1
        name = f"{self.writer_id}-{self._seq:06d}.jsonl"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(os.path.join(folder, name), flags, 0o600)
        self._file_size = 0
        with self._lock:
            self.files += 1

    def _close_file(self) -> None:
        self._file_size = 0
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
