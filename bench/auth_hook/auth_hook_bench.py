"""Where an authenticated request's time goes: mlrig's auth hook (Basic, bearer token) beside
MLflow's bare Basic check and the user lookup MLflow's own authorization runs for every
signed-in request, each timed alone in one process on MLflow's real auth app and store.

Complements tracking_bench.py (whole requests timed by a client outside the server): that
shows what a request costs; this shows which part of it the hook is. Every figure here is an
in-process call (labelled so), the four cases alternated call by call.
Run: .venv/bin/python bench/auth_hook/auth_hook_bench.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import IN_PROCESS, interleave, machine, markdown, record, row, utc_stamp

from mlrig.tracking import config as ts
from mlrig.tracking import oidc as tracking_oidc

PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
AUDIENCE = "mlrig:bench"


def setup(work: Path, password: str) -> tuple[Any, Any]:
    """MLflow's basic-auth Flask app (its store on SQLite in `work`) and the local issuer."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
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
    meta = {**machine(), "calls": args.calls}
    password = "bench-" + "p" * 20
    with tempfile.TemporaryDirectory(prefix="mlrig-hook-bench-") as tmp:
        app, issuer = setup(Path(tmp), password)
        from mlflow.server import auth

        from mlrig.tracking import auth as tracking_auth

        token = issuer.token(AUDIENCE, repository="acme/bench", exp=int(time.time()) + 3600)
        basic = {
            "Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()
        }
        bearer = {"Authorization": f"Bearer {token}"}
        # (what, tool) -> the call and the request's headers
        cases: dict[tuple[str, str], tuple[Callable[[], Any], dict[str, str]]] = {
            ("auth hook, bearer token", "mlrig"): (tracking_auth.authenticate, bearer),
            ("auth hook, Basic", "mlrig"): (tracking_auth.authenticate, basic),
            ("bare Basic check", "MLflow"): (auth.authenticate_request_basic_auth, basic),
            ("user lookup (each signed-in request)", "MLflow"): (
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
        # call by call: A B C D, A B C D, ... so a busy machine slows every case alike
        samples = interleave(
            {name: lambda _i, c=case: once(*c) for name, case in cases.items()}, args.calls
        )
        issuer.close()
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = [row(what, tool, v, unit="µs", method=IN_PROCESS) for (what, tool), v in samples.items()]
    summary = [
        "p90: "
        + ", ".join(
            f"{tool}'s {what} {statistics.quantiles(v, n=10)[-1]:.0f} µs"
            for (what, tool), v in samples.items()
        )
    ]
    table = markdown(rows, fmt="{:.0f}") + "\n\n" + "\n".join(f"- {s}" for s in summary)
    print(table)
    record(f"auth-hook-{utc_stamp()}", {"meta": meta, "rows": rows, "summary": summary}, table)


if __name__ == "__main__":
    main()
