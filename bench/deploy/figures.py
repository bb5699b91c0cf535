"""The deploy benchmark's rows and summary lines: the goals of issue 29 and each verdict."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
import traffic
from common import CLIENT, WHOLE, WHOLE_INTERLEAVED, row

GOAL_FIRST_S, GOAL_ROLLBACK_S, GOAL_OVERHEAD_MS, GOAL_SHARE_POINTS = 10.0, 3.0, 1.0, 3.0
POLLED = "client-side, polled every 0.05 s from the command's spawn"
EFFECT = "rollback takes effect: first answer from the previous version, polled during the command"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def figures(
    first: dict[str, list[float]],
    back: dict[str, list[float]],
    parts: dict[str, list[float]],
    phases: list[dict[str, Any]],
    latencies: dict[str, list[float]],
    commands: dict[str, float],
    via: list[float],
    bare: list[float],
    shares: dict[int, Any],
    args: argparse.Namespace,
    loads: dict[str, list[float]],
) -> tuple[list[dict[str, Any]], list[str]]:
    med = statistics.median
    what1, what2 = "pushed image -> first 200", "rollback -> first 200 from the previous version"
    rows = [
        row(what1, "mlrig deploy (new endpoint) + keyed POSTs through nginx", first["mlrig"]),
        row(what1, "docker run of the same image + curl POSTs", first["docker run"]),
        row(what1, "mlflow models serve --env-manager local + curl POSTs", first["mlflow serve"]),
        row("the floor of any mlrig command", "mlrig deploy status", first["status"]),
        row(what2, "mlrig deploy rollback + keyed POSTs through nginx", back["mlrig"]),
        row(what2, "docker stop + rm + run of the previous image + curl POSTs", back["by hand"]),
    ]
    rows += [
        row(f"part: {k}", "mlrig", v, method=POLLED if k == EFFECT else WHOLE_INTERLEAVED)
        for k, v in parts.items()
    ]
    for label, seconds in commands.items():
        rows.append(row(f"under {args.rate:g} req/s", label, [seconds], method=WHOLE))
    rows += [
        row(
            f"latency at {args.rate:g} req/s, phase: {p['phase']}",
            "endpoint (nginx + key), open loop",
            latencies[p["phase"]],
            unit="ms",
            method=CLIENT,
        )
        for p in phases
    ]
    rows += [
        row(
            "POST one row, keep-alive",
            "through the endpoint (nginx + key)",
            ms(via),
            unit="ms",
            method=CLIENT,
        ),
        row(
            "POST one row, keep-alive", "the container directly", ms(bare), unit="ms", method=CLIENT
        ),
    ]
    for tool, got in (
        ("through the endpoint (nginx + key)", via),
        ("the container directly", bare),
    ):
        p99 = traffic.percentile(ms(got), 99)
        rows.append(row("POST one row, keep-alive: p99", tool, [p99], unit="ms", method=CLIENT))
    for pct, got in shares.items():
        rows.append(
            row(
                f"canary share at PCT={pct} ({args.share_calls} requests)",
                f"mlrig deploy --canary {pct}",
                [got["share"]],
                unit="%",
                method="X-Model-Version of each answer",
            )
        )
    sent = sum(p["sent"] for p in phases)
    failed = sum(p["non_200"] for p in phases)
    m_first, m_back = med(first["mlrig"]), med(back["mlrig"])
    over = med(ms(via)) - med(ms(bare))
    summary = [
        f"first 200 <= {GOAL_FIRST_S:g} s: mlrig {m_first:.2f} s median, "
        f"{verdict(m_first <= GOAL_FIRST_S)} (docker run {med(first['docker run']):.2f} s, "
        f"mlflow models serve {med(first['mlflow serve']):.2f} s)",
        f"rollback <= {GOAL_ROLLBACK_S:g} s: mlrig {m_back:.2f} s median, "
        f"{verdict(m_back <= GOAL_ROLLBACK_S)} (by hand {med(back['by hand']):.2f} s); "
        f"traffic reaches the previous version {med(parts[EFFECT]):.2f} s after the spawn",
        f"0 failed out of {args.rate:g} req/s across deploy, canary, promote, rollback: "
        f"{failed} non-200 of {sent} sent, {verdict(failed == 0)}",
    ]
    summary += [
        f"phase {p['phase']}: {p['sent']} sent, {p['non_200']} non-200, p50 {p['p50_ms']} ms, "
        f"p99 {p['p99_ms']} ms, answered by {p['versions']}, "
        f"sent at most {p['max_late_ms']} ms late"
        for p in phases
    ]
    summary += [
        f"nginx + key <= {GOAL_OVERHEAD_MS:g} ms p50 over the container: +{over:.2f} ms "
        f"(p50 {med(ms(via)):.2f} vs {med(ms(bare)):.2f} ms; p99 "
        f"{traffic.percentile(ms(via), 99):.2f} vs {traffic.percentile(ms(bare), 99):.2f} ms; "
        f"paired median +{traffic.paired_difference_ms(via, bare):.2f} ms), "
        f"{verdict(over <= GOAL_OVERHEAD_MS)}"
    ]
    summary += [
        f"canary share at PCT={pct}: {got['share']:.1f} % ({got['seen']}), "
        f"{verdict(abs(got['share'] - pct) <= GOAL_SHARE_POINTS)}"
        for pct, got in shares.items()
    ]
    summary.append(f"load average (1 min) at each round: {loads}")
    return rows, summary


def ms(samples: list[float]) -> list[float]:
    return [round(s * 1000, 3) for s in samples]
