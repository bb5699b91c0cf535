"""The rehearsal's checks against the running tracking-server container, in order.

Each appends one row to the report; a check whose failure makes the rest meaningless stops it.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlrig.adapters import aws, http, postgres
from mlrig.adapters import docker as docker_adapter
from mlrig.adapters import mlflow as mlflow_adapter
from mlrig.core.stack._rehearse.contract import artifacts_prefix, db_names
from mlrig.core.stack._rehearse.model import MEMORY_LIMIT_SHARE
from mlrig.core.stack._rehearse.session import Session
from mlrig.core.stack.env import temporary_env
from mlrig.errors import MlrigError

ARTIFACT_NAME = "rehearsal.txt"
READER = "rehearsal-reader"


def run_all(c: Session) -> None:
    c.guard("database role", database_role, c)
    c.s.break_dependency()
    first = c.guard("healthy", c.start, "healthy")
    c.guard("unauthenticated 401", unauthenticated, c)
    c.guard("admin 200", admin, c)
    c.guard("reader cannot write", reader_cannot_write, c)
    run_id = c.guard("artifact in bucket", logged_run, c)
    c.guard("not root", not_root, c, first)
    c.s.remove_container(first)
    # The schema exists now: migrations must be a no-op, and state must come back from it.
    second = c.guard("second start", c.start, "second start")
    c.guard("run survives restart", survives, c, run_id)
    c.guard("peak memory", peak_memory, c, second)


@contextlib.contextmanager
def client_env(url: str, username: str, password: str) -> Iterator[None]:
    """MLflow's client reads its credentials from the environment only. It would also print
    a run link to stdout (and fetch the run for it) on every finished run: not into --json."""
    values = {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1",
    }
    with temporary_env(values):
        yield


def database_role(c: Session) -> None:
    """The server's role logs in and owns its database, and nothing more (as on RDS)."""
    db_name, db_user = db_names()
    attrs = postgres.role_attributes(c.s.cluster, db_user)
    ok = (
        attrs["owns"] == [db_name]
        and not attrs["superuser"]
        and not attrs["createdb"]
        and not attrs["createrole"]
    )
    c.add(
        "database role",
        ok,
        f"{db_user}: owns {attrs['owns']}, superuser "
        f"{attrs['superuser']}, createdb {attrs['createdb']}, createrole {attrs['createrole']}",
    )


def _api(c: Session, path: str) -> str:
    return f"{c.s.url}/api/{path}"


def _ok(resp: http.Response) -> bool:
    return resp.status < 400  # what requests calls `ok`


def unauthenticated(c: Session) -> None:
    resp = http.send_json(
        "POST", _api(c, "2.0/mlflow/experiments/search"), body={"max_results": 1}, timeout=30
    )
    c.add("unauthenticated 401", resp.status == 401, f"no credentials -> {resp.status}")


def admin(c: Session) -> None:
    resp = http.send_json(
        "POST",
        _api(c, "2.0/mlflow/experiments/search"),
        body={"max_results": 1},
        auth=c.admin,
        timeout=60,
    )
    c.add("admin 200", resp.status == 200, f"admin credentials -> {resp.status}")


def reader_cannot_write(c: Session) -> None:
    """A user created through the auth API, granted READ on one experiment, cannot write."""
    password = secrets.token_urlsafe(16)
    steps: list[str] = []

    def call(method: str, path: str, auth: tuple[str, str], **kw: Any) -> http.Response:
        resp = http.send_json(method, _api(c, path), auth=auth, timeout=60, **kw)
        steps.append(f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]} {resp.status}")
        return resp

    created = call(
        "POST", "2.0/mlflow/users/create", c.admin, body={"username": READER, "password": password}
    )
    exp = call(
        "POST",
        "2.0/mlflow/experiments/create",
        c.admin,
        body={"name": f"rehearsal-permissions-{secrets.token_hex(3)}"},
    )
    exp_id = exp.json().get("experiment_id", "") if _ok(exp) else ""
    grant = call(
        "POST",
        "3.0/mlflow/users/permissions/grant",
        c.admin,
        body={
            "username": READER,
            "resource_type": "experiment",
            "resource_id": exp_id,
            "permission": "READ",
        },
    )
    reader = (READER, password)
    read = call("GET", "2.0/mlflow/experiments/get", reader, params={"experiment_id": exp_id})
    write = call("POST", "2.0/mlflow/runs/create", reader, body={"experiment_id": exp_id})
    ok = _ok(created) and _ok(exp) and _ok(grant) and read.status == 200 and write.status == 403
    c.add("reader cannot write", ok, "; ".join(steps))


