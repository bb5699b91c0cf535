"""Request capture's cost on the request path: the same serving image, one container with
capture 0 and one with capture 10 %, each driven at a constant 200 requests/s (open loop:
every request has a scheduled send time, its latency is measured from that time, so a stall
is not hidden by the client waiting) in alternating windows (A B, A B, ...), one model input
example per request, straight to the container's port (no proxy in between).

    .venv/bin/python bench/capture/capture_bench.py [--image REF] [--rate 200] [--window 1]
        [--rounds 60]

Windows are short and many (1 s, A B then B A): on a shared machine a burst of other work
lasts seconds, and 10 s windows let one burst land on one configuration only (a trial run's
p99 windows ranged 4-105 ms for both alike).

Goal (issue 30): capture at 10 % adds <= 2 ms to p99 at 200 req/s. Rows: p50 and p99 of
each window per configuration (client-side); the pooled p99 difference is the summary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402

from mlrig.adapters import docker as docker_adapter  # noqa: E402
from mlrig.core.image import run as image_run  # noqa: E402
from mlrig.core.image.last_built import last_built  # noqa: E402

GOAL_MS = 2.0
SATURATED_MS = 20.0  # capture 0's p50 beyond this: the server was not keeping up
CLIENTS = 16  # connections kept open; enough that 200 req/s never waits for a free one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(image: str, percent: int, folder: Path) -> tuple[str, int]:
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1"}
    binds: dict[str, str] = {}
    user = None
    if percent:
        extra, binds, user = image_run.capture_setup(image, percent, folder)
        env |= extra
    name = f"mlrig-bench-capture-{percent}-{port}"
    cid = docker_adapter.run_container(
        image, name=name, environment=env, memory_bytes=1 << 30, binds=binds, user=user
    )
    image_run.wait_serving(cid, f"http://127.0.0.1:{port}", 120, f"{name} to answer /ping")
    return cid, port


def window(port: int, body: bytes, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of rate*seconds requests sent on schedule, each from its scheduled time."""
    n = int(rate * seconds)
    begin = time.perf_counter() + 0.05
    due: queue.Queue[float | None] = queue.Queue()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (at := due.get()) is not None:
            conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            done = time.perf_counter()
            with lock:
                if resp.status != 200:
                    failures.append(str(resp.status))
                latencies.append((done - at) * 1000)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for i in range(n):
        at = begin + i / rate
        pause = at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due.put(at)
    for _ in threads:
        due.put(None)
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {failures[:5]}")
    return latencies


