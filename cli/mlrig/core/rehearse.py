"""`mlrig stack rehearse`: the AWS tracking server's image and task contract run on loopback.

Real PostgreSQL (TLS, scram, a non-superuser owner) and an S3 API stand in for RDS and S3; the
container gets the contract's command, user, env, secrets, memory and CPU, then is checked.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlrig import tracking_server as ts
from mlrig.errors import ServiceError, UsageError

Progress = Callable[[str], None]
STACK_NAME = "rehearse"  # bucket and database named as `mlrig stack up --aws` names a stack's
MEMORY_LIMIT_SHARE = 0.80  # a peak above this share of the task memory fails the rehearsal
HEALTH_TIMEOUT = 300.0
FAULTS = ("db-password", "db-down", "bucket")  # what the failure tests break on purpose
FAULT_WAIT_SECONDS = 8  # how long the entrypoint waits for a database that is down
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class RunConfig:
    """The `docker run` of the rehearsal, derived from the contract; secrets held apart."""

    image: str
    command: list[str]
    user: str
    port: int
    health_path: str
    memory_mib: int
    cpu_units: int
    contract_env: dict[str, str]
    secret_names: list[str]
    local_env_names: list[str]  # stand-ins for what ECS gives a task (role creds, endpoint)
    network_mode: str = "host"

    def public(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["contract_env_names"] = sorted(doc.pop("contract_env"))
        return doc


def artifacts_prefix() -> str:
    from mlrig.infra.config import StackConfig

    return str(StackConfig.__dataclass_fields__["artifacts_prefix"].default)


def db_names() -> tuple[str, str]:
    from mlrig.infra.components.database import DB_NAME, DB_USER  # imports pulumi: lazily

    return DB_NAME, DB_USER


def run_config(
    *,
    profile: str,
    image: str,
    db_port: int,
    bucket: str,
    port: int | None = None,
    local_env_names: tuple[str, ...] = (),
) -> RunConfig:
    """The contract's container, moved onto this machine's loopback."""
    db_name, db_user = db_names()
    spec = ts.container_spec(
        image=image,
        db_host="127.0.0.1",
        db_port=db_port,
        db_name=db_name,
        db_user=db_user,
        profile=profile,
        artifacts_destination=f"s3://{bucket}/{artifacts_prefix()}",
    )
    command = list(spec.command)
    # Host networking shares this machine's ports: bind loopback, not every interface.
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port or spec.port)
    return RunConfig(
        image=spec.image,
        command=command,
        user=spec.user,
        port=port or spec.port,
        health_path=spec.health_path,
        memory_mib=spec.memory,
        cpu_units=spec.cpu,
        contract_env=dict(spec.env),
        secret_names=list(spec.secret_env_names),
        local_env_names=sorted(local_env_names),
    )


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    value: float | None = None  # the measured number, when the check measures one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    profile: str
    image: str = ""
    image_size_mb: float = 0.0
    run_config: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    directory: str = ""  # where PostgreSQL, moto and their logs live (gone unless kept)
    kept: bool = False
    url: str = ""

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "ok": not self.failed,
            "image": self.image,
            "image_size_mb": self.image_size_mb,
            "run_config": self.run_config,
            "checks": [c.as_dict() for c in self.checks],
            "directory": self.directory,
            "kept": self.kept,
            "url": self.url,
        }


@dataclass
class Request:
    profile: str = "small"
    s3_endpoint: str | None = None
    keep: bool = False
    runs: int = 200
    port: int | None = None
    fault: str | None = None  # one of FAULTS: break that dependency on purpose


class _Stop(Exception):
    """A check failed in a way that makes the later ones meaningless."""


def rehearse(req: Request, progress: Progress = lambda _m: None) -> Report:
    """Run every check; services are stopped (unless keep) whatever happens."""
    from mlrig.adapters import docker as docker_adapter
    from mlrig.adapters import postgres
    from mlrig.core.local_stack import port_is_free

    if req.profile not in ts.CONTAINER_SIZES:
        raise UsageError(
            f"unknown profile {req.profile!r}",
            hint=f"use one of: {', '.join(sorted(ts.CONTAINER_SIZES))}",
        )
    if req.fault not in (None, *FAULTS):
        raise UsageError(f"unknown fault {req.fault!r}", hint=f"use one of: {', '.join(FAULTS)}")
    if req.runs < 1:
        raise UsageError("--runs must be at least 1")
    if req.s3_endpoint is not None and not req.s3_endpoint.startswith(("http://", "https://")):
        raise UsageError(
            f"--s3-endpoint {req.s3_endpoint!r} is not a URL", hint="give it as http(s)://host:port"
        )
    # Both missing dependencies are reported before anything is built or started.
    docker_adapter.client()
    postgres.bin_dir()
    if req.s3_endpoint is None:
        _moto_binary()
    contract_port = req.port or ts.CONTAINER_PORT
    if not port_is_free(contract_port):
        from mlrig.errors import PortInUse

        raise PortInUse(
            f"port {contract_port} (the tracking server's port) is in use here",
            hint="stop what listens on it, or pass --port",
        )
    report = Report(profile=req.profile)
    with _Services(req, progress) as services:
        report.image = services.image
        report.image_size_mb = services.image_size_mb
        report.directory, report.kept = str(services.root), req.keep
        report.url = services.url
        _Checks(req, services, report, progress).run()
    return report


def stop_kept(directory: Path) -> list[str]:
    """Stop what a `--keep` rehearsal left running (container by label, services by PID
    file) and delete its directory; returns what was stopped."""
    from mlrig.adapters import processes

    directory = directory.resolve()
    if (
        not directory.name.startswith("mlrig-rehearse-")
        or not (directory / "postgres.pid").exists()
    ):
        raise UsageError(
            f"{directory} is not a kept rehearsal's directory",
            hint="pass the directory `mlrig stack rehearse --keep` printed",
        )
    stopped = []
    for container in _docker().containers.list(
        all=True, filters={"label": f"mlrig.rehearsal={directory}"}
    ):
        container.remove(force=True)
        stopped.append(f"container {container.short_id}")
    for name in ("postgres", "moto"):
        if (directory / f"{name}.pid").exists():
            processes.stop(directory / f"{name}.pid")
            stopped.append(name)
    shutil.rmtree(directory, ignore_errors=True)
    return stopped


def _moto_binary() -> Path:
    import sys

    from mlrig.errors import DependencyMissing

    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise DependencyMissing(
            "moto's standalone server is not installed",
            hint="pip install 'moto[server]', or pass --s3-endpoint URL",
        )
    return exe


class _Services:
    """Image, PostgreSQL, S3 API and bucket: started in order, stopped in reverse."""

    def __init__(self, req: Request, progress: Progress) -> None:
        self.req, self.progress = req, progress
        self.root = Path(tempfile.mkdtemp(prefix="mlrig-rehearse-"))
        self.root.chmod(0o711)  # PostgreSQL's unprivileged account must reach its data dir
        self.cleanups: list[Callable[[], object]] = []
        self.containers: list[Any] = []
        self.db_password = secrets.token_urlsafe(24)
        self.admin_password = secrets.token_urlsafe(24)
        self.flask_secret = secrets.token_urlsafe(32)
        self.bucket = f"mlrig-{STACK_NAME}-{secrets.token_hex(6)}"
        self.image = ""
        self.image_size_mb = 0.0

    def __enter__(self) -> _Services:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.req.keep:
            self.progress(f"kept everything; the rehearsal directory is {self.root}")
            return
        self.close()

    def close(self) -> None:
        for container in self.containers:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    def _start(self) -> None:
        from mlrig.adapters import docker as docker_adapter
        from mlrig.adapters import postgres, processes
        from mlrig.core import aws_stack, engine
        from mlrig.core.local_stack import free_port

        self.progress("building the tracking-server image")
        self.image = aws_stack.build_server_image(self.progress, engine.ensure_base_image())
        size = docker_adapter.client().images.get(self.image).attrs.get("Size", 0)
        self.image_size_mb = round(size / 1e6, 1)
        # For --keep: the admin password in a 0600 file, never on the terminal.
        secret_file = self.root / "admin-password"
        secret_file.touch(mode=0o600)
        secret_file.write_text(self.admin_password + "\n")
        self.progress("starting PostgreSQL")
        self.cluster = postgres.init(
            self.root / "pg", port=free_port(), superuser_password=secrets.token_urlsafe(24)
        )
        self.cleanups.append(lambda: postgres.stop(self.cluster))
        postgres.start(self.cluster)
        db_name, db_user = db_names()
        postgres.create_database(
            self.cluster, name=db_name, owner=db_user, password=self.db_password
        )
        if self.req.s3_endpoint:
            self.s3_endpoint = self.req.s3_endpoint.rstrip("/")
            self.s3_creds = {
                k: os.environ[k]
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
                if os.environ.get(k)
            }
        else:
            self.progress("starting moto's S3 API")
            port = free_port()
            pid_file = self.root / "moto.pid"
            rec = processes.start(
                [str(_moto_binary()), "-H", "127.0.0.1", "-p", str(port)],
                pid_file=pid_file,
                log_file=self.root / "moto.log",
            )
            self.cleanups.append(lambda: processes.stop(pid_file))
            self.s3_endpoint = f"http://127.0.0.1:{port}"
            self.s3_creds = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal"}
            _wait_http(
                self.s3_endpoint + "/moto-api/",
                30,
                lambda: processes.exited_early(rec),
                "moto's S3 API",
            )
        self._create_bucket()

    def s3(self) -> Any:
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=self.s3_creds.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self.s3_creds.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=self.s3_creds.get("AWS_SESSION_TOKEN"),
            region_name=S3_REGION,
        )
        return session.client("s3", endpoint_url=self.s3_endpoint)

    def _create_bucket(self) -> None:
        from mlrig.adapters import aws

        try:
            self.s3().create_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - botocore errors, mapped below
            raise aws.translate(exc, f"creating bucket {self.bucket}") from exc
        self.cleanups.append(self._delete_bucket)

    def _delete_bucket(self) -> None:
        s3 = self.s3()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=self.bucket)

    # --- the tracking server container ---

    def config(self) -> RunConfig:
        return run_config(
            profile=self.req.profile,
            image=self.image,
            db_port=self.cluster.port,
            bucket=self.bucket,
            port=self.req.port,
            local_env_names=tuple(self._local_env()),
        )

    def _local_env(self) -> dict[str, str]:
        env = dict(self.s3_creds)
        env.update({"AWS_DEFAULT_REGION": S3_REGION, "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint})
        if self.req.fault == "db-down":  # the entrypoint's bounded wait, shortened for tests
            env["MLRIG_DEPENDENCY_WAIT_SECONDS"] = str(FAULT_WAIT_SECONDS)
        return env

    def _secrets(self) -> dict[str, str]:
        values = {
            ts.ENV_ADMIN_PASSWORD: self.admin_password,
            ts.ENV_FLASK_SECRET: self.flask_secret,
            ts.ENV_PG_PASSWORD: self.db_password,
        }
        if self.req.fault == "db-password":
            values[ts.ENV_PG_PASSWORD] = "not-" + self.db_password
        return values

    def run_container(self) -> Any:
        cfg = self.config()
        env = {**cfg.contract_env, **self._local_env()}
        values = self._secrets()
        env.update({name: values[name] for name in cfg.secret_names})  # KeyError = contract drift
        container = _docker().containers.run(
            cfg.image,
            command=cfg.command,
            user=cfg.user,
            environment=env,
            network_mode=cfg.network_mode,
            detach=True,
            mem_limit=f"{cfg.memory_mib}m",
            memswap_limit=f"{cfg.memory_mib}m",
            # Fargate's task CPU is a hard quota; cpu_shares weights it like an ECS container.
            nano_cpus=cfg.cpu_units * 1_000_000_000 // 1024,
            cpu_shares=cfg.cpu_units,
            labels={"mlrig.rehearsal": str(self.root)},
        )
        self.containers.append(container)
        return container

    def remove_container(self, container: Any) -> None:
        container.remove(force=True)
        self.containers.remove(container)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config().port}"


def _docker() -> Any:
    from mlrig.adapters import docker as docker_adapter

    return docker_adapter.client()


def _wait_http(url: str, timeout: float, dead: Callable[[], bool], what: str) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dead():
            raise ServiceError(f"{what} exited at start")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise ServiceError(f"{what} did not answer within {timeout:.0f} s")


def last_log_line(container: Any) -> str:
    """The container's last meaningful line: the entrypoint's own message when it gave up."""
    try:
        lines = container.logs(tail=40).decode(errors="replace").splitlines()
    except Exception:  # noqa: BLE001 - the container may be gone already
        return "no logs"
    lines = [ln.strip() for ln in lines if ln.strip()]
    own = [ln for ln in lines if ln.startswith("mlflow-server:")]
    return (own or lines or ["no logs"])[-1]


class _Checks:
    def __init__(
        self, req: Request, services: _Services, report: Report, progress: Progress
    ) -> None:
        self.req, self.s, self.report, self.progress = req, services, report, progress
        self.admin = (ts.ADMIN_USERNAME, services.admin_password)
        self.sampler: MemorySampler

    def add(self, name: str, ok: bool, detail: str, value: float | None = None) -> Check:
        check = Check(name, ok, detail, value)
        self.report.checks.append(check)
        self.progress(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return check

    def run(self) -> None:
        from mlrig.core.rehearse_checks import run_all

        self.report.run_config = self.s.config().public()
        with contextlib.suppress(_Stop):
            run_all(self)

    def break_dependency(self) -> None:
        """The fault asked for, just before the server starts: it must name it."""
        if self.req.fault == "bucket":
            self.s._delete_bucket()
        if self.req.fault == "db-down":
            from mlrig.adapters import postgres

            postgres.stop(self.s.cluster)

    def guard(self, name: str, check: Callable[..., Any], *args: Any) -> Any:
        """Run a check; an error it did not expect (server gone mid-check...) fails it."""
        try:
            return check(*args)
        except _Stop:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the check's failure
            text = str(exc).strip().splitlines()
            self.add(name, False, f"{type(exc).__name__}: {text[0] if text else ''}")
            raise _Stop from exc

    def start(self, name: str) -> Any:
        """Run a container and wait for /health; a failure stops the rehearsal."""
        import requests

        started = time.monotonic()
        container = self.s.run_container()
        self.sampler = MemorySampler(container)  # from the first second: start-up counts too
        self.sampler.start()
        url = self.s.url + self.s.config().health_path
        while time.monotonic() - started < HEALTH_TIMEOUT:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                self.add(name, False, f"container exited (code {code}): {last_log_line(container)}")
                raise _Stop
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    took = time.monotonic() - started
                    self.add(name, True, f"/health 200 after {took:.1f} s", round(took, 1))
                    return container
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.add(
            name, False, f"no /health 200 within {HEALTH_TIMEOUT:.0f} s: {last_log_line(container)}"
        )
        raise _Stop


@contextlib.contextmanager
def client_env(url: str, username: str, password: str) -> Iterator[None]:
    """MLflow's client reads its credentials from the environment only. It would also print
    a run link to stdout (and fetch the run for it) on every finished run: not into --json."""
    from mlrig.core.stacks import temporary_env

    values = {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1",
    }
    with temporary_env(values):
        yield


class MemorySampler(threading.Thread):
    """Peak of `docker stats` memory (usage minus inactive page cache, as the CLI shows it)."""

    def __init__(self, container: Any) -> None:
        super().__init__(daemon=True)
        self.container, self.peak, self.samples = container, 0, 0
        self.max_usage = 0  # cgroup v1's high-water mark, page cache included (0 on v2)
        self._done = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(Exception):
            for stat in self.container.stats(stream=True, decode=True):
                mem = stat.get("memory_stats") or {}
                extra = mem.get("stats") or {}
                cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))
                if "usage" in mem:
                    self.peak = max(self.peak, int(mem["usage"]) - int(cache))
                    self.max_usage = max(self.max_usage, int(mem.get("max_usage", 0)))
                    self.samples += 1
                if self._done.is_set():
                    return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)
