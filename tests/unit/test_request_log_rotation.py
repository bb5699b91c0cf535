"""The endpoints' request logs rotate by size with a bounded number of kept files, and readers
(`deploy logs`, the canary's bake) read across the rotated files in order, losing nothing a
writer appended to a file after it was renamed. Files and the keeper's sweep only: the real
nginx reopening its logs is tests/integration/test_request_log_rotation.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig.core.deploy import traffic
from mlrig.core.shared import rotation
from mlrig.core.stack.local import access_logs


def record(i: int) -> bytes:
    return (
        json.dumps(
            {
                "msec": 1_700_000_000 + i,
                "status": 200,
                "request_time": 0.002,
                "method": "POST",
                "uri": "/endpoints/churn/invocations",
                "request_id": f"{i:032x}",
            }
        ).encode()
        + b"\n"
    )


def ids(batch: traffic.Batch) -> list[int]:
    return [int(r.request_id, 16) for r in batch.requests]


def test_rotation_keeps_at_most_keep_files_and_drops_the_oldest(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    for i in range(6):
        log.write_bytes(record(i))
        assert rotation.rotate(log, keep=3)
    assert not log.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "churn.log.1",
        "churn.log.2",
        "churn.log.3",
    ]
    assert [rotation.rotated(log, n).read_bytes() for n in (3, 2, 1)] == [
        record(3),
        record(4),
        record(5),
    ]
    assert rotation.rotate(log, keep=3) is False  # nothing to rotate: nothing shifts
    # a smaller keep than before drops the surplus
    log.write_bytes(record(6))
    rotation.rotate(log, keep=1)
    assert [p.name for p in rotation.files(log)] == ["churn.log.1"]
    with pytest.raises(ValueError, match="at least one"):
        rotation.rotate(log, keep=0)


def test_a_reader_follows_its_file_across_a_rotation_and_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    log.write_bytes(record(0) + record(1))
    first = traffic.read(log)
    assert ids(first) == [0, 1]
    # the writer appends, the file is renamed, the writer (not told yet) appends to the
    # renamed file, then reopens NAME and goes on there
    with log.open("ab") as writer:
        writer.write(record(2))
        rotation.rotate(log, keep=2)
        writer.write(record(3))
    log.write_bytes(record(4))
    second = traffic.read(log, start=first.end)
    assert ids(second) == [2, 3, 4]
    assert traffic.read(log, start=second.end).requests == []
    # the whole chain, oldest first, for a reader with no mark; and its last bytes
    assert ids(traffic.read(log)) == [0, 1, 2, 3, 4]
    tail = traffic.read(log, tail_bytes=len(record(3)) * 2 + 5)
    assert ids(tail) == [3, 4]  # the cut first line left out, across two files


def test_a_mark_on_a_dropped_file_reads_from_the_oldest_kept(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    log.write_bytes(record(0))
    mark = traffic.read(log).end
    for i in range(1, 4):
        rotation.rotate(log, keep=1)
        log.write_bytes(record(i))
    # the marked file was dropped two rotations ago (and a new file may well have its
    # inode): what is kept is read, from its first line
    assert ids(traffic.read(log, start=mark)) == [2, 3]


def test_end_marks_what_is_written_so_far(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    assert rotation.end(log) == rotation.Mark()
    log.write_bytes(record(0))
    start = rotation.end(log)
    with log.open("ab") as writer:
        writer.write(record(1))
        rotation.rotate(log, keep=3)
        writer.write(record(2))
    assert ids(traffic.read(log, start=start)) == [1, 2]


def test_the_keepers_sweep_rotates_full_logs_and_retries_an_unreopened_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "full.log").write_bytes(record(0) * 10)
    (tmp_path / "small.log").write_bytes(record(1))
    limit = len(record(0)) * 5
    assert access_logs.sweep(tmp_path, limit, keep=2) == [tmp_path / "full.log"]
    assert (tmp_path / "full.log.1").exists() and (tmp_path / "small.log").exists()
    # nginx did not reopen (the signal got lost): the next sweep asks again, rotates nothing
    assert access_logs.sweep(tmp_path, limit, keep=2) == [tmp_path / "full.log"]
    assert (tmp_path / "full.log.1").exists() and not (tmp_path / "full.log.2").exists()
    (tmp_path / "full.log").write_bytes(b"")  # reopened
    assert access_logs.sweep(tmp_path, limit, keep=2) == []


def test_deleting_an_endpoint_removes_its_rotated_logs(tmp_path: Path) -> None:
    log = tmp_path / "churn.log"
    log.write_bytes(record(0))
    rotation.rotate(log, keep=3)
    log.write_bytes(record(1))
    rotation.remove(log)
    assert list(tmp_path.iterdir()) == []


def test_the_keeper_reopens_after_a_rotation_survives_an_error_and_exits_with_nginx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import processes

    nginx_pid = tmp_path / "nginx.pid"
    running = iter([True, True, True, False])
    rec = processes.PidRecord(4242, 0.0, "nginx")
    monkeypatch.setattr(
        access_logs.processes,
        "status",
        lambda f: (processes.Status.RUNNING if next(running) else processes.Status.STOPPED, rec),
    )
    reopened: list[int] = []

    def reopen(pid: int) -> bool:
        reopened.append(pid)
        return True

    monkeypatch.setattr(access_logs.nginx, "reopen", reopen)
    monkeypatch.setattr(access_logs.time, "sleep", lambda _s: None)
    sweeps: list[list[Path] | OSError] = [
        OSError("No space left on device"),
        [tmp_path / "ep.log"],
        [],
    ]

    def sweep(logs: Path, max_bytes: int, keep: int) -> list[Path]:
        found = sweeps.pop(0)
        if isinstance(found, OSError):
            raise found
        return found

    monkeypatch.setattr(access_logs, "sweep", sweep)
    access_logs.watch(nginx_pid, tmp_path, max_bytes=1, keep=1, interval=0.01)
    assert reopened == [4242]  # once, after the one sweep that rotated
    assert next(running, "done") == "done"  # it returned when nginx stopped
