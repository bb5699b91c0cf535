"""The local stack under faults: concurrent writers, lost secrets and state, signals at each
step of `up`, killed processes, a full disk, a read-only home and corrupt state files.

Every case runs the real `mlrig` CLI against real services and checks three things: nothing
stored is lost (an MLflow run, a registry blob, a DVC object), the failure is one clear line
(no traceback, no internal error), and the exit code is the documented one
(docs/troubleshooting.md, "Exit codes"). Afterwards the next `up` (or the printed fix) brings
the stack back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from mlrig import contract
from mlrig.adapters import processes
from mlrig.core.shared.files import loose_modes
from mlrig.core.stack import lock as stack_lock
from mlrig.wait import wait_until
from tests.helpers import require, sample

pytestmark = pytest.mark.integration

OK, STATUS_DOWN, CONFIG, SERVICE, CREDENTIALS, BUSY, SIGINT_EXIT, SIGTERM_EXIT = (
    0,
    1,
    3,
    5,
    6,
    7,
    130,
    143,
)


STACK = ("mlflow health", "mlflow auth", "registry auth", "dvc remote", "stack processes")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def one_clear_line(self, *needles: str) -> str:
        """The failure is exactly one `error:` line, no traceback, no internal error."""
        lines = self.error_lines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err and "internal error" not in self.err, self.err
        for needle in needles:
            assert needle in lines[0], lines[0]
        return lines[0]


def take_down(home: Path, *, keep: str | None = None) -> None:
    """`stack down` every stack under home but `keep`, checking its processes gone."""
    stacks = home / "stacks"
    for folder in sorted(stacks.iterdir()) if stacks.is_dir() else []:
        if folder.name == keep:
            continue
        mlrig(home, "stack", "down", "--name", folder.name)
        left = processes.owned_by(folder) if folder.exists() else []
        processes.stop_pids(left)
        assert not left, f"processes outlived `stack down`: {left}"


@pytest.fixture
def home(mlrig_home: Path) -> Iterator[Path]:
    """An MLRIG_HOME whose stacks are all taken down (their processes checked gone) after."""
    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    mlrig_home.mkdir(parents=True, exist_ok=True)
    yield mlrig_home
    take_down(mlrig_home)


def mlrig(home: Path, *args: str, timeout: float = 300, **extra: str) -> Result:
    env = {**os.environ, "MLRIG_HOME": str(home), "COLUMNS": "200", **extra}
    proc = subprocess.run(
        [sys.executable, "-m", "mlrig", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def spawn(home: Path, *args: str, **extra: str) -> subprocess.Popen:
    env = {**os.environ, "MLRIG_HOME": str(home), "COLUMNS": "200", **extra}
    return subprocess.Popen(
        [sys.executable, "-m", "mlrig", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def up(home: Path, name: str, *more: str) -> Result:
    result = mlrig(home, "stack", "up", "--name", name, *more)
    assert result.code == OK, result.err
    assert f"stack '{name}' is up" in result.out
    return result


def client_env(home: Path, name: str) -> dict[str, str]:
    result = mlrig(home, "stack", "env", "--name", name)
    assert result.code == OK, result.err
    env = {}
    for line in result.out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


# -- what must never be lost --------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    run_id: str
    blob: str
    dvc_object: Path


def store_some_data(home: Path, name: str) -> Stored:
    """An MLflow run with a param, a registry blob and a DVC object, through the services."""
    env = client_env(home, name)
    mlflow = env["MLFLOW_TRACKING_URI"]
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    run = requests.post(
        f"{mlflow}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}, auth=auth, timeout=10
    )
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    logged = requests.post(
        f"{mlflow}/api/2.0/mlflow/runs/log-parameter",
        json={"run_id": run_id, "key": "alpha", "value": "0.5"},
        auth=auth,
        timeout=10,
    )
    assert logged.status_code == 200, logged.text
    host = env["MLRIG_REGISTRY_URL"].split("/", 1)[0]
    reg_auth = (env["MLRIG_REGISTRY_USERNAME"], env["MLRIG_REGISTRY_PASSWORD"])
    data = f"layer of {name}".encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = requests.post(f"http://{host}/v2/models/blobs/uploads/", auth=reg_auth, timeout=10)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    location = location if location.startswith("http") else f"http://{host}{location}"
    put = requests.put(
        location,
        params={"digest": digest},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        auth=reg_auth,
        timeout=10,
    )
    assert put.status_code == 201, put.text
    obj = Path(env["MLRIG_DVC_REMOTE_URL"]) / "files" / "md5" / "ab" / "cdef0123456789"
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_text("a,b\n1,2\n")
    return Stored(run_id, digest, obj)


def assert_nothing_lost(home: Path, name: str, stored: Stored) -> None:
    """Read everything back with the credentials the stack hands out *now*."""
    env = client_env(home, name)
    auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    run = requests.get(
        f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/runs/get",
        params={"run_id": stored.run_id},
        auth=auth,
        timeout=10,
    )
    assert run.status_code == 200, run.text
    assert run.json()["run"]["data"]["params"] == [{"key": "alpha", "value": "0.5"}]
    host = env["MLRIG_REGISTRY_URL"].split("/", 1)[0]
    blob = requests.head(
        f"http://{host}/v2/models/blobs/{stored.blob}",
        auth=(env["MLRIG_REGISTRY_USERNAME"], env["MLRIG_REGISTRY_PASSWORD"]),
        timeout=10,
    )
    assert blob.status_code == 200
    assert stored.dvc_object.read_text() == "a,b\n1,2\n"


def assert_healthy(home: Path, name: str) -> None:
    """`status` proves every service with the stack's credentials, and what the outputs
    name is what listens: one MLflow server (+ its worker) and one registry."""
    status = mlrig(home, "stack", "status", "--name", name)
    assert status.code == OK, status.out + status.err
    assert status.out.count("running") == 2 and "ready" in status.out
    outputs = json.loads(mlrig(home, "stack", "outputs", "--name", name, "--json").out)
    ports = {
        int(outputs["mlflow"]["tracking_uri"].rsplit(":", 1)[1]),
        int(outputs["registry"]["url"].split("/")[0].rsplit(":", 1)[1]),
    }
    owned = processes.owned_by(home / "stacks" / name)
    assert len(owned) == 3, owned  # mlflow server, its uvicorn worker, the registry
    listening = {port for port in ports if processes.listener(port) in owned}
    assert listening == ports


# -- (2) one writer at a time ------------------------------------------------------------------
def test_ten_concurrent_ups_leave_one_healthy_stack(home: Path) -> None:
    procs = [spawn(home, "stack", "up", "--name", "race") for _ in range(10)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(Result(proc.returncode, out, err))
    codes = [r.code for r in results]
    assert set(codes) <= {OK, BUSY}, [r.err for r in results]
    assert OK in codes
    for r in results:
        if r.code == BUSY:
            r.one_clear_line("another mlrig command is changing stack 'race'")
    assert [p.name for p in (home / "stacks").iterdir()] == ["race"]
    assert_healthy(home, "race")
    assert_nothing_lost(home, "race", store_some_data(home, "race"))


def test_a_second_writer_waits_then_refuses_in_one_line(home: Path) -> None:
    with stack_lock.hold("held"):
        result = mlrig(home, "stack", "up", "--name", "held", MLRIG_LOCK_TIMEOUT="1")
    assert result.code == BUSY
    result.one_clear_line("another mlrig command is changing stack 'held'", "MLRIG_LOCK_TIMEOUT")
    assert not (home / "stacks" / "held").exists()


# -- (1)+(3) lost secrets, state and outputs --------------------------------------------------
@pytest.fixture(scope="module")
def fx_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The MLRIG_HOME of stack 'fx', shared by the cases below: each damages the running
    stack and ends by bringing it back (the printed fix, or `up`), so starting MLflow once
    serves them all; the next case's `up` proves the repair held."""
    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    home = tmp_path_factory.mktemp("fx-home")
    yield home
    take_down(home)


