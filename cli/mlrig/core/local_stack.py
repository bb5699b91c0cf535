"""The local stack: a real MLflow server, a real OCI registry and a DVC remote directory,
supervised as processes on loopback. Ports and secrets persist, so a restart keeps every
URL in StackOutputs valid and all data (runs, images, DVC objects) in place.

`up` holds the stack's lock, registers the stack before starting anything, and says "up"
only after an authenticated round trip to every service.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from mlrig import contract, tracking_server
from mlrig.adapters import processes, registry
from mlrig.contract import StackOutputs
from mlrig.core import local_services as services
from mlrig.core import secrets, stack_lock
from mlrig.core.local_files import is_storage, private_dir, private_umask, storage_error
from mlrig.core.local_services import free_port, port_is_free
from mlrig.core.local_state import (
    REGISTRY_USER,
    Layout,
    LocalState,
    recover_state,
    restore_secrets,
    write_state,
)
from mlrig.errors import ConfigError, MlrigError, ServiceError, UsageError

__all__ = ["LocalStack", "ServiceStatus", "Terminated", "free_port", "port_is_free"]

Progress = Callable[[str], None]
NEARLY_FULL = 2 * 1024 * 1024  # bytes free under which a service's failure is the disk's


class Terminated(MlrigError):
    """`up` was stopped by SIGTERM/SIGHUP (a CI cancel, `timeout`); it cleaned up first."""

    exit_code = 143


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | foreign | unhealthy | orphaned
    pid: int | None
    url: str
    log: Path
    detail: str = ""


@contextlib.contextmanager
def _terminate_as_exception(name: str) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception so `up` rolls back as it does on Ctrl-C; a
    second signal during the clean-up is ignored rather than interrupting it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Terminated(
            f"`stack up` of '{name}' was stopped by {signal.Signals(signum).name}",
            hint=f"run `mlrig stack up --name {name}` to finish it",
        )

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL
    except OSError:
        return False


class LocalStack(Layout):
    def exists(self) -> bool:
        return self.state_file.exists()

    def load_state(self) -> LocalState:
        state, _ = recover_state(self)
        if state is None:
            raise ConfigError(f"stack '{self.name}' is not a local stack")
        return state

    def _choose_state(
        self, mlflow_port: int | None, registry_port: int | None, progress: Progress
    ) -> LocalState:
        try:
            state, note = recover_state(self)
        except ConfigError:
            if not (mlflow_port and registry_port):
                raise
            state, note = None, "ports lost: taking them from --mlflow-port/--registry-port"
        if note:
            progress(note)
        if state is not None:
            for label, given, kept in (
                ("MLflow", mlflow_port, state.mlflow_port),
                ("registry", registry_port, state.registry_port),
            ):
                if given and given != kept:
                    flag = "--mlflow-port" if label == "MLflow" else "--registry-port"
                    raise UsageError(
                        f"stack '{self.name}' already uses {label} port {kept}",
                        hint=f"omit {flag}: the stack keeps its port (repos point at it)",
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

    # -- files --------------------------------------------------------------------------------
    def _write_configs(self, state: LocalState, made: list[str], progress: Progress) -> set[str]:
        """Write each service's config from the secrets; return the services that must
        restart to see a changed one. A regenerated password is set in its store."""
        restart: set[str] = set()
        db_uri = f"sqlite:///{self.auth_db.resolve()}"
        contract.atomic_write(
            self.mlflow_dir / "auth.ini", tracking_server.auth_ini(db_uri), mode=0o600
        )
        if "mlflow-admin" in made and self.auth_db.exists():
            from mlrig.adapters import mlflow as mlflow_adapter

            password = secrets.read_secret_file(self.secret_file("mlflow-admin"))
            if mlflow_adapter.set_auth_password(
                self.auth_db, tracking_server.ADMIN_USERNAME, password
            ):
                progress("the MLflow admin password was lost: a new one is set in MLflow")
        if "mlflow-flask" in made:
            restart.add("mlflow")
        reg_pw = secrets.read_secret_file(self.secret_file("registry"))
        if "registry" in made or not self.htpasswd.exists():
            contract.atomic_write(
                self.htpasswd, registry.htpasswd_line(REGISTRY_USER, reg_pw), mode=0o600
            )
            restart.add("registry")
            if "registry" in made and (self.registry_dir / "config.yml").exists():
                progress("the registry password was lost: a new one is set in its htpasswd")
        config = self.registry_dir / "config.yml"
        text = registry.config_yaml(
            port=state.registry_port,
            storage_dir=self.registry_dir / "data",
            htpasswd=self.htpasswd,
            http_secret=secrets.read_secret_file(self.secret_file("registry-http")),
        )
        old = config.read_text() if config.is_file() else None
        if old != text:
            contract.atomic_write(config, text, mode=0o600)
            restart.add("registry")
        return restart

    def _launch(self, service: str, state: LocalState, program: tuple[str, str]) -> services.Launch:
        if service == "mlflow":
            plan = tracking_server.local_plan(
                data_dir=self.mlflow_dir,
                port=state.mlflow_port,
                admin_password=secrets.read_secret_file(self.secret_file("mlflow-admin")),
                flask_secret=secrets.read_secret_file(self.secret_file("mlflow-flask")),
                auth_config_path=(self.mlflow_dir / "auth.ini").resolve(),
            )
            return services.Launch(plan.argv, plan.env)
        kind, where = program
        argv = [where, "serve", str(self.registry_dir / "config.yml")]
        return services.Launch(argv, {}, image=where if kind == "image" else None)

    # -- lifecycle ----------------------------------------------------------------------------
    def _ensure_running(
        self,
        service: str,
        state: LocalState,
        restart: set[str],
        program: tuple[str, str],
        progress: Progress,
    ) -> None:
        pid_file = self.pid_file(service)
        st, rec = processes.status(pid_file)
        if st == processes.Status.RUNNING and rec is not None:
            if service not in restart:
                services.await_healthy(self, service, state, rec)
                return
            progress(f"restarting {service} so it reads its new secret")
            processes.stop(pid_file)
        port = services.port_of(service, state)
        services.clear_port(self, service, port, progress)
        progress(f"starting {service} on 127.0.0.1:{port}")
        services.start(self, service, state, self._launch(service, state, program))

    def up(
        self,
        *,
        mlflow_port: int | None = None,
        registry_port: int | None = None,
        progress: Progress = lambda _msg: None,
    ) -> StackOutputs:
        """Start (or restart) the stack and prove every service answers with the stack's
        credentials; a no-op on a running, healthy stack."""
        with (
            stack_lock.hold(self.name, what="up"),
            private_umask(),
            _terminate_as_exception(self.name),
        ):
            try:
                return self._up(mlflow_port, registry_port, progress)
            except OSError as exc:
                if is_storage(exc):
                    raise storage_error(exc, Path(exc.filename or self.root)) from exc
                raise

    def _up(
        self, mlflow_port: int | None, registry_port: int | None, progress: Progress
    ) -> StackOutputs:
        contract.ensure_kind(self.name, "local")
        if self.outputs_file.is_dir():
            contract.load(self.name)  # its own clear line: a folder where the file belongs
        fresh = not self.outputs_file.exists() and not self.has_data()
        program = services.registry_program()  # fail before writing anything
        state = self._choose_state(mlflow_port, registry_port, progress)
        try:
            write_state(self, state)  # registered before anything starts
            for folder in (
                self.mlflow_dir / "artifacts",
                self.registry_dir / "data",
                self.dvc_remote_dir,
                self.run_dir,
                self.logs_dir,
            ):
                private_dir(folder)
            made = restore_secrets(self)
            restart = self._write_configs(state, made, progress)
            for service in ("registry", "mlflow"):
                self._ensure_running(service, state, restart, program, progress)
            outputs = self.outputs(state)
            bad = [p for p in services.round_trips(outputs) if not p.ok]
            if bad:
                raise bad[0].error()
            contract.atomic_write(
                self.outputs_file, outputs.model_dump_json(indent=2) + "\n", mode=0o600
            )
        except BaseException as exc:
            full = isinstance(exc, ServiceError) and _nearly_full(self.root)
            if fresh:  # nothing half-written: a failed first `up` leaves no stack behind
                self._roll_back()
            if full:  # a service died of it: say so, its log may be gone with the rollback
                raise storage_error(OSError(errno.ENOSPC, "full"), self.root) from exc
            raise
        return outputs

    def _roll_back(self) -> None:
        for service in ("registry", "mlflow"):
            with contextlib.suppress(ServiceError):
                processes.stop(self.pid_file(service))
        processes.stop_pids(processes.owned_by(self.root))
        shutil.rmtree(self.root, ignore_errors=True)

    def status(self) -> list[ServiceStatus]:
        """Each service's process and whether it answers with the stack's credentials."""
        state = self.load_state()
        probes = {p.service: p for p in services.round_trips(self.outputs(state))}
        result = []
        for service, url in (
            ("mlflow", f"http://127.0.0.1:{state.mlflow_port}"),
            ("registry", f"127.0.0.1:{state.registry_port}"),
        ):
            st, rec = processes.status(self.pid_file(service))
            detail = ""
            if st == processes.Status.RUNNING and not probes[service].ok:
                st, detail = "unhealthy", probes[service].detail
            elif st != processes.Status.RUNNING:
                left = self._orphans_on(services.port_of(service, state))
                if left:
                    st = "orphaned"
                    detail = f"PID {', '.join(map(str, left))} still serves without its parent"
            pid = rec.pid if rec and st in (processes.Status.RUNNING, "unhealthy") else None
            result.append(ServiceStatus(service, st, pid, url, self.log_file(service), detail))
        return result

    def remote_probe(self) -> services.Probe:
        return services.round_trips(self.outputs(self.load_state()))[-1]

    def _orphans_on(self, port: int) -> list[int]:
        if port_is_free(port):
            return []
        ours = services.orphans(self)
        holder = processes.listener(port)
        return ours if holder is None or holder in ours else []

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop what this stack started, and any process it left behind; return a line for
        each process that would not stop."""
        with stack_lock.hold(self.name, what="down"):
            stuck: list[str] = []
            errors: list[ServiceError] = []
            for service in ("mlflow", "registry"):
                try:
                    left = processes.stop(self.pid_file(service))
                except ServiceError as exc:
                    errors.append(exc)
                    continue
                stuck += [f"{service}: PID {pid} did not stop" for pid in left]
            if self.root.exists():
                left = processes.stop_pids(processes.owned_by(self.root))
                stuck += [f"leftover PID {pid} did not stop" for pid in left]
            if errors:
                raise errors[0]
            if purge and not stuck:
                shutil.rmtree(self.root)
            return stuck
