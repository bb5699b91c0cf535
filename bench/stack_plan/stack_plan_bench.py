"""`mlrig stack plan` wall time (goal: < 5 s), both profiles, and the monthly idle cost it
reports. Every sample is the whole command in a fresh process, the two profiles alternated
sample by sample. Reference point: `pulumi preview` needs the CLI, the provider plugin and AWS
credentials, none of which the plan uses, so there is no rival row.

Run: .venv/bin/python bench/stack_plan/stack_plan_bench.py [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    MLRIG,
    WHOLE_INTERLEAVED,
    interleave,
    machine,
    markdown,
    record,
    row,
    run_timed,
    run_timed_output,
    utc_stamp,
)

GOAL_S = 5.0
CASES = {
    "small": ["--profile", "small"],
    "production": ["--profile", "production", "--domain", "mlflow.example.com"],
}


def argv(profile: str) -> list[str]:
    return [MLRIG, "stack", "plan", "--json", *CASES[profile]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    meta = {**machine(), "samples": args.samples}
    samples = interleave({p: lambda _i, p=p: run_timed(argv(p)) for p in CASES}, args.samples)
    plans: dict[str, dict[str, Any]] = {}
    for profile in CASES:  # once more, untimed, for what the plan says
        plans[profile] = json.loads(run_timed_output(argv(profile))[1])
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = [
        row(f"`stack plan --profile {p}`", "mlrig", samples[p], method=WHOLE_INTERLEAVED)
        for p in CASES
    ]
    summary = []
    for r, (profile, plan) in zip(rows, plans.items(), strict=True):
        cost = plan["monthly_cost_usd"]
        verdict = "met" if r["median"] < GOAL_S else "not met"
        summary.append(
            f"{profile}: {len(plan['resources'])} resources, idle ${cost['idle_total']}/month "
            f"(${cost['total']} with usage); goal < {GOAL_S:g} s: {verdict}"
        )
    table = markdown(rows) + "\n\n" + "\n".join(f"- {s}" for s in summary)
    print(table)
    record(
        f"stack-plan-{utc_stamp()}",
        {
            "meta": meta,
            "rows": rows,
            "summary": summary,
            "plans": {
                p: {"resources": len(d["resources"]), "monthly_cost_usd": d["monthly_cost_usd"]}
                for p, d in plans.items()
            },
        },
        table,
    )


if __name__ == "__main__":
    main()
