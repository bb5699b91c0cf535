"""Shared fixtures: isolated MLRIG_HOME, and real services on free loopback ports.

In CI (CI=true) a missing engine, registry binary or MLflow is a failure, never a skip.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrig.wait import Abandoned, WaitTimeout
from tests.helpers import exited, isolated_stack, require, wait_for_http


@pytest.fixture
def mlrig_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlrig-home"
    monkeypatch.setenv("MLRIG_HOME", str(home))
    return home


def _free_port() -> int:
    from mlrig.core.local_stack import free_port

    return free_port()


@pytest.fixture(scope="session")
def docker_engine() -> object:
    from mlrig.adapters import docker as docker_adapter
    from mlrig.errors import ServiceError

    try:
        cli = docker_adapter.client()
    except ServiceError:
        cli = None
    require(cli is not None, "a Docker engine")
    return cli


@pytest.fixture(scope="session")
def base_image(docker_engine: object) -> str:
    from mlrig.core import engine

    return engine.ensure_base_image()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real local stack (MLflow + registry + DVC remote) in its own MLRIG_HOME.

    Yields {"home", "outputs", "env"}; tests that need it must set MLRIG_HOME themselves
    (use the `stack_env` fixture) since this one is session-scoped.
    """
    from mlrig.core import stacks

    home = tmp_path_factory.mktemp("stack-home")
    with isolated_stack(home, "local") as (stack, outputs):
        env = stacks.client_env(outputs)
        yield {"home": home, "outputs": outputs, "env": env, "stack": stack}


@pytest.fixture
def stack_env(local_stack: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The session's local stack, with MLRIG_HOME and the client env set for this test."""
    monkeypatch.setenv("MLRIG_HOME", str(local_stack["home"]))
    for key, value in local_stack["env"].items():
        monkeypatch.setenv(key, value)
    return local_stack


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's standalone server on a free loopback port; yields its endpoint URL."""
    exe = Path(sys.executable).with_name("moto_server")
    require(exe.exists(), "moto[server]")
    port = _free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(
                f"{url}/moto-api/",
                status=None,
                timeout=30,
                what="moto server",
                give_up=lambda: exited(proc, "moto server"),
            )
        except (WaitTimeout, Abandoned) as exc:
            pytest.fail(f"moto server did not start: {exc}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake AWS credentials and every boto3 client pointed at the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("MLRIG_AWS_ENDPOINT_URL", moto_server)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    from mlrig.adapters import aws

    aws.session.cache_clear()
    return moto_server