def in_process(body: bytes, answer: bytes, percent: int) -> list[dict[str, Any]]:
    """Where capture's time goes, inside one process: offer() (the request path's whole
    share: sample, stamp, append) and the writer's encode + write per record."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docker" / "serving"))
    from mlrig_serve.capture import Capture, Settings

    folder = Path(tempfile.mkdtemp(prefix="mlrig-bench-capture-writer-"))
    settings = Settings(percent=percent, directory=str(folder), max_records=10**6)
    offer_us, write_us = [], []
    for _ in range(5):
        cap = Capture(settings)
        ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(20_000)]
        begin = time.perf_counter()
        for i in ids:
            cap.offer(i, body, "application/json", answer, "application/json")
        offer_us.append((time.perf_counter() - begin) / len(ids) * 1e6)
        batch = cap._take()
        begin = time.perf_counter()
        cap.write_batch(batch)
        write_us.append((time.perf_counter() - begin) / max(1, len(batch)) * 1e6)
        cap.close()
    shutil.rmtree(folder, ignore_errors=True)
    return [
        common.row(f"offer() per request at {percent} %", "capture", offer_us, unit="us",
                   method=common.IN_PROCESS),
        common.row("writer: encode + write per captured record", "capture", write_us,
                   unit="us", method=common.IN_PROCESS),
    ]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--image", help="a serving image built by mlrig (default: last built)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=60, help="windows per configuration")
    parser.add_argument("--percent", type=int, default=10, help="the capture share measured")
    args = parser.parse_args()
    image = args.image or last_built()
    meta = {**common.machine(("docker",)), "image": image, **vars(args), "clients": CLIENTS}
    folder = Path(tempfile.mkdtemp(prefix="mlrig-bench-capture-")) / "captures"
    configs = {"capture 0": 0, f"capture {args.percent} %": args.percent}
    started = {name: start(image, pct_, folder) for name, pct_ in configs.items()}
    try:
        cid0, port0 = started["capture 0"]
        body = docker_adapter.read_container_file(cid0, image_run.EXAMPLE_FILE) or b""
        for _, port in started.values():  # warm both: first requests load lazy code paths
            window(port, body, args.rate, 2)
        windows: dict[str, list[list[float]]] = {name: [] for name in configs}
        for r in range(args.rounds):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in order:
                windows[name].append(window(started[name][1], body, args.rate, args.window))
        on = f"capture {args.percent} %"
        counters = json.loads(http_get(started[on][1], "/capture"))  # the writer's work
        conn = http.client.HTTPConnection("127.0.0.1", port0, timeout=30)
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        answer = conn.getresponse().read()
        conn.close()
    finally:
        for cid, _ in started.values():
            docker_adapter.stop_container(cid)
            docker_adapter.remove_container(cid)
        meta["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    files = list(folder.rglob("*.jsonl"))
    lines = sum(len(p.read_bytes().splitlines()) for p in files)
    shutil.rmtree(folder.parent, ignore_errors=True)

    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[float]] = {}
    for name in configs:
        pooled[name] = [x for w in windows[name] for x in w]
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            rows.append(
                common.row(
                    f"{label} latency at {args.rate:g} req/s, per {args.window:g} s window",
                    name,
                    [pct(w, q) for w in windows[name]],
                    unit="ms",
                    method=common.CLIENT,
                )
            )
    rows += in_process(body, answer, args.percent)
    p99 = {name: pct(v, 0.99) for name, v in pooled.items()}
    delta = p99[on] - p99["capture 0"]
    base_w = [pct(w, 0.99) for w in windows["capture 0"]]
    per_window = [pct(b, 0.99) - pct(a, 0.99) for a, b in zip(*windows.values(), strict=True)]
    # Latency counts from each request's scheduled time: a server that keeps up answers in
    # its service time (a few ms); past SATURATED_MS at p50 requests are queueing behind each
    # other, and a p99 difference measures the queue, not capture.
    base_p50 = pct(pooled["capture 0"], 0.5)
    if base_p50 > SATURATED_MS:
        verdict = (
            f"not judged: the machine did not sustain {args.rate:g} req/s in this run "
            f"(capture 0's p50 {base_p50:.0f} ms > {SATURATED_MS:g} ms: requests queued)"
        )
    else:
        verdict = "met" if delta <= GOAL_MS else "NOT met"
    summary = [
        f"pooled p99 over {len(pooled[on])} requests each: capture 0 {p99['capture 0']:.2f} ms, "
        f"{on} {p99[on]:.2f} ms: {delta:+.2f} ms; goal <= +{GOAL_MS:g} ms: {verdict}; "
        f"median of the per-round differences {statistics.median(per_window):+.2f} ms",
        f"noise: capture 0's p99 per window spans {min(base_w):.1f}-{max(base_w):.1f} ms "
        f"(interquartile {pct(base_w, 0.25):.1f}-{pct(base_w, 0.75):.1f} ms) on this shared "
        "machine; a p99 difference well inside that spread is not resolved by one run, the "
        "in-process rows bound capture's own work",
        f"the capturing container's writer: {counters['sampled']} sampled, "
        f"{counters['written']} written, {counters['dropped']} dropped, {counters['errors']} "
        f"write errors; {lines} lines in {len(files)} files",
        f"machine load (1-min average) {meta['load_avg'][0]} at the start, "
        f"{meta['load_avg_end'][0]} at the end, on {meta['cpus']} CPUs shared with other work",
    ]
    table = common.markdown(rows) + "\n\n" + "\n".join(f"- {s}" for s in summary)
    print(table)
    doc = {"meta": meta, "rows": rows, "summary": summary, "counters": counters}
    common.record(f"capture-{common.utc_stamp()}", doc, table)


def http_get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


if __name__ == "__main__":
    main()
