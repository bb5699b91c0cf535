"""The local stack for real: authenticated MLflow, htpasswd registry, DVC remote, restarts."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlrig import contract
from mlrig.adapters import processes
from mlrig.adapters.registry import RegistryClient
from mlrig.core.stack import env as stack_env
from mlrig.core.stack.local.stack import LocalStack
from mlrig.errors import DependencyMissing, PortInUse, ServiceError
from mlrig.wait import WaitTimeout, wait_until
from tests.helpers import require

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def it_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The home of stack 'it', this module's own (the shared session stack must not be taken
    down). Its cases start, stop, kill and restart it and hand it on working, so a case that
    finds it up does not start MLflow again; it is stopped, and checked stopped, at the end."""
    import shutil

    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    home = tmp_path_factory.mktemp("it-home")
    yield home
    old = os.environ.get("MLRIG_HOME")
    os.environ["MLRIG_HOME"] = str(home)
    try:
        assert LocalStack("it").down() == []
    finally:
        if old is None:
            os.environ.pop("MLRIG_HOME", None)
        else:
            os.environ["MLRIG_HOME"] = old


@pytest.fixture
def own_stack(it_home: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    monkeypatch.setenv("MLRIG_HOME", str(it_home))
    return LocalStack("it")


def log_run(env: dict[str, str]) -> str:
    """Log a run through MLflow's real client in a subprocess using only `stack env`."""
    code = (
        "import mlflow\n"
        "mlflow.set_experiment('it-exp')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('alpha', 0.5)\n"
        "    mlflow.log_metric('auc', 0.93)\n"
        "    mlflow.log_text('hello', 'notes/hello.txt')\n"
        "print(run.info.run_id)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def get_run(env: dict[str, str], run_id: str) -> dict:
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    resp = requests.get(
        f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/runs/get",
        params={"run_id": run_id},
        auth=auth,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["run"]


def push_tiny_image(env: dict[str, str], base_image: str, tag: str) -> str:
    """Build a one-file image on the base and push it with docker-py, checking every chunk."""
    from mlrig.adapters import docker as docker_adapter

    api = docker_adapter.client().api
    dockerfile = f"FROM {base_image}\nCOPY hello.txt /hello.txt\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("hello.txt", tag.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    ref = f"{env['MLRIG_REGISTRY_URL']}:{tag}"
    docker_adapter.consume_stream(
        api.build(
            fileobj=buf, custom_context=True, tag=ref, network_mode="host", decode=True, rm=True
        ),
        "build",
    )
    auth = {"username": env["MLRIG_REGISTRY_USERNAME"], "password": env["MLRIG_REGISTRY_PASSWORD"]}
    chunks = docker_adapter.consume_stream(
        api.push(env["MLRIG_REGISTRY_URL"], tag=tag, auth_config=auth, stream=True, decode=True),
        "push",
    )
    digests = [c["aux"]["Digest"] for c in chunks if "aux" in c and "Digest" in c["aux"]]
    assert digests, chunks
    api.remove_image(ref, force=True)
    return digests[-1]


def dvc_push_file(remote: str, tmp: Path) -> str:
    repo = tmp / "dvc-repo"
    repo.mkdir()
    run = lambda *a: subprocess.run(  # noqa: E731
        a,
        cwd=repo,
        check=True,
        capture_output=True,  # noqa: E731
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    run("git", "init", "-q")
    run(str(VENV_BIN / "dvc"), "init", "-q")
    (repo / "data.csv").write_text("a,b\n1,2\n3,4\n")
    run(str(VENV_BIN / "dvc"), "add", "-q", "data.csv")
    run(str(VENV_BIN / "dvc"), "remote", "add", "-d", "stack", remote)
    run(str(VENV_BIN / "dvc"), "push", "-q")
    import yaml

    md5 = yaml.safe_load((repo / "data.csv.dvc").read_text())["outs"][0]["md5"]
    return md5


def object_path(remote: str, md5: str) -> Path:
    return Path(remote) / "files" / "md5" / md5[:2] / md5[2:]


def test_full_lifecycle(own_stack: LocalStack, base_image: str, tmp_path: Path) -> None:
    outputs = own_stack.up()
    assert contract.load("it") == outputs
    env = stack_env.client_env(outputs)

    # secrets: 0600 files, referenced not embedded
    for f in own_stack.secrets_dir.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f
    assert env["MLFLOW_TRACKING_PASSWORD"] not in contract.outputs_path("it").read_text()
    assert len(env["MLFLOW_TRACKING_PASSWORD"]) >= 16

    # MLflow: authenticated writes work, anonymous and wrong-password calls get 401
    run_id = log_run(env)
    uri = env["MLFLOW_TRACKING_URI"]
    anon = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10
    )
    assert anon.status_code == 401
    wrong = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        auth=("admin", "wrong"),
        timeout=10,
    )
    assert wrong.status_code == 401
    artifact_files = list((own_stack.mlflow_dir / "artifacts").rglob("hello.txt"))
    assert artifact_files, "artifacts must be proxied into the stack's directory"

    # registry: authenticated push, digest readable over the HTTP API; anonymous refused
    digest = push_tiny_image(env, base_image, "v1")
    reg = RegistryClient(
        f"http://{outputs.registry.host}",
        env["MLRIG_REGISTRY_USERNAME"],
        env["MLRIG_REGISTRY_PASSWORD"],
    )
    assert reg.manifest_digest(outputs.registry.repository, "v1") == digest
    assert requests.get(f"http://{outputs.registry.host}/v2/", timeout=5).status_code == 401

    # DVC remote
    md5 = dvc_push_file(outputs.dvc_remote_url, tmp_path)
    assert object_path(outputs.dvc_remote_url, md5).is_file()

    # up on a running stack is a no-op: same processes
    pids = {s.name: s.pid for s in own_stack.status()}
    assert own_stack.up() == outputs
    assert {s.name: s.pid for s in own_stack.status()} == pids

    # down stops exactly our processes and keeps data
    assert own_stack.down() == []
    for pid in pids.values():
        assert pid is not None and not _alive(pid)
    assert all(s.state == "stopped" for s in own_stack.status())

    # up again: same URLs, the run, the image and the DVC object are all still there
    assert own_stack.up() == outputs
    assert get_run(env, run_id)["data"]["params"] == [{"key": "alpha", "value": "0.5"}]
    assert reg.manifest_digest(outputs.registry.repository, "v1") == digest
    assert object_path(outputs.dvc_remote_url, md5).is_file()

    # reboot-like loss of processes (SIGKILL): up restarts them with the data intact
    for s in own_stack.status():
        assert s.pid is not None
        os.killpg(s.pid, signal.SIGKILL)
    _wait_dead([s.pid for s in own_stack.status() if s.pid])
    assert {s.state for s in own_stack.status()} == {"stopped"}
    own_stack.up()
    assert get_run(env, run_id)["info"]["run_id"] == run_id
    assert reg.manifest_digest(outputs.registry.repository, "v1") == digest


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_dead(pids: list[int], timeout: float = 10) -> None:
    wait_until(
        lambda: not any(_alive(p) for p in pids),
        timeout=timeout,
        what=f"processes {pids} to die",
        interval=0.1,
    )


def test_port_taken_changes_nothing(mlrig_home: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port}"):
            LocalStack("busy").up(mlflow_port=port)
    assert not (mlrig_home / "stacks" / "busy").exists()


def test_missing_registry_binary(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLRIG_REGISTRY_BINARY", str(mlrig_home / "no-such-registry"))
    monkeypatch.setenv("MLRIG_REGISTRY_IMAGE", "mlrig-test/no-such-registry:0")
    with pytest.raises(DependencyMissing, match="apt-get install docker-registry"):
        LocalStack("noreg").up()
    assert not (mlrig_home / "stacks" / "noreg").exists()


def test_stale_pid_file_of_a_foreign_process_is_left_alone(own_stack: LocalStack) -> None:
    own_stack.up()
    own_stack.down()
    foreign = subprocess.Popen(["sleep", "60"])
    try:
        processes.PidRecord(foreign.pid, 12345.0, "mlflow").write(own_stack.pid_file("mlflow"))
        with pytest.raises(ServiceError, match="mlrig did not start"):
            own_stack.down()
        assert foreign.poll() is None, "a process mlrig did not start must not be signalled"
        # up treats the stale record as "not running" and starts its own server
        own_stack.up()
        assert own_stack.status()[0].state == "running"
        assert foreign.poll() is None
    finally:
        foreign.kill()
        foreign.wait()


def test_mlflow_failing_to_start_shows_its_log(own_stack: LocalStack) -> None:
    own_stack.up()
    own_stack.down()
    db = own_stack.mlflow_dir / "mlflow.db"
    good = db.read_bytes()
    db.write_bytes(b"this is not a sqlite database" * 100)
    try:
        with pytest.raises(ServiceError, match="mlflow exited during start-up") as info:
            own_stack.up()
        assert "full log:" in str(info.value)
        assert not own_stack.pid_file("mlflow").exists()
    finally:
        db.write_bytes(good)  # the stack works again for whichever case comes next


def test_cli_up_status_env_down(mlrig_home: Path) -> None:
    require(__import__("shutil").which("docker-registry") is not None, "docker-registry")
    mlrig = [sys.executable, "-m", "mlrig"]
    env = {**os.environ, "MLRIG_HOME": str(mlrig_home)}
    run = lambda *a: subprocess.run(  # noqa: E731
        [*mlrig, *a],
        env=env,
        capture_output=True,  # noqa: E731
        text=True,
        timeout=180,
    )
    try:
        up = run("stack", "up", "--local", "--name", "cli")
        assert up.returncode == 0, up.stderr
        assert "is up" in up.stdout
        status = run("stack", "status", "--name", "cli")
        assert status.returncode == 0 and status.stdout.count("running") == 2
        exports = run("stack", "env", "--name", "cli").stdout
        password = (mlrig_home / "stacks/cli/secrets/mlflow-admin").read_text().strip()
        assert f"export MLFLOW_TRACKING_PASSWORD={password}" in exports
        for out in (
            up.stdout + up.stderr,
            status.stdout,
            run("stack", "outputs", "--name", "cli", "--json").stdout,
        ):
            assert password not in out
        log_text = (mlrig_home / "stacks/cli/logs/mlflow.log").read_text()
        assert password not in log_text
    finally:
        down = run("stack", "down", "--name", "cli")
    assert down.returncode == 0, down.stderr
    assert run("stack", "status", "--name", "cli").returncode == 1
    purge = run("stack", "down", "--name", "cli", "--purge", "--yes")
    assert purge.returncode == 0
    assert not (mlrig_home / "stacks/cli").exists()


@pytest.fixture
def registry_image(base_image: str, tmp_path: Path) -> Iterator[str]:
    """A stand-in for `registry:2` (which cannot be pulled here): the same program, Debian's
    build, in an image with registry:2's command line. Removed afterwards."""
    import shutil as sh

    from mlrig.adapters import docker as docker_adapter

    require(sh.which("docker-registry") is not None, "the docker-registry binary")
    sh.copy(sh.which("docker-registry") or "", tmp_path / "registry")
    (tmp_path / "Dockerfile").write_text(
        f'FROM {base_image}\nCOPY registry /bin/registry\nENTRYPOINT ["/bin/registry", "serve"]\n'
    )
    ref = "mlrig-test/registry:2"
    docker_adapter.client().images.build(path=str(tmp_path), tag=ref, network_mode="host", rm=True)
    yield ref
    docker_adapter.client().images.remove(ref, force=True)


def test_registry_container_fallback(
    mlrig_home: Path, registry_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No binary, but a registry image on the engine: the stack runs it, supervised by PID."""
    from mlrig.adapters import docker as docker_adapter

    monkeypatch.setenv("MLRIG_REGISTRY_BINARY", str(mlrig_home / "no-such-registry"))
    monkeypatch.setenv("MLRIG_REGISTRY_IMAGE", registry_image)
    stack = LocalStack("box")
    try:
        outputs = stack.up()
        env = stack_env.client_env(outputs)
        reg = RegistryClient(
            f"http://{outputs.registry.host}",
            env["MLRIG_REGISTRY_USERNAME"],
            env["MLRIG_REGISTRY_PASSWORD"],
        )
        assert reg.ping()
        container = docker_adapter.client().containers.get("mlrig-registry-box")
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert {s.name: s.state for s in stack.status()}["registry"] == "running"
        assert "docker logs mlrig-registry-box" in stack.log_file("registry").read_text()
    finally:
        assert stack.down() == []
    import docker.errors

    def container_gone() -> bool:
        try:
            docker_adapter.client().containers.get("mlrig-registry-box")
        except docker.errors.NotFound:
            return True
        return False

    try:
        # docker's errors are OSErrors (via requests): only NotFound means "gone", any other
        # engine error fails the test instead of being retried as "not yet"
        wait_until(container_gone, timeout=15, what="the registry container", retry_on=())
    except WaitTimeout:
        pytest.fail("the registry container outlived `stack down`")
