"""Issue 27 for the trainer: who you are before what you sent, bodies capped, a bounded queue,
strict input, one service per repository, and no process of a job outliving the service.

Stand-ins for `mlrig retrain` are small scripts written here; the real service as a process
(RSS while an unauthenticated body streams in) is in tests/integration/test_trust_trainer.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.adapters import trainer_http
from mlrig.core.trainer import token as trainer_auth
from mlrig.core.trainer._jobs import MAX_QUEUED, Trainer, state_dir
from mlrig.core.trainer._store import Job, JobStore
from mlrig.core.trainer.serve import Service
from mlrig.errors import ConfigError, Conflict
from mlrig.main import app
from mlrig.wait import wait_until
from tests.helpers import sample

TOKEN = "t0k3n-for-tests-only-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HANG = (
    "import os, pathlib, sys, time\n"
    "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\ntime.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _end(pid: int) -> None:
    """Clean up a process a failing test may have left (only the one this test started)."""
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _never(job: Job) -> list[str]:
    raise AssertionError("no job may run in this test")


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[tuple[Any, Trainer]]:
    """The app on a trainer whose worker never started: every accepted job stays queued."""
    from fastapi.testclient import TestClient

    trainer = Trainer(tmp_path, JobStore(tmp_path / "state"), command=_never, recover=lambda: 0)
    api = trainer_http.create_app(Service(trainer, trainer_auth.Credentials(TOKEN)))
    yield TestClient(api), trainer


# -- who you are before what you sent ------------------------------------------------------------
def test_an_unauthenticated_post_with_a_bad_body_is_401_not_422(idle: tuple) -> None:
    http, trainer = idle
    for body in (b"\x00" * 4096, b'{"push_image": "yes"}', b"{"):
        answer = http.post("/train", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json() == {"detail": "missing or bad credentials"}
    assert trainer.store.recent() == []


def _asgi(api: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """One request straight through the ASGI app: (status, how many body chunks it read)."""
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {
                "type": "http.request",
                "body": chunks[read - 1],
                "more_body": read < len(chunks),
            }
        await asyncio.sleep(3600)  # the client went quiet: never reached by a passing test
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/train",
        "raw_path": b"/train",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    asyncio.run(asyncio.wait_for(api(scope, receive, send), 60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], read


def test_credentials_are_checked_before_any_of_the_body_is_read(idle: tuple) -> None:
    http, trainer = idle
    api = http.app
    chunks = [b"x" * 65536] * 8
    status, read = _asgi(api, [(b"content-length", str(8 * 65536).encode())], chunks)
    assert (status, read) == (401, 0)
    status, read = _asgi(api, [(b"authorization", b"Bearer wrong")], chunks)
    assert (status, read) == (401, 0)
    assert trainer.store.recent() == []


def test_a_body_over_the_cap_is_413_by_its_length_or_while_it_streams(idle: tuple) -> None:
    http, trainer = idle
    big = b'{"push_image": false}' + b" " * (trainer_http.MAX_BODY + 1)  # valid JSON, too long
    answer = http.post(
        "/train", content=big, headers={**BEARER, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert answer.headers["connection"] == "close"
    assert "at most 16384 bytes" in answer.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        yield b'{"push_image": false}'
        for _ in range(40):
            yield b" " * 1024

    answer = http.post("/train", content=chunked(), headers=BEARER)
    assert answer.status_code == 413, answer.text
    # straight through ASGI: the guard stops reading at the first chunk past the cap
    status, read = _asgi(
        http.app, [(b"authorization", f"Bearer {TOKEN}".encode())], [b" " * 8192] * 40
    )
    assert (status, read) == (413, 3)
    assert trainer.store.recent() == []
    small = http.post("/train", json={"push_image": False}, headers=BEARER)
    assert small.status_code == 202, small.text


# -- strict input ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["yes", "true", "no", 1, 0, "1", [], {}])
def test_push_image_is_a_json_boolean_or_nothing(idle: tuple, value: object) -> None:
    http, trainer = idle
    answer = http.post("/train", json={"push_image": value}, headers=BEARER)
    assert answer.status_code == 422, answer.text
    assert trainer.store.recent() == []


def test_push_image_true_false_null_and_no_body_are_taken(idle: tuple) -> None:
    http, trainer = idle
    for body, expected in (
        ({"push_image": True}, True),
        ({"push_image": None}, None),
        (None, None),
    ):
        answer = http.post("/train", json=body, headers=BEARER)
        assert answer.status_code == 202, answer.text
        job = trainer.store.get(answer.json()["id"])
        assert job is not None and job.push_image is expected


# -- a bounded queue ---------------------------------------------------------------------------
def test_the_queue_holds_at_most_max_queued_then_429(idle: tuple) -> None:
    http, trainer = idle
    ids = [http.post("/train", headers=BEARER).json()["id"] for _ in range(MAX_QUEUED)]
    assert len(set(ids)) == MAX_QUEUED
    answer = http.post("/train", headers=BEARER)
    assert answer.status_code == 429, answer.text
    detail = answer.json()["detail"]
    assert "\n" not in detail and f"{MAX_QUEUED} jobs are queued already" in detail
    assert len(trainer.store.recent()) == MAX_QUEUED  # nothing was added
    # the bound is the store's: a new service on the same folder (a restart) keeps it
    again = Trainer(trainer.repo, JobStore(trainer.store.root), command=_never)
    with pytest.raises(Conflict, match="queued already"):
        again.submit(None)


# -- ids and rows from jobs.db are input -------------------------------------------------------
@pytest.mark.parametrize("job_id", ["../../etc/passwd", "a" * 31, "A" * 32, "0" * 32 + "\n", ""])
def test_a_job_id_that_mlrig_did_not_make_never_names_a_path(tmp_path: Path, job_id: str) -> None:
    store = JobStore(tmp_path / "state")
    with pytest.raises(ConfigError, match="no job id mlrig made"):
        store.log_path(job_id)
    assert store.get(job_id) is None and store.log_tail(job_id) == []


def test_a_get_of_a_path_like_id_is_404(idle: tuple) -> None:
    http, _ = idle
    answer = http.get("/train/..%2F..%2Fetc%2Fpasswd", headers=BEARER)
    assert answer.status_code == 404


def _tamper(state: Path, **row: object) -> None:
    store = JobStore(state)
    job = store.add(None)
    assert store.claim_next() is not None
    con = sqlite3.connect(state / "jobs.db")
    with con:
        sets = ", ".join(f"{k} = ?" for k in row)
        con.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*row.values(), job.id))  # noqa: S608
    con.close()


@pytest.mark.parametrize(
    "row",
    [
        {"pgid": 1, "started_at": "2999-01-01T00:00:00+00:00"},  # never kill init's group
        {"pgid": 0, "started_at": "2999-01-01T00:00:00+00:00"},
        {"id": "../../outside"},
    ],
)
def test_start_refuses_a_jobs_db_row_mlrig_did_not_write(
    tmp_path: Path, row: dict[str, object]
) -> None:
    state = tmp_path / "state"
    _tamper(state, **row)
    trainer = Trainer(tmp_path, JobStore(state), command=_never, recover=lambda: 0)
    with pytest.raises(ConfigError, match="holds a job mlrig did not write") as caught:
        trainer.start()
    assert "\n" not in caught.value.one_line()
    # refused: the lock is free again for a service once the file is fixed
    JobStore(state).lock().release()


# -- one service per repository ------------------------------------------------------------------
@pytest.fixture
def generated(tmp_path: Path, mlrig_home: Path) -> Path:
    """What `trainer serve` checks of a repo: a git work tree with .dvc and dvc.yaml."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages:\n  train: {cmd: x}\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    contract.save(sample("dev"))
    trainer_auth.ensure_token("dev")
    return repo


