"""The team's load: the admin's set-up (member, experiment, model version), the clients
looping over the mix at an offered rate, and the wrong-password burst after it."""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from typing import Any

import psutil
import requests
from figures import Call, summarize
from sampling import StatsSampler, cpu_delta, oom_kills, pg_sessions, tree_cpu, workers_started
from servers import Server
from settings import BLOB, CLIENTS_IN_BURST, EXPERIMENT, MEMBER, MODEL, OPS, REQUEST_TIMEOUT, say

from mlrig.adapters import docker as docker_adapter
from mlrig.core.stack.rehearse import Services


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
