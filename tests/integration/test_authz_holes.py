"""The holes MLflow 3.17 leaves open on a NO_PERMISSIONS server, each with the probe that
found it, now closed by mlrig.tracking.guard (see its docstring), on the local stack's
server and on the AWS container:

- artifact paths that climb out of their folder, are absolute or use backslashes, in any
  spelling, on every route that takes one: refused (400), nothing read or written;
- odd credentials: 401, never a 5xx (a non-ASCII header was a 500 on every route; a NUL in
  the user name, on PostgreSQL, a 400 quoting the SQL statement);
- a GraphQL request without a query (a 500): 400;
- a user with no grant generating demo experiments, rewriting the assistant's config or
  listing every user: 403, and nothing changed.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

Target = dict[str, Any]
CLIMB = ("..", "%2e%2e", "%2E%2e", "%252e%252e", "%25252e%25252e", ".%2e")
SPELLINGS = (
    *(f"{c}/{c}" for c in CLIMB),
    "..%2f..",
    "..%5c..",
    "%2e%2e%5c%2e%2e",
    "..\\..",
    "\\authz",
    "/authz-abs",
    "%2fauthz-abs",
    "%252fauthz-abs",
)
# Each route that takes an artifact path, with the path's place as {t}: from experiment/run b
# (the editor's) towards a's files. {a_exp} {a_run} {b_exp} {b_run} {b_model} are filled in.
ROUTES = (
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/{b_exp}/{t}/{a_exp}/{a_run}/artifacts/notes.txt"),
    (
        "GET",
        "/ajax-api/2.0/mlflow-artifacts/artifacts/{b_exp}/{t}/{a_exp}/{a_run}/artifacts/notes.txt",
    ),  # noqa: E501
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/{b_exp}/{b_run}/artifacts/{t}/authz-evil.txt"),
    (
        "DELETE",
        "/api/2.0/mlflow-artifacts/artifacts/{b_exp}/{t}/{a_exp}/{a_run}/artifacts/notes.txt",
    ),  # noqa: E501
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path={b_exp}/{t}/{a_exp}"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/create/{b_exp}/{b_run}/artifacts/{t}/authz-evil.bin"),
    ("GET", "/api/2.0/mlflow-artifacts/presigned/{b_exp}/{t}/{a_exp}/{a_run}/artifacts/notes.txt"),
    ("GET", "/get-artifact?run_id={b_run}&path={t}/{t}/{t}/{a_exp}/{a_run}/artifacts/notes.txt"),
    ("GET", "/api/2.0/mlflow/artifacts/list?run_id={b_run}&path={t}/{t}/{t}/{a_exp}"),
    ("GET", "/model-versions/get-artifact?name={b_model}&version=1&path={t}/{t}/{t}/{t}/{a_exp}"),
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact?run_uuid={b_run}&path={t}/authz-evil.txt"),
)


@pytest.fixture(scope="module", params=["local", "container"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each server in turn: the module runs whole against one, then the other."""
    yield request.getfixturevalue(f"authz_{request.param}")


def raw(target: Target, method: str, path: str, auth: str | bytes | None, body: bytes = b"x"):  # type: ignore[no-untyped-def]
    """One request with the path and Authorization header exactly as given (no client-side
    normalisation of `..` or of the header's bytes); (status, body)."""
    parts = urlsplit(target["url"])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if auth is not None:
            conn.putheader("Authorization", auth)
        if method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if method in ("PUT", "POST") else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def basic(user: str | bytes, password: str | bytes) -> str:
    raw_pair = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw_pair += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw_pair).decode()


def _ids(target: Target) -> dict[str, str]:
    a, b = target["objects"]["a"], target["objects"]["b"]
    return {"a_exp": a["exp"], "a_run": a["run"], "b_exp": b["exp"], "b_run": b["run"],
            "b_model": b["model"]}  # fmt: skip


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(
    ("method", "route"), ROUTES, ids=[f"{m} {r.split('?')[0]}" for m, r in ROUTES]
)  # noqa: E501
@pytest.mark.parametrize("principal", ["editor", "admin"])
def test_artifact_paths_cannot_leave_their_folder(
    target: Target, method: str, route: str, spelling: str, principal: str
) -> None:
    path = route.format(t=spelling, **_ids(target))
    status, body = raw(target, method, path, basic(*target["creds"][principal]))
    assert status == 400, f"{status} {body[:200]!r}"


def test_nothing_was_written_outside_its_folder(target: Target) -> None:
    """After the traversal probes (this module's order): the store holds no file they named,
    as the admin lists it and, on the local stack, on disk."""
    admin = (target["creds"]["admin"][0], target["creds"]["admin"][1])
    for o in target["objects"].values():
        for where in (o["exp"], f"{o['exp']}/{o['run']}/artifacts"):
            resp = requests.get(
                f"{target['url']}/api/2.0/mlflow-artifacts/artifacts",
                params={"path": where},
                auth=admin,
                timeout=60,
            )
            assert resp.status_code == 200 and "authz-evil" not in resp.text, resp.text[:300]
    if target["kind"] == "local":
        server_dir: Path = target["artifacts"]  # the store, the databases and the log
        named = [p for p in server_dir.rglob("*") if "authz-evil" in p.name or "\\" in p.name]
        assert named == []


