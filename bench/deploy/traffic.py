"""The deploy benchmark's clients: an open-loop load generator (a fixed schedule of requests,
sent on time whether or not earlier ones have answered), its per-phase summary, and the
keep-alive clients that compare the proxy with the container and count a canary's share."""

from __future__ import annotations

import asyncio
import base64
import collections
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

TIMEOUT_S = 30.0


def basic(key: str) -> dict[str, str]:
    """The Authorization header of an endpoint key (ID:SECRET)."""
    return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}


@dataclass(frozen=True)
class Shot:
    """One request of the schedule: its phase (at its scheduled send time), how late it was
    sent, its status (0: no answer: refused, reset or timed out), latency and which version
    answered (X-Model-Version)."""

    phase: str
    late_s: float
    status: int
    seconds: float
    version: str
    error: str = ""


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; one sample is itself."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(shots: list[Shot]) -> list[dict[str, Any]]:
    """Per phase, in the order phases began: requests sent, non-200 answers (and no answer at
    all), p50/p99 latency of every request (ms), the worst send lateness (ms) and the
    versions that answered."""
    phases: dict[str, list[Shot]] = {}
    for s in shots:
        phases.setdefault(s.phase, []).append(s)
    out = []
    for phase, group in phases.items():
        ms = [s.seconds * 1000 for s in group]
        out.append(
            {
                "phase": phase,
                "sent": len(group),
                "non_200": sum(1 for s in group if s.status != 200),
                "no_answer": sum(1 for s in group if s.status == 0),
                "p50_ms": round(percentile(ms, 50), 2),
                "p99_ms": round(percentile(ms, 99), 2),
                "max_late_ms": round(max(s.late_s for s in group) * 1000, 2),
                "versions": dict(collections.Counter(s.version for s in group if s.status == 200)),
                "errors": dict(
                    collections.Counter(s.error or str(s.status) for s in group if s.status != 200)
                ),
            }
        )
    return out


def latencies_ms(shots: list[Shot]) -> dict[str, list[float]]:
    """Every request's latency (ms, rounded to 1 us) per phase, in the order phases began."""
    out: dict[str, list[float]] = {}
    for s in shots:
        out.setdefault(s.phase, []).append(round(s.seconds * 1000, 3))
    return out


class OpenLoop:
    """`rate` POSTs a second to url on a fixed schedule (request i at start + i/rate), from
    its own thread and event loop, over one keep-alive connection pool; `phase` names the
    requests sent from now on. Requires aiohttp (in the venv through DVC's HTTP remote)."""

    def __init__(self, url: str, body: bytes, key: str, rate: float) -> None:
        self.url, self.body, self.rate = url, body, rate
        self.headers = {"Content-Type": "application/json", **basic(key)}
        self.phase = "start"
        self.shots: list[Shot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self, phase: str) -> None:
        self.phase = phase
        self._thread.start()

    def stop(self) -> list[Shot]:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_S + 10)
        return list(self.shots)

    async def _run(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout
        ) as session:
            tasks = set()
            t0, i = loop.time(), 0
            while not self._stop.is_set():
                due = t0 + i / self.rate
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                task = asyncio.create_task(self._one(session, self.phase, loop.time() - due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)

    async def _one(self, session: Any, phase: str, late: float) -> None:
        start = time.perf_counter()
        status, version, error = 0, "", ""
        try:
            async with session.post(self.url, data=self.body, headers=self.headers) as resp:
                await resp.read()
                status, version = resp.status, resp.headers.get("X-Model-Version", "")
        except Exception as exc:  # refused, reset, timed out: a failed request, counted
            error = f"{type(exc).__name__}: {exc}"[:160]
        self.shots.append(Shot(phase, late, status, time.perf_counter() - start, version, error))


def proxy_vs_direct(
    proxy_url: str, direct_url: str, body: bytes, key: str, calls: int, warmup: int = 50
) -> tuple[list[float], list[float]]:
    """Latency (s) of the same POST through the endpoint (nginx + key) and to the container's
    own port, alternated call by call, each on its own keep-alive session; warm-up dropped."""
    json_ct = {"Content-Type": "application/json"}
    via, direct = requests.Session(), requests.Session()
    via.headers.update({**json_ct, **basic(key)})
    direct.headers.update(json_ct)
    out: dict[str, list[float]] = {"proxy": [], "direct": []}
    for i in range(warmup + calls):
        for name, session, url in (("proxy", via, proxy_url), ("direct", direct, direct_url)):
            start = time.perf_counter()
            resp = session.post(url, data=body, timeout=TIMEOUT_S)
            seconds = time.perf_counter() - start
            if resp.status_code != 200:
                raise SystemExit(f"{name} call answered {resp.status_code}: {resp.text[:200]}")
            if i >= warmup:
                out[name].append(seconds)
    return out["proxy"], out["direct"]


def shares(url: str, body: bytes, key: str, calls: int) -> collections.Counter[str]:
    """Which version answered each of `calls` keyed requests (one keep-alive session)."""
    session = requests.Session()
    session.headers.update({"Content-Type": "application/json", **basic(key)})
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(calls):
        resp = session.post(url, data=body, timeout=TIMEOUT_S)
        if resp.status_code != 200:
            raise SystemExit(f"the endpoint answered {resp.status_code}: {resp.text[:200]}")
        seen[resp.headers.get("X-Model-Version", "")] += 1
    return seen


def paired_difference_ms(a: list[float], b: list[float]) -> float:
    """Median of a[i] - b[i] in ms: the overhead with the machine's drift paired away."""
    return statistics.median((x - y) * 1000 for x, y in zip(a, b, strict=True))
