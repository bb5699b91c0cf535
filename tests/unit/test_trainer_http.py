"""The trainer's HTTP routes and who may call them (FastAPI's TestClient, a stand-in child).

The service with the real `mlrig retrain` runs in tests/integration/test_trainer_service.py.
"""

from __future__ import annotations

import base64
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.adapters import trainer_http
from mlrig.core.trainer import token as trainer_auth
from mlrig.core.trainer._jobs import Trainer
from mlrig.core.trainer._store import Job, JobStore
from mlrig.core.trainer.serve import Service
from mlrig.errors import PortInUse
from mlrig.main import app
from mlrig.wait import wait_until
from tests.helpers import sample

TOKEN = "t0k3n-for-tests-only-0123456789abcdef"
CREDS = trainer_auth.Credentials(TOKEN, "admin", "s3cret:with-colon")
STUB = "import json; print(json.dumps({'changed': False, 'snapshot': 'abc'}))\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer  {TOKEN} ", True),
        (basic("admin", "s3cret:with-colon"), True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Token {TOKEN}", False),
        (basic("admin", "wrong"), False),
        (basic("root", "s3cret:with-colon"), False),
        ("Basic !!!not-base64", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), False),
        (f"Basic {TOKEN}", False),
    ],
)
def test_credentials_accept_the_token_or_the_admin_login_only(header: str | None, ok: bool) -> None:
    assert CREDS.allows(header) is ok


def test_without_admin_credentials_only_the_token_passes() -> None:
    only = trainer_auth.Credentials(TOKEN)
    assert only.allows(f"Bearer {TOKEN}")
    assert not only.allows(basic("admin", ""))
    assert TOKEN not in repr(only) and "s3cret" not in repr(CREDS)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[object, Trainer]]:
    from fastapi.testclient import TestClient

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "stub.py").write_text(STUB)

    def command(job: Job) -> list[str]:
        return [sys.executable, str(repo / "stub.py")]

    trainer = Trainer(repo, JobStore(tmp_path / "state"), command=command, recover=lambda: False)
    trainer.start()
    ready: list[bool] = []
    api = trainer_http.create_app(Service(trainer, CREDS), lambda: ready.append(True))
    with TestClient(api) as http:
        assert ready == [True]
        yield http, trainer
    # leaving the client ran the lifespan's shutdown: the worker is stopped
    assert trainer._thread is not None and not trainer._thread.is_alive()


