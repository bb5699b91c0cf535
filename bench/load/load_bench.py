"""The AWS tracking server under a team's load: mlrig's `small` task vs stock basic-auth.

The server under test is what `mlrig stack rehearse --profile small` runs (the task's image,
command, user, env, secrets, memory and CPU quota, against real PostgreSQL and moto's S3),
started through the rehearsal's own `Services`. Beside it, in the same image with the same
limits, the same PostgreSQL server (its own database) and an S3 bucket named the same way:
`mlflow server --app-name basic-auth` with MLflow's shipped basic_auth.ini (auth database
pointed at PostgreSQL too, the admin password by env) and MLflow's defaults otherwise.

16 clients (threads, one keep-alive session each) sign in as a non-admin team member with
EDIT on the bench's experiment and registered model and loop over a mix: create run,
log-batch (10 params + 20 metrics), 1 MB artifact upload through the artifact proxy,
terminate run, search runs (max 50), get model version. Requests are paced to an offered
rate (--rate, 0 = as fast as the clients go). Every request is timed client-side; a non-2xx
answer or an exception is an error. The servers run one after the other, never at once.

Run:  .venv/bin/python bench/load/load_bench.py --also production   # 5 min a server, ~25 min
      MLRIG_BENCH_RESULTS=/tmp/trial .venv/bin/python bench/load/load_bench.py --seconds 30
          # ~7 min
      .venv/bin/python bench/load/load_bench.py --only mlrig --cpu-units 2048 --memory-mib 4096 \
          --workers 4          # a sizing variant (also --env MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=16)
      .venv/bin/python bench/load/load_bench.py --also production --size 2048:4096  # + sizing
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import machine, markdown, record, utc_stamp
from figures import rows_for, server_record, summary, tables
from sampling import StatsSampler
from servers import Server, StartFailed, failure_detail, mlrig_server, start, stock_server
from settings import (
    CLIENTS_IN_BURST,
    GOAL_P99_S,
    GOAL_RPS,
    MANAGED_SMALL_USD_MONTH,
    OPS,
    WEIGHTS,
    say,
)
from workload import SetupFailed, drive, seed, wrong_password_burst

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import postgres
from mlrig.core.stack.local.stack import free_port
from mlrig.core.stack.rehearse import MEMORY_LIMIT_SHARE, Request, Services, moto_binary
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container

# --- main -------------------------------------------------------------------------------


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


@contextlib.contextmanager
def one_at_a_time(s: Services, server: Server) -> Iterator[tuple[str, float, StatsSampler]]:
    """The server alone on the machine while the block runs; removed after it."""
    say(f"starting {server.name}")
    container, healthy, sampler = start(s, server)
    say(f"{server.name}: /health 200 after {healthy:.1f} s")
    try:
        yield container, healthy, sampler
    finally:
        sampler.stop()
        s.remove_container(container)


def failed_start(server: Server, exc: StartFailed) -> dict[str, Any]:
    say(f"{server.name}: died before the load: {exc.reason}")
    return {
        **server_record(server),
        "failed": exc.reason,
        **exc.detail,
    }


def run_one(s: Services, server: Server, admin: tuple[str, str], args: Any) -> dict[str, Any]:
    """Start, set up, load, remove one server; a server that dies first is a result too."""
    try:
        with one_at_a_time(s, server) as (container, healthy, sampler):
            started = time.monotonic() - healthy
            try:
                target = seed(server.url, admin)
            except (SetupFailed, requests.RequestException) as exc:
                time.sleep(2)  # the container's state settles (exit code, OOM flag)
                detail = failure_detail(server, container, sampler, started)
                why = f"healthy after {healthy:.0f} s, then the admin's set-up failed: {exc}"
                raise StartFailed(why, detail) from exc
            result = drive(
                s,
                server,
                container,
                sampler,
                target,
                clients=args.clients,
                rate=args.rate,
                warmup=args.warmup,
                seconds=args.seconds,
            )
            result["start_s"] = round(healthy, 1)
            if result["container_status"] == "running":
                say(f"{server.name}: {CLIENTS_IN_BURST} concurrent wrong passwords")
                result["wrong_password_burst"] = wrong_password_burst(server, container, target)
    except StartFailed as exc:
        return failed_start(server, exc)
    say(f"{server.name}: done, container removed")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="measured seconds per server")
    ap.add_argument("--warmup", type=float, default=15.0, help="uncounted seconds first")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument(
        "--rate",
        type=float,
        default=26.0,
        help="offered requests/s over all clients (0: no pacing, as fast as they go); "
        "default 26, the goal's 25 plus 4 %%, so a server that keeps up measures >= 25",
    )
    ap.add_argument("--profile", default="small", choices=sorted(ts_container.CONTAINER_SIZES))
    ap.add_argument(
        "--only",
        action="append",
        choices=["mlrig", "stock", "sizes"],
        default=None,
        help="run only these; 'sizes': only the --also/--size rows, recorded as load-sizing",
    )
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        choices=sorted(ts_container.CONTAINER_SIZES),
        metavar="PROFILE",
        help="mlrig: also run this profile's task after the comparison (sizing)",
    )
    ap.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="CPU_UNITS:MIB[:WORKERS[:THREADS]]",
        help="mlrig: also run the profile's task at this size after the rest (sizing), "
        "e.g. 2048:4096 (2 vCPU, 4 GiB, a valid Fargate size) or 2048:4096:8:2",
    )
    ap.add_argument("--workers", type=int, default=None, help="mlrig: override the profile's")
    ap.add_argument("--threads", type=int, default=None, help="mlrig: threads per gunicorn worker")
    ap.add_argument("--cpu-units", type=int, default=None, help="mlrig: override (1024 = 1 vCPU)")
    ap.add_argument("--memory-mib", type=int, default=None, help="mlrig: override the limit")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="mlrig: extra server env, e.g. MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=10",
    )
    ap.add_argument(
        "--stock-workers",
        type=int,
        default=None,
        help="stock: --workers (default: the profile's, like mlrig; 0 = MLflow's default, 4)",
    )
    args = ap.parse_args()
    only = args.only or ["mlrig", "stock"]
    postgres.bin_dir()
    moto_binary()
    docker_adapter.client()
    profile_workers = ts_container.CONTAINER_SIZES[args.profile][2]
    stock_workers = profile_workers if args.stock_workers is None else (args.stock_workers or None)
    meta = {
        **machine(("mlflow", "docker", "requests", "moto")),
        "profile": args.profile,
        "also_profiles": args.also,
        "also_sizes": args.size,
        "stock_workers": stock_workers or "MLflow's default (4)",
        "clients": args.clients,
        "offered_rps": args.rate or "unpaced",
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "mix": {op: WEIGHTS[op] for op in OPS},
        "goals": {
            "rps": GOAL_RPS,
            "p99_s": GOAL_P99_S,
            "errors": 0,
            "peak_memory_share": MEMORY_LIMIT_SHARE,
        },
        "managed_small_usd_month": MANAGED_SMALL_USD_MONTH,
    }
    results: list[dict[str, Any]] = []
    req = Request(profile=args.profile, port=free_port())
    with Services(req, say) as s:
        admin = (ts.ADMIN_USERNAME, s.admin_password)
        if "mlrig" in only:
            size = (args.cpu_units, args.memory_mib)
            server = mlrig_server(
                s, args.workers, parse_env(args.env), size=size, threads=args.threads
            )
            results.append(run_one(s, server, admin, args))
        if "stock" in only:
            results.append(run_one(s, stock_server(s, stock_workers), admin, args))
            if "failed" in results[-1]:  # as shipped it died: again with the one change it needs
                say("stock basic-auth again with job execution off")
                server = stock_server(s, stock_workers, jobs=False)
                results.append(run_one(s, server, admin, args))
        for profile in args.also:
            server = mlrig_server(
                s, args.workers, parse_env(args.env), profile, threads=args.threads
            )
            results.append(run_one(s, server, admin, args))
        for spec in args.size:
            cpu, mib, *rest = (int(x) for x in spec.split(":"))
            workers = rest[0] if rest else args.workers
            threads = rest[1] if len(rest) > 1 else args.threads
            server = mlrig_server(s, workers, parse_env(args.env), size=(cpu, mib), threads=threads)
            results.append(run_one(s, server, admin, args))
    stamp = utc_stamp()
    rows = [r for res in results for r in rows_for(res)]
    text = tables(results)
    header = (
        f"# Tracking server under load, {stamp}\n\n"
        f"{args.clients} clients, offered {args.rate or 'unpaced'} req/s, "
        f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up; profile "
        f"{args.profile}; {meta['cpus']} CPUs, load average at start {meta['load_avg']}\n"
    )
    table = f"{header}\n{text}\n\n{markdown(rows)}\n"
    print(table)
    for res in results:  # the latencies are in the rows; keep the per-op figures small
        for f in (res["overall"], *res["ops"].values()) if "overall" in res else ():
            f.pop("latencies_ms")
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"meta": meta, "rows": rows, "summary": summary(results), "servers": results}
    # sizing rows are load-sizing; other profiles' tasks alone (`--only sizes --also P`) are
    # load-P, so each stays the newest of its own kind in the README
    if only != ["sizes"]:
        name = "load"
    else:
        name = "load-sizing" if args.size else "-".join(["load", *args.also])
    record(f"{name}-{stamp}", doc, table)


if __name__ == "__main__":
    main()
