"""The AWS tracking server under a team's load: mlrig's `small` task vs stock basic-auth.

The server under test is what `mlrig stack rehearse --profile small` runs (the task's image,
command, user, env, secrets, memory and CPU quota, against real PostgreSQL and moto's S3),
started through the rehearsal's own `Services`. Beside it, in the same image with the same
limits, the same PostgreSQL server (its own database) and an S3 bucket named the same way:
`mlflow server --app-name basic-auth` with MLflow's shipped basic_auth.ini (auth database
pointed at PostgreSQL too, the admin password by env) and MLflow's defaults otherwise.

16 clients (threads, one keep-alive session each) sign in as a non-admin team member with
EDIT on the bench's experiment and registered model and loop over a mix: create run,
log-batch (10 params + 20 metrics), 1 MB artifact upload through the artifact proxy,
terminate run, search runs (max 50), get model version. Requests are paced to an offered
rate (--rate, 0 = as fast as the clients go). Every request is timed client-side; a non-2xx
answer or an exception is an error. The servers run one after the other, never at once.

Run:  .venv/bin/python bench/load_bench.py --also production   # 5 min a server, ~25 min
      MLRIG_BENCH_RESULTS=/tmp/trial .venv/bin/python bench/load_bench.py --seconds 30  # ~7 min
      .venv/bin/python bench/load_bench.py --only mlrig --cpu-units 2048 --memory-mib 4096 \
          --workers 4          # a sizing variant (also --env MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=16)
      .venv/bin/python bench/load_bench.py --also production --size 2048:4096   # + a sizing row
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from configparser import ConfigParser
from importlib import resources
from pathlib import Path
from typing import Any

import psutil
import requests
from common import CLIENT, machine, markdown, record, row, utc_stamp

from mlrig.adapters import aws, http, postgres, processes
from mlrig.adapters import docker as docker_adapter
from mlrig.core.stack import costs
from mlrig.core.stack._rehearse.contract import RunConfig, artifacts_prefix, run_config
from mlrig.core.stack._rehearse.env import Services, moto_binary
from mlrig.core.stack._rehearse.model import MEMORY_LIMIT_SHARE, Request
from mlrig.core.stack._rehearse.session import exit_reason
from mlrig.core.stack.local.stack import free_port
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.wait import Abandoned, WaitTimeout, wait_until

# The goals: the managed offering's smallest server, "up to 25 users", ~25 TPS.
GOAL_RPS = 25.0
GOAL_P99_S = 1.0
MANAGED_SMALL_USD_MONTH = 470.0
STATS = "docker stats of the container during the load (memory also from its cgroup, 0.1 s)"
OWN_CPU = "the load generator's own process CPU (psutil)"
HEALTH_TIMEOUT = 300.0
REQUEST_TIMEOUT = (5.0, 60.0)  # connect, read: a request slower than 60 s is an error
BLOB = os.urandom(1024 * 1024)  # 1 MB of incompressible bytes, uploaded once per iteration
CLIENTS_IN_BURST = 16  # concurrent wrong passwords sent after the load
MEMBER = "team-member"  # each run's names get a suffix: runs may share a database
EXPERIMENT = "load-bench"
MODEL = "load-bench-model"
# One iteration of a client's loop, in order; each op once per iteration (its weight).
OPS = (
    "create run",
    "log batch (10 params, 20 metrics)",
    "upload 1 MB artifact",
    "terminate run",
    "search runs (max 50)",
    "get model version",
)
WEIGHTS = dict.fromkeys(OPS, 1)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        ts_container.ENV_AUTH_INI: stock_ini(
            store
        ),  # the image's entrypoint writes it, then execs MLflow
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


class SetupFailed(Exception):
    """An admin call of the set-up was refused (the server answered, but not 2xx)."""


# --- set-up as the admin: the team member, the experiment, the model version --------------


@dataclasses.dataclass(frozen=True)
class Target:
    url: str
    member: tuple[str, str]
    experiment_id: str
    model: str
    version: str


def seed(url: str, admin: tuple[str, str]) -> Target:
    sess = requests.Session()
    sess.auth = admin

    def call(method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = sess.request(method, f"{url}/api/{path}", timeout=120, **kw)
        if not resp.ok:
            raise SetupFailed(f"{method} {path} -> {resp.status_code}: {resp.text[:300]}")
        return dict(resp.json()) if resp.content else {}

    password, suffix = secrets.token_urlsafe(18), secrets.token_hex(3)
    member, model = f"{MEMBER}-{suffix}", f"{MODEL}-{suffix}"
    call("POST", "2.0/mlflow/users/create", json={"username": member, "password": password})
    exp = call("POST", "2.0/mlflow/experiments/create", json={"name": f"{EXPERIMENT}-{suffix}"})[
        "experiment_id"
    ]
    call("POST", "2.0/mlflow/registered-models/create", json={"name": model})
    for kind, rid in (("experiment", exp), ("registered_model", model)):
        call(
            "POST",
            "3.0/mlflow/users/permissions/grant",
            json={
                "username": member,
                "resource_type": kind,
                "resource_id": rid,
                "permission": "EDIT",
            },
        )
    run = call("POST", "2.0/mlflow/runs/create", json={"experiment_id": exp})["run"]["info"]
    path = f"{exp}/{run['run_id']}/artifacts/model/MLmodel"
    resp = sess.put(
        f"{url}/api/2.0/mlflow-artifacts/artifacts/{path}", data=b"flavors: {}\n", timeout=120
    )
    if not resp.ok:
        raise SetupFailed(f"artifact upload -> {resp.status_code}: {resp.text[:300]}")
    version = call(
        "POST",
        "2.0/mlflow/model-versions/create",
        json={"name": model, "source": run["artifact_uri"] + "/model", "run_id": run["run_id"]},
    )["model_version"]["version"]
    return Target(url, (member, password), exp, model, str(version))


# --- the load ---------------------------------------------------------------------------


@dataclasses.dataclass
class Call:
    op: str
    start: float  # perf_counter
    end: float
    ok: bool
    lag: float  # how late it was sent against its slot (paced runs)
    error: str = ""


class Client(threading.Thread):
    """One team member's loop over the mix, on its own keep-alive session."""

    def __init__(
        self, index: int, of: int, target: Target, interval: float, t0: float, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True, name=f"client-{index}")
        self.target, self.interval, self.stop_event = target, interval, stop
        self.next_slot = t0 + index * interval / of  # the clients' slots interleave evenly
        self.calls: list[Call] = []
        self.session = requests.Session()
        self.session.auth = target.member

    def _send(self, op: str, method: str, path: str, **kw: Any) -> requests.Response | None:
        lag = 0.0
        if self.interval:
            slot = self.next_slot
            self.next_slot += self.interval
            now = time.perf_counter()
            if slot > now:
                time.sleep(slot - now)
            lag = max(0.0, time.perf_counter() - slot)
        start = time.perf_counter()
        try:
            resp = self.session.request(
                method, self.target.url + path, timeout=REQUEST_TIMEOUT, **kw
            )
        except requests.RequestException as exc:
            self.calls.append(Call(op, start, time.perf_counter(), False, lag, type(exc).__name__))
            return None
        end = time.perf_counter()
        ok = 200 <= resp.status_code < 300
        error = "" if ok else f"{resp.status_code} {resp.text[:120]}"
        self.calls.append(Call(op, start, end, ok, lag, error))
        return resp if ok else None

    def run(self) -> None:
        t = self.target
        i = 0
        while not self.stop_event.is_set():
            i += 1
            now_ms = int(time.time() * 1000)
            created = self._send(
                OPS[0],
                "POST",
                "/api/2.0/mlflow/runs/create",
                json={"experiment_id": t.experiment_id, "start_time": now_ms},
            )
            if created is None:
                time.sleep(0.1)  # no run to work on: do not spin on a server that is down
                continue
            run_id = created.json()["run"]["info"]["run_id"]
            self._send(
                OPS[1],
                "POST",
                "/api/2.0/mlflow/runs/log-batch",
                json={
                    "run_id": run_id,
                    "params": [{"key": f"p{k}", "value": str(k * i)} for k in range(10)],
                    "metrics": [
                        {"key": f"m{k % 5}", "value": k / 3, "timestamp": now_ms, "step": k}
                        for k in range(20)
                    ],
                },
            )
            self._send(
                OPS[2],
                "PUT",
                f"/api/2.0/mlflow-artifacts/artifacts/{t.experiment_id}/{run_id}"
                "/artifacts/blob.bin",
                data=BLOB,
            )
            self._send(
                OPS[3],
                "POST",
                "/api/2.0/mlflow/runs/update",
                json={
                    "run_id": run_id,
                    "status": "FINISHED",
                    "end_time": int(time.time() * 1000),
                },
            )
            self._send(
                OPS[4],
                "POST",
                "/api/2.0/mlflow/runs/search",
                json={"experiment_ids": [t.experiment_id], "max_results": 50},
            )
            self._send(
                OPS[5],
                "GET",
                "/api/2.0/mlflow/model-versions/get",
                params={"name": t.model, "version": t.version},
            )


