"""The local stack's services: free ports, starting and probing each one, and finding the
processes a killed server or an interrupted `up` left behind (its orphans)."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

from mlrig import contract
from mlrig.adapters import processes, registry
from mlrig.contract import StackOutputs
from mlrig.core.shared import secrets
from mlrig.core.shared.files import PRIVATE_UMASK
from mlrig.core.shared.progress import Progress
from mlrig.core.stack.local import access_logs
from mlrig.core.stack.local.state import Layout, LocalState
from mlrig.errors import CredentialsError, DependencyMissing, MlrigError, PortInUse, ServiceError
from mlrig.tracking import config as tracking_server
from mlrig.wait import Abandoned, WaitTimeout, wait_until

MLFLOW_START_TIMEOUT = 90.0
REGISTRY_START_TIMEOUT = 20.0
# How often a starting service is polled: a refused TCP connect is all a poll costs until it
# listens, so a short interval adds no load and `up` notices the server ~0.05 s after it is.
HEALTH_POLL_INTERVAL = 0.05


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_of(service: str, state: LocalState) -> int:
    return state.mlflow_port if service == "mlflow" else state.registry_port


def accepts(port: int) -> bool:
    """A TCP connection to 127.0.0.1:port succeeds: something listens there. Costs ~0.1 ms,
    so a start-up can be polled often without taking CPU from the server that is booting."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answering(service: str, state: LocalState) -> bool:
    """An anonymous probe: the server answers (the registry's 401 proves auth is on)."""
    from mlrig.adapters import http

    port = port_of(service, state)
    if not accepts(port):  # not listening yet: skip the HTTP client's cost
        return False
    path = tracking_server.HEALTH_PATH if service == "mlflow" else "/v2/"
    try:
        code = http.status(f"http://127.0.0.1:{port}{path}", timeout=2)
    except OSError:
        return False
    return code == 200 if service == "mlflow" else code in (200, 401)


@dataclass(frozen=True)
class Probe:
    """One authenticated round trip with the credentials StackOutputs points to."""

    service: str
    ok: bool
    detail: str
    fix: str = ""
    credentials: bool = False  # the service answered but refused the credentials

    def error(self) -> MlrigError:
        cls = CredentialsError if self.credentials else ServiceError
        return cls(f"{self.service}: {self.detail}", hint=self.fix)


def _authenticated(service: str, url: str, user: str, ref: contract.SecretRef, up: str) -> Probe:
    from mlrig.adapters import http

    try:
        password = secrets.resolve(ref)
    except MlrigError as exc:
        return Probe(service, False, exc.message, exc.hint or up, credentials=True)
    try:
        code = http.send_json("GET", url, auth=(user, password), timeout=10).status
    except OSError as exc:
        return Probe(service, False, f"unreachable ({type(exc).__name__})", up)
    if code in (401, 403):
        fix = (
            f"if you changed it on purpose, write the new one into {ref.ref}; otherwise "
            f"delete that file and {up[0].lower()}{up[1:]}, which sets a new one"
        )
        return Probe(service, False, f"rejects the password in {ref.ref} ({code})", fix, True)
    if code != 200:
        return Probe(service, False, f"answered {code}", up)
    return Probe(service, True, f"'{user}' authenticated")