USER, PASSWORD = "reader", "reader-Pa55word-authz"
ODD_CREDENTIALS = {
    "wrong password": basic(USER, "not-the-password"),
    "unknown user": basic("nobody-authz", "whatever"),
    "empty basic": "Basic ",
    "bare scheme": "Basic",
    "not base64": "Basic !!!!",
    "no colon": "Basic " + base64.b64encode(b"reader").decode(),
    "utf-8 user": basic("rëader", PASSWORD),
    "latin-1 user": basic("rëader".encode("latin-1"), PASSWORD),
    "raw non-ascii header": "Basic ÿÿÿÿ".encode("latin-1").decode("latin-1"),
    "nul in user": basic(b"reader\x00", PASSWORD),
    "control character in user": basic(b"reader\x01", PASSWORD),
    "bearer garbage": "Bearer garbage",
    "bearer three parts": "Bearer a.b.c",
    "bearer empty": "Bearer ",
    "digest": 'Digest username="reader"',
}
PROBES = (  # one per route family, Flask and FastAPI served
    ("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=authz-exp-a"),
    ("GET", "/ajax-api/2.0/mlflow/registered-models/get?name=authz-model-a"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=1"),
    ("GET", "/get-artifact?run_id=0&path=x"),
    ("POST", "/graphql"),
    ("GET", "/api/2.0/mlflow/users/current"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
)


@pytest.mark.parametrize("credentials", list(ODD_CREDENTIALS), ids=list(ODD_CREDENTIALS))
@pytest.mark.parametrize(
    ("method", "path"), PROBES, ids=[f"{m} {p.split('?')[0]}" for m, p in PROBES]
)  # noqa: E501
def test_odd_credentials_get_401(target: Target, method: str, path: str, credentials: str) -> None:
    header = ODD_CREDENTIALS[credentials].encode("latin-1")
    status, body = raw(target, method, path, header)
    assert status == 401, f"{status} {body[:200]!r}"


@pytest.mark.parametrize(
    ("method", "path"), PROBES, ids=[f"{m} {p.split('?')[0]}" for m, p in PROBES]
)  # noqa: E501
def test_a_huge_header_is_refused_without_a_5xx(target: Target, method: str, path: str) -> None:
    status, _ = raw(target, method, path, basic(USER, "x" * 60_000))
    assert status in (400, 401, 431)


@pytest.mark.parametrize(
    ("method", "query", "body"),
    [
        ("POST", "", b"{}"),
        ("POST", "", b'{"query": 5}'),
        ("POST", "", b'{"query": " "}'),
        ("GET", "", b""),
        ("GET", "?query=", b""),
    ],  # fmt: skip
    ids=["post-no-query", "post-number", "post-blank", "get-no-query", "get-empty"],
)
def test_graphql_without_a_query_is_a_400(
    target: Target, method: str, query: str, body: bytes
) -> None:
    resp = requests.request(
        method,
        f"{target['url']}/graphql{query}",
        data=body or None,
        headers={"Content-Type": "application/json"},
        auth=tuple(target["creds"]["reader"]),
        timeout=60,
    )
    assert resp.status_code == 400, resp.text[:200]


# Writes MLflow let a user with no grant make; `watch` (as admin) must not change.
OPEN_WRITES = (
    (
        "POST",
        "/ajax-api/3.0/mlflow/demo/generate",
        {},
        "/api/2.0/mlflow/experiments/search?max_results=1000",
    ),  # noqa: E501
    (
        "PUT",
        "/ajax-api/3.0/mlflow/assistant/config",
        {"projects": {}},
        "/ajax-api/3.0/mlflow/assistant/config",
    ),  # noqa: E501
    ("POST", "/ajax-api/3.0/jobs/", {"job_name": "x", "params": {}}, "/ajax-api/3.0/jobs/search"),
    (
        "POST",
        "/api/3.0/mlflow/scorers/register",
        {"experiment_id": "1", "name": "s", "serialized_scorer": "{}"},
        "/api/3.0/mlflow/scorers/list?experiment_id=1",
    ),  # noqa: E501
    ("GET", "/api/2.0/mlflow/users/list", None, None),
    ("GET", "/api/3.0/mlflow/gateway/supported-models", None, None),
)


@pytest.mark.parametrize(
    ("method", "path", "body", "watch"), OPEN_WRITES, ids=[p for _, p, _, _ in OPEN_WRITES]
)  # noqa: E501
@pytest.mark.parametrize("principal", ["noperm", "editor"])
def test_what_mlflow_left_open_is_the_admins(
    target: Target, method: str, path: str, body: Any, watch: str | None, principal: str
) -> None:
    admin = requests.Session()
    admin.auth = tuple(target["creds"]["admin"])
    before = admin.get(target["url"] + watch, timeout=60).text if watch else None
    resp = requests.request(
        method, target["url"] + path, json=body, auth=tuple(target["creds"][principal]),
        timeout=60,
    )  # fmt: skip
    assert resp.status_code == 403, resp.text[:200]
    if watch:
        assert admin.get(target["url"] + watch, timeout=60).text == before
