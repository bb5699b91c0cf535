"""The audit trail of a real `mlflow server` on a local stack: every write (Basic or OIDC) and
every auth failure is one JSON line in the stack's server log, naming who, how, what and the
answer; reads are not; nothing secret is written; `read_entries` parses it and `since` cuts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from mlrig.core.access._log import AuditEntry, read_entries
from mlrig.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _entries(stack: dict[str, Any], since: datetime | None = None) -> list[AuditEntry]:
    return read_entries(stack["log"].read_text().splitlines(), since)


def _await(stack: dict[str, Any], since: datetime, n: int) -> list[AuditEntry]:
    wait_until(lambda: len(_entries(stack, since)) >= n, timeout=10, what="audit lines")
    return _entries(stack, since)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_writes_are_attributed_and_reads_are_not_logged(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    url, admin = oidc_stack["url"], oidc_stack["admin"]
    start = datetime.now(UTC) - timedelta(milliseconds=2)  # ts has ms
    token = oidc_issuer.token(oidc_stack["audience"])
    demo = oidc_stack["experiments"]["demo"]
    run = requests.post(
        f"{url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": demo},
        headers=_bearer(token),
        timeout=30,
    ).json()["run"]["info"]["run_id"]
    requests.post(
        f"{url}/api/2.0/mlflow/runs/log-parameter",
        json={"run_id": run, "key": "alpha", "value": "0.5"},
        headers=_bearer(token),
        timeout=30,
    ).raise_for_status()
    requests.get(  # a read: not in the audit trail
        f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run}, headers=_bearer(token), timeout=30
    ).raise_for_status()
    requests.post(  # a search reads by POST: not a write either
        f"{url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [demo]},
        headers=_bearer(token),
        timeout=30,
    ).raise_for_status()
    requests.post(
        f"{url}/api/2.0/mlflow/registered-models/create",
        json={"name": "audited-model"},
        auth=admin,
        timeout=30,
    ).raise_for_status()
    requests.post(
        f"{url}/api/3.0/mlflow/users/permissions/grant",
        json={
            "username": "repo-demo",
            "resource_type": "registered_model",
            "resource_id": "audited-model",
            "permission": "READ",
        },
        auth=admin,
        timeout=30,
    ).raise_for_status()
    entries = _await(oidc_stack, start, 4)
    assert [(e.user, e.auth, e.method, e.path.rsplit("/", 1)[-1], e.status) for e in entries] == [
        ("repo-demo", "oidc", "POST", "create", 200),
        ("repo-demo", "oidc", "POST", "log-parameter", 200),
        ("admin", "basic", "POST", "create", 200),
        ("admin", "basic", "POST", "grant", 200),
    ]
    assert entries[0].object == {"experiment_id": demo}
    assert entries[1].object == {"run_id": run, "key": "alpha"}
    assert entries[2].object == {"model": "audited-model"}
    assert entries[3].object == {
        "user": "repo-demo",
        "resource_type": "registered_model",
        "resource_id": "audited-model",
        "permission": "READ",
    }
    assert all(e.source == "127.0.0.1" for e in entries)


def test_auth_failures_are_logged_with_a_reason_and_no_secret(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    url = oidc_stack["url"]
    start = datetime.now(UTC) - timedelta(milliseconds=2)  # ts has ms
    expired = oidc_issuer.token(oidc_stack["audience"], iat=1_000_000, exp=1_000_300)
    probe = f"{url}/api/2.0/mlflow/experiments/get-by-name"
    params = {"experiment_name": "demo"}
    wrong = "not-the-password-4711"
    assert (
        requests.get(probe, params=params, headers=_bearer(expired), timeout=30).status_code == 401
    )
    assert requests.get(probe, params=params, auth=("admin", wrong), timeout=30).status_code == 401
    assert requests.get(probe, params=params, timeout=30).status_code == 401
    entries = _await(oidc_stack, start, 3)
    assert [(e.user, e.auth, e.method, e.status) for e in entries] == [
        (None, "oidc", "GET", 401),
        ("admin", "basic", "GET", 401),
        (None, "none", "GET", 401),
    ]
    assert entries[0].reason == "the token has expired"
    assert entries[1].reason == "wrong user name or password"
    assert all(e.failed and e.object == {"experiment_name": "demo"} for e in entries)
    log = oidc_stack["log"].read_text()
    assert expired.split(".")[1] not in log and expired.split(".")[2] not in log
    assert wrong not in log and oidc_stack["admin"][1] not in log


def test_an_upload_served_by_the_asgi_route_is_logged_and_its_body_arrives_whole(
    oidc_stack: dict[str, Any], oidc_issuer: Any
) -> None:
    url = oidc_stack["url"]
    token = oidc_issuer.token(oidc_stack["audience"])
    demo = oidc_stack["experiments"]["demo"]
    run = requests.post(
        f"{url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": demo},
        headers=_bearer(token),
        timeout=30,
    ).json()["run"]["info"]
    start = datetime.now(UTC) - timedelta(milliseconds=2)  # ts has ms
    artifact = f"{demo}/{run['run_id']}/artifacts/model.bin"
    body = bytes(range(256)) * 4096  # 1 MiB, streamed through
    put = requests.put(
        f"{url}/api/2.0/mlflow-artifacts/artifacts/{artifact}",
        data=body,
        headers=_bearer(token),
        timeout=60,
    )
    assert put.status_code == 200, put.text[:200]
    got = requests.get(
        f"{url}/api/2.0/mlflow-artifacts/artifacts/{artifact}", headers=_bearer(token), timeout=60
    )
    assert got.status_code == 200 and got.content == body
    other = oidc_stack["experiments"]["other"]
    refused = requests.put(
        f"{url}/api/2.0/mlflow-artifacts/artifacts/{other}/x/artifacts/y.bin",
        data=b"y",
        headers=_bearer(oidc_issuer.token("mlrig:elsewhere")),
        timeout=30,
    )
    assert refused.status_code == 401

    # `start` has 2 ms of slack for the log's ms timestamps, so the runs/create line just
    # before can fall inside it: this test judges the artifact route's lines only
    def uploads() -> list[AuditEntry]:
        return [e for e in _entries(oidc_stack, start) if "/mlflow-artifacts/" in e.path]

    wait_until(lambda: len(uploads()) >= 2, timeout=10, what="audit lines of the uploads")
    entries = uploads()
    assert [(e.user, e.auth, e.method, e.status) for e in entries] == [
        ("repo-demo", "oidc", "PUT", None),  # admitted; MLflow's ASGI route answers after
        (None, "oidc", "PUT", 401),
    ]
    assert entries[0].object == {"artifact": artifact}


def test_read_entries_skips_other_lines_and_filters_by_since(oidc_stack: dict[str, Any]) -> None:
    lines = oidc_stack["log"].read_text().splitlines()
    everything = read_entries(lines)
    assert everything and len(everything) < len(lines)  # MLflow's own lines are skipped
    assert everything == sorted(everything, key=lambda e: e.ts)
    middle = everything[len(everything) // 2].ts
    later = read_entries(lines, since=middle)
    assert later and all(e.ts >= middle for e in later)
    assert len(later) < len(everything)
    naive = middle.astimezone(UTC).replace(tzinfo=None)
    assert read_entries(lines, since=naive) == later  # a naive time is UTC
    assert read_entries(lines, since=datetime.now(UTC) + timedelta(days=1)) == []
    assert read_entries(['{"event": "mlrig.audit", "ts": "garbage"}', "{not json"]) == []
