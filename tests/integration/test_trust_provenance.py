"""Issue 27, provenance, end to end: an attacker's tags on a real run of the session's local
stack (MLflow with auth), traced and checked out by the `mlrig` program in a user's real
git repository. Nothing the tags name runs, the repository gains no ref, no file outside
the workspace is hashed, and the output names the refused tag."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from mlrig.core.provenance import record as p
from tests.helpers import VENV_BIN, md5, mlflow_client, repo_env

PASSWD = Path("/etc/passwd")
LOCK = (
    "schema: '2.0'\nstages:\n  train:\n    cmd: python -m x.train\n    outs:\n"
    f"    - path: {p.MODEL_FILE}\n      md5: m1\n    - path: {p.RUN_FILE}\n      md5: r1\n"
)


def git(repo: Path, *args: str) -> str:
    who = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run(
        ["git", *who, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """The victim's repository: one commit whose dvc.lock records run file r1."""
    repo = tmp_path / "user"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "dvc.lock").write_text(LOCK)
    git(repo, "add", "--all")
    git(repo, "commit", "-qm", "repro")
    return repo


def attacker_run(stack_env: dict, tags: dict[str, str]) -> str:
    """A run on the stack whose tags claim it came from the pipeline (run file r1)."""
    client = mlflow_client(stack_env)
    experiment = client.create_experiment(f"trust-prov-{uuid.uuid4().hex[:8]}")
    base = {
        p.TAG_GIT_COMMIT: "0" * 40,
        p.TAG_STAGE: "train",
        f"{p.TAG_OUT_PREFIX}{p.MODEL_FILE}": "m1",
        f"{p.TAG_OUT_PREFIX}{p.RUN_FILE}": "r1",
        "mlflow.user": "mallory",
    }
    run = client.create_run(experiment, tags={**base, **tags})
    return str(run.info.run_id)


def mlrig(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), *args, "--stack", "local"],
        cwd=cwd,
        env=repo_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def test_an_upload_pack_remote_runs_nothing_and_is_named_refused(
    stack_env: dict, user_repo: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    run_id = attacker_run(
        stack_env, {p.TAG_GIT_REMOTE: f"--upload-pack=touch {marker};", p.TAG_EXP_REF: "/x"}
    )
    before = refs(user_repo)
    proc = mlrig(user_repo, stack_env["home"], "trace", run_id)
    assert not marker.exists()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "tag mlrig.git.remote refused" in proc.stdout and "Traceback" not in proc.stderr
    assert "recorded by mallory" in proc.stdout  # not the repository's identity
    assert refs(user_repo) == before


def test_a_branch_ref_from_an_ordinary_remote_adds_no_ref(
    stack_env: dict, user_repo: Path, tmp_path: Path
) -> None:
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(user_repo), str(attacker))
    (attacker / "evil.py").write_text("import os\n")
    git(attacker, "add", "--all")
    git(attacker, "commit", "-qm", "evil")
    git(attacker, "update-ref", "refs/heads/evil", "HEAD")
    run_id = attacker_run(
        stack_env, {p.TAG_GIT_REMOTE: str(attacker), p.TAG_EXP_REF: "refs/heads/evil"}
    )
    before = refs(user_repo)
    proc = mlrig(user_repo, stack_env["home"], "trace", run_id)
    assert refs(user_repo) == before
    assert proc.returncode == 1 and "tag mlrig.exp.ref refused" in proc.stdout


def test_checkout_of_an_absolute_dep_path_restores_nothing_and_prints_no_md5(
    stack_env: dict, user_repo: Path, tmp_path: Path
) -> None:
    run_id = attacker_run(stack_env, {f"{p.TAG_DEP_PREFIX}{PASSWD}": "0" * 32})
    into = tmp_path / "ws"
    proc = mlrig(user_repo, stack_env["home"], "checkout", run_id, "--into", str(into))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"tag dvc.dep.{PASSWD} refused" in out and md5(PASSWD) not in out
    assert not into.exists()