def test_a_second_serve_is_refused_and_the_first_job_is_untouched(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hang.py").write_text(HANG)
    pid_file = tmp_path / "job.pid"
    first = Trainer(
        generated,
        JobStore(state_dir("dev", generated)),
        command=lambda job: [sys.executable, str(tmp_path / "hang.py"), str(pid_file)],
        recover=lambda: 0,
    )
    first.start()
    pid = 0
    try:
        job_id = first.submit(None).id
        pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))
        before = first.store.get(job_id)
        assert before is not None and before.state == "running" and before.pgid

        served: list[bool] = []  # a second serve that got this far would block here: it must not
        monkeypatch.setattr(trainer_http, "serve", lambda *_a, **_k: served.append(True))
        result = CliRunner().invoke(
            app, ["trainer", "serve", "--repo", str(generated), "-s", "dev", "--port", "0"]
        )
        assert result.exit_code != 0, result.output
        assert "another `mlrig trainer serve` runs this repository's jobs" in result.output
        assert "Traceback" not in result.output and served == []
        assert first.store.get(job_id) == before  # still running, same group, no error
        assert _alive(pid)
    finally:
        first.stop(grace=2)
        _end(pid)


def test_a_refused_recovery_stops_the_start_with_one_line(
    generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.retrain import retrain
    from mlrig.errors import Conflict

    def refuse(repo: Path, stack: str | None = None) -> bool:
        raise Conflict(f"{repo} is not in the state the killed retrain left", hint="look first")

    monkeypatch.setattr(retrain, "recover", refuse)
    monkeypatch.setattr(trainer_http, "serve", lambda *_a, **_k: pytest.fail("served"))
    result = CliRunner().invoke(
        app, ["trainer", "serve", "--repo", str(generated), "-s", "dev", "--port", "0"]
    )
    assert result.exit_code != 0
    assert "is not in the state the killed retrain left — look first" in result.output
    assert "Traceback" not in result.output
    JobStore(state_dir("dev", generated)).lock().release()  # the refused start let it go


# -- children die with the service ---------------------------------------------------------------
TREE = textwrap.dedent(
    """
    import os, pathlib, subprocess, sys, time
    # what dvc does: a stage as a grandchild of the job's command
    subprocess.run([sys.executable, "-m", "pkg.train", sys.argv[1]], check=True,
                   env={**os.environ, "PYTHONPATH": "src"})
    """
)
TRAIN = HANG  # the stage: records its PID, then runs for long
SERVICE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlrig.core.trainer._jobs import Trainer
    from mlrig.core.trainer._store import JobStore
    repo, state, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    trainer = Trainer(repo, JobStore(state), recover=lambda: 0,
                      command=lambda job: [sys.executable, str(repo / "tree.py"), marker])
    trainer.start()
    trainer.submit(None)
    time.sleep(600)
    """
)


def test_a_killed_service_leaves_no_grandchild_behind(tmp_path: Path) -> None:
    import psutil

    repo = tmp_path / "repo"
    (repo / "src/pkg").mkdir(parents=True)
    (repo / "src/pkg/__init__.py").write_text("")
    (repo / "src/pkg/train.py").write_text(TRAIN)
    (repo / "tree.py").write_text(TREE)
    marker = tmp_path / "train.pid"
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(repo), str(tmp_path / "state"), str(marker)]
    )
    pid = 0
    try:
        pid = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=60))
        grandchild = psutil.Process(pid)
        assert grandchild.cmdline()[1:3] == ["-m", "pkg.train"]
        assert service.pid in {p.pid for p in grandchild.parents()}  # a real tree under it
        service.send_signal(signal.SIGKILL)
        service.wait(30)
        wait_until(lambda: not _alive(pid), timeout=30, what="the grandchild gone")
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(30)
        _end(pid)


DAEMON = textwrap.dedent(
    """
    import json, pathlib, subprocess, sys, time
    # a process that leaves its session behind, then the command ends as a retrain would
    subprocess.Popen([sys.executable, "-c", sys.argv[2]], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not pathlib.Path(sys.argv[1]).exists():
        time.sleep(0.05)
    print(json.dumps({"changed": False}))
    """
)


def test_what_a_job_leaves_running_ends_with_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "daemon.py").write_text(DAEMON)
    marker = tmp_path / "daemon.pid"
    sleeper = (
        f"import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text(str(os.getpid())); "
        "time.sleep(600)"
    )
    trainer = Trainer(
        repo,
        JobStore(tmp_path / "state"),
        recover=lambda: 0,
        command=lambda job: [sys.executable, str(repo / "daemon.py"), str(marker), sleeper],
    )
    trainer.start()
    pid = 0
    try:
        job_id = trainer.submit(None).id
        pid = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=60))

        def done() -> Job | None:
            job = trainer.store.get(job_id)
            return job if job and job.done else None

        job = wait_until(done, timeout=60, what="the job finished", interval=0.05)
        assert job.state == "succeeded", job.error
        wait_until(lambda: not _alive(pid), timeout=30, what="the detached process gone")
    finally:
        trainer.stop(grace=2)
        _end(pid)


def test_a_stored_group_never_names_this_process_or_its_group() -> None:
    """A jobs.db row naming the service's own group must not make start-up kill it (run in a
    process of its own session, so a kill would end only that process)."""
    probe = textwrap.dedent(
        """
        import os
        from mlrig.adapters.trainer_process import kill_leftover_group
        print(kill_leftover_group(os.getpgrp(), not_before=0.0),
              kill_leftover_group(os.getpid(), not_before=0.0), "alive", flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.split() == ["[]", "[]", "alive"]


# -- files the job's output goes to or comes from ------------------------------------------------
def test_a_symlinked_pipeline_log_is_not_followed_into_the_job_log(tmp_path: Path) -> None:
    from mlrig.adapters.trainer_process import Child

    outside = tmp_path / "outside.log"
    outside.write_text("")
    follow = tmp_path / "repo/.dvc/tmp/mlrig-retrain.log"
    follow.parent.mkdir(parents=True)
    follow.symlink_to(outside)
    grow = f"open({str(outside)!r}, 'a').write('LEAKED from outside the repo\\n')"
    log = tmp_path / "job.log"
    child = Child(
        [sys.executable, "-c", grow], log_path=log, on_line=lambda _l: None, follow=follow
    )
    assert child.wait().returncode == 0
    assert "LEAKED" in outside.read_text()  # the file grew while the job ran
    assert "LEAKED" not in log.read_text()


def test_a_symlink_where_the_job_log_goes_is_refused(tmp_path: Path) -> None:
    from mlrig.adapters.trainer_process import Child
    from mlrig.errors import ServiceError

    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    log = tmp_path / "job.log"
    log.symlink_to(target)
    with pytest.raises(ServiceError, match="cannot write the job's log"):
        Child([sys.executable, "-c", "print('x')"], log_path=log, on_line=lambda _l: None)
    assert target.read_text() == "kept\n"
