"""Serving, measured client-side: each tool's container started, its cold start, latency and
throughput against the same requests, and the rows they make."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    CLIENT,
    interleave,
    row,
    sh,
)
from workspace import BENTO_PORT, REF_PORT, Bench, log

from mlrig.wait import WaitTimeout, wait_until


# -- serving (client-side) --------------------------------------------------------------------
@dataclass
class Contender:
    """How to start one image and ask it for the one-row prediction."""

    name: str
    ref: str
    port: int
    env: dict[str, str]
    path: str
    body: bytes
    answer: Callable[[Any], Any]  # the predictions inside a decoded answer


def post(conn: http.client.HTTPConnection, c: Contender) -> tuple[int, bytes]:
    conn.request("POST", c.path, body=c.body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


# a server still starting refuses, resets, or answers half-written or foreign JSON
NOT_YET = (OSError, http.client.HTTPException, ValueError, KeyError, TypeError)


def until_answered(c: Contender, ok: Callable[[int, bytes], bool], interval: float) -> bool:
    """Post the one-row request (a fresh connection each time) until `ok(status, body)`;
    False when 180 s pass without it."""

    def answered() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=2)
        try:
            return ok(*post(conn, c))
        finally:
            conn.close()

    try:
        wait_until(answered, timeout=180, what=c.ref, interval=interval, retry_on=NOT_YET)
    except WaitTimeout:
        return False
    return True


@contextlib.contextmanager
def container(b: Bench, c: Contender) -> Iterator[None]:
    """`docker run -d` (the CLI, host networking) of c's image; removed on the way out."""
    name = f"mlrig-image-bench-{c.name}"
    b.containers.append(name)
    argv = ["docker", "run", "-d", "--rm", "--name", name, "--network", "host"]
    argv += [f"--env={k}={v}" for k, v in c.env.items()] + [c.ref]
    try:
        sh(b.home, *argv, env=b.docker_env)
        yield
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, env=b.docker_env)
        b.containers.remove(name)


def cold_start(b: Bench, c: Contender, expected: list[int]) -> float:
    """From spawning `docker run -d` to the first answer equal to the host's prediction."""
    start = time.perf_counter()
    with container(b, c):
        if not until_answered(
            c, lambda status, out: status == 200 and c.answer(json.loads(out)) == expected, 0.02
        ):
            raise SystemExit(f"{c.ref} never answered correctly")
        return time.perf_counter() - start


def latency(c: Contender, n: int, errors: list[str]) -> list[float]:
    """Sequential one-row requests on one keep-alive connection (ms); non-200s recorded."""
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    for _ in range(200):
        post(conn, c)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        status, out = post(conn, c)
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            errors.append(f"{status}: {out[:200]!r}")
    return times


def throughput(c: Contender, seconds: float, errors: list[str], clients: int = 4) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
        while time.monotonic() < stop:
            status, out = post(conn, c)
            if status == 200:
                counts[i] += 1
            else:
                errors.append(f"{status}: {out[:200]!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def serving_rows(
    b: Bench, refs: dict[str, str], body: dict[str, Any], expected: list[int], args: Any
) -> list[dict[str, Any]]:
    from mlrig.core.stack.local.stack import free_port

    port = free_port()
    mlflow_body = json.dumps(body).encode()
    bento_body = json.dumps({"input": body["dataframe_split"]["data"]}).encode()
    every = {
        "mlflow": Contender(
            "mlflow", refs["mlflow"], REF_PORT, {}, "/invocations", mlflow_body, _predictions
        ),
        "bentoml": Contender(
            "bentoml", refs.get("bentoml", ""), BENTO_PORT, {}, "/predict", bento_body, _itself
        ),
        "mlrig": Contender(
            "mlrig",
            refs["mlrig"],
            port,
            {"PORT": str(port)},
            "/invocations",
            mlflow_body,
            _predictions,
        ),
    }
    contenders = {n: every[n] for n in refs}
    log(f"cold starts, {args.starts} each, interleaved")
    starts = interleave(
        {n: (lambda _i, c=c: cold_start(b, c, expected)) for n, c in contenders.items()},
        args.starts,
    )
    rows = []
    for name, c in contenders.items():
        tool = f"{name} image"
        rows.append(
            row(
                "`docker run -d` (CLI, host network) -> first correct prediction, polled "
                "every 20 ms",
                tool,
                starts[name],
                method=CLIENT,
            )
        )
        log(f"serving {name}")
        errors: list[str] = []
        with container(b, c):
            # nginx answers 502 until MLflow's workers are up
            if not until_answered(c, lambda status, _out: status == 200, 0.05):
                raise SystemExit(f"{c.ref} never became ready")
            time.sleep(3)  # let every worker finish loading before measuring
            times = latency(c, args.requests, errors)
            rps = throughput(c, args.seconds, errors)
        p99 = sorted(times)[int(len(times) * 0.99) - 1]
        rows += [
            row(
                "one-row latency, sequential on one keep-alive connection (median = p50)",
                tool,
                times,
                unit="ms",
                method=CLIENT,
            ),
            row(
                "p99 one-row latency (of the requests above)", tool, [p99], unit="ms", method=CLIENT
            ),
            row(
                f"throughput, 4 client threads for {args.seconds:g} s",
                tool,
                [rps],
                unit="req/s",
                method=CLIENT,
            ),
            row(
                "non-200 answers while measuring",
                tool,
                [float(len(errors))],
                unit="",
                method=CLIENT,
            ),
        ]
        if errors:
            log(f"{name}: {len(errors)} non-200 answers, first: {errors[0]}")
    return rows


def _predictions(d: Any) -> Any:
    return d["predictions"]


def _itself(d: Any) -> Any:
    return d
