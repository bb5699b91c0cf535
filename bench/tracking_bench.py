"""Tracking-server benchmark: stock MLflow basic-auth vs mlrig's configuration vs no auth,
and mlrig's server taking an OIDC bearer token (from a local issuer) for the same request.

Servers start one at a time (start time and idle memory are read alone), then the workload
alternates across them so a busy machine slows every configuration alike: API calls and
rejected calls one by one (A B C, A B C, ...), the runs in ROUNDS slices. Every request is
timed by a client outside the server (this process, as a user's script or CLI would be):
the rows say CLIENT; memory is read from the server's process tree; the stop is an in-process
call to mlrig's process adapter.
Run: .venv/bin/python bench/tracking_bench.py [--runs 200] [--calls 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from common import CLIENT, IN_PROCESS, interleave, machine, markdown, record, row, utc_stamp

from mlrig.adapters import processes
from mlrig.core.stack.local.stack import free_port
from mlrig.tracking import config as ts
from mlrig.wait import Abandoned, WaitTimeout, wait_until

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
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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


class Server:
    def __init__(self, cfg: Config, work: Path) -> None:
        self.cfg = cfg
        self.dir = work / f"s{len(list(work.iterdir()))}"
        (self.dir / "artifacts").mkdir(parents=True)
        self.port, self.password = free_port(), secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = ("admin", self.password) if cfg.auth and not cfg.bearer else None
        self.headers = {"Authorization": f"Bearer {bearer_token()}"} if cfg.bearer else {}
        self.result = Result(cfg.name)
        self.rec: processes.PidRecord | None = None
        self.session = requests.Session()

    @property
    def pid_file(self) -> Path:
        return self.dir / "server.pid"

    def start(self) -> None:
        argv, env = self.cfg.build(self.dir, self.port, self.password)
        t0 = time.perf_counter()
        rec = self.rec = processes.start(
            argv, pid_file=self.pid_file, log_file=self.dir / "log", env=env, cwd=self.dir
        )
        try:
            wait_until(
                lambda: requests.get(self.url + ts.HEALTH_PATH, timeout=2).status_code == 200,
                timeout=120,
                what=f"{self.cfg.name} answering {ts.HEALTH_PATH}",
                interval=0.1,
                give_up=lambda: "it exited" if processes.exited_early(rec) else None,
            )
        except (WaitTimeout, Abandoned):
            raise SystemExit(
                f"{self.cfg.name}: no start: {processes.tail(self.dir / 'log')}"
            ) from None
        self.result.start_to_healthy_s = round(time.perf_counter() - t0, 1)

    def measure_idle(self) -> None:
        assert self.rec is not None
        procs = settle(self.rec.pid)
        mem = [p.memory_full_info() for p in procs]
        r = self.result
        r.processes = len(procs)
        r.idle_pss_mib = round(sum(m.pss for m in mem) / 2**20)
        r.idle_uss_mib = round(sum(m.uss for m in mem) / 2**20)
        r.idle_rss_mib = round(sum(m.rss for m in mem) / 2**20)
        r.commands = [" ".join(p.cmdline()[1:4])[:80] for p in procs]

    def measure_after(self) -> None:
        assert self.rec is not None
        procs = tree(self.rec.pid)
        self.result.after_pss_mib = round(sum(p.memory_full_info().pss for p in procs) / 2**20)

    def call(self) -> float:
        """One API call on the keep-alive session, timed by the client: milliseconds."""
        t = time.perf_counter()
        resp = self.session.get(self.url + PROBE, auth=self.auth, headers=self.headers, timeout=60)
        dt = (time.perf_counter() - t) * 1000
        if resp.status_code != 200:
            raise SystemExit(f"{self.cfg.name}: probe answered {resp.status_code}")
        return round(dt, 2)

    def wrong_password(self) -> float:
        """One call with a wrong password (never cached: the hash cost): milliseconds."""
        t = time.perf_counter()
        resp = self.session.get(self.url + PROBE, auth=("admin", self.password + "x"), timeout=60)
        dt = (time.perf_counter() - t) * 1000
        if resp.status_code != 401:
            raise SystemExit(f"{self.cfg.name}: a wrong password got {resp.status_code}")
        return round(dt, 2)

    def log_runs(self, n: int, first: int, total: int) -> None:
        from mlflow import MlflowClient

        # the client reads credentials from the environment on every request
        for key, value in (
            ("MLFLOW_TRACKING_USERNAME", "admin"),
            ("MLFLOW_TRACKING_PASSWORD", self.password),
        ):
            if self.auth:
                os.environ[key] = value
            else:
                os.environ.pop(key, None)
        client = MlflowClient(tracking_uri=self.url)
        exp = client.get_experiment_by_name("bench") or client.get_experiment(
            client.create_experiment("bench")
        )
        t = time.perf_counter()
        # set_terminated prints the run's URL (after one more GET, which stays in the workload)
        with contextlib.redirect_stdout(io.StringIO()):
            self._runs(client, exp.experiment_id, first, n, total)
        self.result.runs += n
        self.result.runs_slices_s.append(round(time.perf_counter() - t, 2))
        self.result.runs_s = round(sum(self.result.runs_slices_s), 1)

    @staticmethod
    def _runs(client, experiment_id: str, first: int, n: int, total: int) -> None:  # type: ignore[no-untyped-def]
        for i in range(first, first + n):
            run_id = client.create_run(experiment_id).info.run_id
            client.log_param(run_id, "lr", 0.01 * (i + 1))
            client.log_param(run_id, "depth", i % 7)
            client.log_metric(run_id, "accuracy", 0.5 + i / (4 * total))
            client.log_metric(run_id, "loss", 1.0 / (i + 1))
            if i % 20 == 0:
                client.log_text(run_id, f"run {i}\n", "notes.txt")
            client.set_terminated(run_id)

    def stop(self) -> None:
        self.session.close()
        if self.rec is None:
            return
        known = tree(self.rec.pid) if psutil.pid_exists(self.rec.pid) else []
        t = time.perf_counter()
        stuck = processes.stop(self.pid_file)
        self.result.stop_s = round(time.perf_counter() - t, 1)
        self.result.left_after_stop = len(stuck) + sum(1 for p in known if p.is_running())
        self.rec = None


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def settle(pid: int) -> list[psutil.Process]:
    """Wait until the process tree stops changing (stock MLflow spawns job consumers late);
    a tree still changing after SETTLE_LIMIT is read as it is."""
    last, since = sorted(p.pid for p in tree(pid)), time.monotonic()

    def held_still() -> bool:
        nonlocal last, since
        now = sorted(p.pid for p in tree(pid))
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= SETTLE_SECONDS

    with contextlib.suppress(WaitTimeout):
        wait_until(
            held_still,
            timeout=SETTLE_LIMIT,
            what=f"the process tree of {pid} holding still",
            interval=0.5,
            retry_on=(),  # a server dying here is a failure, not "not yet"
        )
    return tree(pid)


def run(configs: list[Config], runs: int, calls: int, work: Path) -> list[Result]:
    servers: list[Server] = []
    try:
        for cfg in configs:
            print(f"… starting {cfg.name}", file=sys.stderr, flush=True)
            server = Server(cfg, work)
            servers.append(server)
            server.start()
            server.measure_idle()
            if cfg.workload == "idle":
                server.stop()
        busy = [s for s in servers if s.cfg.workload != "idle"]
        for s in busy:
            for _ in range(5):  # first connection, first hash, SQLAlchemy pools: not kept
                s.call()
        print("… latency", file=sys.stderr, flush=True)
        latencies = interleave({s.cfg.name: lambda _i, s=s: s.call() for s in busy}, calls)
        signed_in = [s for s in busy if s.auth]
        rejected = interleave(
            {s.cfg.name: lambda _i, s=s: s.wrong_password() for s in signed_in}, WRONG_PASSWORD
        )
        for s in busy:
            s.result.latencies_ms = latencies[s.cfg.name]
            s.result.wrong_password_samples_ms = rejected.get(s.cfg.name, [])
        for r in range(ROUNDS if runs >= ROUNDS else 0):
            print(f"… runs, round {r + 1}/{ROUNDS}", file=sys.stderr, flush=True)
            for s in busy:
                if s.cfg.workload == "full":
                    s.log_runs(runs // ROUNDS, r * (runs // ROUNDS), runs)
        for s in busy:
            s.measure_after()
    finally:
        for s in servers:
            s.stop()
    for s in servers:
        lat = s.result.latencies_ms
        if lat:
            s.result.median_ms = round(statistics.median(lat), 1)
            s.result.p90_ms = (
                round(statistics.quantiles(lat, n=10)[-1], 1) if len(lat) > 1 else None
            )
        if s.result.wrong_password_samples_ms:
            s.result.wrong_password_ms = round(
                statistics.median(s.result.wrong_password_samples_ms), 1
            )
    return [s.result for s in servers]


IDLE = "PSS of the server's process tree, read once (after it held still 5 s)"
AFTER = "PSS of the server's process tree, read once after the workload"
STARTED = "spawn -> first /health 200, polled every 0.1 s from outside; once per server"


def rows_of(results: list[Result], runs: int) -> list[dict[str, Any]]:
    """Every figure as a common row, grouped by what was measured."""
    per = runs // ROUNDS
    rows: list[dict[str, Any]] = []

    def add(label: str, values: dict[str, list[float]], unit: str, method: str) -> None:
        rows.extend(
            row(label, name, v, unit=unit, method=method) for name, v in values.items() if v
        )

    add(
        "API call (GET experiments/get-by-name), keep-alive",
        {r.config: r.latencies_ms for r in results},
        "ms",
        CLIENT,
    )
    add(
        "rejected call, wrong password",
        {r.config: r.wrong_password_samples_ms for r in results},
        "ms",
        CLIENT,
    )
    add(
        f"{per} run{'s' * (per != 1)} via MlflowClient (one of {ROUNDS} slices)",
        {r.config: r.runs_slices_s for r in results},
        "s",
        CLIENT,
    )
    add("start -> healthy", {r.config: [r.start_to_healthy_s] for r in results}, "s", STARTED)
    add("idle memory", {r.config: [r.idle_pss_mib] for r in results}, "MiB", IDLE)
    add(
        "memory after the workload",
        {r.config: [r.after_pss_mib] if r.after_pss_mib is not None else [] for r in results},
        "MiB",
        AFTER,
    )
    add(
        "stop (SIGTERM to the tree, verified)",
        {r.config: [r.stop_s] if r.stop_s is not None else [] for r in results},
        "s",
        IN_PROCESS,
    )
    return rows


def summary_of(results: list[Result], runs: int) -> list[str]:
    """The goals of issue #9, for the configurations this run had."""
    by = {r.config: r for r in results}
    out = []
    floor = by.get("no auth")
    for name in ("mlrig", "mlrig, bearer token"):
        r = by.get(name)
        if r and floor and r.median_ms is not None and floor.median_ms is not None:
            extra = r.median_ms - floor.median_ms
            verdict = "met" if extra <= 2 else "not met"
            out.append(f"goal: {name} call median <= no auth + 2 ms: {extra:+.1f} ms, {verdict}")
    r = by.get("mlrig")
    if r and floor and r.runs_s and floor.runs_s:
        ratio = r.runs_s / floor.runs_s
        verdict = "met" if ratio <= 1.3 else "not met"
        out.append(
            f"goal: {runs} runs through mlrig's auth <= 1.3x no auth: {r.runs_s:g} s vs "
            f"{floor.runs_s:g} s = {ratio:.2f}x, {verdict}"
        )
    if r:
        gb = r.idle_pss_mib * 2**20 / 1e9
        out.append(
            f"goal: mlrig idle PSS <= 0.5 GB: {gb:.2f} GB, {'met' if gb <= 0.5 else 'not met'}"
        )
    out.append(
        "processes in the tree once idle: "
        + ", ".join(f"{x.config} {x.processes}" for x in results)
    )
    return out


