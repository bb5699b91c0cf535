"""The two servers under load, each in the `small` task's limits: mlrig's (the rehearsal's
contract) and stock MLflow basic-auth; starting one and saying why it did not start."""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from configparser import ConfigParser
from importlib import resources
from typing import Any

from sampling import StatsSampler, oom_kills
from settings import HEALTH_TIMEOUT

from mlrig.adapters import aws, http, postgres
from mlrig.adapters import docker as docker_adapter
from mlrig.core.stack.local.stack import free_port
from mlrig.core.stack.rehearse import RunConfig, Services, artifacts_prefix, exit_reason, run_config
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.wait import Abandoned, WaitTimeout, wait_until

# --- the servers -----------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    name: str
    cfg: RunConfig
    extra_env: dict[str, str]
    describe: str
    database: str = ts_container.DB_NAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    @property
    def workers(self) -> str:
        cmd = self.cfg.command
        return cmd[cmd.index("--workers") + 1] if "--workers" in cmd else "MLflow's default (4)"


def with_workers(command: list[str], workers: int | None, threads: int | None = None) -> list[str]:
    """The command with its --workers, and the threads in its --gunicorn-opts, replaced."""
    command = list(command)
    if workers is not None:
        if "--workers" in command:
            command[command.index("--workers") + 1] = str(workers)
        else:
            command += ["--workers", str(workers)]
    if threads is not None:
        if "--gunicorn-opts" not in command:
            raise SystemExit("--threads needs a server on gunicorn's threaded workers")
        at = command.index("--gunicorn-opts") + 1
        command[at] = re.sub(r"--threads \d+", f"--threads {threads}", command[at])
    return command


def mlrig_server(
    s: Services,
    workers: int | None,
    env: dict[str, str],
    profile: str | None = None,
    size: tuple[int | None, int | None] = (None, None),
    threads: int | None = None,
) -> Server:
    """The rehearsal's container as is (`mlrig stack rehearse --profile P` runs this config),
    or with the settings a sizing run varies."""
    profile = profile or s.req.profile
    cfg = s.config()
    if profile != s.req.profile:  # the same services, another profile's task
        cfg = run_config(
            profile=profile,
            image=s.image,
            db_port=s.cluster.port,
            bucket=s.bucket,
            port=s.req.port,
            local_env_names=tuple(cfg.local_env_names),
        )
    cpu_units, memory_mib = size
    cfg = dataclasses.replace(
        cfg,
        command=with_workers(cfg.command, workers, threads),
        cpu_units=cpu_units or cfg.cpu_units,
        memory_mib=memory_mib or cfg.memory_mib,
    )
    tweaks = [f"{k}={v}" for k, v in env.items()]
    if threads is not None:
        tweaks.insert(0, f"--threads {threads}")
    if workers is not None:
        tweaks.insert(0, f"--workers {workers}")
    if cpu_units or memory_mib:
        tweaks.insert(0, f"{cfg.cpu_units / 1024:g} vCPU / {cfg.memory_mib} MiB")
    name = f"mlrig {profile}" + (f" ({', '.join(tweaks)})" if tweaks else "")
    return Server(
        name,
        cfg,
        dict(env),
        f"exactly `mlrig stack rehearse --profile {profile}`'s container"
        + (f", plus {', '.join(tweaks)}" if tweaks else ""),
    )


def stock_ini(database_uri: str) -> str:
    """MLflow's shipped basic_auth.ini with only its database_uri changed (the admin password
    comes by MLFLOW_AUTH_ADMIN_PASSWORD, which that file documents)."""
    text = resources.files("mlflow.server.auth").joinpath("basic_auth.ini").read_text()
    parser = ConfigParser()
    parser.read_string(text)
    old = parser["mlflow"]["database_uri"]
    return text.replace(f"database_uri = {old}", f"database_uri = {database_uri}")


