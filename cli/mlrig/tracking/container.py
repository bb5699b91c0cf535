"""The container runtime contract: what the AWS task, the rehearsal and the mlflow-server
image agree on (user, database, secrets, sizes, the container's command and environment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlrig.tracking.config import (
    CONTAINER_PORT,
    ENV_AUTH_CONFIG,
    ENV_OIDC_CONFIG,
    HEALTH_PATH,
    SECRET_ENV_NAMES,
    auth_ini,
    plain_env,
    server_args,
)
from mlrig.tracking.throttle import ENV_TRUSTED_PROXY_HOPS

# --- Container runtime contract (the AWS task and the mlflow-server image agree on it) ---

CONTAINER_USER = "10001:10001"  # the image's non-root `mlflow` user
# The server's PostgreSQL database and its owner role: RDS creates them, the rehearsal too.
DB_NAME = "mlflow"
DB_USER = "mlflow"
ENV_PG_PASSWORD = "PGPASSWORD"  # libpq reads it, so the store URI never holds the password
ENV_AUTH_INI = "MLRIG_AUTH_INI"  # the image's entrypoint writes it to ENV_AUTH_CONFIG
CONTAINER_SECRET_ENV_NAMES = (*SECRET_ENV_NAMES, ENV_PG_PASSWORD)
# (cpu units, MiB, worker processes) per stack profile. Idle PSS of the whole server tree
# (bench/tracking_bench.py, MLflow 3.17): 0.39 GB with 1 worker, 0.59 GB with 2, flat after
# 200 logged runs; so 1 GiB leaves 2 workers ~40 % headroom.
CONTAINER_SIZES = {"small": (512, 1024, 2), "production": (1024, 2048, 4)}
# A container serves a team, so it runs MLflow's Flask app on gunicorn's threaded workers,
# CONTAINER_THREADS each, not on uvicorn. Under 16 clients' mix (bench/load_bench.py) uvicorn
# spent ~54 ms of CPU a request, ~40 % of it in its event loop and the ASGI-to-WSGI bridge
# (every request, and each 64 KiB chunk of an upload, crosses threads); gunicorn gthread
# spends ~39 ms: 9.3 -> 12.8 req/s on the small task's 0.5 vCPU, and 83 % -> 73 % of its
# memory at peak. Nothing mlrig serves lives on MLflow's ASGI-only routes (OpenTelemetry trace
# ingestion, jobs, AI gateway, assistant). The local stack keeps uvicorn: one user, one
# process, the leanest tree.
CONTAINER_THREADS = 4
# Fargate's task sizes: CPU units -> the memory (MiB) each allows.
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),  # 8 and 16 vCPU: platform 1.4, Linux
    16384: tuple(range(32768, 122881, 8192)),
}
# A size that holds 16 clients' mix at 26 req/s with p99 <= 1 s (bench/load_bench.py,
# `load-sizing`): 2 vCPU / 4 GiB, 4 workers x 4 threads, p99 676 ms, memory 29 %.
TEAM_SIZE = "2048:4096"


def parse_size(size: str) -> tuple[int, int]:
    """ "CPU:MIB" (CPU units, 1024 a vCPU) as a Fargate task size; ValueError naming the
    sizes that exist when it is none."""
    cpu_text, _, memory_text = size.partition(":")
    try:
        cpu, memory = int(cpu_text), int(memory_text)
    except ValueError:
        raise ValueError(f"server size {size!r} is not CPU:MIB (CPU units, 1024 a vCPU)") from None
    if cpu not in FARGATE_MEMORY:
        raise ValueError(
            f"server size {size!r}: Fargate has no task of {cpu} CPU units "
            f"(one of {', '.join(map(str, FARGATE_MEMORY))})"
        )
    allowed = FARGATE_MEMORY[cpu]
    if memory not in allowed:
        raise ValueError(
            f"server size {size!r}: a {cpu}-unit Fargate task takes {allowed[0]}-{allowed[-1]} "
            f"MiB in steps of {allowed[1] - allowed[0]}"
        )
    return cpu, memory


def container_size(profile: str, size: str | None = None) -> tuple[int, int, int]:
    """(CPU units, MiB, gunicorn workers): the profile's, or `size` ("CPU:MIB", a Fargate task
    size) with the profile's workers or one per half vCPU, whichever is more."""
    cpu, memory, workers = CONTAINER_SIZES[profile]
    if size is None:
        return cpu, memory, workers
    cpu, memory = parse_size(size)
    return cpu, memory, max(workers, cpu // 512)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a container runtime needs to run the tracking server."""

    image: str
    command: tuple[str, ...]
    port: int
    health_path: str
    user: str
    env: dict[str, str]
    secret_env_names: tuple[str, ...]
    cpu: int
    memory: int


def container_spec(
    *,
    image: str,
    db_host: str,
    db_name: str,
    db_user: str,
    artifacts_destination: str,
    profile: str,
    allowed_hosts: tuple[str, ...] = (),
    db_port: int = 5432,
    oidc: dict[str, Any] | None = None,
    size: str | None = None,
) -> ContainerSpec:
    """The tracking server as a container: args after the image's `mlflow server` entrypoint;
    the profile's size, or `size` (`container_size`)."""
    cpu, memory, workers = container_size(profile, size)
    store = f"postgresql://{db_user}@{db_host}:{db_port}/{db_name}?sslmode=require"
    command = server_args(
        host="0.0.0.0",  # noqa: S104 - in a container
        port=CONTAINER_PORT,
        backend_store_uri=store,
        artifacts_destination=artifacts_destination,
        workers=workers,
        threads=CONTAINER_THREADS,
    )
    if allowed_hosts:
        command += ["--allowed-hosts", ",".join(allowed_hosts)]
    env = plain_env()
    env[ENV_AUTH_CONFIG] = "/tmp/mlflow-auth.ini"
    env[ENV_AUTH_INI] = auth_ini(store)
    # On AWS the task is reached only through one front door (API Gateway's VPC link or the
    # ALB; the security group admits nothing else), which appends the client's address to
    # X-Forwarded-For: the wrong-password throttle keys on that, not on the proxy's address.
    env[ENV_TRUSTED_PROXY_HOPS] = "1"
    if oidc is not None:  # issuer, audience and rules (oidc.OidcConfig.to_json())
        env[ENV_OIDC_CONFIG] = json.dumps(oidc, separators=(",", ":"))
    return ContainerSpec(
        image=image,
        command=tuple(command),
        port=CONTAINER_PORT,
        health_path=HEALTH_PATH,
        user=CONTAINER_USER,
        env=env,
        secret_env_names=CONTAINER_SECRET_ENV_NAMES,
        cpu=cpu,
        memory=memory,
    )
