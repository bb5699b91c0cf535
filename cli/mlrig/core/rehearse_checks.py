"""The rehearsal's checks against the running tracking-server container, in order.

Each appends one row to the report; a check whose failure makes the rest meaningless stops it.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlrig.core.rehearse import _Checks

ARTIFACT_NAME = "rehearsal.txt"
READER = "rehearsal-reader"


def run_all(c: _Checks) -> None:
    c.guard("database role", database_role, c)
    c.break_dependency()
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


def database_role(c: _Checks) -> None:
    """The server's role logs in and owns its database, and nothing more (as on RDS)."""
    from mlrig.adapters import postgres
    from mlrig.core.rehearse import db_names

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


def _api(c: _Checks, path: str) -> str:
    return f"{c.s.url}/api/{path}"


def unauthenticated(c: _Checks) -> None:
    import requests

    resp = requests.post(
        _api(c, "2.0/mlflow/experiments/search"), json={"max_results": 1}, timeout=30
    )
    c.add("unauthenticated 401", resp.status_code == 401, f"no credentials -> {resp.status_code}")


def admin(c: _Checks) -> None:
    import requests

    resp = requests.post(
        _api(c, "2.0/mlflow/experiments/search"), json={"max_results": 1}, auth=c.admin, timeout=60
    )
    c.add("admin 200", resp.status_code == 200, f"admin credentials -> {resp.status_code}")


def reader_cannot_write(c: _Checks) -> None:
    """A user created through the auth API, granted READ on one experiment, cannot write."""
    import requests

    password = secrets.token_urlsafe(16)
    steps: list[str] = []

    def call(method: str, path: str, auth: tuple[str, str], **kw: Any) -> requests.Response:
        resp = requests.request(method, _api(c, path), auth=auth, timeout=60, **kw)
        steps.append(f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]} {resp.status_code}")
        return resp

    created = call(
        "POST", "2.0/mlflow/users/create", c.admin, json={"username": READER, "password": password}
    )
    exp = call(
        "POST",
        "2.0/mlflow/experiments/create",
        c.admin,
        json={"name": f"rehearsal-permissions-{secrets.token_hex(3)}"},
    )
    exp_id = exp.json().get("experiment_id", "") if exp.ok else ""
    grant = call(
        "POST",
        "3.0/mlflow/users/permissions/grant",
        c.admin,
        json={
            "username": READER,
            "resource_type": "experiment",
            "resource_id": exp_id,
            "permission": "READ",
        },
    )
    reader = (READER, password)
    read = call("GET", "2.0/mlflow/experiments/get", reader, params={"experiment_id": exp_id})
    write = call("POST", "2.0/mlflow/runs/create", reader, json={"experiment_id": exp_id})
    ok = created.ok and exp.ok and grant.ok and read.status_code == 200 and write.status_code == 403
    c.add("reader cannot write", ok, "; ".join(steps))


def logged_run(c: _Checks) -> str:
    """A run with params, metrics and an artifact through MLflow's client; the artifact must
    land in the bucket under the stack's artifact prefix."""
    from mlflow import MlflowClient

    from mlrig.core.rehearse import artifacts_prefix, client_env

    with client_env(c.s.url, *c.admin), tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(tracking_uri=c.s.url)
        exp_id = client.create_experiment(f"rehearsal-{secrets.token_hex(3)}")
        run = client.create_run(exp_id)
        run_id = str(run.info.run_id)
        client.log_param(run_id, "alpha", "0.5")
        client.log_metric(run_id, "rmse", 0.25)
        path = Path(tmp) / ARTIFACT_NAME
        path.write_text("logged by mlrig stack rehearse\n")
        client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)
    prefix = artifacts_prefix() + "/"
    listed = c.s.s3().list_objects_v2(Bucket=c.s.bucket, Prefix=prefix)
    keys = [o["Key"] for o in listed.get("Contents", [])]
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


def not_root(c: _Checks, container: Any) -> None:
    uid = container.exec_run("id -u").output.decode().strip()
    want = c.s.config().user.split(":")[0]
    c.add("not root", uid == want and uid != "0", f"uid {uid} (contract user {want})")


def survives(c: _Checks, run_id: str) -> None:
    """The run, its params, metrics and artifact are read back through a new container."""
    from mlflow import MlflowClient

    from mlrig.core.rehearse import client_env

    with client_env(c.s.url, *c.admin):
        client = MlflowClient(tracking_uri=c.s.url)
        try:
            run = client.get_run(run_id)
            artifacts = [a.path for a in client.list_artifacts(run_id)]
        except Exception as exc:  # noqa: BLE001 - MlflowException and HTTP errors alike
            c.add("run survives restart", False, f"run {run_id}: {str(exc).splitlines()[0]}")
            return
    ok = (
        run.data.params.get("alpha") == "0.5"
        and run.data.metrics.get("rmse") == 0.25
        and ARTIFACT_NAME in artifacts
    )
    c.add(
        "run survives restart",
        ok,
        f"run {run_id}: params {run.data.params}, metrics {run.data.metrics}, "
        f"artifacts {artifacts}",
    )


def peak_memory(c: _Checks, container: Any) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from mlrig.core.rehearse import MEMORY_LIMIT_SHARE, client_env

    sampler = c.sampler
    with client_env(c.s.url, *c.admin):
        client = MlflowClient(tracking_uri=c.s.url)
        exp_id = client.create_experiment(f"rehearsal-load-{secrets.token_hex(3)}")
        for i in range(c.req.runs):
            run_id = client.create_run(exp_id).info.run_id
            client.log_batch(
                run_id,
                params=[Param("i", str(i)), Param("lr", "0.01")],
                metrics=[Metric("loss", 1.0 / (i + 1), 0, step) for step in range(5)],
            )
            client.set_terminated(run_id)
    sampler.stop()
    cfg = c.s.config()
    limit = cfg.memory_mib * 1024 * 1024
    share = sampler.peak / limit
    container.reload()
    oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
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
