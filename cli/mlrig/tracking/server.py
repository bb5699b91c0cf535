"""The MLflow tracking server's configuration, defined once.

The local stack runs it as a process; the AWS program and the rehearsal run it as a
container. Both read the settings here so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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


# --- Wrong passwords are throttled (inside the server, in front of MLflow's check) ---
# MLflow runs its slow password hash (~200 ms of CPU on 2 CPUs) for every wrong password:
# its cache holds only successes. A 16-thread flood of wrong passwords took a normal user's
# request from 28 ms to 1 s median. So after THROTTLE_MAX_FAILURES failures from one source
# address for one user name within THROTTLE_WINDOW_SECONDS, that pair is answered 401 with
# Retry-After, without a hash, for THROTTLE_BACKOFF_SECONDS; a success clears only its own pair.
# 401, not 429: the credentials were not verified, every client already treats 401 as "not
# let in" (a stale password keeps getting 401, never a new status), and the body and
# Retry-After say why and for how long; MLflow's client would instead retry a 429 for minutes.
# - 30 in 60 s: above what a legitimate client does before someone notices its password went
#   stale (a job polling every few seconds; tests/integration/test_tracking_auth.py makes 20
#   stale attempts, then expects the new password to work at once), while a guesser gets 30
#   tries a minute instead of ~5 a second per thread, and a flood at most 30 hashes a minute
#   per pair (~6 s of CPU a minute).
# - 60 s back-off: a client locked out by its own failures waits a minute; a flood spends all
#   but 30 requests a minute on an answer that costs no hash.
# - 10,000 pairs, least recently seen dropped first: ~2 MB at most, since keys are 16-byte
#   digests (a 10 kB user name costs what a short one does); a flood of distinct names can
#   only evict entries, never grow memory, and each name still costs the attacker 30 requests.
# Counts are per server process: with N workers a pair gets up to N x 30 tries per window.
THROTTLE_MAX_FAILURES = 30
THROTTLE_WINDOW_SECONDS = 60.0
THROTTLE_BACKOFF_SECONDS = 60.0
THROTTLE_MAX_ENTRIES = 10_000
# That answer is cheap but not free: through MLflow's middleware and Flask it still costs ~3 ms of
# CPU, so 16 connections looping on it kept a normal request at 6x its median. Holding each
# throttled answer back for a second turns such a loop into 16 requests a second. The wait
# holds one of the worker's threads (AnyIO lends Flask 40), so at most 20 wait at once;
# past that a throttled request is answered at once and the others keep their threads.
THROTTLE_TARPIT_SECONDS = 1.0
THROTTLE_TARPIT_MAX_WAITING = 20
# Proxies in front of the server that append the client's address to X-Forwarded-For (1
# behind a load balancer). 0, the default, uses the peer address: a client could otherwise
# name any source it likes and dodge the per-source count.
ENV_TRUSTED_PROXY_HOPS = "MLRIG_TRUSTED_PROXY_HOPS"


class Attempts(NamedTuple):
    """Failed logins of one (source, user) pair in its current window, and its back-off."""

    failures: int
    window_start: float
    blocked_until: float = 0.0


def after_failure(
    prev: Attempts | None,
    now: float,
    *,
    max_failures: int = THROTTLE_MAX_FAILURES,
    window: float = THROTTLE_WINDOW_SECONDS,
    backoff: float = THROTTLE_BACKOFF_SECONDS,
) -> Attempts:
    """The pair's record after one more failure at `now` (a monotonic clock)."""
    if prev is None or now - prev.window_start >= window:
        prev = Attempts(0, now)
    failures = prev.failures + 1
    if failures >= max_failures:
        return Attempts(0, now, now + backoff)  # counting starts over when the back-off ends
    return prev._replace(failures=failures)


def retry_after(record: Attempts | None, now: float) -> float:
    """Seconds the pair must still wait; 0 when it may try."""
    return 0.0 if record is None else max(0.0, record.blocked_until - now)


class LoginThrottle:
    """Attempts per (source, user), bounded: the least recently seen pair goes first."""

    def __init__(self, max_entries: int = THROTTLE_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._records: OrderedDict[bytes, Attempts] = OrderedDict()
        self._lock = threading.Lock()  # Flask handlers run on a thread pool

    @staticmethod
    def key(source: str, username: str) -> bytes:
        raw = f"{source}\0{username}".encode("utf-8", "backslashreplace")
        return hashlib.blake2b(raw, digest_size=16).digest()

    def retry_after(self, key: bytes, now: float) -> float:
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                self._records.move_to_end(key)
        return retry_after(record, now)

    def failed(self, key: bytes, now: float) -> None:
        with self._lock:
            self._records[key] = after_failure(self._records.get(key), now)
            self._records.move_to_end(key)
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)

    def succeeded(self, key: bytes) -> None:
        with self._lock:
            self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


_THROTTLE = LoginThrottle()
_TARPIT = threading.BoundedSemaphore(THROTTLE_TARPIT_MAX_WAITING)


