"""doctor against a real local stack, with each link broken in turn."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.adapters import processes
from mlrig.core.doctor import doctor
from mlrig.core.stack.local.stack import LocalStack
from mlrig.main import app
from tests.helpers import isolated_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def doc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Stack 'doc', started once: each case breaks links of the running stack, and `stack`
    has `up` mend them before the next case (a no-op on a healthy stack)."""
    with isolated_stack(tmp_path_factory.mktemp("doc-home"), "doc") as (st, _):
        yield st


@pytest.fixture
def stack(doc_stack: LocalStack) -> Iterator[LocalStack]:
    doc_stack.up()  # restarts what the previous case stopped, remakes what it removed
    yield doc_stack
    secret = doc_stack.secret_file("mlflow-admin")
    if secret.is_dir():  # the unreadable secret: moved away, the next `up` sets a new one
        secret.rmdir()


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_healthy_stack_passes_every_stack_check(stack: LocalStack) -> None:
    checks = by_name(doctor.stack_checks("doc"))
    assert {n: c.status for n, c in checks.items()} == {
        "stack outputs": "ok",
        "mlflow health": "ok",
        "mlflow auth": "ok",
        "registry auth": "ok",
        "dvc remote": "ok",
        "stack processes": "ok",
        "file modes": "ok",
        "endpoints": "skip",  # none deployed on this stack
    }


def test_json_output_and_exit_code(stack: LocalStack, docker_engine: object) -> None:
    result = CliRunner().invoke(app, ["doctor", "--stack", "doc", "--json"])
    doc = json.loads(result.output)
    assert doc["stack"] == "doc"
    names = [c["name"] for c in doc["checks"]]
    assert names[:3] == ["python", "packages", "docker engine"]
    assert result.exit_code == (0 if doc["ok"] else 1)
    bad = [c for c in doc["checks"] if c["status"] == "fail" and c["needed"]]
    assert doc["ok"] == (not bad)


def test_registry_stopped(stack: LocalStack) -> None:
    processes.stop(stack.pid_file("registry"))
    checks = by_name(doctor.stack_checks("doc"))
    assert checks["registry auth"].status == "fail"
    assert "unreachable" in checks["registry auth"].detail
    assert checks["registry auth"].fix == "run `mlrig stack up --stack doc`"
    assert checks["mlflow auth"].status == "ok"


def test_mlflow_stopped(stack: LocalStack) -> None:
    processes.stop(stack.pid_file("mlflow"))
    checks = by_name(doctor.stack_checks("doc"))
    assert checks["mlflow health"].status == "fail"
    assert checks["mlflow health"].fix == "run `mlrig stack up --stack doc`"
    assert checks["registry auth"].status == "ok"


def test_remote_directory_removed(stack: LocalStack) -> None:
    shutil.rmtree(stack.dvc_remote_dir)
    checks = by_name(doctor.stack_checks("doc"))
    assert checks["dvc remote"].status == "fail"
    assert "does not exist" in checks["dvc remote"].detail


def test_credentials_file_unreadable(stack: LocalStack) -> None:
    # root reads any mode, so make the secret file unreadable by replacing it with a folder
    secret = stack.secret_file("mlflow-admin")
    secret.unlink()
    secret.mkdir()
    checks = by_name(doctor.stack_checks("doc"))
    assert checks["mlflow auth"].status == "fail"
    assert "not readable" in checks["mlflow auth"].detail
    assert checks["mlflow auth"].fix
    assert checks["mlflow health"].status == "ok"


def test_missing_registry_binary_is_a_machine_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLRIG_REGISTRY_BINARY", str(tmp_path / "nothing"))
    monkeypatch.setenv("MLRIG_REGISTRY_IMAGE", "mlrig-test/no-such-registry:0")
    check = by_name(doctor.machine_checks())["registry binary"]
    assert check.status == "fail"
    assert "apt-get install docker-registry" in check.fix
    assert doctor.failed([check]) == [check]


def test_following_each_printed_fix_makes_doctor_green(stack: LocalStack) -> None:
    """Break several links at once; each failing row's fix, done as printed, repairs it."""
    processes.stop(stack.pid_file("mlflow"))
    processes.stop(stack.pid_file("registry"))
    shutil.rmtree(stack.dvc_remote_dir)
    secret = stack.secret_file("mlflow-admin")
    secret.unlink()
    secret.mkdir()  # unreadable even for root
    broken = {c.name: c for c in doctor.stack_checks("doc") if c.status == "fail"}
    assert {"mlflow health", "mlflow auth", "registry auth", "dvc remote"} <= set(broken)
    assert broken["mlflow auth"].fix.startswith("move it away, then run `mlrig stack up`")
    assert broken["registry auth"].fix == "run `mlrig stack up --stack doc`"
    assert broken["dvc remote"].fix == "run `mlrig stack up --stack doc`"
    secret.rmdir()  # "move it away"
    stack.up()  # "run `mlrig stack up --stack doc`"
    checks = by_name(doctor.stack_checks("doc"))
    green = ("ok", "skip")  # skip: nothing to check (no endpoint deployed here)
    assert {n: c.status for n, c in checks.items() if c.status not in green} == {}