def test_health_needs_no_credentials(client: tuple) -> None:
    http, _ = client
    answer = http.get("/health")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path"), [("post", "/train"), ("get", "/train"), ("get", "/train/x")]
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", basic("admin", "wrong")])
def test_every_other_route_answers_401_without_good_credentials(
    client: tuple, method: str, path: str, header: str | None
) -> None:
    http, trainer = client
    headers = {"Authorization": header} if header else {}
    answer = getattr(http, method)(path, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert trainer.store.recent() == []  # a refused POST queued nothing


def test_post_queues_a_job_and_get_follows_it(client: tuple) -> None:
    http, trainer = client
    answer = http.post("/train", headers=BEARER)
    assert answer.status_code == 202
    job_id = answer.json()["id"]

    def finished() -> dict | None:
        body = http.get(f"/train/{job_id}", headers=BEARER).json()
        return body if body["state"] in ("succeeded", "failed") else None

    body = wait_until(finished, timeout=60, what="the job finished", interval=0.05)
    assert body["state"] == "succeeded", body
    assert body["result"] == {"changed": False, "snapshot": "abc"}
    assert set(body) == {
        "id",
        "state",
        "step",
        "created_at",
        "started_at",
        "finished_at",
        "log_tail",
        "result",
        "error",
    }
    assert body["log_tail"][-1] == '{"changed": false, "snapshot": "abc"}'
    listed = http.get("/train", headers={"Authorization": basic("admin", "s3cret:with-colon")})
    assert [j["id"] for j in listed.json()["jobs"]] == [job_id]
    assert "log_tail" not in listed.json()["jobs"][0]


def test_post_takes_push_image_and_nothing_else(client: tuple) -> None:
    http, trainer = client
    answer = http.post("/train", headers=BEARER, json={"push_image": False})
    assert answer.status_code == 202
    job = trainer.store.get(answer.json()["id"])
    assert job is not None and job.push_image is False
    assert http.post("/train", headers=BEARER, json={"push": True}).status_code == 422
    assert http.post("/train", headers=BEARER, json={"push_image": "maybe"}).status_code == 422


def test_an_unknown_job_is_404(client: tuple) -> None:
    http, _ = client
    answer = http.get("/train/nope", headers=BEARER)
    assert answer.status_code == 404 and answer.json() == {"detail": "no job nope"}


def test_a_taken_port_is_one_error_before_anything_starts() -> None:
    sock = trainer_http.bind("127.0.0.1", 0)
    try:
        with pytest.raises(PortInUse, match="already in use"):
            trainer_http.bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


# -- the command line ---------------------------------------------------------------------------
def test_token_is_made_once_private_and_printed(mlrig_home: Path) -> None:
    contract.save(sample("dev"))
    runner = CliRunner()
    first = runner.invoke(app, ["trainer", "token", "--stack", "dev"])
    assert first.exit_code == 0, first.output
    token = first.output.strip()
    assert len(token) >= 40
    path = trainer_auth.token_path("dev")
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = runner.invoke(app, ["trainer", "token", "--stack", "dev"])
    assert again.output.strip() == token


def test_token_for_an_unknown_stack_is_one_line(mlrig_home: Path) -> None:
    result = CliRunner().invoke(app, ["trainer", "token", "--stack", "nope"])
    assert result.exit_code != 0
    assert not trainer_auth.token_path("nope").parent.exists()


def test_serve_refuses_a_folder_that_is_no_generated_repo(mlrig_home: Path, tmp_path: Path) -> None:
    contract.save(sample("dev"))
    result = CliRunner().invoke(app, ["trainer", "serve", "--repo", str(tmp_path), "-s", "dev"])
    assert result.exit_code != 0
    assert "is not a repository made by `mlrig init`" in result.output


def test_post_takes_a_remote_task_sized_as_fargate_offers(client: tuple) -> None:
    from mlrig.core.trainer._jobs import retrain_argv

    http, trainer = client
    body = {"push_image": False, "remote": True, "cpu": 0.5, "memory": 2048, "spot": True}
    answer = http.post("/train", headers=BEARER, json=body)
    assert answer.status_code == 202
    job = trainer.store.get(answer.json()["id"])
    assert job is not None and job.compute is not None
    assert (job.compute.cpu, job.compute.memory_mib, job.compute.spot) == (512, 2048, True)
    argv = retrain_argv(trainer.repo, job.push_image, job.compute)
    assert argv[-7:] == [
        "--no-push-image",
        "--remote",
        "--cpu",
        "0.5",
        "--memory",
        "2048",
        "--spot",
    ]
    plain = trainer.store.get(
        http.post("/train", headers=BEARER, json={"remote": True}).json()["id"]
    )
    assert plain is not None and retrain_argv(trainer.repo, None, plain.compute)[-1] == "--remote"
    for bad, says in (
        ({"remote": True, "cpu": 3}, "Fargate has no task of 3072 CPU units"),
        ({"remote": True, "cpu": 0.25, "memory": 4096}, "takes 512-2048 MiB"),
        ({"cpu": 1}, "size a remote task"),
        ({"remote": "yes"}, "valid boolean"),
        ({"remote": True, "memory": "4096"}, "valid integer"),
    ):
        refused = http.post("/train", headers=BEARER, json=bad)
        assert refused.status_code == 422 and says in refused.text, (bad, refused.text)


def test_the_request_defaults_are_remote_retrains_own() -> None:
    from mlrig.adapters import trainer_http
    from mlrig.core.compute import remote

    assert (trainer_http.DEFAULT_CPU, trainer_http.DEFAULT_MEMORY) == (
        remote.DEFAULT_CPU,
        remote.DEFAULT_MEMORY,
    )


def test_a_job_store_an_earlier_mlrig_made_gains_the_compute_column(tmp_path: Path) -> None:
    import sqlite3

    from mlrig.core.trainer._store import _SCHEMA, JobStore

    tmp_path.joinpath("logs").mkdir()
    con = sqlite3.connect(tmp_path / "jobs.db")
    con.execute(_SCHEMA.replace("    compute TEXT,\n", ""))
    con.close()
    store = JobStore(tmp_path)
    job = store.add(None)
    assert job.compute is None and store.get(job.id) == job