@pytest.fixture
def running(fx_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str, Stored]]:
    """Stack 'fx' running and healthy, holding a new run, a blob and a DVC object."""
    monkeypatch.setenv("MLRIG_HOME", str(fx_home))
    if mlrig(fx_home, "stack", "up", "--name", "fx").code != OK:
        # a failed case left it broken: start afresh rather than fail the cases after it
        mlrig(fx_home, "stack", "down", "--name", "fx", "--purge", "--yes")
        take_down(fx_home)
        shutil.rmtree(fx_home / "stacks" / "fx", ignore_errors=True)
        up(fx_home, "fx")
    yield fx_home, "fx", store_some_data(fx_home, "fx")
    take_down(fx_home, keep="fx")  # another stack a case added (a neighbour) goes
    for folder in (fx_home / "stacks").iterdir():
        if folder.name != "fx":
            shutil.rmtree(folder)


def test_deleted_secrets_are_reset_in_the_services(running: tuple[Path, str, Stored]) -> None:
    home, name, stored = running
    shutil.rmtree(home / "stacks" / name / "secrets")
    status = mlrig(home, "stack", "status", "--name", name)
    assert status.code == STATUS_DOWN and "unhealthy" in status.out
    doctor = mlrig(home, "doctor", "--stack", name, "--json")
    fixes = {c["name"]: c["fix"] for c in json.loads(doctor.out)["checks"] if c["status"] == "fail"}
    assert "mlrig stack up` for its stack" in fixes["mlflow auth"]
    up(home, name)  # the printed fix
    assert_healthy(home, name)
    assert_nothing_lost(home, name, stored)
    checks = json.loads(mlrig(home, "doctor", "--stack", name, "--json").out)["checks"]
    assert [c["name"] for c in checks if c["status"] == "fail" and c["name"] in STACK] == []


