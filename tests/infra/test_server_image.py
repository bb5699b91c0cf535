"""The mlflow-server image the AWS task runs: built by mlrig, run with the container contract.

PostgreSQL and S3 are swapped for SQLite and a local directory (the only arguments changed);
the entrypoint, the non-root user, the auth config path and mlrig's auth hook are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from mlrig.core import tracking_server as ts

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "container-admin-pw"


@pytest.fixture(scope="module")
def running(docker_engine, base_image: str) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    from mlrig.core import aws_stack
    from mlrig.core.local_stack import free_port

    tag = aws_stack.build_server_image(base_image=base_image)
    port = free_port()
    spec = ts.container_spec(image=tag, db_host="unused", db_name="mlflow", db_user="mlflow",
                             artifacts_destination="s3://unused/a", profile="small")
    env = dict(spec.env)
    env[ts.ENV_AUTH_INI] = ts.auth_ini("sqlite:////tmp/auth.db")
    env[ts.ENV_ADMIN_PASSWORD] = ADMIN_PASSWORD
    env[ts.ENV_FLASK_SECRET] = "flask-secret-for-test"
    command = ts.server_args(host="127.0.0.1", port=port,
                             backend_store_uri="sqlite:////tmp/mlflow.db",
                             artifacts_destination="/tmp/artifacts", workers=1)
    container = docker_engine.containers.run(  # type: ignore[attr-defined]
        tag, command=command, environment=env, network_mode="host", detach=True,
        user=spec.user)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}{ts.HEALTH_PATH}", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            container.reload()
            if container.status == "exited":
                pytest.fail("server exited: " + container.logs().decode()[-2000:])
            time.sleep(0.5)
        else:
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
    wrong = requests.post(api, json={"max_results": 1}, auth=(ts.ADMIN_USERNAME, "nope"),
                          timeout=10)
    assert wrong.status_code == 401
    ok = requests.post(api, json={"max_results": 1}, auth=(ts.ADMIN_USERNAME, ADMIN_PASSWORD),
                       timeout=30)
    assert ok.status_code == 200, ok.text
    assert [e["name"] for e in ok.json()["experiments"]] == ["Default"]


def test_bearer_token_gets_401_from_mlrigs_hook(server: str) -> None:
    resp = requests.post(f"{server}/api/2.0/mlflow/experiments/search",
                         json={"max_results": 1}, headers={"Authorization": "Bearer abc"},
                         timeout=10)
    assert resp.status_code == 401
