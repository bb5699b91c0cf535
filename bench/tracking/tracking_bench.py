"""Tracking-server benchmark: stock MLflow basic-auth vs mlrig's configuration vs no auth,
and mlrig's server taking an OIDC bearer token (from a local issuer) for the same request.

Servers start one at a time (start time and idle memory are read alone), then the workload
alternates across them so a busy machine slows every configuration alike: API calls and
rejected calls one by one (A B C, A B C, ...), the runs in ROUNDS slices. Every request is
timed by a client outside the server (this process, as a user's script or CLI would be):
the rows say CLIENT; memory is read from the server's process tree; the stop is an in-process
call to mlrig's process adapter.
Run: .venv/bin/python bench/tracking/tracking_bench.py [--runs 200] [--calls 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import machine, markdown, record, utc_stamp
from configs import CONFIGS, ROUNDS, WRONG_PASSWORD
from figures import render, rows_of, summary_of
from servers import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--only", action="append", help="config name(s) to run (default: all)")
    args = ap.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the client too: loopback traffic only
    os.environ.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)  # servers inherit it: stock = unset
    configs = [c for c in CONFIGS if not args.only or c.name in args.only]
    meta: dict[str, object] = {
        **machine(),
        "runs": args.runs,
        "calls": args.calls,
        "wrong_password_calls": WRONG_PASSWORD,
        "rounds": ROUNDS,
        "configs": [c.name for c in configs],
    }
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-") as work:
        results = run(configs, args.runs, args.calls, Path(work))
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows, summary = rows_of(results, args.runs), summary_of(results, args.runs)
    table = (
        render(results, meta)
        + "\n"
        + markdown(rows)
        + "\n\n"
        + "".join(f"- {line}\n" for line in summary)
    )
    print(table)
    record(
        f"tracking-{utc_stamp()}",
        {"meta": meta, "rows": rows, "summary": summary, "results": [asdict(r) for r in results]},
        table,
    )


if __name__ == "__main__":
    main()
