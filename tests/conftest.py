"""Shared fixtures: isolated MLRIG_HOME, and real services on free loopback ports.

In CI (CI=true) a missing engine, registry binary or MLflow is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlrig.contract import StackOutputs
    from mlrig.core.local_stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parent.parent


def require(ok: bool, what: str) -> None:
    """Skip when a real dependency is missing locally; fail in CI, where it must exist."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI (scripts/setup.sh installs it)")
    pytest.skip(f"{what} not available")


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


@contextmanager
def isolated_stack(home: Path, name: str) -> Iterator[tuple[LocalStack, StackOutputs]]:
    """A real local stack under its own MLRIG_HOME (for wider-scoped fixtures, which cannot
    use monkeypatch); stopped, with its processes checked gone, and the home restored."""
    from mlrig.core.local_stack import LocalStack

    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    old = os.environ.get("MLRIG_HOME")
    os.environ["MLRIG_HOME"] = str(home)
    stack = LocalStack(name)
    try:
        yield stack, stack.up()
    finally:
        stuck = stack.down()
        if old is None:
            os.environ.pop("MLRIG_HOME", None)
        else:
            os.environ["MLRIG_HOME"] = old
        assert stuck == [], stuck


@contextmanager
def registry_process(users: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """A registry of a test's own (empty storage, its own htpasswd); yields host, process."""
    import requests

    from mlrig.adapters import registry
    from mlrig.core.local_stack import free_port

    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    with tempfile.TemporaryDirectory(prefix="mlrig-reg-") as tmp:
        root, port = Path(tmp), free_port()
        (root / "htpasswd").write_text(
            "".join(registry.htpasswd_line(u, p) for u, p in users.items())
        )
        (root / "config.yml").write_text(
            registry.config_yaml(
                port=port,
                storage_dir=root / "data",
                htpasswd=root / "htpasswd",
                http_secret="test-secret",
            )
        )
        proc = subprocess.Popen(
            [registry.binary(), "serve", str(root / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        host = f"127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if requests.get(f"http://{host}/v2/", timeout=1).status_code == 401:
                        break
                except requests.RequestException:
                    proc.poll()
                time.sleep(0.1)
            yield host, proc
        finally:
            proc.terminate()
            proc.wait(10)


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
    import requests

    try:
        for _ in range(100):
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start")
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
