"""Where an authenticated request's time goes: mlrig's auth hook (Basic, bearer token) beside
MLflow's bare Basic check and the user lookup MLflow's own authorization runs for every
signed-in request, each timed alone in one process on MLflow's real auth app and store.

Complements tracking_bench.py (whole requests, whole processes): that shows what a request
costs; this shows which part of it the hook is.
Run: .venv/bin/python bench/auth_hook_bench.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import record

from mlrig import tracking_oidc
from mlrig import tracking_server as ts

PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
ROUNDS = 10  # the cases are timed round-robin, in this many slices
AUDIENCE = "mlrig:bench"


def setup(work: Path, password: str) -> tuple[Any, Any]:
    """MLflow's basic-auth Flask app (its store on SQLite in `work`) and the local issuer."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers import LocalIssuer

    issuer = LocalIssuer()
    (work / "auth.ini").write_text(ts.auth_ini(f"sqlite:///{work / 'auth.db'}"))
    rule = tracking_oidc.Rule("acme/bench", ts.ADMIN_USERNAME)
    config = tracking_oidc.OidcConfig(issuer.url, AUDIENCE, (rule,))
    (work / "oidc.json").write_text(json.dumps(config.to_json()))
    os.environ.update(ts.plain_env())
    os.environ[ts.ENV_AUTH_CONFIG] = str(work / "auth.ini")
    os.environ[ts.ENV_ADMIN_PASSWORD] = password
    os.environ[ts.ENV_FLASK_SECRET] = "x" * 32
    os.environ[ts.ENV_OIDC_CONFIG_FILE] = str(work / "oidc.json")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlflow.server.auth import create_app

    return create_app(), issuer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    password = "bench-" + "p" * 20
    with tempfile.TemporaryDirectory(prefix="mlrig-hook-bench-") as tmp:
        app, issuer = setup(Path(tmp), password)
        from mlflow.server import auth

        from mlrig import tracking_auth

        token = issuer.token(AUDIENCE, repository="acme/bench", exp=int(time.time()) + 3600)
        basic = {
            "Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        }
        bearer = {"Authorization": f"Bearer {token}"}
        cases: dict[str, tuple[Callable[[], Any], dict[str, str]]] = {
            "mlrig hook, bearer token": (tracking_auth.authenticate, bearer),
            "mlrig hook, Basic": (tracking_auth.authenticate, basic),
            "MLflow's Basic check": (auth.authenticate_request_basic_auth, basic),
            "MLflow's user lookup (each signed-in request)": (
                lambda: auth.store.get_user(ts.ADMIN_USERNAME),
                basic,
            ),
        }

        def once(fn: Callable[[], Any], headers: dict[str, str]) -> float:
            with app.test_request_context(PROBE, headers=headers):  # a fresh request each
                t = time.perf_counter()
                fn()
                return (time.perf_counter() - t) * 1e6

        for fn, headers in cases.values():  # first key-set fetch, first hash, pools
            once(fn, headers)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(ROUNDS):
            for name, (fn, headers) in cases.items():
                samples[name] += [once(fn, headers) for _ in range(args.calls // ROUNDS)]
        issuer.close()
    meta = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "calls": args.calls,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load": "/".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    rows = {
        n: (statistics.median(v), statistics.quantiles(v, n=10)[-1]) for n, v in samples.items()
    }
    table = (
        f"Python {meta['python']}, {meta['cpus']} CPUs, load {meta['load']}, "
        f"{meta['calls']} calls each, {meta['date']}\n\n"
        "| step | median | p90 |\n|---|---|---|\n"
        + "".join(f"| {n} | {m:.0f} µs | {p:.0f} µs |\n" for n, (m, p) in rows.items())
    )
    print(table)
    stamp = str(meta["date"]).replace(":", "").replace("-", "")
    record(f"auth-hook-{stamp}", {"meta": meta, "samples_us": samples}, table)


if __name__ == "__main__":
    main()
