"""The local stack: a real MLflow server, a real OCI registry and a DVC remote directory,
supervised as processes on loopback. Ports and secrets persist, so a restart keeps every
URL in StackOutputs valid and all data (runs, images, DVC objects) in place."""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from mlrig import contract, paths, tracking_server
from mlrig.adapters import processes, registry
from mlrig.contract import BasicAuth, DvcRemote, Mlflow, Registry, SecretRef, StackOutputs
from mlrig.core import secrets
from mlrig.errors import ConfigError, DependencyMissing, PortInUse, ServiceError, UsageError
from mlrig.wait import Abandoned, WaitTimeout, wait_until

REGISTRY_USER = "mlrig"
REGISTRY_REPOSITORY = "models"
MLFLOW_START_TIMEOUT = 90.0
REGISTRY_START_TIMEOUT = 20.0

Progress = Callable[[str], None]


class LocalState(BaseModel):
    """What the local back-end remembers between runs (ports chosen at first `up`)."""

    name: str
    mlflow_port: int
    registry_port: int
    created_at: datetime


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | foreign | unhealthy
    pid: int | None
    url: str
    log: Path


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


class LocalStack:
    def __init__(self, name: str) -> None:
        self.name = contract.validate_stack_name(name)
        self.root = paths.stack_dir(name)

    # -- layout -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "local.json"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def dvc_remote_dir(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def secret_file(self, what: str) -> Path:
        return self.secrets_dir / what

    # -- state --------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.state_file.exists()

    def load_state(self) -> LocalState:
        try:
            return LocalState.model_validate_json(self.state_file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"stack '{self.name}' is not a local stack") from None
        except ValueError as exc:
            raise ConfigError(
                f"local stack state {self.state_file} is corrupt",
                hint="run `mlrig stack down --purge` and `stack up` again",
            ) from exc

    def _choose_state(self, mlflow_port: int | None, registry_port: int | None) -> LocalState:
        if self.exists():
            state = self.load_state()
            if mlflow_port and mlflow_port != state.mlflow_port:
                raise UsageError(
                    f"stack '{self.name}' already uses MLflow port {state.mlflow_port}",
                    hint="omit --mlflow-port, or `stack down --purge` first",
                )
            if registry_port and registry_port != state.registry_port:
                raise UsageError(
                    f"stack '{self.name}' already uses registry port {state.registry_port}",
                    hint="omit --registry-port, or `stack down --purge` first",
                )
            return state
        for label, port in (("MLflow", mlflow_port), ("registry", registry_port)):
            if port is not None and not 1024 <= port <= 65535:
                raise UsageError(
                    f"{label} port {port} is out of range",
                    hint="pick a port between 1024 and 65535",
                )
        mport = mlflow_port or free_port()
        rport = registry_port or free_port()
        while rport == mport:
            rport = free_port()
        return LocalState(
            name=self.name, mlflow_port=mport, registry_port=rport, created_at=datetime.now(UTC)
        )

    # -- outputs ------------------------------------------------------------------------------
    def outputs(self, state: LocalState) -> StackOutputs:
        return StackOutputs(
            name=self.name,
            kind="local",
            created_at=state.created_at,
            dvc_remote=DvcRemote(url=str(self.dvc_remote_dir)),
            mlflow=Mlflow(
                tracking_uri=f"http://127.0.0.1:{state.mlflow_port}",
                auth=BasicAuth(
                    username=tracking_server.ADMIN_USERNAME,
                    password=SecretRef(source="file", ref=str(self.secret_file("mlflow-admin"))),
                ),
            ),
            registry=Registry(
                kind="oci",
                url=f"127.0.0.1:{state.registry_port}/{REGISTRY_REPOSITORY}",
                auth=BasicAuth(
                    username=REGISTRY_USER,
                    password=SecretRef(source="file", ref=str(self.secret_file("registry"))),
                ),
            ),
        )

    # -- services -----------------------------------------------------------------------------
    def _prepare_files(self, state: LocalState) -> None:
        for d in (
            self.mlflow_dir / "artifacts",
            self.registry_dir / "data",
            self.dvc_remote_dir,
            self.run_dir,
            self.logs_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        secrets.ensure_secret_file(self.secret_file("mlflow-admin"))
        secrets.ensure_secret_file(self.secret_file("mlflow-flask"), nbytes=32)
        reg_pw = secrets.ensure_secret_file(self.secret_file("registry"))
        reg_http = secrets.ensure_secret_file(self.secret_file("registry-http"), nbytes=32)
        auth_ini = self.mlflow_dir / "auth.ini"
        db_uri = f"sqlite:///{(self.mlflow_dir / 'auth.db').resolve()}"
        contract.atomic_write(auth_ini, tracking_server.auth_ini(db_uri), mode=0o600)
        htpasswd = self.registry_dir / "htpasswd"
        if not htpasswd.exists():
            contract.atomic_write(
                htpasswd, registry.htpasswd_line(REGISTRY_USER, reg_pw), mode=0o600
            )
        contract.atomic_write(
            self.registry_dir / "config.yml",
            registry.config_yaml(
                port=state.registry_port,
                storage_dir=self.registry_dir / "data",
                htpasswd=htpasswd,
                http_secret=reg_http,
            ),
            mode=0o600,
        )

    def _mlflow_plan(self, state: LocalState) -> tracking_server.LocalServerPlan:
        return tracking_server.local_plan(
            data_dir=self.mlflow_dir,
            port=state.mlflow_port,
            admin_password=secrets.read_secret_file(self.secret_file("mlflow-admin")),
            flask_secret=secrets.read_secret_file(self.secret_file("mlflow-flask")),
            auth_config_path=(self.mlflow_dir / "auth.ini").resolve(),
        )

    def _healthy(self, service: str, state: LocalState) -> bool:
        from mlrig.adapters import http

        url = (
            f"http://127.0.0.1:{state.mlflow_port}{tracking_server.HEALTH_PATH}"
            if service == "mlflow"
            else f"http://127.0.0.1:{state.registry_port}/v2/"
        )
        try:
            code = http.status(url, timeout=2)
        except OSError:
            return False
        # the registry answers 401 to an anonymous /v2/: that proves it is up and enforcing auth
        return code == 200 if service == "mlflow" else code in (200, 401)

    def _start(self, service: str, state: LocalState, progress: Progress) -> None:
        pid_file = self.pid_file(service)
        st, rec = processes.status(pid_file)
        if st == processes.Status.RUNNING:
            return
        port = state.mlflow_port if service == "mlflow" else state.registry_port
        if not port_is_free(port):
            raise PortInUse(
                f"port {port} for the {service} of stack '{self.name}' is taken by another process",
                hint="stop that process (e.g. `ss -ltnp | grep "
                f":{port}`), or `mlrig stack down --purge` and `up` on new ports",
            )
        kind = "process"
        if service == "mlflow":
            plan = self._mlflow_plan(state)
            argv, env, timeout = plan.argv, plan.env, MLFLOW_START_TIMEOUT
        else:
            kind, program = self._registry_program()
            argv = [program, "serve", str(self.registry_dir / "config.yml")]
            env, timeout = {}, REGISTRY_START_TIMEOUT
        progress(f"starting {service} on 127.0.0.1:{port}")
        if service == "registry" and kind == "image":
            rec = self._start_registry_container(program)
        else:
            rec = processes.start(
                argv, pid_file=pid_file, log_file=self.log_file(service), env=env, cwd=self.root
            )
        try:
            wait_until(
                lambda: self._healthy(service, state),
                timeout=timeout,
                what=f"{service} health",
                interval=0.25,
                give_up=lambda: "exited" if processes.exited_early(rec) else None,
            )
        except Abandoned:
            pid_file.unlink(missing_ok=True)
            raise ServiceError(
                f"{service} exited during start-up: "
                f"{processes.tail(self.log_file(service), 3) or 'no output'}",
                hint=f"full log: {self.log_file(service)}",
            ) from None
        except WaitTimeout:
            processes.stop(pid_file)
            raise ServiceError(
                f"{service} did not become healthy within {timeout:.0f}s: "
                f"{processes.tail(self.log_file(service), 3) or 'no output'}",
                hint=f"full log: {self.log_file(service)}",
            ) from None

    def _registry_program(self) -> tuple[str, str]:
        """("binary", path) for Debian's binary; else ("image", ref) for the registry image
        where one is present or can be pulled."""
        try:
            return "binary", registry.binary()
        except DependencyMissing:
            image = registry.fallback_image()
            if image is None:
                raise
            return "image", image

    def _start_registry_container(self, image: str) -> processes.PidRecord:
        pid = registry.start_container(
            image,
            self.registry_dir / "config.yml",
            self.registry_dir,
            f"mlrig-registry-{self.name}",
        )
        with self.log_file("registry").open("a") as log:
            log.write(
                f"registry runs in container mlrig-registry-{self.name} ({image}): "
                f"see `docker logs mlrig-registry-{self.name}`\n"
            )
        return processes.adopt(pid, "registry", self.pid_file("registry"))

    def up(
        self,
        *,
        mlflow_port: int | None = None,
        registry_port: int | None = None,
        progress: Progress = lambda _msg: None,
    ) -> StackOutputs:
        """Start (or restart) the stack; a no-op on a running, healthy stack."""
        contract.ensure_kind(self.name, "local")
        fresh = not self.exists()
        self._registry_program()  # fail before writing anything if there is no registry
        state = self._choose_state(mlflow_port, registry_port)
        try:
            self._prepare_files(state)
            started: list[str] = []
            for service in ("registry", "mlflow"):
                self._start(service, state, progress)
                started.append(service)
        except BaseException:
            if fresh:  # nothing half-written: a failed first `up` leaves no stack behind
                for service in ("registry", "mlflow"):
                    with contextlib.suppress(ServiceError):
                        processes.stop(self.pid_file(service))
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        contract.atomic_write(self.state_file, state.model_dump_json(indent=2) + "\n")
        outputs = self.outputs(state)
        contract.save(outputs)
        return outputs

    def status(self) -> list[ServiceStatus]:
        state = self.load_state()
        result = []
        for service, url in (
            ("mlflow", f"http://127.0.0.1:{state.mlflow_port}"),
            ("registry", f"127.0.0.1:{state.registry_port}"),
        ):
            st, rec = processes.status(self.pid_file(service))
            if st == processes.Status.RUNNING and not self._healthy(service, state):
                st = "unhealthy"
            pid = rec.pid if rec and st != processes.Status.STOPPED else None
            result.append(ServiceStatus(service, st, pid, url, self.log_file(service)))
        return result

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop what this stack started; return a line for each process that would not stop."""
        stuck: list[str] = []
        errors: list[ServiceError] = []
        for service in ("mlflow", "registry"):
            try:
                left = processes.stop(self.pid_file(service))
            except ServiceError as exc:
                errors.append(exc)
                continue
            stuck += [f"{service}: PID {pid} did not stop" for pid in left]
        if errors:
            raise errors[0]
        if purge and not stuck:
            shutil.rmtree(self.root)
        return stuck