def render(results: list[Result], meta: dict[str, object]) -> str:
    def f(v: float | None, unit: str) -> str:
        return "–" if v is None else f"{v:g} {unit}"

    lines = [
        f"| config | auth'd call median / p90 | wrong password | {meta['runs']} runs "
        "| idle PSS (USS / RSS) | PSS after | processes | start→healthy | stop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        left = f", {r.left_after_stop} left" if r.left_after_stop else ""
        lines.append(
            f"| {r.config} | {f(r.median_ms, 'ms')} / {f(r.p90_ms, 'ms')} "
            f"| {f(r.wrong_password_ms, 'ms')} | {f(r.runs_s, 's')} "
            f"| {r.idle_pss_mib:.0f} MiB ({r.idle_uss_mib:.0f} / {r.idle_rss_mib:.0f}) "
            f"| {f(r.after_pss_mib, 'MiB')} "
            f"| {r.processes} | {r.start_to_healthy_s} s | {f(r.stop_s, 's')}{left} |"
        )
    versions: dict[str, str] = meta["versions"]  # type: ignore[assignment]
    return (
        f"MLflow {versions.get('mlflow')}, Python {meta['python']}, {meta['cpus']} CPUs, "
        f"load {'/'.join(map(str, meta['load_avg']))}, {meta['calls']} calls, "
        f"{meta['when']}\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--only", action="append", help="config name(s) to run (default: all)")
    args = ap.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the client too: loopback traffic only
    os.environ.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)  # servers inherit it: stock = unset
    configs = [c for c in CONFIGS if not args.only or c.name in args.only]
    meta: dict[str, object] = {
        **machine(),
        "runs": args.runs,
        "calls": args.calls,
        "wrong_password_calls": WRONG_PASSWORD,
        "rounds": ROUNDS,
        "configs": [c.name for c in configs],
    }
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-") as work:
        results = run(configs, args.runs, args.calls, Path(work))
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows, summary = rows_of(results, args.runs), summary_of(results, args.runs)
    table = (
        render(results, meta)
        + "\n"
        + markdown(rows)
        + "\n\n"
        + "".join(f"- {line}\n" for line in summary)
    )
    print(table)
    record(
        f"tracking-{utc_stamp()}",
        {"meta": meta, "rows": rows, "summary": summary, "results": [asdict(r) for r in results]},
        table,
    )


if __name__ == "__main__":
    main()
