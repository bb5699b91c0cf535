"""Issue 27 on the real local stack: a retrain's undo marks the model version it registered
(and no other), and the recovery after a kill refuses a branch checked out since, then
undoes only the run's files once the run's branch is back.

Module-scoped: a published run makes version 1, a failed publish registers version 2 and
undoes it, the kill comes last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import VENV_BIN, append_rows, environ_with, repo_env, retrain_repo, sh

pytestmark = pytest.mark.integration
PROJECT = "trusty"
MARKER = ".dvc/tmp/mlrig-retrain.json"
LOG = ".dvc/tmp/mlrig-retrain.log"


def _retrain(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), "retrain", "--repo", str(repo), "--no-push-image", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _git(repo: Path, env: dict[str, str], *args: str) -> str:
    return sh(repo, "git", *args, env=env).strip()


@pytest.fixture(scope="module")
def world(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("trust-retrain")
    env = repo_env(local_stack["home"])
    source = root / "incoming.csv"
    repo, origin = retrain_repo(root, env, PROJECT, source, "Read the export")
    with environ_with(local_stack["env"]):  # MlflowClient reads the admin login from here
        client = MlflowClient(tracking_uri=local_stack["env"]["MLFLOW_TRACKING_URI"])
        yield {"repo": repo, "origin": origin, "source": source, "env": env, "client": client}


def _versions(client: Any) -> dict[str, Any]:
    return {v.version: v for v in client.search_model_versions(f"name='{PROJECT}'")}


def test_a_failed_publish_tags_the_version_it_registered_as_undone(world: dict) -> None:
    repo, env, client = world["repo"], world["env"], world["client"]
    first = _retrain(repo, env)  # version 1, the champion, published
    assert first.returncode == 0, first.stderr[-3000:]
    head = _git(repo, env, "rev-parse", "HEAD")
    append_rows(world["source"], 10, shift=3)
    _git(repo, env, "remote", "set-url", "origin", str(world["origin"]) + "-gone")
    try:
        proc = _retrain(repo, env)
    finally:
        _git(repo, env, "remote", "set-url", "origin", str(world["origin"]))
    assert proc.returncode != 0 and "retrain failed at git push" in proc.stderr, proc.stderr
    assert "undo failed" not in proc.stderr, proc.stderr[-3000:]
    assert _git(repo, env, "rev-parse", "HEAD") == head
    versions = _versions(client)
    assert sorted(versions) == ["1", "2"]  # 2: registered by the run whose publish failed
    undone = versions["2"]
    assert undone.tags.get("mlrig.undone") == "true", proc.stderr[-3000:]
    assert "Undone" in (undone.description or "")
    assert "mlrig.undone" not in versions["1"].tags  # another run's version: untouched
    run = client.get_run(undone.run_id)
    assert len(run.data.tags["mlrig.retrain.id"]) == 32  # through DVC, into the train stage
    assert client.get_model_version_by_alias(PROJECT, "champion").version == "1"


def test_recover_after_a_kill_refuses_another_branch_then_undoes_only_the_runs_files(
    world: dict,
) -> None:
    repo, env, client = world["repo"], world["env"], world["client"]
    head = _git(repo, env, "rev-parse", "HEAD")
    before = set(_versions(client))
    append_rows(world["source"], 10, shift=7)
    log = repo / LOG
    start = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlrig"), "retrain", "--repo", str(repo), "--no-push-image"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the stage's processes go down with it, as in a crash
    )
    deadline = time.monotonic() + 400
    while b"registered " + PROJECT.encode() not in log.read_bytes()[start:]:
        assert proc.poll() is None, log.read_text()[start:][-2000:]
        assert time.monotonic() < deadline, "train never registered a version"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert (repo / MARKER).exists()
    marker = json.loads((repo / MARKER).read_text())
    new = set(_versions(client)) - before
    assert len(new) == 1  # the killed run's

    # the user moves on: another branch, a note; recovery must not touch either
    _git(repo, env, "checkout", "-q", "-b", "dev")
    (repo / "notes.txt").write_text("mine\n")
    refused = subprocess.run(
        [str(VENV_BIN / "mlrig"), "retrain", "--recover", "--repo", str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 7, refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "now on branch dev" in errors[0] and "Traceback" not in errors[0]
    assert _git(repo, env, "branch", "--show-current") == "dev"
    assert (repo / "notes.txt").read_text() == "mine\n" and (repo / MARKER).exists()

    # back on the run's branch: the undo runs, the note survives, the version is marked
    _git(repo, env, "checkout", "-q", "main")
    done = subprocess.run(
        [str(VENV_BIN / "mlrig"), "retrain", "--recover", "--repo", str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _git(repo, env, "rev-parse", "HEAD") == head == marker["head"]
    assert (repo / "notes.txt").read_text() == "mine\n"
    status = _git(repo, env, "status", "--porcelain")
    assert status == "?? notes.txt"
    (version,) = new
    assert _versions(client)[version].tags.get("mlrig.undone") == "true"
    assert not (repo / MARKER).exists()