def logged_run(c: Session) -> str:
    """A run with params, metrics and an artifact through MLflow's client; the artifact must
    land in the bucket under the stack's artifact prefix."""
    with client_env(c.s.url, *c.admin), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ARTIFACT_NAME
        path.write_text("logged by mlrig stack rehearse\n")
        run_id = mlflow_adapter.log_run(
            c.s.url,
            experiment=f"rehearsal-{secrets.token_hex(3)}",
            params={"alpha": "0.5"},
            metrics={"rmse": 0.25},
            artifact=path,
        )
    prefix = artifacts_prefix() + "/"
    keys = aws.list_keys(c.s.s3, c.s.bucket, prefix)
    found = [k for k in keys if k.endswith(f"/{run_id}/artifacts/{ARTIFACT_NAME}")]
    c.add(
        "artifact in bucket",
        bool(found),
        f"s3://{c.s.bucket}/{found[0]}"
        if found
        else f"no {ARTIFACT_NAME} of run {run_id} under s3://{c.s.bucket}/{prefix} "
        f"({len(keys)} objects)",
    )
    return run_id


def not_root(c: Session, container: str) -> None:
    uid = docker_adapter.exec_output(container, "id -u").strip()
    want = c.s.config().user.split(":")[0]
    c.add("not root", uid == want and uid != "0", f"uid {uid} (contract user {want})")


def survives(c: Session, run_id: str) -> None:
    """The run, its params, metrics and artifact are read back through a new container."""
    with client_env(c.s.url, *c.admin):
        try:
            run = mlflow_adapter.read_run(c.s.url, run_id)
        except MlrigError as exc:  # MLflow's errors and HTTP errors alike
            c.add("run survives restart", False, f"run {run_id}: {exc.message}")
            return
    ok = (
        run.params.get("alpha") == "0.5"
        and run.metrics.get("rmse") == 0.25
        and ARTIFACT_NAME in run.artifacts
    )
    c.add(
        "run survives restart",
        ok,
        f"run {run_id}: params {run.params}, metrics {run.metrics}, artifacts {run.artifacts}",
    )


def _load(runs: int) -> Iterator[mlflow_adapter.RunBatch]:
    for i in range(runs):
        yield mlflow_adapter.RunBatch(
            params={"i": str(i), "lr": "0.01"},
            metrics=[mlflow_adapter.MetricPoint("loss", 1.0 / (i + 1), step) for step in range(5)],
        )


def peak_memory(c: Session, container: str) -> None:
    sampler = c.sampler
    with client_env(c.s.url, *c.admin):
        mlflow_adapter.log_batches(
            c.s.url, experiment=f"rehearsal-load-{secrets.token_hex(3)}", runs=_load(c.req.runs)
        )
    sampler.stop()
    cfg = c.s.config()
    limit = cfg.memory_mib * 1024 * 1024
    share = sampler.peak / limit
    oom = docker_adapter.container_state(container).oom_killed
    workers = cfg.command[cfg.command.index("--workers") + 1]
    detail = (
        f"{sampler.peak / 2**20:.0f} MiB of {cfg.memory_mib} MiB ({share:.0%}) after "
        f"{c.req.runs} runs, {workers} workers, {sampler.samples} samples"
    )
    if sampler.max_usage:
        detail += f"; cgroup high-water mark {sampler.max_usage / 2**20:.0f} MiB incl. page cache"
    if oom:
        detail += "; the kernel OOM-killed a process"
    c.add(
        "peak memory",
        share <= MEMORY_LIMIT_SHARE and not oom and sampler.samples > 0,
        detail + f" (limit {MEMORY_LIMIT_SHARE:.0%})",
        round(share * 100, 1),
    )
