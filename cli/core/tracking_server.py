"""The MLflow tracking server's configuration, defined once.

The local stack runs it as a process; the AWS program and the rehearsal run it as a
container. Both read the settings here so they cannot drift apart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_USERNAME = "admin"
HEALTH_PATH = "/health"
CONTAINER_PORT = 5000

# MLflow checks a PBKDF2 hash on every authenticated request unless its credential cache is
# on (~200 ms a request on 2 CPUs). 30 s bounds how long a changed password may still work on
# *another* worker/task; the worker that handles the change invalidates its entry at once.
AUTH_CACHE_TTL_SECONDS = 30
# Job execution (on by default in MLflow 3.x) spawns consumer processes that cost ~0.8 GB
# and outlive the server on SIGTERM; no mlrig feature uses MLflow jobs.
ENABLE_JOB_EXECUTION = False

# Names of the environment variables the server reads; the values come from each runtime.
ENV_AUTH_CONFIG = "MLFLOW_AUTH_CONFIG_PATH"
ENV_ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
ENV_FLASK_SECRET = "MLFLOW_FLASK_SERVER_SECRET_KEY"
SECRET_ENV_NAMES = (ENV_ADMIN_PASSWORD, ENV_FLASK_SECRET)


def auth_ini(database_uri: str, default_permission: str = "READ") -> str:
    """The basic-auth config file. It holds no secret: the admin password comes by env."""
    return (
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}\n"
        "auth_cache_max_size = 10000\n"
    )


def plain_env() -> dict[str, str]:
    """Non-secret environment shared by every runtime."""
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(ENABLE_JOB_EXECUTION).lower(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    }


def server_args(*, host: str, port: int, backend_store_uri: str, artifacts_destination: str,
                workers: int = 1) -> list[str]:
    """Arguments after `mlflow server`."""
    return [
        "--app-name", "basic-auth",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
    ]


@dataclass(frozen=True)
class LocalServerPlan:
    """Everything needed to run the server as a local process."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def local_plan(*, data_dir: Path, port: int, admin_password: str, flask_secret: str,
               auth_config_path: Path) -> LocalServerPlan:
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    argv = [str(mlflow_bin), "server", *server_args(
        host="127.0.0.1",
        port=port,
        backend_store_uri=f"sqlite:///{(data_dir / 'mlflow.db').resolve()}",
        artifacts_destination=str((data_dir / "artifacts").resolve()),
    )]
    env = plain_env()
    env[ENV_AUTH_CONFIG] = str(auth_config_path)
    env[ENV_ADMIN_PASSWORD] = admin_password
    env[ENV_FLASK_SECRET] = flask_secret
    return LocalServerPlan(argv=argv, env=env)
