"""Wrong passwords against a real `mlflow server` with mlrig's guard: a 16-thread flood is
throttled per (source, user) and does not slow a legitimate user by more than 2x median."""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from mlrig.tracking import throttle as ts_throttle
from tests.helpers import grant_default_experiment, isolated_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
USERS = "/api/2.0/mlflow/users"
FLOOD_THREADS = 16
ROUNDS = 3  # baseline and flood phases alternate, so a change in the machine's load hits both
PER_PHASE = 25  # normal requests per phase: 75 per median

# The flood runs in its own process, so its 16 threads do not share the measuring
# process's interpreter lock: what slows the normal user is the server, not the client.
FLOOD = r"""
import json, sys, threading, requests
url, user, threads, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stop, lock, counts, first = threading.Event(), threading.Lock(), {}, threading.Barrier(threads + 1)

def flood(n):
    s = requests.Session()
    for i in range(cap):
        resp = s.get(url, auth=(user, f"wrong-{n}-{i}"), timeout=60)
        code = "throttled" if "Retry-After" in resp.headers else str(resp.status_code)
        with lock:
            counts[code] = counts.get(code, 0) + 1
        if i == 0:
            first.wait()
        if stop.is_set():
            return

workers = [threading.Thread(target=flood, args=(n,)) for n in range(threads)]
for w in workers:
    w.start()
first.wait()
print("flooding", flush=True)
sys.stdin.readline()
stop.set()
for w in workers:
    w.join()
print(json.dumps(counts), flush=True)
"""


class Server:
    def __init__(self, url: str, admin_password: str) -> None:
        self.url = url
        self.admin = ("admin", admin_password)

    def new_user(self, name: str, password: str) -> tuple[str, str]:
        resp = requests.post(
            f"{self.url}{USERS}/create",
            json={"username": name, "password": password},
            auth=self.admin,
            timeout=30,
        )
        assert resp.status_code == 200, resp.text[:200]
        grant_default_experiment(self.url, self.admin, name)  # what PROBE reads
        return name, password

    def probe(self, user: tuple[str, str], source: str = "127.0.0.1") -> int | str:
        """One request on a fresh connection from `source` (any 127.x address is loopback):
        its status, or "throttled" for a 401 that carries Retry-After."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=60, source_address=(source, 0)
        )
        token = b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        try:
            conn.request("GET", PROBE, headers={"Authorization": f"Basic {token}"})
            resp = conn.getresponse()
            resp.read()
            return "throttled" if resp.getheader("Retry-After") else resp.status
        finally:
            conn.close()

    def timed_probe(self, user: tuple[str, str]) -> float:
        start = time.perf_counter()
        assert self.probe(user) == 200
        return time.perf_counter() - start


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from mlrig.core.shared import secrets

    with isolated_stack(tmp_path_factory.mktemp("throttle-home"), "throttle") as (_, outputs):
        assert outputs.mlflow.auth is not None
        yield Server(outputs.mlflow.tracking_uri, secrets.resolve(outputs.mlflow.auth.password))


def flood(server: Server, user: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOD, server.url + PROBE, user] + [str(FLOOD_THREADS), "2000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "flooding"  # every thread has had an answer
    return proc


def stop(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = proc.communicate("stop\n", timeout=120)
    assert proc.returncode == 0
    counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return counts


def test_a_wrong_password_flood_is_throttled_and_does_not_slow_a_normal_user(
    server: Server,
) -> None:
    normal = server.new_user("normal-user", "normal-password-0001")
    victim = server.new_user("flooded-user", "flooded-password-0001")
    for _ in range(5):
        server.timed_probe(normal)  # warm: connections, MLflow's credential cache
    baseline: list[float] = []
    flooded: list[float] = []
    codes: dict[str, int] = {}
    for _ in range(ROUNDS):
        baseline += [server.timed_probe(normal) for _ in range(PER_PHASE)]
        proc = flood(server, victim[0])
        try:
            flooded += [server.timed_probe(normal) for _ in range(PER_PHASE)]
        finally:
            for code, n in stop(proc).items():
                codes[code] = codes.get(code, 0) + n
    base, under = statistics.median(baseline), statistics.median(flooded)
    print(
        f"normal user median {base * 1000:.1f} ms alone, {under * 1000:.1f} ms under a "
        f"{FLOOD_THREADS}-thread wrong-password flood (x{under / base:.2f}); flood answers {codes}"
    )
    # Only the first concurrent burst reaches MLflow's hash check (a plain 401); the rest are
    # answered 401 with Retry-After, without a hash.
    assert set(codes) <= {"401", "throttled"}
    assert codes.get("401", 0) <= ts_throttle.THROTTLE_MAX_FAILURES + FLOOD_THREADS
    assert codes.get("throttled", 0) > codes.get("401", 0)
    assert under <= 2 * base, f"median {base * 1000:.1f} ms -> {under * 1000:.1f} ms"

    # The flooded pair is in back-off even with the right password; the same user from
    # another source address is not, and its success does not lift this source's block.
    assert server.probe(victim) == "throttled"
    assert server.probe(victim, source="127.0.0.2") == 200
    assert server.probe(victim) == "throttled"
    resp = requests.get(f"{server.url}{PROBE}", auth=victim, timeout=30)
    assert resp.status_code == 401 and int(resp.headers["Retry-After"]) >= 1
    assert "Too many failed logins" in resp.text
