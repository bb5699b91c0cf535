"""The configurations under test (stock basic-auth, mlrig, no auth, mlrig with MLflow's auth
function, two workers, a bearer token from a local issuer) and what each one measures."""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrig.tracking import config as ts

PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
ROUNDS = 10  # the runs are cut into this many slices, alternated across the servers
SETTLE_SECONDS = 5.0  # the tree must hold still this long before idle memory is read
SETTLE_LIMIT = 45.0
WRONG_PASSWORD = 10  # rejected calls per server (each pays the password hash)
# what MLflow 3.17 ships in mlflow/server/auth/basic_auth.ini, minus the secret it lacks
STOCK_AUTH_INI = """[mlflow]
default_permission = READ
database_uri = {db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""
Build = Callable[[Path, int, str], tuple[list[str], dict[str, str]]]


@dataclass
class Config:
    name: str
    auth: bool
    build: Build
    workload: str = "full"  # full | latency | idle
    bearer: bool = False  # authenticate with an OIDC token instead of the admin's password


@dataclass
class Result:
    config: str
    start_to_healthy_s: float = 0.0
    processes: int = 0
    idle_pss_mib: float = 0.0
    idle_uss_mib: float = 0.0
    idle_rss_mib: float = 0.0
    after_pss_mib: float | None = None  # once the workload is done: what a task must hold
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    median_ms: float | None = None
    p90_ms: float | None = None
    wrong_password_samples_ms: list[float] = field(default_factory=list, repr=False)
    wrong_password_ms: float | None = None
    runs: int = 0
    runs_slices_s: list[float] = field(default_factory=list, repr=False)
    runs_s: float | None = None
    stop_s: float | None = None
    left_after_stop: int = 0
    commands: list[str] = field(default_factory=list)


BEARER_REPOSITORY = "acme/bench"
_ISSUER: Any = None


def issuer() -> Any:
    """The local OIDC issuer the tests use (keys made here, served on loopback)."""
    global _ISSUER
    if _ISSUER is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.helpers import LocalIssuer

        _ISSUER = LocalIssuer()
    return _ISSUER


def bearer_token() -> str:
    # The token maps to the admin, so the request takes the same authorization path as the
    # Basic row: the difference between the rows is the token check alone.
    return str(
        issuer().token("mlrig:bench", repository=BEARER_REPOSITORY, exp=int(time.time()) + 3600)
    )


def mlrig_config(
    workers: int = 1, authorization_function: str | None = None, oidc: bool = False
) -> Build:
    def build(d: Path, port: int, pw: str) -> tuple[list[str], dict[str, str]]:
        from mlrig.tracking import oidc as tracking_oidc

        ini = ts.auth_ini(f"sqlite:///{d / 'auth.db'}")
        if authorization_function:
            ini = ini.replace(ts.AUTHORIZATION_FUNCTION, authorization_function)
        (d / "auth.ini").write_text(ini)
        oidc_path = None
        if oidc:
            oidc_path = d / "oidc.json"
            rule = tracking_oidc.Rule(BEARER_REPOSITORY, ts.ADMIN_USERNAME)
            config = tracking_oidc.OidcConfig(issuer().url, "mlrig:bench", (rule,))
            oidc_path.write_text(json.dumps(config.to_json()))
        p = ts.local_plan(
            data_dir=d,
            port=port,
            admin_password=pw,
            flask_secret=secrets.token_urlsafe(32),
            auth_config_path=d / "auth.ini",
            oidc_config_path=oidc_path,
        )
        argv = list(p.argv)
        argv[argv.index("--workers") + 1] = str(workers)
        return argv, p.env

    return build


def stock(d: Path, port: int, pw: str) -> tuple[list[str], dict[str, str]]:
    argv, env = mlrig_config()(d, port, pw)
    (d / "auth.ini").write_text(STOCK_AUTH_INI.format(db=f"sqlite:///{d / 'auth.db'}"))
    env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION")  # MLflow's default: on
    return argv, env


def no_auth(d: Path, port: int, pw: str) -> tuple[list[str], dict[str, str]]:
    argv, _ = mlrig_config()(d, port, pw)
    i = argv.index("--app-name")
    return argv[:i] + argv[i + 2 :], ts.plain_env()


CONFIGS = [
    Config("stock basic-auth", True, stock),
    Config("mlrig", True, mlrig_config()),
    Config("no auth", False, no_auth),
    Config("mlrig, bearer token", True, mlrig_config(oidc=True), "latency", bearer=True),
    Config(
        "mlrig, MLflow's auth function",
        True,
        mlrig_config(authorization_function=ts.MLFLOW_AUTHORIZATION_FUNCTION),
        "latency",
    ),
    Config("mlrig, 2 workers", True, mlrig_config(workers=2), "idle"),
]
