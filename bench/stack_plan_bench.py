"""`mlrig stack plan` wall time (goal: < 5 s), cold process each run, both profiles, and the
monthly idle cost it reports. Reference point: `pulumi preview` needs the CLI, the provider
plugin and AWS credentials, none of which the plan uses.

Run: .venv/bin/python bench/stack_plan_bench.py [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import record, utc_stamp

MLRIG = str(Path(sys.executable).with_name("mlrig"))
CASES = {
    "small": ["--profile", "small"],
    "production": ["--profile", "production", "--domain", "mlflow.example.com"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for profile, extra in CASES.items():
        times, doc = [], {}
        for _ in range(args.samples):
            start = time.perf_counter()
            out = subprocess.run(
                [MLRIG, "stack", "plan", "--json", *extra],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            times.append(time.perf_counter() - start)
            doc = json.loads(out)
        cost = doc["monthly_cost_usd"]
        rows.append(
            {
                "profile": profile,
                "resources": len(doc["resources"]),
                "median_s": round(statistics.median(times), 2),
                "max_s": round(max(times), 2),
                "idle_usd": cost["idle_total"],
                "with_usage_usd": cost["total"],
            }
        )
    header = "| profile | resources | median s | max s | idle $/month | with usage $/month |"
    lines = [header, "|---|---|---|---|---|---|"] + [
        f"| {r['profile']} | {r['resources']} | {r['median_s']} | {r['max_s']} | "
        f"{r['idle_usd']} | {r['with_usage_usd']} |"
        for r in rows
    ]
    print("\n".join(lines))
    stamp = utc_stamp(zulu=False)
    meta = {
        "when": stamp,
        "samples": args.samples,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    record(f"stack_plan_{stamp}", meta, "\n".join(lines))


if __name__ == "__main__":
    main()
