"""Tracking-server rehearsal per profile: image size, time to healthy, peak memory.

Runs `mlrig stack rehearse --json` (the AWS task's image, command, user, memory and CPU
quota against real PostgreSQL and moto's S3) for each profile, logging N runs before the
memory peak is read, and records the numbers under bench/results/.
Run: .venv/bin/python bench/rehearse_bench.py [--runs 200] [--profiles small production]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import record, utc_stamp

MLRIG = Path(sys.executable).with_name("mlrig")


def rehearse(profile: str, runs: int) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(MLRIG), "stack", "rehearse", "--json", "--profile", profile, "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
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
        "wall_s": round(wall, 1),
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
    args = parser.parse_args()
    rows = [rehearse(p, args.runs) for p in args.profiles]
    text = table(rows)
    print(text)
    stamp = utc_stamp()
    meta = {
        "when": stamp,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "note": "2 shared CPUs; the container gets the profile's CPU quota (small 0.5 "
        "vCPU, production 1 vCPU) like a Fargate task",
    }
    record(
        f"rehearse-{stamp}",
        {**meta, "rows": rows},
        f"# mlrig stack rehearse, {stamp}\n\n{meta['note']}\n\n{text}\n",
    )


if __name__ == "__main__":
    main()
