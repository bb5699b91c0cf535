"""Tracking-server rehearsal per profile: image size, time to healthy, peak memory.

Runs `mlrig stack rehearse --json` (the AWS task's image, command, user, memory and CPU
quota against real PostgreSQL and moto's S3) for each profile, logging N runs before the
memory peak is read, and records the numbers under bench/results/.

The command is timed whole (spawn -> exit), the profiles alternating sample by sample; n is
--samples (default 1: a rehearsal takes about two minutes). The start and memory figures are
the rehearsal's own report, each labelled with how the rehearsal measures it.
Run: .venv/bin/python bench/rehearse/rehearse_bench.py [--runs 200] [--profiles small production]
     [--samples 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    MLRIG,
    WHOLE,
    WHOLE_INTERLEAVED,
    interleave,
    machine,
    markdown,
    record,
    row,
    utc_stamp,
)

NOTE = (
    "2 shared CPUs; the container gets the profile's CPU quota (small 0.5 vCPU, production "
    "1 vCPU) like a Fargate task"
)
STARTED = "docker run -> /health 200, polled every 0.5 s from outside (the rehearsal's report)"
PEAK = "the container's peak (docker stats, less inactive page cache), as the rehearsal reports"


def rehearse(profile: str, runs: int) -> dict[str, Any]:
    """One whole `mlrig stack rehearse` and what its report says. A failed check is reported,
    not fatal (the rehearsal exits 1): the row keeps the time, the summary names the check."""
    argv = [MLRIG, "stack", "rehearse", "--json", "--profile", profile, "--runs", str(runs)]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if not proc.stdout.strip():
        sys.exit(f"rehearsal of {profile} produced no report: {proc.stderr.strip()[-400:]}")
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    peak = checks.get("peak memory", {})
    mib = re.match(r"(\d+) MiB of (\d+) MiB", peak.get("detail", ""))
    workers = re.search(r"(\d+) workers", peak.get("detail", ""))
    return {
        "profile": profile,
        "ok": report["ok"],
        "exit_code": proc.returncode,
        "image": report["image"],
        "image_size_mb": report["image_size_mb"],
        "healthy_s": checks.get("healthy", {}).get("value"),
        "second_start_s": checks.get("second start", {}).get("value"),
        "peak_mib": int(mib.group(1)) if mib else None,
        "limit_mib": int(mib.group(2)) if mib else None,
        "peak_share_pct": peak.get("value"),
        "workers": int(workers.group(1)) if workers else None,
        "runs": runs,
        "wall_s": round(wall, 2),
        "failed": [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]],
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        "profile",
        "ok",
        "image_size_mb",
        "healthy_s",
        "second_start_s",
        "workers",
        "peak_mib",
        "limit_mib",
        "peak_share_pct",
        "runs",
        "wall_s",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--profiles", nargs="+", default=["small", "production"])
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()
    meta = {**machine(), "runs": args.runs, "samples": args.samples, "note": NOTE}
    reports: dict[str, list[dict[str, Any]]] = {p: [] for p in args.profiles}

    def sample(profile: str) -> float:
        reports[profile].append(rehearse(profile, args.runs))
        return float(reports[profile][-1]["wall_s"])

    walls = interleave({p: lambda _i, p=p: sample(p) for p in args.profiles}, args.samples)
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]

    def figures(key: str) -> dict[str, list[float]]:
        return {p: [r[key] for r in reps if r[key] is not None] for p, reps in reports.items()}

    rows: list[dict[str, Any]] = []
    whole = WHOLE_INTERLEAVED if len(args.profiles) > 1 else WHOLE  # no rival to take turns with
    for label, values, unit, method in (
        (f"`mlrig stack rehearse --runs {args.runs}`", walls, "s", whole),
        ("first start -> healthy (migrations)", figures("healthy_s"), "s", STARTED),
        ("second start -> healthy (schema exists)", figures("second_start_s"), "s", STARTED),
        (f"peak memory, {args.runs} runs logged", figures("peak_mib"), "MiB", PEAK),
    ):
        rows += [row(label, f"profile {p}", v, unit=unit, method=method) for p, v in values.items()]
    summary = [NOTE]
    for p, reps in reports.items():
        last = reps[-1]
        failed = sorted({f for r in reps for f in r["failed"]})
        summary.append(
            f"{p}: image {last['image_size_mb']} MB, {last['workers']} workers, memory limit "
            f"{last['limit_mib']} MiB; "
            + ("every check passed" if not failed else "failed: " + "; ".join(failed))
        )
    flat = [r for reps in reports.values() for r in reps]
    text = markdown(rows) + "\n\n" + "".join(f"- {s}\n" for s in summary) + "\n" + table(flat)
    print(text)
    record(
        f"rehearse-{utc_stamp()}",
        {"meta": meta, "rows": rows, "summary": summary, "reports": flat},
        f"# mlrig stack rehearse\n\n{text}\n",
    )


if __name__ == "__main__":
    main()
