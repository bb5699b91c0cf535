"""From the measurements to the rows, the summary lines and the printed table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import CLIENT, IN_PROCESS, row
from configs import ROUNDS, Result

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
