"""Shared fixtures: isolated MLRIG_HOME, and real services on free loopback ports.

In CI (CI=true) a missing engine, registry binary or MLflow is a failure, never a skip.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlrig.wait import Abandoned, WaitTimeout
from tests.helpers import exited, isolated_stack, require, wait_for_http

# -- parallel runs (scripts/test runs `pytest -n 2`) ---------------------------------------------
ENGINE = "docker-engine"
ENGINE_FIXTURES = {"docker_engine", "base_image"}


def _argument_names(source: str) -> dict[str, set[str]]:
    """Each function of a module (tests and fixtures) and the names it takes."""
    return {
        node.name: {a.arg for a in node.args.args}
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
    }


def engine_modules(root: Path) -> set[str]:
    """Test modules (as node ids name them) that drive the Docker engine: they take
    docker_engine or base_image, directly or through a conftest fixture built on one, or run
    the README's main job (tests/e2e), which builds and runs its image."""
    fixtures: dict[str, set[str]] = {}
    for conftest in (root / "tests").rglob("conftest.py"):
        fixtures.update(_argument_names(conftest.read_text()))
    engine = set(ENGINE_FIXTURES)
    while more := {name for name, args in fixtures.items() if args & engine} - engine:
        engine |= more
    found = set()
    for module in (root / "tests").rglob("test_*.py"):
        node_id = module.relative_to(root).as_posix()
        functions = _argument_names(module.read_text()).values()
        if node_id.startswith("tests/e2e/") or any(args & engine for args in functions):
            found.add(node_id)
    return found


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own choice of scheduler
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under xdist, each module runs whole on one worker (its module fixtures start once), and
    every module that drives the Docker engine runs on the same one: they build, run, count
    and remove containers and images, which a build or a run of another module would upset."""
    from xdist.scheduler import LoadScopeScheduling

    engine = engine_modules(config.rootpath)

    class ModuleOrEngine(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return ENGINE if module in engine else module

    return ModuleOrEngine(config, log)


TERMINAL_SIZE = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Workers inherit this process's C environment, where importing readline set COLUMNS=80
    and LINES=24 behind os.environ; send them the values the tests here see instead."""
    node.workerinput["terminal_size"] = {key: os.environ.get(key) for key in TERMINAL_SIZE}


def pytest_configure(config: pytest.Config) -> None:
    """In a worker, the terminal size variables as a run without workers has them (a rich
    console made while COLUMNS=80 is set keeps that width for the rest of the run)."""
    sizes = getattr(config, "workerinput", {}).get("terminal_size", {})
    for key, value in sizes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def mlrig_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlrig-home"
    monkeypatch.setenv("MLRIG_HOME", str(home))
    return home


def _free_port() -> int:
    from mlrig.core.stack.local.stack import free_port

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
    from mlrig.core.setup import engine

    return engine.ensure_base_image()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real local stack (MLflow + registry + DVC remote) in its own MLRIG_HOME.

    Yields {"home", "outputs", "env"}; tests that need it must set MLRIG_HOME themselves
    (use the `stack_env` fixture) since this one is session-scoped.
    """
    from mlrig.core.stack.env import client_env

    home = tmp_path_factory.mktemp("stack-home")
    with isolated_stack(home, "local") as (stack, outputs):
        env = client_env(outputs)
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