def _hold_back_throttled_answer() -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
        return  # MLflow's FastAPI routes call the guard on the event loop: never sleep there
    except RuntimeError:
        pass  # a Flask request on a worker thread
    if _TARPIT.acquire(blocking=False):
        try:
            time.sleep(THROTTLE_TARPIT_SECONDS)
        finally:
            _TARPIT.release()


# --- Password checks run one at a time per server process (single flight) ---
# MLflow checks a password with werkzeug's scrypt (n=2**15, r=8: 32 MiB and ~0.1 s of CPU a
# check, several times that under a quarter- or half-vCPU quota), and its credential cache
# holds a check only once it succeeded. So N requests that miss the cache at once each run a
# hash: 16 clients at a worker's start or when their entry's TTL ends, or 16 wrong passwords
# from anyone, took the small task (1 GiB, 2 workers, ~620 MiB idle) to its limit, and the
# kernel killed a worker with every request on it (bench/load_bench.py). Through this gate a
# process runs one check at a time (+32 MiB at most), and a request that waited while the
# same credentials were found good is let in on that check instead of hashing again: it
# arrived before that check ended, so it is treated as part of it. Failures are never shared.
# On the event loop (MLflow's ASGI routes) the check runs ungated: waiting for the gate there
# would stall every request of the worker, and the loop is one thread, so one more at most.
PASSWORD_CHECKS_MAX_REMEMBERED = 1024


class PasswordGate:
    """Wraps MLflow's `store.authenticate_user(username, password) -> bool`."""

    def __init__(self, check: Any) -> None:
        self.check = check
        self._lock = threading.Lock()
        self._key = os.urandom(32)  # per process: the digests are useless outside it
        self._passed: OrderedDict[bytes, float] = OrderedDict()  # digest -> when it passed

    def _digest(self, username: str, password: str) -> bytes:
        raw = f"{username}\0{password}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(raw, key=self._key, digest_size=16).digest()

    def __call__(self, username: str, password: str, *args: Any, **kwargs: Any) -> bool:
        import asyncio

        try:
            asyncio.get_running_loop()
            return bool(self.check(username, password, *args, **kwargs))
        except RuntimeError:
            pass  # a Flask request on a worker thread
        shared = not args and not kwargs  # MLflow's other uses (use_primary=...) never share
        arrived, digest = time.monotonic(), self._digest(username, password)
        with self._lock:
            passed = self._passed.get(digest)
            if shared and passed is not None and passed >= arrived:
                return True
            ok = bool(self.check(username, password, *args, **kwargs))
            if ok and shared:
                self._passed[digest] = time.monotonic()
                self._passed.move_to_end(digest)
                while len(self._passed) > PASSWORD_CHECKS_MAX_REMEMBERED:
                    self._passed.popitem(last=False)
            return ok


_GATE_LOCK = threading.Lock()


def gate_password_checks(store: Any) -> None:
    """Put the gate in front of MLflow's password check (once per store)."""
    if isinstance(store.authenticate_user, PasswordGate):
        return
    with _GATE_LOCK:
        if not isinstance(store.authenticate_user, PasswordGate):
            store.authenticate_user = PasswordGate(store.authenticate_user)


def request_source(remote_addr: str | None, forwarded_for: str | None, hops: int) -> str:
    """The client's address: the peer's, or the one `hops` trusted proxies recorded."""
    if hops > 0 and forwarded_for:
        chain = [a.strip() for a in forwarded_for.split(",") if a.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return remote_addr or "unknown"


def authenticate_request_basic_auth():  # type: ignore[no-untyped-def]
    """Runs inside the server: 401 for anything but Basic credentials, 401 with Retry-After
    for a (source, user) pair in back-off, else MLflow's check, whose failures are counted.

    Imports Flask and MLflow lazily: this module is also imported by `mlrig --help`. The
    server image gets this file alone (aws_stack copies it), so it imports nothing from mlrig.
    """
    from flask import Response, request
    from mlflow.server import auth

    credentials = request.authorization
    if (
        credentials is None
        or credentials.type != "basic"
        or credentials.username is None
        or credentials.password is None
    ):
        return auth.make_basic_auth_response()
    try:
        hops = int(os.environ.get(ENV_TRUSTED_PROXY_HOPS, "0"))
    except ValueError:
        hops = 0
    source = request_source(request.remote_addr, request.headers.get("X-Forwarded-For"), hops)
    key = _THROTTLE.key(source, credentials.username)
    wait = _THROTTLE.retry_after(key, time.monotonic())
    if wait > 0:
        _hold_back_throttled_answer()
        seconds = str(int(wait) + 1)
        return Response(
            f"Too many failed logins for this user from this address; retry in {seconds} s.",
            status=401,
            headers={"Retry-After": seconds, "WWW-Authenticate": 'Basic realm="mlflow"'},
            mimetype="text/plain",
        )
    gate_password_checks(auth.store)
    result = auth.authenticate_request_basic_auth()
    if isinstance(result, Response):
        _THROTTLE.failed(key, time.monotonic())
    else:
        _THROTTLE.succeeded(key)
    return result


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
    if oidc is not None:  # issuer, audience and rules (tracking_oidc.OidcConfig.to_json())
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
