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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlrig import contract
from mlrig.adapters import processes
from mlrig.contract import StackOutputs
from mlrig.core.shared import interrupts
from mlrig.core.shared.files import (
    PRIVATE_UMASK,
    is_storage,
    private_dir,
    private_umask,
    storage_error,
)
from mlrig.core.shared.progress import Progress
from mlrig.core.stack import lock as stack_lock
from mlrig.core.stack.local import _config as local_config
from mlrig.core.stack.local import _services as services
from mlrig.core.stack.local import access_logs
from mlrig.core.stack.local._services import free_port, port_is_free
from mlrig.core.stack.local.state import (
    SERVICES,
    Layout,
    LocalState,
    recover_state,
    restore_secrets,
    write_state,
)
from mlrig.errors import ConfigError, ServiceError, UsageError

__all__ = ["LocalStack", "ServiceStatus", "free_port", "port_is_free"]

# on each endpoint's model container (`mlrig deploy`), valued the stack's folder (two homes
# may each hold a stack of one name): `down --purge` removes them
ENDPOINT_LABEL = "mlrig.endpoint.stack-root"
NEARLY_FULL = 2 * 1024 * 1024  # bytes free under which a service's failure is the disk's


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | foreign | unhealthy | orphaned
    pid: int | None
    url: str
    log: Path
    detail: str = ""


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL
    except OSError:
        return False


class LocalStack(Layout):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.proved: list[services.Probe] = []  # the round trips the last `up` made

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

    # -- lifecycle ----------------------------------------------------------------------------
    def _ensure_started(
        self,
        service: str,
        state: LocalState,
        restart: set[str],
        program: tuple[str, str],
        progress: Progress,
    ) -> processes.PidRecord:
        """The service's process, (re)started when it is not running or must re-read a
        changed config; the caller waits for it to answer."""
        pid_file = self.pid_file(service)
        st, rec = processes.status(pid_file)
        if st == processes.Status.RUNNING and rec is not None:
            if service not in restart:
                return rec
            progress(f"restarting {service} so it reads its new secret or settings")
            processes.stop(pid_file)
        port = services.port_of(service, state)
        services.clear_port(self, service, port, progress)
        progress(f"starting {service} on 127.0.0.1:{port}")
        return services.spawn(self, service, local_config.launch(self, service, state, program))

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
            interrupts.terminate_as_exception(self.name),
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
            services.stop_leftovers(self, progress)
            # A port a stranger holds is refused before anything starts (our own leftovers
            # are stopped); a running service keeps its port.
            for service in SERVICES:
                if processes.status(self.pid_file(service))[0] != processes.Status.RUNNING:
                    services.clear_port(self, service, services.port_of(service, state), progress)
            # MLflow takes seconds to start (imports, migrations, auth bootstrap): it starts
            # first, and the registry's files and process are made while it boots.
            restart = local_config.write_mlflow_configs(self, made, progress)
            started = {"mlflow": self._ensure_started("mlflow", state, restart, program, progress)}
            restart |= local_config.write_registry_configs(self, state, made, progress)
            started["registry"] = self._ensure_started(
                "registry", state, restart, program, progress
            )
            for service in ("registry", "mlflow"):
                services.await_healthy(self, service, state, started[service])
            self._resume_endpoints(progress)
            outputs = self.outputs(state)
            self.proved = services.round_trips(outputs)
            bad = [p for p in self.proved if not p.ok]
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

    def _resume_endpoints(self, progress: Progress) -> None:
        """The endpoints' nginx (`mlrig deploy` wrote its config) runs again after a `down`
        or a reboot, on its kept port; their containers restart with the engine."""
        from mlrig.adapters import nginx

        folder = self.root / "endpoints"
        conf = folder / "nginx.conf"
        if not conf.is_file():
            return
        if processes.status(self.pid_file("nginx"))[0] == processes.Status.RUNNING:
            return
        progress("starting nginx for the stack's endpoints")
        processes.start(
            nginx.argv(conf, folder, self.log_file("nginx-error")),
            pid_file=self.pid_file("nginx"),
            log_file=self.log_file("nginx"),
            cwd=self.root,
            umask=PRIVATE_UMASK,
        )
        access_logs.ensure(self)  # keeps the endpoints' request logs bounded

    def _roll_back(self) -> None:
        for service in ("registry", "mlflow"):
            with contextlib.suppress(ServiceError):
                processes.stop(self.pid_file(service))
        processes.stop_pids(processes.owned_by(self.root))
        shutil.rmtree(self.root, ignore_errors=True)

    def status(self, proved: list[services.Probe] | None = None) -> list[ServiceStatus]:
        """Each service's process and whether it answers with the stack's credentials (the
        round trips `proved` just now, e.g. by `up`, else new ones)."""
        state = self.load_state()
        if not proved:
            proved = services.round_trips(self.outputs(state))
        probes = {p.service: p for p in proved}
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

    def remote_probe(self, proved: list[services.Probe] | None = None) -> services.Probe:
        if proved:
            return proved[-1]
        return services.round_trips(self.outputs(self.load_state()))[-1]

    def _orphans_on(self, port: int) -> list[int]:
        if port_is_free(port):
            return []
        ours = services.orphans(self)
        holder = processes.listener(port)
        return ours if holder is None or holder in ours else []

    def _remove_endpoint_containers(self) -> None:
        """The model containers of this stack's endpoints (`mlrig deploy`), before anything
        else is purged: an engine that does not answer stops the purge with nothing gone."""
        if not (self.root / "endpoints").exists():
            return
        from mlrig.adapters import docker as docker_adapter

        for container in docker_adapter.containers_labelled({ENDPOINT_LABEL: str(self.root)}):
            docker_adapter.remove_container(container)

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop what this stack started, and any process it left behind; return a line for
        each process that would not stop."""
        with stack_lock.hold(self.name, what="down"):
            if purge:
                self._remove_endpoint_containers()
            stuck: list[str] = []
            errors: list[ServiceError] = []
            # nginx: the endpoints' proxy (`mlrig deploy`); their containers keep running
            # (restart=unless-stopped) and nginx starts again with the next deploy
            for service in ("mlflow", "registry", "nginx", access_logs.SERVICE):
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
