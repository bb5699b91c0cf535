"""One server per configuration: started alone, its idle memory read once its process tree
holds still, then the workload alternated across all of them, and every one stopped."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import interleave
from configs import (
    PROBE,
    ROUNDS,
    SETTLE_LIMIT,
    SETTLE_SECONDS,
    WRONG_PASSWORD,
    Config,
    Result,
    bearer_token,
)

from mlrig.adapters import processes
from mlrig.core.stack.local.stack import free_port
from mlrig.tracking import config as ts
from mlrig.wait import Abandoned, WaitTimeout, wait_until


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