def stock_server(s: Services, workers: int | None, *, jobs: bool = True) -> Server:
    """Stock `mlflow server --app-name basic-auth`: same image, limits, PostgreSQL server (its
    own database and role) and bucket scheme; MLflow's defaults for everything else, or with
    job execution off (jobs=False), the one change it needs to start in the small profile."""
    name = user = f"{ts_container.DB_NAME}_stock" + ("" if jobs else "_nojobs")
    password = secrets.token_urlsafe(24)
    postgres.create_database(s.cluster, name=name, owner=user, password=password)
    bucket = f"{s.bucket}-" + name.rsplit("_", 1)[-1].replace("_", "-")
    aws.create_bucket(s.s3, bucket)
    s.cleanups.append(lambda: aws.delete_bucket(s.s3, bucket))
    store = f"postgresql://{user}@127.0.0.1:{s.cluster.port}/{name}?sslmode=require"
    port = free_port()
    command = [
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        f"s3://{bucket}/{artifacts_prefix()}",
    ]
    env = {
        ts.ENV_AUTH_CONFIG: "/tmp/basic_auth.ini",
        # the image's entrypoint writes it, then execs MLflow
        ts_container.ENV_AUTH_INI: stock_ini(store),
        "PYTHONUNBUFFERED": "1",
        # No outbound network here: MLflow's usage telemetry would only time out.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    if not jobs:
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cfg = dataclasses.replace(
        s.config(),
        command=with_workers(command, workers),
        port=port,
        contract_env=env,
        secret_names=[ts.ENV_ADMIN_PASSWORD, ts.ENV_FLASK_SECRET],
    )
    return Server(
        "stock basic-auth" + ("" if jobs else ", job execution off"),
        cfg,
        {ts_container.ENV_PG_PASSWORD: password},
        "`mlflow server --app-name basic-auth`, shipped basic_auth.ini (credential cache off, "
        "default_permission READ) with its database_uri on PostgreSQL; job execution "
        + ("on (MLflow's default)" if jobs else "off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)")
        + "; telemetry off (no network here); "
        + (f"--workers {workers} like mlrig's profile" if workers else "no --workers")
        + " (MLflow's default is 4)",
        database=name,
    )


class StartFailed(Exception):
    """The server died before its load (no /health, or the set-up failed): the result."""

    def __init__(self, reason: str, detail: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def start(s: Services, server: Server) -> tuple[str, float, StatsSampler]:
    """Run the container, wait for /health 200: its ID, seconds to healthy, and the sampler
    of its memory and CPU from the start (StartFailed, container removed, when it never is)."""
    started = time.monotonic()
    container = s.run_container(server.cfg, server.extra_env)
    sampler = StatsSampler(container)
    sampler.start()

    try:
        wait_until(
            lambda: http.status(server.url + ts.HEALTH_PATH, timeout=2) == 200,
            timeout=HEALTH_TIMEOUT,
            what=f"{server.name} /health 200",
            interval=0.5,
            give_up=lambda: exit_reason(container),
        )
    except (Abandoned, WaitTimeout) as exc:
        detail = failure_detail(server, container, sampler, started)
        s.remove_container(container)
        raise StartFailed(str(exc), detail) from exc
    return container, time.monotonic() - started, sampler


def failure_detail(
    server: Server, container: str, sampler: StatsSampler, started: float
) -> dict[str, Any]:
    """What is known of a server that died before its load: exit, OOM, memory, last logs."""
    sampler.stop()
    state = docker_adapter.container_state(container)
    peak = sampler.peak(0.0, float("inf"))
    return {
        "exit_code": state.exit_code,
        "oom_killed": state.oom_killed,
        "oom_kills": oom_kills(container),
        "peak_mem_mib": round(peak / 2**20, 1),
        "peak_mem_pct": round(100 * peak / (server.cfg.memory_mib * 2**20), 1),
        "seconds": round(time.monotonic() - started, 1),
        "log_tail": docker_adapter.container_logs(container, tail=15).splitlines(),
    }