CGROUP_MEMORY = Path("/sys/fs/cgroup/memory/docker")  # cgroup v1 with docker's cgroupfs driver


class StatsSampler(threading.Thread):
    """docker stats, streamed (~1 s apart): memory as the CLI shows it (usage minus inactive
    page cache), the cgroup's CPU time and its CFS throttling counters. Where the cgroup's
    files are readable (cgroup v1), memory is also read every 0.1 s, the same way, so a
    short spike between two docker stats samples is not missed."""

    def __init__(self, container: str) -> None:
        super().__init__(daemon=True)
        self.container = container
        self.samples: list[dict[str, float]] = []
        self.fast: list[tuple[float, float]] = []  # (perf_counter, bytes) every 0.1 s
        self._done = threading.Event()
        self._fast = threading.Thread(target=self._poll_memory, daemon=True)

    def start(self) -> None:
        super().start()
        self._fast.start()

    def _poll_memory(self) -> None:
        base = CGROUP_MEMORY / self.container
        if not (base / "memory.usage_in_bytes").exists():
            return
        while not self._done.is_set():
            with contextlib.suppress(OSError, ValueError, StopIteration):
                usage = int((base / "memory.usage_in_bytes").read_text())
                stat = (base / "memory.stat").read_text().splitlines()
                inactive = next(
                    int(ln.split()[1]) for ln in stat if ln.startswith("total_inactive_file ")
                )
                self.fast.append((time.perf_counter(), float(usage - inactive)))
            time.sleep(0.1)

    def run(self) -> None:
        with contextlib.suppress(Exception):
            for stat in docker_adapter.client().api.stats(self.container, stream=True, decode=True):
                mem = stat.get("memory_stats") or {}
                extra = mem.get("stats") or {}
                cpu = stat.get("cpu_stats") or {}
                thr = cpu.get("throttling_data") or {}
                if "usage" in mem:
                    cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))
                    self.samples.append(
                        {
                            "t": time.perf_counter(),
                            "mem": float(int(mem["usage"]) - int(cache)),
                            "cpu_ns": float((cpu.get("cpu_usage") or {}).get("total_usage", 0)),
                            "periods": float(thr.get("periods", 0)),
                            "throttled": float(thr.get("throttled_periods", 0)),
                            "throttled_ns": float(thr.get("throttled_time", 0)),
                        }
                    )
                if self._done.is_set():
                    return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)
        self._fast.join(timeout=5)

    def between(self, a: float, b: float) -> list[dict[str, float]]:
        return [x for x in self.samples if a <= x["t"] <= b]

    def peak(self, a: float, b: float) -> float:
        """Highest memory seen between a and b by either reading."""
        slow = [x["mem"] for x in self.between(a, b)]
        fast = [m for t, m in self.fast if a <= t <= b]
        return max([*slow, *fast], default=0.0)


