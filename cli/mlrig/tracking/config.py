"""The MLflow tracking server's configuration, defined once.

The local stack runs it as a process; the AWS program and the rehearsal run it as a
container (`container`). Both read the settings here so they cannot drift apart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_USERNAME = "admin"
HEALTH_PATH = "/health"
CONTAINER_PORT = 5000

# MLflow verifies a password hash on every authenticated request unless its own credential
# cache is on (~200 ms a request on 2 CPUs, several times that on a quarter-vCPU task). The
# cache (mlflow/server/auth/__init__.py: _USER_AUTH_CACHE) holds only *successful* checks, keyed
# by user + HMAC(password) with a per-process key, and the worker that serves a password
# change, admin-flag change or user deletion drops that user's entries at once. So the TTL is
# only the window in which *another* worker or task (the `production` profile runs several)
# or an out-of-band change (direct SQL) may still see the old credential. 30 s keeps that
# window shorter than any human rotation procedure while a busy client pays the hash once per
# 30 s (a >97 % hit rate at one request a second); a longer TTL buys nothing measurable.
AUTH_CACHE_TTL_SECONDS = 30
AUTH_CACHE_MAX_SIZE = 10000
# Job execution (on by default in MLflow 3.x) makes `mlflow server` launch a huey job runner
# and its consumer processes (10 processes, ~0.8 GB idle PSS, and they outlive the server by
# ~15 s on SIGTERM). Only GenAI features use MLflow jobs (online scorers, judge evaluation,
# trace rollups); no mlrig feature does. mlflow/server/__init__.py:_run_server reads this.
ENABLE_JOB_EXECUTION = False

# MLflow's stock basic-auth check answers a non-Basic `Authorization` header (`Bearer ...`,
# what the MLflow client sends when MLFLOW_TRACKING_TOKEN is set) with a 500 once the cache is
# on. mlrig's hook, plugged in through MLflow's own `authorization_function` setting
# (mlrig/tracking/auth.py), checks a bearer token as an OIDC token (mlrig/tracking/oidc.py),
# sends Basic credentials through the wrong-password throttle below to MLflow's check and
# cache unchanged, answers anything else 401, and writes the audit trail
# (mlrig/tracking/audit.py).
AUTHORIZATION_FUNCTION = "mlrig.tracking.auth:authenticate"
MLFLOW_AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"

# Names of the environment variables the server reads; the values come from each runtime.
ENV_AUTH_CONFIG = "MLFLOW_AUTH_CONFIG_PATH"
ENV_ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
ENV_FLASK_SECRET = "MLFLOW_FLASK_SERVER_SECRET_KEY"
SECRET_ENV_NAMES = (ENV_ADMIN_PASSWORD, ENV_FLASK_SECRET)
# The OIDC config (mlrig/tracking/oidc.py): the JSON itself (container), or a file the hook
# re-reads when it changes (local stack). Issuer, audience and rules are not secret.
ENV_OIDC_CONFIG = "MLRIG_OIDC_CONFIG"
ENV_OIDC_CONFIG_FILE = "MLRIG_OIDC_CONFIG_FILE"


# A user with no grant on a resource gets nothing on it: people get access through
# `mlrig access`, each repository's machine identity only to its own experiment and model.
DEFAULT_PERMISSION = "NO_PERMISSIONS"


def auth_ini(database_uri: str, default_permission: str = DEFAULT_PERMISSION) -> str:
    """The basic-auth config file. It holds no secret: the admin password comes by env."""
    return (
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        f"authorization_function = {AUTHORIZATION_FUNCTION}\n"
        "grant_default_workspace_access = false\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}\n"
        f"auth_cache_max_size = {AUTH_CACHE_MAX_SIZE}\n"
    )


def plain_env() -> dict[str, str]:
    """Non-secret environment shared by every runtime."""
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(ENABLE_JOB_EXECUTION).lower(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    }


def gunicorn_opts(threads: int) -> str:
    """`--gunicorn-opts` for a container: threaded workers (gthread) serving MLflow's Flask app.

    `keep-alive` outlives the front door's idle timeout (ALB and API Gateway: 60 s), so the
    proxy never reuses a connection the server has just closed (a 502); `graceful-timeout`
    ends within ECS's 30 s stop timeout; `timeout` is the master's heartbeat check, which a
    gthread worker's main loop answers while its threads serve long requests.
    """
    return (
        f"--worker-class gthread --threads {threads} --timeout 60 --keep-alive 75 "
        "--graceful-timeout 25"
    )


def server_args(
    *,
    host: str,
    port: int,
    backend_store_uri: str,
    artifacts_destination: str,
    workers: int = 1,
    threads: int = 0,
) -> list[str]:
    """Arguments after `mlflow server`: uvicorn (MLflow's default) unless `threads` asks
    for gunicorn's threaded workers (`gunicorn_opts`)."""
    return [
        "--app-name",
        "basic-auth",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        *(["--gunicorn-opts", gunicorn_opts(threads)] if threads else []),
    ]


@dataclass(frozen=True)
class LocalServerPlan:
    """Everything needed to run the server as a local process."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def local_plan(
    *,
    data_dir: Path,
    port: int,
    admin_password: str,
    flask_secret: str,
    auth_config_path: Path,
    oidc_config_path: Path | None = None,
) -> LocalServerPlan:
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    argv = [
        str(mlflow_bin),
        "server",
        *server_args(
            host="127.0.0.1",
            port=port,
            backend_store_uri=f"sqlite:///{(data_dir / 'mlflow.db').resolve()}",
            artifacts_destination=str((data_dir / "artifacts").resolve()),
        ),
    ]
    env = plain_env()
    env[ENV_AUTH_CONFIG] = str(auth_config_path)
    env[ENV_ADMIN_PASSWORD] = admin_password
    env[ENV_FLASK_SECRET] = flask_secret
    if oidc_config_path is not None:  # re-read by the hook when it changes: no restart
        env[ENV_OIDC_CONFIG_FILE] = str(oidc_config_path)
    return LocalServerPlan(argv=argv, env=env)
