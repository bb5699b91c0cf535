"""What a rehearsal starts and stops: the server image, PostgreSQL, an S3 API and its bucket,
the tracking-server container; and the faults that break one of them on purpose."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from mlrig.adapters import aws, http, postgres, processes
from mlrig.adapters import docker as docker_adapter
from mlrig.core.setup import engine
from mlrig.core.shared.progress import Progress
from mlrig.core.stack._rehearse.contract import RunConfig, db_names, run_config
from mlrig.core.stack._rehearse.model import (
    FAULT_WAIT_SECONDS,
    S3_REGION,
    STACK_NAME,
    Request,
)
from mlrig.core.stack.aws import stack as aws_stack
from mlrig.core.stack.local.stack import free_port
from mlrig.errors import DependencyMissing, ServiceError, UsageError
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.wait import Abandoned, WaitTimeout, wait_until

LABEL = "mlrig.rehearsal"  # on the containers, valued with the rehearsal's directory
MOTO_START_TIMEOUT = 30.0


def moto_binary() -> Path:
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise DependencyMissing(
            "moto's standalone server is not installed",
            hint="pip install 'moto[server]', or pass --s3-endpoint URL",
        )
    return exe


def stop_kept(directory: Path) -> list[str]:
    """Stop what a `--keep` rehearsal left running (container by label, services by PID
    file) and delete its directory; returns what was stopped."""
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
    for container in docker_adapter.containers_labelled({LABEL: str(directory)}):
        docker_adapter.remove_container(container)
        stopped.append(f"container {container[:12]}")
    for name in ("postgres", "moto"):
        if (directory / f"{name}.pid").exists():
            processes.stop(directory / f"{name}.pid")
            stopped.append(name)
    shutil.rmtree(directory, ignore_errors=True)
    return stopped


class Services:
    """Image, PostgreSQL, S3 API and bucket: started in order, stopped in reverse."""

    cluster: postgres.Cluster
    s3: aws.S3Endpoint

    def __init__(self, req: Request, progress: Progress) -> None:
        self.req, self.progress = req, progress
        self.root = Path(tempfile.mkdtemp(prefix="mlrig-rehearse-"))
        self.root.chmod(0o711)  # PostgreSQL's unprivileged account must reach its data dir
        self.cleanups: list[Callable[[], object]] = []
        self.containers: list[str] = []
        self.db_password = secrets.token_urlsafe(24)
        self.admin_password = secrets.token_urlsafe(24)
        self.flask_secret = secrets.token_urlsafe(32)
        self.bucket = f"mlrig-{STACK_NAME}-{secrets.token_hex(6)}"
        self.image = ""
        self.image_size_mb = 0.0

    def __enter__(self) -> Services:
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
                docker_adapter.remove_container(container)
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    def _start(self) -> None:
        self.progress("building the tracking-server image")
        self.image = aws_stack.build_server_image(self.progress, engine.ensure_base_image())
        info = docker_adapter.image_info(self.image)
        self.image_size_mb = round((info.size if info else 0) / 1e6, 1)
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
            creds = {
                k: os.environ[k]
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
                if os.environ.get(k)
            }
            self.s3 = aws.S3Endpoint(self.req.s3_endpoint.rstrip("/"), S3_REGION, creds)
        else:
            self._start_moto()
        aws.create_bucket(self.s3, self.bucket)
        self.cleanups.append(self.delete_bucket)

    def _start_moto(self) -> None:
        self.progress("starting moto's S3 API")
        port = free_port()
        pid_file = self.root / "moto.pid"
        rec = processes.start(
            [str(moto_binary()), "-H", "127.0.0.1", "-p", str(port)],
            pid_file=pid_file,
            log_file=self.root / "moto.log",
        )
        self.cleanups.append(lambda: processes.stop(pid_file))
        creds = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal"}
        self.s3 = aws.S3Endpoint(f"http://127.0.0.1:{port}", S3_REGION, creds)
        what = "moto's S3 API"
        try:
            # Any answer at all means it is up; a refused connection (OSError) means not yet.
            wait_until(
                lambda: http.status(self.s3.url + "/moto-api/", timeout=2) > 0,
                timeout=MOTO_START_TIMEOUT,
                what=what,
                give_up=lambda: f"{what} exited at start" if processes.exited_early(rec) else None,
            )
        except Abandoned as exc:
            raise ServiceError(str(exc)) from exc
        except WaitTimeout as exc:
            raise ServiceError(f"{what} did not answer within {MOTO_START_TIMEOUT:.0f} s") from exc

    def delete_bucket(self) -> None:
        aws.delete_bucket(self.s3, self.bucket)

    # --- the tracking server container ---

    def config(self) -> RunConfig:
        return run_config(
            profile=self.req.profile,
            image=self.image,
            db_port=self.cluster.port,
            bucket=self.bucket,
            port=self.req.port,
            local_env_names=tuple(self._local_env()),
            size=self.req.server_size,
        )

    def _local_env(self) -> dict[str, str]:
        env = dict(self.s3.credentials)
        env.update({"AWS_DEFAULT_REGION": S3_REGION, "MLFLOW_S3_ENDPOINT_URL": self.s3.url})
        if self.req.fault == "db-down":  # the entrypoint's bounded wait, shortened for tests
            env["MLRIG_DEPENDENCY_WAIT_SECONDS"] = str(FAULT_WAIT_SECONDS)
        return env

    def _secrets(self) -> dict[str, str]:
        values = {
            ts.ENV_ADMIN_PASSWORD: self.admin_password,
            ts.ENV_FLASK_SECRET: self.flask_secret,
            ts_container.ENV_PG_PASSWORD: self.db_password,
        }
        if self.req.fault == "db-password":
            values[ts_container.ENV_PG_PASSWORD] = "not-" + self.db_password
        return values

    def break_dependency(self) -> None:
        """The fault asked for, just before the server starts: it must name it."""
        if self.req.fault == "bucket":
            self.delete_bucket()
        if self.req.fault == "db-down":
            postgres.stop(self.cluster)

    def run_container(
        self, cfg: RunConfig | None = None, extra_env: Mapping[str, str] | None = None
    ) -> str:
        """Start the tracking server as the task would run; the container's ID.

        A benchmark may pass a variant of config() (another command, size or port) and env
        added last (e.g. a second database's password); the rehearsal passes neither."""
        cfg = cfg or self.config()
        env = {**cfg.contract_env, **self._local_env()}
        values = self._secrets()
        env.update({name: values[name] for name in cfg.secret_names})  # KeyError = contract drift
        env.update(extra_env or {})
        container = docker_adapter.run_task(
            cfg.image,
            command=cfg.command,
            user=cfg.user,
            environment=env,
            network_mode=cfg.network_mode,
            memory_mib=cfg.memory_mib,
            cpu_units=cfg.cpu_units,
            labels={LABEL: str(self.root)},
            cpu_weight=True,  # as ECS weights the task's container
        )
        self.containers.append(container)
        return container

    def remove_container(self, container: str) -> None:
        docker_adapter.remove_container(container)
        self.containers.remove(container)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config().port}"