def oom_kills(container: str) -> int | None:
    """Processes the kernel killed in the container's memory cgroup (v1's memory.oom_control;
    docker's OOMKilled flag is set only when the main process dies, not a worker)."""
    path = Path(f"/sys/fs/cgroup/memory/docker/{container}/memory.oom_control")
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return None


def workers_started(container: str) -> int:
    """Worker start lines, one per worker plus one per replacement: gunicorn's 'Booting
    worker' (mlrig's containers), uvicorn's 'Started server process' (stock MLflow)."""
    logs = docker_adapter.container_logs(container, tail=1_000_000)
    marks = ("Started server process", "Booting worker with pid")
    return sum(1 for line in logs.splitlines() if any(m in line for m in marks))


def tree_cpu(pid_file: Path) -> dict[int, float]:
    """CPU seconds of each process of a supervised tree (PostgreSQL's backends, moto)."""
    out: dict[int, float] = {}
    for pid in processes.tree(pid_file) if pid_file.exists() else []:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def pg_sessions(s: Services, database: str) -> int | None:
    """Sessions PostgreSQL has opened on the database so far (15+): a pool that keeps its
    connections opens none under a steady load; each new one costs a TLS and SCRAM handshake."""
    try:
        out = postgres.psql(
            s.cluster,
            "SELECT sessions FROM pg_stat_database WHERE datname = :'db';",
            variables={"db": database},
        )
        return int(out)
    except Exception:  # noqa: BLE001 - older PostgreSQL: no such column
        return None


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def wrong_password_burst(server: Server, container: str, target: Target) -> dict[str, Any]:
    """After the load: as many concurrent requests with a wrong password as there are
    clients (what anyone can send). Their answers, the memory peak, and OOM kills."""
    sampler = StatsSampler(container)
    sampler.start()
    time.sleep(1)
    kills_before, started = oom_kills(container), time.perf_counter()
    gate = threading.Barrier(CLIENTS_IN_BURST)
    answers: list[str] = []

    def one() -> None:
        gate.wait()
        try:
            resp = requests.get(
                f"{server.url}/api/2.0/mlflow/experiments/get",
                params={"experiment_id": target.experiment_id},
                auth=(target.member[0], "not-" + target.member[1]),
                timeout=REQUEST_TIMEOUT,
            )
            answers.append(str(resp.status_code))
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(CLIENTS_IN_BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    time.sleep(1)
    sampler.stop()
    kills = oom_kills(container)
    peak = sampler.peak(started, float("inf"))
    return {
        "requests": CLIENTS_IN_BURST,
        "answers": {a: answers.count(a) for a in sorted(set(answers))},
        "seconds": round(seconds, 1),
        "peak_mem_mib": round(peak / 2**20, 1),
        "peak_mem_pct": round(100 * peak / (server.cfg.memory_mib * 2**20), 1),
        "oom_kills": None if kills is None or kills_before is None else kills - kills_before,
        "container_status": docker_adapter.container_state(container).status,
    }


def drive(
    s: Services,
    server: Server,
    container: str,
    sampler: StatsSampler,
    target: Target,
    *,
    clients: int,
    rate: float,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    """Warm up, then measure `seconds`; every figure of one server's run."""
    started_before, kills_before = workers_started(container), oom_kills(container)
    time.sleep(2)  # a couple of idle samples
    idle = sampler.samples[-1]["mem"] if sampler.samples else 0.0
    stop = threading.Event()
    interval = clients / rate if rate > 0 else 0.0
    t0 = time.perf_counter()
    pool = [Client(i, clients, target, interval, t0, stop) for i in range(clients)]
    for c in pool:
        c.start()
    say(f"{server.name}: {clients} clients, warm-up {warmup:.0f} s, then {seconds:.0f} s measured")
    ws = t0 + warmup
    time.sleep(max(0.0, ws - time.perf_counter()))
    me = psutil.Process()
    gen0, pg0, moto0 = me.cpu_times(), tree_cpu(s.cluster.pid_file), tree_cpu(s.root / "moto.pid")
    load0, sessions0 = os.getloadavg(), pg_sessions(s, server.database)
    psutil.cpu_percent()  # starts the machine-wide counter
    we = ws + seconds
    while time.perf_counter() < we:
        time.sleep(min(10.0, we - time.perf_counter()))
        done = sum(1 for c in pool for x in c.calls if ws <= x.end)
        say(f"  {done} requests measured so far")
    gen1, pg1, moto1 = me.cpu_times(), tree_cpu(s.cluster.pid_file), tree_cpu(s.root / "moto.pid")
    machine_cpu = psutil.cpu_percent()
    load1, sessions1 = os.getloadavg(), pg_sessions(s, server.database)
    stop.set()
    for c in pool:
        c.join(timeout=REQUEST_TIMEOUT[1] * 2)
    time.sleep(1.5)
    sampler.stop()
    state = docker_adapter.container_state(container)
    kills = oom_kills(container)
    calls = [x for c in pool for x in c.calls]
    window = [x for x in calls if ws <= x.end <= we]
    return summarize(
        server,
        window,
        sampler,
        ws=ws,
        we=we,
        seconds=seconds,
        idle_mem=idle,
        generator_cpu=(gen1.user + gen1.system - gen0.user - gen0.system) / seconds,
        postgres_cpu=cpu_delta(pg0, pg1) / seconds,
        moto_cpu=cpu_delta(moto0, moto1) / seconds,
        machine_cpu_pct=machine_cpu,
        pg_sessions=None if sessions0 is None or sessions1 is None else sessions1 - sessions0,
        load=[round(x, 2) for x in (*load0, *load1)],
        oom=state.oom_killed,
        exit_code=state.exit_code,
        oom_kills=None if kills is None or kills_before is None else kills - kills_before,
        worker_restarts=workers_started(container) - started_before,
        status=state.status,
        log_tail=docker_adapter.container_logs(container, tail=15).splitlines()
        if any(not x.ok for x in window)
        else [],
        clients=clients,
        rate=rate,
        warmup=warmup,
    )


def summarize(
    server: Server, window: list[Call], sampler: StatsSampler, **kw: Any
) -> dict[str, Any]:
    seconds, ws, we = kw["seconds"], kw["ws"], kw["we"]
    limit = server.cfg.memory_mib * 2**20
    stats = sampler.between(ws - kw["warmup"], we + 1.0)  # the warm-up counts for the peak
    in_window = sampler.between(ws, we)
    peak = sampler.peak(ws - kw["warmup"], we + 1.0)
    first, last = (in_window[0], in_window[-1]) if len(in_window) >= 2 else ({}, {})
    span = (last.get("t", 0.0) - first.get("t", 0.0)) or 1.0
    periods = last.get("periods", 0.0) - first.get("periods", 0.0)
    throttled = last.get("throttled", 0.0) - first.get("throttled", 0.0)
    # Throughput and latency count answered requests (2xx): a refused connection is fast.
    slices = [
        sum(1 for x in window if x.ok and ws + k * 10 <= x.end < ws + (k + 1) * 10) / 10
        for k in range(int(seconds // 10))
    ]

    def figures(calls: list[Call]) -> dict[str, Any]:
        lat = [x.end - x.start for x in calls if x.ok]
        errors = [x for x in calls if not x.ok]
        return {
            "requests": len(calls),
            "rps": round(len(lat) / seconds, 2),
            "errors": len(errors),
            "error_samples": sorted({x.error for x in errors})[:5],
            "p50_ms": round(pct(lat, 50) * 1000, 1) if lat else None,
            "p95_ms": round(pct(lat, 95) * 1000, 1) if lat else None,
            "p99_ms": round(pct(lat, 99) * 1000, 1) if lat else None,
            "max_ms": round(max(lat) * 1000, 1) if lat else None,
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            "p99_send_lag_ms": round(pct([x.lag for x in calls], 99) * 1000, 1) if calls else None,
            "latencies_ms": [round(v * 1000, 2) for v in lat],
        }

    overall = figures(window)
    return {
        **server_record(server),
        "clients": kw["clients"],
        "offered_rps": kw["rate"] or None,
        "warmup_s": kw["warmup"],
        "seconds": seconds,
        "overall": overall,
        "rps_per_10s": slices,
        "ops": {op: figures([x for x in window if x.op == op]) for op in OPS},
        "idle_mem_mib": round(kw["idle_mem"] / 2**20, 1),
        "peak_mem_mib": round(peak / 2**20, 1),
        "peak_mem_pct": round(100 * peak / limit, 1),
        "stats_samples": len(stats),
        "fast_memory_samples": len(sampler.fast),
        "server_cpu_ms_per_request": round(
            1000
            * (last.get("cpu_ns", 0.0) - first.get("cpu_ns", 0.0))
            / 1e9
            / span
            / (sum(1 for x in window if x.ok) / seconds),
            1,
        )
        if any(x.ok for x in window)
        else None,
        "server_cpu_cores": round(
            (last.get("cpu_ns", 0.0) - first.get("cpu_ns", 0.0)) / 1e9 / span, 3
        ),
        "throttled_periods": int(throttled),
        "cfs_periods": int(periods),
        "throttled_pct": round(100 * throttled / periods, 1) if periods else None,
        "throttled_s": round(
            (last.get("throttled_ns", 0.0) - first.get("throttled_ns", 0.0)) / 1e9, 1
        ),
        "generator_cpu_pct_of_one_cpu": round(100 * kw["generator_cpu"], 1),
        "postgres_cpu_cores": round(kw["postgres_cpu"], 3),
        "moto_cpu_cores": round(kw["moto_cpu"], 3),
        "machine_cpu_pct": kw["machine_cpu_pct"],
        "pg_sessions_opened": kw["pg_sessions"],
        "load_avg_start_end": kw["load"],
        "oom_killed": kw["oom"],
        "oom_kills": kw["oom_kills"],
        "worker_restarts": kw["worker_restarts"],
        "container_status": kw["status"],
        "container_exit_code": kw["exit_code"] if kw["status"] in ("exited", "dead") else None,
        "log_tail": kw["log_tail"],
    }


def server_record(server: Server) -> dict[str, Any]:
    """What a result says of the server it measured: its name, command, size and price."""
    return {
        "server": server.name,
        "describe": server.describe,
        "workers": server.workers,
        "command": server.cfg.command,
        "cpu_units": server.cfg.cpu_units,
        "cpu_quota_cores": server.cfg.cpu_units / 1024,
        "memory_mib": server.cfg.memory_mib,
        "monthly_usd": monthly_usd(server.cfg.cpu_units, server.cfg.memory_mib),
    }


def monthly_usd(cpu_units: int, memory_mib: int) -> float:
    """One Fargate task running all month, at costs.py's on-demand list prices."""
    p = costs.PRICES
    hourly = cpu_units / 1024 * p["fargate_vcpu_hour"] + memory_mib / 1024 * p["fargate_gb_hour"]
    return round(hourly * costs.HOURS, 2)


def goals(r: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Each goal of the issue: the measured figure and whether it is met."""
    mem = f"{r['peak_mem_mib']:.0f} MiB ({r['peak_mem_pct']:.0f} %)"
    mem_ok = r["peak_mem_pct"] < MEMORY_LIMIT_SHARE * 100 and not r["oom_killed"]
    mem_ok = mem_ok and not r["oom_kills"] and r.get("container_exit_code") != 137
    keys = (
        f"req/s >= {GOAL_RPS:.0f}",
        f"p99 <= {GOAL_P99_S:.0f} s",
        "errors = 0",
        f"peak memory < {MEMORY_LIMIT_SHARE:.0%} of limit",
    )
    if "failed" in r:
        why = "died before the load" + (" (OOM)" if r["oom_kills"] or r["exit_code"] == 137 else "")
        return {**{k: (why, False) for k in keys[:3]}, keys[3]: (mem, False)}
    o = r["overall"]
    p99 = o["p99_ms"] if o["p99_ms"] is not None else float("inf")
    return {
        keys[0]: (f"{o['rps']:.1f}", o["rps"] >= GOAL_RPS),
        keys[1]: (f"{p99:.0f} ms", p99 <= GOAL_P99_S * 1000),
        keys[2]: (str(o["errors"]), o["errors"] == 0 and o["requests"] > 0),
        keys[3]: (mem, mem_ok),
    }


# --- the report ---------------------------------------------------------------------------


def rows_for(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures the README quotes, as common rows (client-side or docker stats)."""
    tool = r["server"]

    def one(label: str, value: float | None, unit: str, method: str = CLIENT) -> None:
        if value is not None:
            out.append(row(label, tool, [value], unit=unit, method=method))

    out: list[dict[str, Any]] = []
    if "failed" in r:
        one("container peak memory before it died at start", r["peak_mem_mib"], "MiB", STATS)
        return out
    o = r["overall"]
    out.append(
        row(
            "requests/s sustained, per 10 s slice",
            tool,
            r["rps_per_10s"],
            unit="req/s",
            method=CLIENT,
        )
    )
    out.append(
        row(
            "latency, all requests (median = p50)",
            tool,
            o["latencies_ms"],
            unit="ms",
            method=CLIENT,
        )
    )
    one("p95 latency, all requests", o["p95_ms"], "ms")
    one("p99 latency, all requests", o["p99_ms"], "ms")
    one("errors (non-2xx or exception)", o["errors"], "")  # per-op figures: the JSON's "servers"
    one("container peak memory", r["peak_mem_mib"], "MiB", STATS)
    one("container peak memory, % of limit", r["peak_mem_pct"], "%", STATS)
    one("container CPU used", r["server_cpu_cores"], "vCPU", STATS)
    one("container CPU per request", r["server_cpu_ms_per_request"], "ms", STATS)
    one("CFS periods throttled", r["throttled_pct"], "%", STATS)
    one("load generator CPU (% of one CPU)", r["generator_cpu_pct_of_one_cpu"], "%", OWN_CPU)
    if r.get("wrong_password_burst"):
        burst = r["wrong_password_burst"]
        label = f"peak memory, {burst['requests']} concurrent wrong passwords"
        one(label, burst["peak_mem_pct"], "%", STATS)
    return out


def _server_line(r: dict[str, Any]) -> str:
    return (
        f"**{r['server']}**: {r['describe']}; workers {r['workers']}, "
        f"{r['cpu_quota_cores']:g} vCPU / {r['memory_mib']} MiB "
        f"(${r['monthly_usd']:.2f}/month as one Fargate task)"
    )


def _details(r: dict[str, Any]) -> str:
    if "failed" in r:
        tail = " / ".join(ln.strip() for ln in r["log_tail"][-3:])
        return (
            f"{_server_line(r)}\n\ndied before the load: {r['failed']} "
            f"(exit code {r['exit_code']}, processes OOM-killed {r['oom_kills']}, "
            f"peak {r['peak_mem_mib']:.0f} MiB = "
            f"{r['peak_mem_pct']:.0f} % of {r['memory_mib']} MiB after {r['seconds']} s); "
            f"last log lines: {tail}"
        )
    lines = [
        _server_line(r),
        "",
        "| op | weight | req/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for op, f in [("all requests", r["overall"]), *r["ops"].items()]:
        weight = f"{WEIGHTS[op]}/{sum(WEIGHTS.values())}" if op in WEIGHTS else "–"
        lines.append(
            f"| {op} | {weight} | {f['rps']:.2f} | {f['p50_ms']} | {f['p95_ms']} | "
            f"{f['p99_ms']} | {f['max_ms']} | {f['errors']} |"
        )
    slices = r["rps_per_10s"] or [0.0]
    lines += [
        "",
        f"/health after {r['start_s']} s. Container: idle {r['idle_mem_mib']:.0f} MiB, peak "
        f"{r['peak_mem_mib']:.0f} MiB ({r['peak_mem_pct']:.0f} % of {r['memory_mib']} MiB), "
        f"processes OOM-killed {r['oom_kills']}, workers restarted {r['worker_restarts']}; "
        f"CPU {r['server_cpu_cores']:.2f} of {r['cpu_quota_cores']:g} vCPU "
        f"({r['server_cpu_ms_per_request']} ms a request), throttled in {r['throttled_pct']} % "
        f"of CFS periods ({r['throttled_s']} s). Load generator "
        f"{r['generator_cpu_pct_of_one_cpu']:.0f} % of one CPU; PostgreSQL "
        f"{r['postgres_cpu_cores']:.2f} (sessions opened {r['pg_sessions_opened']}) and moto "
        f"{r['moto_cpu_cores']:.2f} CPU; machine "
        f"{r['machine_cpu_pct']:.0f} % busy, load average {r['load_avg_start_end'][0]} -> "
        f"{r['load_avg_start_end'][3]}. 10-s slices {min(slices):.1f}-{max(slices):.1f} req/s; "
        f"p99 send lag {r['overall']['p99_send_lag_ms']} ms.",
    ]
    burst = r.get("wrong_password_burst")
    if burst:
        lines.append(
            f"After the load, {burst['requests']} concurrent wrong passwords: answers "
            f"{burst['answers']} in {burst['seconds']} s, memory peak {burst['peak_mem_mib']:.0f} "
            f"MiB ({burst['peak_mem_pct']:.0f} %), processes OOM-killed {burst['oom_kills']}."
        )
    if r["container_exit_code"] is not None:
        lines.append(
            f"The container exited during the load (code {r['container_exit_code']}, "
            f"OOM-killed: {r['oom_killed']}); its CPU and memory stop there."
        )
    errs = sorted({e for f in r["ops"].values() for e in f["error_samples"]})
    if errs:
        lines.append(f"Errors seen: {'; '.join(errs)}")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> list[str]:
    """One line per server: each goal's figure and verdict, and what the task costs."""
    lines = []
    for r in results:
        verdicts = "; ".join(
            f"{goal}: {figure} {'pass' if ok else 'FAIL'}"
            for goal, (figure, ok) in goals(r).items()
        )
        lines.append(
            f"{r['server']} ({r['cpu_quota_cores']:g} vCPU, {r['memory_mib']} MiB, "
            f"{r['workers']} workers, ${r['monthly_usd']:.0f}/month): {verdicts}"
        )
    return lines


def tables(results: list[dict[str, Any]]) -> str:
    """The goals side by side, then each server's per-op table and resources."""
    names = [r["server"] for r in results]
    lines = ["| goal | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    per = [goals(r) for r in results]
    for goal in per[0]:
        cells = [f"{g[goal][0]} {'pass' if g[goal][1] else 'FAIL'}" for g in per]
        lines.append(f"| {goal} | " + " | ".join(cells) + " |")
    cost = [f"${r['monthly_usd']:.0f}" for r in results]
    lines.append(
        f"| $/month (managed Small: ${MANAGED_SMALL_USD_MONTH:.0f}) | " + " | ".join(cost) + " |"
    )
    return "\n\n".join(["\n".join(lines), *(_details(r) for r in results)])


# --- main -------------------------------------------------------------------------------


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


@contextlib.contextmanager
def one_at_a_time(s: Services, server: Server) -> Iterator[tuple[str, float, StatsSampler]]:
    """The server alone on the machine while the block runs; removed after it."""
    say(f"starting {server.name}")
    container, healthy, sampler = start(s, server)
    say(f"{server.name}: /health 200 after {healthy:.1f} s")
    try:
        yield container, healthy, sampler
    finally:
        sampler.stop()
        s.remove_container(container)


def failed_start(server: Server, exc: StartFailed) -> dict[str, Any]:
    say(f"{server.name}: died before the load: {exc.reason}")
    return {
        **server_record(server),
        "failed": exc.reason,
        **exc.detail,
    }


def run_one(s: Services, server: Server, admin: tuple[str, str], args: Any) -> dict[str, Any]:
    """Start, set up, load, remove one server; a server that dies first is a result too."""
    try:
        with one_at_a_time(s, server) as (container, healthy, sampler):
            started = time.monotonic() - healthy
            try:
                target = seed(server.url, admin)
            except (SetupFailed, requests.RequestException) as exc:
                time.sleep(2)  # the container's state settles (exit code, OOM flag)
                detail = failure_detail(server, container, sampler, started)
                why = f"healthy after {healthy:.0f} s, then the admin's set-up failed: {exc}"
                raise StartFailed(why, detail) from exc
            result = drive(
                s,
                server,
                container,
                sampler,
                target,
                clients=args.clients,
                rate=args.rate,
                warmup=args.warmup,
                seconds=args.seconds,
            )
            result["start_s"] = round(healthy, 1)
            if result["container_status"] == "running":
                say(f"{server.name}: {CLIENTS_IN_BURST} concurrent wrong passwords")
                result["wrong_password_burst"] = wrong_password_burst(server, container, target)
    except StartFailed as exc:
        return failed_start(server, exc)
    say(f"{server.name}: done, container removed")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="measured seconds per server")
    ap.add_argument("--warmup", type=float, default=15.0, help="uncounted seconds first")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument(
        "--rate",
        type=float,
        default=26.0,
        help="offered requests/s over all clients (0: no pacing, as fast as they go); "
        "default 26, the goal's 25 plus 4 %%, so a server that keeps up measures >= 25",
    )
    ap.add_argument("--profile", default="small", choices=sorted(ts_container.CONTAINER_SIZES))
    ap.add_argument(
        "--only",
        action="append",
        choices=["mlrig", "stock", "sizes"],
        default=None,
        help="run only these; 'sizes': only the --also/--size rows, recorded as load-sizing",
    )
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        choices=sorted(ts_container.CONTAINER_SIZES),
        metavar="PROFILE",
        help="mlrig: also run this profile's task after the comparison (sizing)",
    )
    ap.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="CPU_UNITS:MIB[:WORKERS[:THREADS]]",
        help="mlrig: also run the profile's task at this size after the rest (sizing), "
        "e.g. 2048:4096 (2 vCPU, 4 GiB, a valid Fargate size) or 2048:4096:8:2",
    )
    ap.add_argument("--workers", type=int, default=None, help="mlrig: override the profile's")
    ap.add_argument("--threads", type=int, default=None, help="mlrig: threads per gunicorn worker")
    ap.add_argument("--cpu-units", type=int, default=None, help="mlrig: override (1024 = 1 vCPU)")
    ap.add_argument("--memory-mib", type=int, default=None, help="mlrig: override the limit")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="mlrig: extra server env, e.g. MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=10",
    )
    ap.add_argument(
        "--stock-workers",
        type=int,
        default=None,
        help="stock: --workers (default: the profile's, like mlrig; 0 = MLflow's default, 4)",
    )
    args = ap.parse_args()
    only = args.only or ["mlrig", "stock"]
    postgres.bin_dir()
    moto_binary()
    docker_adapter.client()
    profile_workers = ts_container.CONTAINER_SIZES[args.profile][2]
    stock_workers = profile_workers if args.stock_workers is None else (args.stock_workers or None)
    meta = {
        **machine(("mlflow", "docker", "requests", "moto")),
        "profile": args.profile,
        "also_profiles": args.also,
        "also_sizes": args.size,
        "stock_workers": stock_workers or "MLflow's default (4)",
        "clients": args.clients,
        "offered_rps": args.rate or "unpaced",
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "mix": {op: WEIGHTS[op] for op in OPS},
        "goals": {
            "rps": GOAL_RPS,
            "p99_s": GOAL_P99_S,
            "errors": 0,
            "peak_memory_share": MEMORY_LIMIT_SHARE,
        },
        "managed_small_usd_month": MANAGED_SMALL_USD_MONTH,
    }
    results: list[dict[str, Any]] = []
    req = Request(profile=args.profile, port=free_port())
    with Services(req, say) as s:
        admin = (ts.ADMIN_USERNAME, s.admin_password)
        if "mlrig" in only:
            size = (args.cpu_units, args.memory_mib)
            server = mlrig_server(
                s, args.workers, parse_env(args.env), size=size, threads=args.threads
            )
            results.append(run_one(s, server, admin, args))
        if "stock" in only:
            results.append(run_one(s, stock_server(s, stock_workers), admin, args))
            if "failed" in results[-1]:  # as shipped it died: again with the one change it needs
                say("stock basic-auth again with job execution off")
                server = stock_server(s, stock_workers, jobs=False)
                results.append(run_one(s, server, admin, args))
        for profile in args.also:
            server = mlrig_server(
                s, args.workers, parse_env(args.env), profile, threads=args.threads
            )
            results.append(run_one(s, server, admin, args))
        for spec in args.size:
            cpu, mib, *rest = (int(x) for x in spec.split(":"))
            workers = rest[0] if rest else args.workers
            threads = rest[1] if len(rest) > 1 else args.threads
            server = mlrig_server(s, workers, parse_env(args.env), size=(cpu, mib), threads=threads)
            results.append(run_one(s, server, admin, args))
    stamp = utc_stamp()
    rows = [r for res in results for r in rows_for(res)]
    text = tables(results)
    header = (
        f"# Tracking server under load, {stamp}\n\n"
        f"{args.clients} clients, offered {args.rate or 'unpaced'} req/s, "
        f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up; profile "
        f"{args.profile}; {meta['cpus']} CPUs, load average at start {meta['load_avg']}\n"
    )
    table = f"{header}\n{text}\n\n{markdown(rows)}\n"
    print(table)
    for res in results:  # the latencies are in the rows; keep the per-op figures small
        for f in (res["overall"], *res["ops"].values()) if "overall" in res else ():
            f.pop("latencies_ms")
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"meta": meta, "rows": rows, "summary": summary(results), "servers": results}
    # sizing rows are load-sizing; other profiles' tasks alone (`--only sizes --also P`) are
    # load-P, so each stays the newest of its own kind in the README
    if only != ["sizes"]:
        name = "load"
    else:
        name = "load-sizing" if args.size else "-".join(["load", *args.also])
    record(f"{name}-{stamp}", doc, table)


if __name__ == "__main__":
    main()
