"""The mlflow-server image the AWS task runs: built by mlrig, run with the container contract.

PostgreSQL and S3 are swapped for SQLite and a local directory (the only arguments changed);
the entrypoint, the non-root user, the auth config path and mlrig's auth hook are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.wait import Abandoned, WaitTimeout
from tests.helpers import wait_for_http

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "container-admin-pw"


@pytest.fixture(scope="module")
def server_image(docker_engine, base_image: str) -> str:  # type: ignore[no-untyped-def]
    from mlrig.core.stack.aws import stack as aws_stack

    return aws_stack.build_server_image(base_image=base_image)


@pytest.fixture(scope="module")
def running(docker_engine, server_image: str) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    from mlrig.core.stack.local.stack import free_port

    tag = server_image
    port = free_port()
    spec = ts_container.container_spec(
        image=tag,
        db_host="unused",
        db_name="mlflow",
        db_user="mlflow",
        artifacts_destination="s3://unused/a",
        profile="small",
    )
    env = dict(spec.env)
    env[ts_container.ENV_AUTH_INI] = ts.auth_ini("sqlite:////tmp/auth.db")
    env[ts.ENV_ADMIN_PASSWORD] = ADMIN_PASSWORD
    env[ts.ENV_FLASK_SECRET] = "flask-secret-for-test"
    command = ts.server_args(
        host="127.0.0.1",
        port=port,
        backend_store_uri="sqlite:////tmp/mlflow.db",
        artifacts_destination="/tmp/artifacts",
        workers=1,
        threads=ts_container.CONTAINER_THREADS,  # what the task runs: gunicorn's threaded workers
    )
    container = docker_engine.containers.run(  # type: ignore[attr-defined]
        tag, command=command, environment=env, network_mode="host", detach=True, user=spec.user
    )
    url = f"http://127.0.0.1:{port}"

    def exited() -> str | None:
        container.reload()
        return "server exited" if container.status == "exited" else None

    try:
        try:
            wait_for_http(
                f"{url}{ts.HEALTH_PATH}",
                timeout=180,
                what="the server container's health check",
                interval=0.5,
                give_up=exited,
            )
        except Abandoned:
            pytest.fail("server exited: " + container.logs().decode()[-2000:])
        except WaitTimeout:
            pytest.fail("server never became healthy: " + container.logs().decode()[-2000:])
        yield url, container
    finally:
        container.remove(force=True)


@pytest.fixture
def server(running: tuple[str, object]) -> str:
    return running[0]


def test_runs_as_the_contract_user(running) -> None:  # type: ignore[no-untyped-def]
    _, container = running
    assert container.exec_run("id -u").output.decode().strip() == "10001"
    mode = container.exec_run("stat -c %a /tmp/mlflow-auth.ini").output.decode().strip()
    assert mode == "600"


def test_basic_auth_is_on(server: str) -> None:
    api = f"{server}/api/2.0/mlflow/experiments/search"
    assert requests.post(api, json={"max_results": 1}, timeout=10).status_code == 401
    wrong = requests.post(
        api, json={"max_results": 1}, auth=(ts.ADMIN_USERNAME, "nope"), timeout=10
    )
    assert wrong.status_code == 401
    ok = requests.post(
        api, json={"max_results": 1}, auth=(ts.ADMIN_USERNAME, ADMIN_PASSWORD), timeout=30
    )
    assert ok.status_code == 200, ok.text
    assert [e["name"] for e in ok.json()["experiments"]] == ["Default"]


def test_bearer_token_gets_401_from_mlrigs_hook(server: str) -> None:
    resp = requests.post(
        f"{server}/api/2.0/mlflow/experiments/search",
        json={"max_results": 1},
        headers={"Authorization": "Bearer abc"},
        timeout=10,
    )
    assert resp.status_code == 401


ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
MOTO_PASSWORD = "123456789012-auth-token"  # what moto's get_authorization_token hands out


@pytest.fixture
def ecr_data_plane(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real registry on loopback standing in for ECR's data plane (moto has none)."""
    from tests.helpers import registry_process

    with registry_process({"AWS": MOTO_PASSWORD}) as (host, _proc):
        monkeypatch.setenv("MLRIG_ECR_REGISTRY_ENDPOINT", host)
        yield host


@pytest.fixture
def small_image(docker_engine, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A one-file image: pushing the 1.1 GB server image would add minutes, not coverage."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY marker /marker\n")
    (tmp_path / "marker").write_text(str(tmp_path))
    tag = f"mlrig/mlflow-server:test-{abs(hash(str(tmp_path))) % 10**8}"
    docker_engine.images.build(path=str(tmp_path), tag=tag, network_mode="host")  # type: ignore[attr-defined]
    yield tag
    docker_engine.images.remove(tag, force=True)  # type: ignore[attr-defined]


def test_phase_one_pushes_the_image_to_the_stacks_ecr(
    small_image: str,
    mlrig_home,  # type: ignore[no-untyped-def]
    aws_env: str,
    ecr_data_plane: str,
) -> None:
    from mlrig.adapters.registry import RegistryClient
    from mlrig.core.stack.aws import stack as aws_stack

    server_image = small_image
    repo = "mlrig-team/mlflow-server"
    req = aws_stack.AwsStackRequest(name="team", region="us-east-1")
    pushed = aws_stack.push_server_image(server_image, req, f"{ECR_HOST}/{repo}")
    name, digest = pushed.split("@")
    assert name == f"{ECR_HOST}/{repo}" and digest.startswith("sha256:")
    client = RegistryClient(f"http://{ecr_data_plane}", "AWS", MOTO_PASSWORD)
    assert client.manifest_digest(repo, server_image.split(":", 1)[1]) == digest
    # Pushing the same image again is a no-op that reports the same digest (immutable tags).
    assert aws_stack.push_server_image(server_image, req, f"{ECR_HOST}/{repo}") == pushed