def test_a_changed_password_is_refused_not_overwritten(
    running: tuple[Path, str, Stored],
) -> None:
    home, name, stored = running
    secret = home / "stacks" / name / "secrets" / "registry"
    secret.write_text("not-the-password\n")
    result = mlrig(home, "stack", "up", "--name", name)
    assert result.code == CREDENTIALS
    result.one_clear_line("registry: rejects the password in", "delete that file")
    assert mlrig(home, "stack", "status", "--name", name).code == STATUS_DOWN
    secret.unlink()  # the printed fix: delete it and `up` sets a new one
    up(home, name)
    assert_nothing_lost(home, name, stored)


@pytest.mark.parametrize("damage", ["deleted", "empty", "garbage", "directory"])
def test_lost_local_json_is_rebuilt_with_the_same_ports(
    running: tuple[Path, str, Stored], damage: str
) -> None:
    home, name, stored = running
    state = home / "stacks" / name / "local.json"
    before = mlrig(home, "stack", "outputs", "--name", name, "--json").out
    state.unlink()
    if damage == "empty":
        state.write_text("")
    elif damage == "garbage":
        state.write_bytes(os.urandom(64))
    elif damage == "directory":
        state.mkdir()
        result = mlrig(home, "stack", "up", "--name", name)
        assert result.code == CONFIG
        result.one_clear_line(str(state), "is a directory", "move it away")
        state.rmdir()
    result = up(home, name)
    assert "rebuilt from outputs.json" in result.err or damage == "directory"
    assert mlrig(home, "stack", "outputs", "--name", name, "--json").out == before
    assert_nothing_lost(home, name, stored)


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("empty", "is empty"),
        ("truncated", "not valid JSON"),
        ("garbage", "not text"),
        ("directory", "is a directory"),
        ("other-name", "names stack 'other'"),
    ],
)
def test_corrupt_outputs_json_is_one_line_and_up_rebuilds_it(
    running: tuple[Path, str, Stored], damage: str, needle: str
) -> None:
    home, name, stored = running
    path = home / "stacks" / name / "outputs.json"
    good = path.read_text()
    contract.save(sample("neighbour"))  # another stack, which must stay listed in full
    path.unlink()
    if damage == "empty":
        path.write_text("")
    elif damage == "truncated":
        path.write_text(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe" + os.urandom(64))
    elif damage == "directory":
        path.mkdir()
    else:
        path.write_text(good.replace(f'"name": "{name}"', '"name": "other"'))
    outputs = mlrig(home, "stack", "outputs", "--name", name)
    assert outputs.code == CONFIG
    outputs.one_clear_line(str(path), needle)
    listing = mlrig(home, "stack", "list")
    assert listing.code == OK and "broken" in listing.out and "neighbour" in listing.out
    assert "127.0.0.1" in listing.out  # the healthy neighbour is listed in full
    if damage in ("directory", "other-name"):
        refused = mlrig(home, "stack", "up", "--name", name)
        assert refused.code == CONFIG
        refused.one_clear_line(needle)
        if damage == "directory":
            path.rmdir()
        else:
            path.unlink()
    up(home, name)
    assert json.loads(path.read_text()) == json.loads(good)
    assert_nothing_lost(home, name, stored)


def test_both_state_files_lost_refuses_with_the_exact_recovery(
    running: tuple[Path, str, Stored],
) -> None:
    home, name, stored = running
    root = home / "stacks" / name
    outputs = json.loads((root / "outputs.json").read_text())
    mport = outputs["mlflow"]["tracking_uri"].rsplit(":", 1)[1]
    rport = outputs["registry"]["url"].split("/")[0].rsplit(":", 1)[1]
    assert mlrig(home, "stack", "down", "--name", name).code == OK
    (root / "outputs.json").unlink()
    (root / "local.json").unlink()
    result = mlrig(home, "stack", "up", "--name", name)
    assert result.code == CONFIG
    line = result.one_clear_line("ports are lost", f"--registry-port {rport}")
    assert "purge" not in line
    up(home, name, "--mlflow-port", mport, "--registry-port", rport)
    assert json.loads((root / "outputs.json").read_text())["mlflow"] == outputs["mlflow"]
    assert_nothing_lost(home, name, stored)


# -- (4) signals and crashes -------------------------------------------------------------------
def _wait_for(proc: subprocess.Popen, check: object, what: str) -> None:
    assert callable(check)
    wait_until(
        check,
        timeout=120,
        what=what,
        interval=0.05,
        give_up=lambda: f"up exited early ({proc.returncode})" if proc.poll() is not None else None,
    )


STEPS = {
    "registered": lambda root: (root / "local.json").exists(),
    "registry starting": lambda root: (root / "run" / "registry.pid").exists(),
    "mlflow starting": lambda root: (root / "run" / "mlflow.pid").exists(),
}


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_first_up_rolls_back(home: Path, step: str, sig: signal.Signals) -> None:
    root = home / "stacks" / "sig"
    proc = spawn(home, "stack", "up", "--name", "sig")
    _wait_for(proc, lambda: STEPS[step](root), step)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    result = Result(proc.returncode, out, err)
    assert result.code == (SIGTERM_EXIT if sig == signal.SIGTERM else SIGINT_EXIT)
    result.one_clear_line()
    assert not root.exists(), "an interrupted first `up` leaves no half stack behind"
    assert processes.owned_by(home / "stacks") == []
    up(home, "sig")
    assert_healthy(home, "sig")


@pytest.mark.parametrize("step", list(STEPS))
def test_sigkill_of_first_up_is_recovered_by_the_next(home: Path, step: str) -> None:
    root = home / "stacks" / "kil"
    proc = spawn(home, "stack", "up", "--name", "kil")
    _wait_for(proc, lambda: STEPS[step](root), step)
    proc.kill()
    proc.communicate(timeout=30)
    listed = mlrig(home, "stack", "list")
    assert listed.code == OK and "kil" in listed.out  # registered, so visible
    up(home, "kil")
    assert_healthy(home, "kil")


def test_sigterm_during_a_restart_keeps_everything(running: tuple[Path, str, Stored]) -> None:
    home, name, stored = running
    root = home / "stacks" / name
    assert mlrig(home, "stack", "down", "--name", name).code == OK
    proc = spawn(home, "stack", "up", "--name", name)
    _wait_for(proc, lambda: (root / "run" / "mlflow.pid").exists(), "mlflow starting")
    proc.terminate()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == SIGTERM_EXIT
    Result(proc.returncode, out, err).one_clear_line("SIGTERM", "stack up --stack fx")
    up(home, name)
    assert_healthy(home, name)
    assert_nothing_lost(home, name, stored)


def _kill_mlflow_parent(root: Path) -> int:
    rec = processes.PidRecord.read(root / "run" / "mlflow.pid")
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    wait_until(
        lambda: processes.status(root / "run" / "mlflow.pid")[0] == "stopped",
        timeout=10,
        what="the MLflow server to die",
    )
    return rec.pid


def test_killed_mlflow_server_its_worker_is_found(running: tuple[Path, str, Stored]) -> None:
    home, name, stored = running
    root = home / "stacks" / name
    _kill_mlflow_parent(root)
    status = mlrig(home, "stack", "status", "--name", name)
    assert status.code == STATUS_DOWN and "orphaned" in status.out
    doctor = json.loads(mlrig(home, "doctor", "--stack", name, "--json").out)
    procs = next(c for c in doctor["checks"] if c["name"] == "stack processes")
    assert procs["status"] == "fail" and procs["fix"] == f"run `mlrig stack up --stack {name}`"
    result = up(home, name)  # the printed fix: the orphan is ours, so `up` replaces it
    assert "leftover" in result.err and "port taken" not in result.err
    assert_healthy(home, name)
    _kill_mlflow_parent(root)
    assert mlrig(home, "stack", "down", "--name", name).code == OK
    assert processes.owned_by(root) == []
    up(home, name)
    assert_nothing_lost(home, name, stored)


def test_port_taken_by_a_stranger_is_named_without_purge(
    running: tuple[Path, str, Stored],
) -> None:
    import socket

    home, name, stored = running
    outputs = json.loads(mlrig(home, "stack", "outputs", "--name", name, "--json").out)
    port = int(outputs["mlflow"]["tracking_uri"].rsplit(":", 1)[1])
    assert mlrig(home, "stack", "down", "--name", name).code == OK
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        result = mlrig(home, "stack", "up", "--name", name)
    assert result.code == SERVICE
    line = result.one_clear_line(f"port {port}", "keeps its port")
    assert "purge" not in line
    up(home, name)
    assert_nothing_lost(home, name, stored)


# -- (5) private by default --------------------------------------------------------------------
def test_everything_under_the_stack_is_private_and_doctor_fixes_looser_modes(
    running: tuple[Path, str, Stored],
) -> None:
    home, name, _ = running
    root = home / "stacks" / name
    assert loose_modes(root, guarded=("dvc-remote",)) == (0, [])
    # what mlrig and its services wrote is private even inside the guarded remote folder
    assert loose_modes(root / "mlflow") == (0, []) and loose_modes(root / "registry") == (0, [])
    assert (root / "dvc-remote").stat().st_mode & 0o777 == 0o700
    for secret in (root / "secrets").iterdir():
        assert secret.stat().st_mode & 0o777 == 0o600
    (root / "mlflow" / "mlflow.db").chmod(0o644)
    (root / "registry").chmod(0o755)
    doctor = json.loads(mlrig(home, "doctor", "--stack", name, "--json").out)
    modes = next(c for c in doctor["checks"] if c["name"] == "file modes")
    assert modes["status"] == "fail" and "2 path(s)" in modes["detail"]
    command = re.search(r"`(.+)`", modes["fix"])
    assert command and command.group(1).startswith("chmod -R go-rwx ")
    subprocess.run(shlex.split(command.group(1)), check=True)
    doctor = json.loads(mlrig(home, "doctor", "--stack", name, "--json").out)
    modes = next(c for c in doctor["checks"] if c["name"] == "file modes")
    assert modes["status"] == "ok"


# -- disk full, read-only home -----------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_first_up(tmpfs: Path) -> None:
    require(shutil.which("docker-registry") is not None, "the docker-registry binary")
    filler = tmpfs / "filler"
    free = shutil.disk_usage(tmpfs).free
    with filler.open("wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * (free - 400 * 1024))  # leaves less than MLflow's empty store
    result = mlrig(tmpfs, "stack", "up", "--name", "full")
    assert result.code == CONFIG
    result.one_clear_line("no space left")
    assert not (tmpfs / "stacks" / "full").exists(), "nothing half-recorded"
    assert processes.owned_by(tmpfs / "stacks") == []
    filler.unlink()
    try:
        up(tmpfs, "full")
        assert_healthy(tmpfs, "full")
    finally:
        mlrig(tmpfs, "stack", "down", "--name", "full")


def test_read_only_home(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        result = mlrig(ro, "stack", "up", "--name", "ro")
        assert result.code == CONFIG
        result.one_clear_line("Read-only file system", "MLRIG_HOME")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_up_stops_what_an_interrupted_start_left_unrecorded(
    running: tuple[Path, str, Stored],
) -> None:
    """A service an interrupted `up` spawned but never recorded (not listening yet, so no
    port shows it) is stopped before anything starts again: CI once saw a second MLflow
    break the database a leftover one was still migrating. A process that merely stands in
    the stack's folder is not the stack's, and is left alone."""
    home, name, _ = running
    root = home / "stacks" / name
    assert mlrig(home, "stack", "down", "--name", name).code == OK
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    leftover = subprocess.Popen([*sleeper, str(root / "mlflow" / "mlflow.db")])
    bystander = subprocess.Popen(sleeper, cwd=root)
    try:
        result = up(home, name)
        assert "leftover process(es) of an interrupted start" in result.err
        assert leftover.wait(timeout=30) is not None
        assert bystander.poll() is None
        bystander.kill()  # it stands in the folder, so the health check would count it
        bystander.wait(timeout=30)
        assert_healthy(home, name)
    finally:
        for proc in (leftover, bystander):
            proc.kill()
            proc.wait(timeout=30)
