"""From the calls and samples to the figures: one server's summary, its goals, the rows and
tables recorded under bench/results, the prose summary."""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import CLIENT, row
from sampling import StatsSampler
from servers import Server
from settings import GOAL_P99_S, GOAL_RPS, MANAGED_SMALL_USD_MONTH, OPS, OWN_CPU, STATS, WEIGHTS

from mlrig.core.stack import costs
from mlrig.core.stack.rehearse import MEMORY_LIMIT_SHARE


@dataclasses.dataclass
class Call:
    op: str
    start: float  # perf_counter
    end: float
    ok: bool
    lag: float  # how late it was sent against its slot (paced runs)
    error: str = ""


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


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
