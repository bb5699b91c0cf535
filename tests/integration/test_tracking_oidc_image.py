"""The AWS server image (docker/mlflow-server, built by mlrig's own build code) carries the
auth hook with its OIDC and audit modules and PyJWT: run as the task runs it (its entrypoint,
its user, the contract's env with the OIDC config as JSON), it takes a local issuer's token
as the mapped identity, refuses a bad one with 401 and writes the audit line to its log."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from mlrig.core.access._log import read_entries
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.tracking import oidc as tracking_oidc
from mlrig.tracking import throttle as ts_throttle
from mlrig.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
AUDIENCE = "mlrig:imagetest"


@pytest.fixture(scope="module")
def container(docker_engine: Any, base_image: str, oidc_issuer: Any) -> Iterator[dict[str, Any]]:
    from mlrig.core.stack.aws import stack as aws_stack
    from mlrig.core.stack.local.stack import free_port

    image = aws_stack.build_server_image(base_image=base_image)
    port, password = free_port(), secrets.token_urlsafe(24)
    rule = tracking_oidc.Rule("acme/demo", "repo-demo", ("refs/heads/main",))
    config = tracking_oidc.OidcConfig(oidc_issuer.url, AUDIENCE, (rule,))
    spec = ts_container.container_spec(
        image=image,
        db_host="unused",
        db_name=ts_container.DB_NAME,
        db_user=ts_container.DB_USER,
        artifacts_destination="s3://unused/a",
        profile="small",
        oidc=config.to_json(),
    )
    # The spec's env as the task gets it, on SQLite inside the container instead of RDS + S3.
    env = dict(spec.env)
    env[ts_container.ENV_AUTH_INI] = ts.auth_ini("sqlite:////tmp/auth.db")
    env[ts.ENV_ADMIN_PASSWORD] = password
    env[ts.ENV_FLASK_SECRET] = secrets.token_urlsafe(32)
    env[ts_throttle.ENV_TRUSTED_PROXY_HOPS] = "0"  # no load balancer in front here
    command = ts.server_args(
        host="127.0.0.1",
        port=port,
        backend_store_uri="sqlite:////tmp/mlflow.db",
        artifacts_destination="/tmp/artifacts",
    )
    ctr = docker_engine.containers.run(
        image,
        command=command,
        user=spec.user,
        environment=env,
        network_mode="host",  # the issuer and the test are on this machine's loopback
        detach=True,
        labels={"mlrig.test": "oidc-image"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{url}{ts.HEALTH_PATH}", timeout=2).status_code == 200,
            timeout=180,
            what="the server container's health",
            interval=0.5,
        )
        admin = ("admin", password)
        requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": "repo-demo", "password": "z" * 24},
            auth=admin,
            timeout=30,
        ).raise_for_status()
        yield {"url": url, "container": ctr}
    finally:
        ctr.remove(force=True)


def test_the_image_accepts_a_token_as_its_identity_and_audits(
    container: dict[str, Any], oidc_issuer: Any
) -> None:
    url = container["url"]
    good = {"Authorization": f"Bearer {oidc_issuer.token(AUDIENCE)}"}
    me = requests.get(f"{url}/api/2.0/mlflow/users/current", headers=good, timeout=30)
    assert me.status_code == 200 and me.json()["user"]["username"] == "repo-demo"
    created = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": "ci"}, headers=good, timeout=30
    )
    assert created.status_code == 200, created.text[:200]
    bad = {"Authorization": f"Bearer {oidc_issuer.token('mlrig:other')}"}
    refused = requests.get(f"{url}/api/2.0/mlflow/users/current", headers=bad, timeout=30)
    assert refused.status_code == 401 and "another audience" in refused.text

    def audited() -> list[Any]:
        logs = container["container"].logs().decode(errors="replace").splitlines()
        return read_entries(logs)

    wait_until(lambda: len(audited()) >= 3, timeout=10, what="audit lines in the log")
    entries = [(e.user, e.auth, e.method, e.status) for e in audited()]
    assert ("admin", "basic", "POST", 200) in entries  # the fixture's user creation
    assert ("repo-demo", "oidc", "POST", 200) in entries
    assert (None, "oidc", "GET", 401) in entries
    logs = container["container"].logs().decode(errors="replace")
    assert good["Authorization"][7:].split(".")[2] not in logs  # no token in the log