def round_trips(outputs: StackOutputs) -> list[Probe]:
    """MLflow API call as the admin, registry /v2/ login, and a write+read+delete in the
    DVC remote directory: what `up` must prove before it says "up". The two logins run at
    once: each server spends its time checking a password hash (MLflow's, the registry's
    bcrypt), which on two CPUs need not wait for each other."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    up = f"run `mlrig stack up --stack {outputs.name}`"
    logins = []
    if outputs.mlflow.auth:
        logins.append(
            (
                "mlflow",
                f"{outputs.mlflow_tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1",
                outputs.mlflow.auth.username,
                outputs.mlflow.auth.password,
                up,
            )
        )
    if outputs.registry.auth:
        logins.append(
            (
                "registry",
                f"http://{outputs.registry.host}/v2/",
                outputs.registry.auth.username,
                outputs.registry.auth.password,
                up,
            )
        )
    with ThreadPoolExecutor(max_workers=max(1, len(logins))) as pool:
        probes = list(pool.map(lambda args: _authenticated(*args), logins))
    remote = Path(outputs.dvc_remote_url)
    probe = remote / f".mlrig-probe-{free_port()}"
    try:
        probe.write_bytes(b"mlrig")
        ok = probe.read_bytes() == b"mlrig"
        probe.unlink()
    except OSError as exc:
        probes.append(Probe("dvc remote", False, f"{remote}: {exc.strerror or exc}", up))
    else:
        probes.append(Probe("dvc remote", ok, str(remote) if ok else "read back differs", up))
    return probes


def registry_program() -> tuple[str, str]:
    """("binary", path) for Debian's binary; else ("image", ref) for the registry image
    where one is present or can be pulled."""
    try:
        return "binary", registry.binary()
    except DependencyMissing:
        image = registry.fallback_image()
        if image is None:
            raise
        return "image", image


def orphans(layout: Layout) -> list[int]:
    """Processes of this stack that no PID file accounts for: a worker whose server was
    killed, or a service an interrupted `up` started but never recorded."""
    recorded: set[int] = set()
    # nginx: the endpoints' proxy (deploy), and the keeper of its request logs
    for service in ("mlflow", "registry", "nginx", access_logs.SERVICE):
        recorded.update(processes.tree(layout.pid_file(service)))
    return [pid for pid in processes.owned_by(layout.root) if pid not in recorded]


def stop_leftovers(layout: Layout, progress: Progress) -> None:
    """Stop the services an interrupted `up` started but never recorded (their command
    lines name this stack's folder), before anything starts again: a second MLflow beside
    a leftover one still migrating the same database breaks it ("duplicate column"), and
    a leftover that is not listening yet holds no port for `clear_port` to find. Called
    under the stack's lock, so no other `up` of this stack is starting them."""
    left = processes.naming(layout.root, orphans(layout))
    if left:
        progress(f"stopping {len(left)} leftover process(es) of an interrupted start")
        processes.stop_pids(left)


def clear_port(layout: Layout, service: str, port: int, progress: Progress) -> None:
    """Free `port` when our own orphan holds it; refuse (changing nothing) when a stranger
    does. The stack keeps its ports: repos point at the recorded URLs."""
    if port_is_free(port):
        return
    ours = orphans(layout)
    holder = processes.listener(port)
    if ours and (holder is None or holder in ours):
        progress(f"stopping {len(ours)} leftover process(es) of this stack holding port {port}")
        processes.stop_pids(ours)
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: port_is_free(port), timeout=10, what=f"port {port} to free")
        if port_is_free(port):
            return
    who = processes.describe(holder) if holder else "another process"
    raise PortInUse(
        f"port {port} for the {service} of stack '{layout.name}' is taken by {who}",
        hint=(
            f"stop it (`ss -ltnp 'sport = :{port}'` shows it), then run "
            f"`mlrig stack up --stack {layout.name}` again; the stack keeps its port"
        ),
    )


@dataclass(frozen=True)
class Launch:
    """How to run one service: a program and its environment, or a container image."""

    argv: list[str]
    env: dict[str, str]
    image: str | None = None  # the registry runs in this container instead of argv


def spawn(layout: Layout, service: str, launch: Launch) -> processes.PidRecord:
    """Start a service (its own process group, private umask) without waiting for it."""
    if launch.image:
        return _start_registry_container(layout, launch.image)
    return processes.start(
        launch.argv,
        pid_file=layout.pid_file(service),
        log_file=layout.log_file(service),
        env=launch.env,
        cwd=layout.root,
        umask=PRIVATE_UMASK,
    )


def await_healthy(
    layout: Layout, service: str, state: LocalState, rec: processes.PidRecord
) -> None:
    """Wait until the service answers; its log's last lines when it exits or times out."""
    timeout = MLFLOW_START_TIMEOUT if service == "mlflow" else REGISTRY_START_TIMEOUT
    pid_file, log = layout.pid_file(service), layout.log_file(service)
    try:
        wait_until(
            lambda: answering(service, state),
            timeout=timeout,
            what=f"{service} health",
            interval=HEALTH_POLL_INTERVAL,
            give_up=lambda: "exited" if processes.exited_early(rec) else None,
        )
    except Abandoned:
        pid_file.unlink(missing_ok=True)
        raise ServiceError(
            f"{service} exited during start-up: {processes.tail(log, 3) or 'no output'}",
            hint=f"full log: {log}",
        ) from None
    except WaitTimeout:
        processes.stop(pid_file)
        raise ServiceError(
            f"{service} did not become healthy within {timeout:.0f}s: "
            f"{processes.tail(log, 3) or 'no output'}",
            hint=f"full log: {log}",
        ) from None


def _start_registry_container(layout: Layout, image: str) -> processes.PidRecord:
    name = f"mlrig-registry-{layout.name}"
    pid = registry.start_container(
        image, layout.registry_dir / "config.yml", layout.registry_dir, name
    )
    with layout.log_file("registry").open("a") as log:
        log.write(f"registry runs in container {name} ({image}): see `docker logs {name}`\n")
    return processes.adopt(pid, "registry", layout.pid_file("registry"))
