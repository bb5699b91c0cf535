"""Authorization, route by route: every probe of the catalogue, sent by every principal to a
real tracking server with default_permission NO_PERMISSIONS, answers exactly what the grants
allow (allowed -> the probe's answer, denied -> 401 without valid credentials, 403 with),
never a 5xx, and a denied write leaves the object as it was.

The full catalogue runs on the local stack's server; on the AWS container (the image and task
contract with PostgreSQL and S3, see conftest.authz_container) the probes marked `container`
run (one to three per route family), with the same expectations. Each /api/ probe runs on its
/ajax-api/ mirror too. test_catalogue_covers_mlflow_routes checks the catalogue against
MLflow's own route table; every route the guard keeps for the admin is swept on both servers.

Principals: admin; noperm (a user with no grant); reader (READ on experiment and model "a");
editor (EDIT on "b"); anonymous; a wrong password. What a probe needs:
  public  anyone, even without credentials
  user    any signed-in user (MLflow filters what it answers: `filtered` probes check that)
  read    READ on the probe's object    edit  EDIT on it    manage  MANAGE (admin here)
  admin   the stack's admin only
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import requests

from tests.helpers import AUTHZ_GRANTS, authz_fresh, mlflow_routes, rule_pattern

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PRINCIPALS = ("anonymous", "wrong-password", "noperm", "reader", "editor", "admin")  # admin last
GRANTED = {
    user: {k: level.lower()} for user, kind, k, level in AUTHZ_GRANTS if kind == "experiment"
}
RANK = {"read": 1, "edit": 2, "manage": 3}
_counter = itertools.count()


@dataclass(frozen=True)
class Probe:
    family: str
    method: str
    path: str  # str.format'ed with the object's ids: exp run model version lm exp_name n
    need: str
    json: dict[str, Any] | None = None
    data: bytes | None = None
    ok: tuple[int, ...] = (200,)  # what an allowed principal gets
    fresh: str | None = None  # tests.helpers.authz_fresh: a new object (destructive probes)
    watch: str | None = None  # admin GET whose answer a denied request must not change
    filtered: bool = False  # a listing: must not show objects the principal cannot read
    on: tuple[str, ...] = ("a", "b")
    mirror: bool = True  # also probe the /ajax-api/ mirror
    container: bool = False  # the family's probe on the AWS container
    data_for: bool = False  # answers everyone, with data only for those who may read k


RUN = "/api/2.0/mlflow/runs/get?run_id={run}"
EXP = "/api/2.0/mlflow/experiments/get?experiment_id={exp}"
MODEL = "/api/2.0/mlflow/registered-models/get?name={model}"
VERSION = "/api/2.0/mlflow/model-versions/get?name={model}&version={version}"
LM = "/api/2.0/mlflow/logged-models/{lm}"
ARTS = "/api/2.0/mlflow-artifacts/artifacts"
LISTING = ARTS + "?path={exp}/{run}/artifacts"
G = "/graphql"

# fmt: off
CATALOGUE: list[Probe] = [
    # experiments
    Probe("experiments", "GET", EXP, "read", container=True),
    Probe("experiments", "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name={exp_name}", "read"),  # noqa: E501
    Probe("experiments", "GET", "/api/2.0/mlflow/experiments/search?max_results=1000", "user", filtered=True),  # noqa: E501
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/search", "user", json={"max_results": 1000}, filtered=True),  # noqa: E501
    Probe("experiments", "POST", "/ajax-api/2.0/mlflow/experiments/search-datasets", "read", json={"experiment_ids": ["{exp}"]}, mirror=False),  # noqa: E501
    # creating and renaming are for editors (the mlrig-editor role), `create: true`, machine
    # identities and the admin (tracking_guard): of this suite's principals, the admin only
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/create", "admin", json={"name": "authz-new-{n}"}, on=("a",)),  # noqa: E501
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/update", "admin", json={"experiment_id": "{exp}", "new_name": "{exp_name}"}, watch=EXP),  # noqa: E501
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/set-experiment-tag", "edit", json={"experiment_id": "{exp}", "key": "k", "value": "v"}, watch=EXP),  # noqa: E501
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/delete-experiment-tag", "edit", json={"experiment_id": "{exp}", "key": "k{n}"}, fresh="exp_tag", watch=EXP),  # noqa: E501
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/delete", "manage", json={"experiment_id": "{exp}"}, fresh="experiment", watch=EXP),  # noqa: E501
    Probe("experiments", "POST", "/api/2.0/mlflow/experiments/restore", "manage", json={"experiment_id": "{exp}"}, fresh="deleted_experiment", watch=EXP),  # noqa: E501
    # runs, metrics, params, tags
    Probe("runs", "GET", RUN, "read", container=True),
    Probe("runs", "POST", "/api/2.0/mlflow/runs/search", "user", json={"experiment_ids": ["{exp}"]}, filtered=True),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/create", "edit", json={"experiment_id": "{exp}"}, watch="/api/2.0/mlflow/runs/search?experiment_ids={exp}"),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/update", "edit", json={"run_id": "{run}", "status": "FINISHED", "end_time": 1}, watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/log-metric", "edit", json={"run_id": "{run}", "key": "m", "value": 2.0, "timestamp": 2, "step": 1}, watch=RUN, container=True),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/log-parameter", "edit", json={"run_id": "{run}", "key": "p{n}", "value": "v"}, watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/set-tag", "edit", json={"run_id": "{run}", "key": "t2", "value": "v"}, watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/delete-tag", "edit", json={"run_id": "{run}", "key": "k{n}"}, fresh="run_tag", watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/log-batch", "edit", json={"run_id": "{run}", "metrics": [{"key": "m", "value": 3.0, "timestamp": 3, "step": 2}]}, watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/log-inputs", "edit", json={"run_id": "{run}", "datasets": []}, watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/log-model", "edit", json={"run_id": "{run}", "model_json": "{{}}"}, ok=(200, 400), watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/outputs", "edit", json={"run_id": "{run}", "models": [{"model_id": "{lm}", "step": 0}]}, ok=(200, 400), watch=RUN),  # the same output again: 400  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/delete", "manage", json={"run_id": "{run}"}, fresh="run", watch=RUN),  # noqa: E501
    Probe("runs", "POST", "/api/2.0/mlflow/runs/restore", "manage", json={"run_id": "{run}"}, fresh="deleted_run", watch=RUN),  # noqa: E501
    Probe("metrics", "GET", "/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key=m", "read", container=True),  # noqa: E501
    Probe("metrics", "GET", "/api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={run}&metric_key=m", "read"),  # noqa: E501
    Probe("metrics", "GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id={run}&metric_key=m", "read", mirror=False),  # noqa: E501
    # registered models, versions, aliases
    Probe("registry", "GET", MODEL, "read", container=True),
    Probe("registry", "GET", "/api/2.0/mlflow/registered-models/search?max_results=1000", "user", filtered=True),  # noqa: E501
    Probe("registry", "GET", "/api/2.0/mlflow/registered-models/get-latest-versions?name={model}", "read"),  # noqa: E501
    Probe("registry", "POST", "/api/2.0/mlflow/registered-models/get-latest-versions", "read", json={"name": "{model}"}),  # noqa: E501
    Probe("registry", "POST", "/api/2.0/mlflow/registered-models/create", "admin", json={"name": "authz-new-model-{n}"}, on=("a",)),  # noqa: E501
    Probe("registry", "PATCH", "/api/2.0/mlflow/registered-models/update", "edit", json={"name": "{model}", "description": "d"}, watch=MODEL),  # noqa: E501
    Probe("registry", "POST", "/api/2.0/mlflow/registered-models/set-tag", "edit", json={"name": "{model}", "key": "k", "value": "v"}, watch=MODEL),  # noqa: E501
    Probe("registry", "DELETE", "/api/2.0/mlflow/registered-models/delete-tag", "edit", json={"name": "{model}", "key": "k{n}"}, fresh="model_tag", watch=MODEL),  # noqa: E501
    Probe("registry", "POST", "/api/2.0/mlflow/registered-models/rename", "admin", json={"name": "{model}", "new_name": "{model}-renamed"}, fresh="model", watch=MODEL),  # noqa: E501
    Probe("registry", "DELETE", "/api/2.0/mlflow/registered-models/delete", "manage", json={"name": "{model}"}, fresh="model", watch=MODEL),  # noqa: E501
    Probe("versions", "GET", VERSION, "read"),
    Probe("versions", "GET", "/api/2.0/mlflow/model-versions/get-download-uri?name={model}&version={version}", "read"),  # noqa: E501
    Probe("versions", "GET", "/api/2.0/mlflow/model-versions/search?max_results=1000", "user", filtered=True),  # noqa: E501
    Probe("versions", "POST", "/api/2.0/mlflow/model-versions/create", "edit", json={"name": "{model}", "source": "mlflow-artifacts:/{exp}/{run}/artifacts/model", "run_id": "{run}"}, watch="/api/2.0/mlflow/registered-models/get-latest-versions?name={model}", container=True),  # noqa: E501
    Probe("versions", "PATCH", "/api/2.0/mlflow/model-versions/update", "edit", json={"name": "{model}", "version": "{version}", "description": "d"}, watch=VERSION),  # noqa: E501
    Probe("versions", "POST", "/api/2.0/mlflow/model-versions/set-tag", "edit", json={"name": "{model}", "version": "{version}", "key": "k", "value": "v"}, watch=VERSION),  # noqa: E501
    # MLflow asks MANAGE (not EDIT) to delete a version tag, an alias or a logged-model tag
    Probe("versions", "DELETE", "/api/2.0/mlflow/model-versions/delete-tag", "manage", json={"name": "{model}", "version": "{version}", "key": "k{n}"}, fresh="version_tag", watch=VERSION),  # noqa: E501
    Probe("versions", "POST", "/api/2.0/mlflow/model-versions/transition-stage", "edit", json={"name": "{model}", "version": "{version}", "stage": "None", "archive_existing_versions": False}, watch=VERSION),  # noqa: E501
    Probe("versions", "DELETE", "/api/2.0/mlflow/model-versions/delete", "manage", json={"name": "{model}", "version": "{version}"}, fresh="version", watch=VERSION),  # noqa: E501
    Probe("aliases", "GET", "/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion", "read", container=True),  # noqa: E501
    Probe("aliases", "POST", "/api/2.0/mlflow/registered-models/alias", "edit", json={"name": "{model}", "alias": "champion", "version": "{version}"}, watch=MODEL),  # noqa: E501
    Probe("aliases", "DELETE", "/api/2.0/mlflow/registered-models/alias", "manage", json={"name": "{model}", "alias": "gone{n}"}, fresh="alias", watch=MODEL),  # noqa: E501
    # logged models
    Probe("logged-models", "GET", LM, "read", container=True),
    Probe("logged-models", "POST", "/api/2.0/mlflow/logged-models/search", "user", json={"experiment_ids": ["{exp}"]}, filtered=True),  # noqa: E501
    Probe("logged-models", "POST", "/api/2.0/mlflow/logged-models", "edit", json={"experiment_id": "{exp}"}, watch="/api/2.0/mlflow/runs/search?experiment_ids={exp}"),  # noqa: E501
    Probe("logged-models", "PATCH", LM, "edit", json={"model_id": "{lm}", "status": "LOGGED_MODEL_READY"}, watch=LM),  # noqa: E501
    Probe("logged-models", "PATCH", LM + "/tags", "edit", json={"model_id": "{lm}", "tags": [{"key": "k", "value": "v"}]}, watch=LM),  # noqa: E501
    Probe("logged-models", "DELETE", LM + "/tags/k{n}", "manage", fresh="lm_tag", watch=LM),
    Probe("logged-models", "POST", LM + "/params", "edit", json={"model_id": "{lm}", "params": [{"key": "p{n}", "value": "v"}]}, watch=LM),  # noqa: E501
    Probe("logged-models", "GET", LM + "/artifacts/directories", "read", ok=(200, 404)),
    Probe("logged-models", "GET", "/ajax-api/2.0/mlflow/logged-models/{lm}/artifacts/files?artifact_file_path=MLmodel", "read", ok=(200, 404), mirror=False),  # noqa: E501
    Probe("logged-models", "DELETE", LM, "manage", fresh="logged_model", watch=LM),
    # artifacts: the proxy, the run-artifact routes, the registry's artifact route, presigned
    Probe("artifacts", "GET", ARTS + "/{exp}/{run}/artifacts/notes.txt", "read", container=True),  # noqa: E501
    Probe("artifacts", "GET", LISTING, "read"),
    Probe("artifacts", "PUT", ARTS + "/{exp}/{run}/artifacts/upload-{n}.txt", "edit", data=b"x", watch=LISTING, container=True),  # noqa: E501
    Probe("artifacts", "DELETE", ARTS + "/{exp}/{run}/artifacts/doomed-{n}.txt", "manage", fresh="artifact", watch=LISTING),  # noqa: E501
    # multipart and presigned: refused by the local filesystem store (501) after the check
    Probe("artifacts", "POST", "/api/2.0/mlflow-artifacts/mpu/create/{exp}/{run}/artifacts/big-{n}.bin", "edit", json={"path": "big-{n}.bin", "num_parts": 1}, ok=(200, 501), watch=LISTING, container=True),  # noqa: E501
    Probe("artifacts", "POST", "/api/2.0/mlflow-artifacts/mpu/complete/{exp}/{run}/artifacts/big-{n}.bin", "edit", json={"path": "big-{n}.bin", "upload_id": "none", "parts": []}, ok=(400, 404, 501), watch=LISTING),  # noqa: E501
    Probe("artifacts", "POST", "/api/2.0/mlflow-artifacts/mpu/abort/{exp}/{run}/artifacts/big-{n}.bin", "edit", json={"path": "big-{n}.bin", "upload_id": "none"}, ok=(200, 400, 404, 501), watch=LISTING),  # noqa: E501
    Probe("artifacts", "GET", "/api/2.0/mlflow-artifacts/presigned/{exp}/{run}/artifacts/notes.txt", "read", ok=(200, 501)),  # noqa: E501
    Probe("artifacts", "GET", "/api/2.0/mlflow/artifacts/list?run_id={run}", "read"),
    # proxied storage has no presigned URLs: 400 once the grant check passed
    Probe("artifacts", "POST", "/api/2.0/mlflow/artifacts/presigned-upload-url", "edit", json={"run_id": "{run}", "path": "p.txt"}, ok=(400,), watch=LISTING),  # noqa: E501
    Probe("artifacts", "POST", "/api/2.0/mlflow/artifacts/presigned-download-url", "read", json={"run_id": "{run}", "path": "notes.txt"}, ok=(400,)),  # noqa: E501
    Probe("artifacts", "GET", "/get-artifact?run_id={run}&path=notes.txt", "read", container=True),  # noqa: E501
    Probe("artifacts", "GET", "/get-artifact?run_uuid={run}&path=notes.txt", "read"),
    Probe("artifacts", "POST", "/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run}&path=ui-{n}.txt", "edit", data=b"x", watch=LISTING, mirror=False),  # noqa: E501
    Probe("artifacts", "GET", "/model-versions/get-artifact?name={model}&version={version}&path=MLmodel", "read", container=True),  # noqa: E501
    # /graphql: MLflow answers per field, null where the caller may not read
    # MLflow answered a GET with a 500 (it reads a JSON body): the guard answers 400
    Probe("graphql", "GET", G + '?query={{ mlflowGetExperiment(input: {{experimentId: "{exp}"}}) {{ experiment {{ name }} }} }}', "user", ok=(400,)),  # noqa: E501
    Probe("graphql", "POST", G, "user", json={"query": '{{ mlflowGetRun(input: {{runId: "{run}"}}) {{ run {{ info {{ runName }} data {{ params {{ key value }} }} }} }} }}'}, data_for=True, container=True),  # noqa: E501
    Probe("graphql", "POST", G, "user", json={"query": '{{ mlflowGetExperiment(input: {{experimentId: "{exp}"}}) {{ experiment {{ name }} }} }}'}, data_for=True),  # noqa: E501
    Probe("graphql", "POST", G, "user", json={"query": '{{ mlflowListArtifacts(input: {{runId: "{run}"}}) {{ files {{ path }} }} }}'}, data_for=True),  # noqa: E501
    Probe("graphql", "POST", G, "user", json={"query": 'mutation {{ mlflowSearchRuns(input: {{experimentIds: ["{exp}"]}}) {{ runs {{ info {{ runName }} }} }} }}'}, data_for=True),  # noqa: E501
    Probe("graphql", "POST", G, "user", json={"query": '{{ mlflowSearchModelVersions(input: {{filter: "name=\'{model}\'"}}) {{ modelVersions {{ name source }} }} }}'}, data_for=True),  # noqa: E501
    # users and permissions: the admin's; a user reads only itself
    Probe("users", "GET", "/api/2.0/mlflow/users/current", "user", on=("a",), container=True),
    Probe("users", "GET", "/api/3.0/mlflow/users/current/permissions", "user", on=("a",)),
    Probe("users", "GET", "/api/2.0/mlflow/users/list", "admin", on=("a",), container=True),
    Probe("users", "GET", "/api/2.0/mlflow/users/get?username=admin", "admin", on=("a",)),
    Probe("users", "POST", "/api/2.0/mlflow/users/create", "admin", json={"username": "made-{n}", "password": "made-Pa55word-{n}"}, on=("a",), watch="/api/2.0/mlflow/users/list"),  # noqa: E501
    Probe("users", "PATCH", "/api/2.0/mlflow/users/update-admin", "admin", json={"username": "noperm", "is_admin": False}, on=("a",), watch="/api/2.0/mlflow/users/list"),  # noqa: E501
    Probe("users", "PATCH", "/api/2.0/mlflow/users/update-password", "admin", json={"username": "made-{n}", "password": "changed-Pa55word-{n}"}, fresh="user", on=("a",)),  # noqa: E501
    Probe("users", "DELETE", "/api/2.0/mlflow/users/delete", "admin", json={"username": "made-{n}"}, fresh="user", on=("a",), watch="/api/2.0/mlflow/users/list"),  # noqa: E501
    Probe("users", "POST", "/api/3.0/mlflow/users/permissions/grant", "admin", json={"username": "made-{n}", "resource_type": "experiment", "resource_id": "{exp}", "permission": "READ"}, fresh="user", watch="/api/3.0/mlflow/users/permissions/list?username=made-{n}"),  # noqa: E501
    Probe("users", "POST", "/api/3.0/mlflow/users/permissions/revoke", "admin", json={"username": "made-{n}", "resource_type": "experiment", "resource_id": "{exp}"}, fresh="granted_user", watch="/api/3.0/mlflow/users/permissions/list?username=made-{n}"),  # noqa: E501
    Probe("users", "GET", "/api/3.0/mlflow/users/permissions/list?username=reader", "admin", on=("a",)),  # noqa: E501
    Probe("users", "GET", "/api/3.0/mlflow/users/permissions/get?username=reader&resource_type=experiment&resource_id={exp}", "admin"),  # noqa: E501
    Probe("users", "GET", "/api/3.0/mlflow/users/roles/list?username=reader", "admin", on=("a",)),  # noqa: E501
    Probe("roles", "GET", "/api/3.0/mlflow/roles/list?workspace=default", "admin", on=("a",), container=True),  # noqa: E501
    Probe("roles", "POST", "/api/3.0/mlflow/roles/create", "admin", json={"name": "authz-role-{n}", "workspace": "default"}, on=("a",), ok=(200, 400)),  # noqa: E501
    # the server itself and the UI
    Probe("server", "GET", "/health", "public", on=("a",), mirror=False, container=True),
    Probe("server", "GET", "/api/3.0/mlflow/server-info", "public", on=("a",)),
    Probe("server", "GET", "/version", "user", on=("a",), mirror=False),
    Probe("server", "GET", "/", "user", on=("a",), mirror=False, container=True),
    Probe("server", "GET", "/static-files/index.html", "public", on=("a",), mirror=False),
    Probe("server", "GET", "/signup", "admin", on=("a",), mirror=False),
    Probe("server", "GET", "/build/none.js", "admin", on=("a",), ok=(404,), mirror=False),
    Probe("server", "GET", "/ajax-api/3.0/mlflow/ui-telemetry", "user", on=("a",), mirror=False),  # noqa: E501
    Probe("server", "POST", "/ajax-api/3.0/mlflow/ui-telemetry", "user", json={"events": []}, on=("a",), ok=(200, 400), mirror=False),  # noqa: E501
]
# fmt: on

Target = dict[str, Any]


def _session(target: Target, principal: str) -> requests.Session:
    """One kept-alive session per principal and server."""
    sessions = target.setdefault("sessions", {})
    if principal not in sessions:
        sessions[principal] = requests.Session()
        sessions[principal].auth = _auth(target, principal)
    return sessions[principal]  # type: ignore[no-any-return]


def _admin(target: Target) -> requests.Session:
    return _session(target, "admin")


def expected(probe: Probe, principal: str, k: str) -> tuple[int, ...]:
    """The statuses this principal must get from this probe on object k."""
    if probe.need == "public":
        return probe.ok
    if principal in ("anonymous", "wrong-password"):
        return (401,)
    if principal == "admin" or probe.need == "user":
        return probe.ok
    held = GRANTED.get(principal, {}).get(k)
    allowed = held is not None and probe.need in RANK and RANK[probe.need] <= RANK[held]
    return probe.ok if allowed else (403,)


def _readable(principal: str) -> set[str]:
    return {"a", "b"} if principal == "admin" else set(GRANTED.get(principal, {}))


def _auth(target: Target, principal: str) -> tuple[str, str] | None:
    if principal == "anonymous":
        return None
    if principal == "wrong-password":
        return ("reader", "not-the-password")
    return tuple(target["creds"][principal])  # type: ignore[return-value]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {key: _fill(v, ids) for key, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _snapshot(admin: requests.Session, target: Target, path: str) -> str:
    resp = admin.get(target["url"] + path, timeout=60)
    return f"{resp.status_code} {resp.text}"


def send(target: Target, probe: Probe, principal: str, k: str, ajax: bool) -> None:
    """Send the probe as the principal; assert its status, the filtering and no trace."""
    admin = _admin(target)
    want = expected(probe, principal, k)
    # A fresh object serves every principal denied it; the first one allowed uses it up.
    unused = target.setdefault("unused", {})
    key = (id(probe), k, ajax)
    if key not in unused:
        n = next(_counter)
        ids = {**target["objects"][k], "lm": target["objects"][k]["logged_model"], "n": str(n)}
        if probe.fresh:
            ids.update(authz_fresh(probe.fresh, admin, target, k, n))
        unused[key] = ids
    ids = unused[key] if probe.fresh else unused.pop(key)
    path = _fill(probe.path, ids)
    if ajax:
        path = path.replace("/api/", "/ajax-api/", 1)
    denied = set(want) <= {401, 403}
    watch = _fill(probe.watch, ids) if probe.watch and denied else None
    before = _snapshot(admin, target, watch) if watch else None
    resp = _session(target, principal).request(
        probe.method,
        target["url"] + path,
        json=_fill(probe.json, ids),
        data=probe.data,
        timeout=60,
    )
    if resp.status_code < 300:
        unused.pop(key, None)
    assert resp.status_code < 500 or resp.status_code in want, resp.text[:300]
    assert resp.status_code in want, f"{principal} got {resp.status_code}: {resp.text[:300]}"
    if watch and resp.status_code in (401, 403):
        assert _snapshot(admin, target, watch) == before, "a denied request changed the object"
    if probe.filtered and resp.status_code == 200:
        hidden = {"a", "b"} - _readable(principal)
        for other in hidden:
            for marker in (target["objects"][other]["exp_name"], target["objects"][other]["model"]):
                assert marker not in resp.text, f"{principal} sees {marker}"
    if probe.data_for and resp.status_code == 200:
        data = resp.json().get("data")
        assert _has_data(data) == (k in _readable(principal)), f"{principal} on {k}: {data}"


def _has_data(value: Any) -> bool:
    """Whether a GraphQL answer carries anything but nulls and empty lists."""
    if isinstance(value, dict):
        return any(_has_data(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_data(v) for v in value)
    return value is not None


def _principals(probe: Probe, k: str, ajax: bool, first_of_family: bool) -> list[str]:
    """Who sends the probe. A wrong password costs the server a hash (and trips its
    throttle): once per family. On the /ajax-api/ mirror: no credentials, no grant, and the
    principal granted on k (the admin too where only the admin is allowed)."""
    if not ajax:
        return [p for p in PRINCIPALS if p != "wrong-password" or first_of_family]
    granted = [p for p, sides in GRANTED.items() if k in sides]
    return ["anonymous", "noperm", *granted, *(["admin"] if probe.need == "admin" else [])]


def _cases(container: bool) -> list[Any]:
    cases, families = [], set()
    for probe in CATALOGUE:
        if container and not probe.container:
            continue
        first = probe.family not in families
        families.add(probe.family)
        mirrors = (False, True) if probe.mirror and probe.path.startswith("/api/") else (False,)
        for ajax, k in itertools.product(mirrors, probe.on):
            route = probe.path.split("?")[0]
            route = route.replace("/api/", "/ajax-api/", 1) if ajax else route
            for principal in _principals(probe, k, ajax, first and k == probe.on[0]):
                name = f"{probe.method} {route} [{k}] {principal}"
                cases.append(pytest.param(probe, principal, k, ajax, id=name))
    return cases


@pytest.mark.parametrize(("probe", "principal", "k", "ajax"), _cases(container=False))
def test_local_stack(authz_local: Target, probe: Probe, principal: str, k: str, ajax: bool) -> None:
    send(authz_local, probe, principal, k, ajax)


@pytest.mark.parametrize(("probe", "principal", "k", "ajax"), _cases(container=True))
def test_aws_container(
    authz_container: Target, probe: Probe, principal: str, k: str, ajax: bool
) -> None:
    send(authz_container, probe, principal, k, ajax)


def test_every_family_has_a_container_probe() -> None:
    families = {p.family for p in CATALOGUE}
    assert families == {p.family for p in CATALOGUE if p.container}


# Routes deliberately neither probed nor admin-only, each with why (none today): keyed by
# (method, rule) with `/ajax-api/` read as `/api/`.
NOT_APPLICABLE: dict[tuple[str, str], str] = {}


# -- the catalogue against MLflow's own route table ---------------------------------------------
def _probed_paths() -> set[tuple[str, str]]:
    sample = {"exp": "1", "run": "r" * 32, "model": "m", "version": "1", "lm": "m-1",
              "exp_name": "e", "n": "0"}  # fmt: skip
    probed = set()
    for probe in CATALOGUE:
        path = _fill(probe.path, sample).split("?")[0]
        probed.add((probe.method, path))
        if probe.mirror and path.startswith("/api/"):
            probed.add((probe.method, path.replace("/api/", "/ajax-api/", 1)))
    return probed


def classify(routes: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Each route's class: probed (a catalogue row hits it), admin-only (tracking_guard
    refuses non-admins; sweep_admin_only checks each), not applicable (NOT_APPLICABLE says
    why) or unclassified."""
    from mlrig.tracking import guard as tracking_guard

    probed = _probed_paths()
    found: dict[str, list[tuple[str, str]]] = {
        "probed": [], "admin-only": [], "not applicable": [], "unclassified": []
    }  # fmt: skip
    for method, rule in routes:
        pattern = rule_pattern(rule)
        sample = re.sub(r"<[^>]+>|\{[^}]+\}", "x", rule)
        if any(m == method and pattern.fullmatch(p) for m, p in probed):
            found["probed"].append((method, rule))
        elif tracking_guard.admin_only(sample):
            found["admin-only"].append((method, rule))
        elif (method, tracking_guard.canonical(rule)) in NOT_APPLICABLE:
            found["not applicable"].append((method, rule))
        else:
            found["unclassified"].append((method, rule))
    return found


@cache
def route_classes() -> dict[str, list[tuple[str, str]]]:
    return classify(mlflow_routes())


def test_catalogue_covers_mlflow_routes() -> None:
    """A route MLflow adds (an upgrade) fails here until it gets a catalogue row, falls in
    tracking_guard's admin-only families (swept below), or is listed in NOT_APPLICABLE."""
    classes = route_classes()
    assert classes["unclassified"] == []
    assert len(classes["probed"]) > 150 and len(classes["admin-only"]) > 300
    from mlrig.tracking.guard import canonical

    stale = set(NOT_APPLICABLE) - {(m, canonical(r)) for m, r in classes["not applicable"]}
    assert stale == set(), "NOT_APPLICABLE names routes MLflow no longer has"


def sweep_admin_only(target: Target) -> list[str]:
    """Every admin-only route, with placeholder ids, from no credentials, a user with no
    grant and a user with grants: 401, 403, 403. Returns what answered otherwise."""
    wrong = []
    for method, rule in route_classes()["admin-only"]:
        path = re.sub(r"<[^>]+>|\{[^}]+\}", "authz-none", rule)
        for principal, want in (("anonymous", 401), ("noperm", 403), ("editor", 403)):
            body = None if method == "GET" else {}
            resp = _session(target, principal).request(
                method, target["url"] + path, json=body, timeout=60
            )
            if resp.status_code != want:
                wrong.append(f"{method} {rule} {principal}: {resp.status_code} {resp.text[:80]}")
    return wrong


def test_admin_only_routes_refuse_everyone_else(authz_local: Target) -> None:
    assert sweep_admin_only(authz_local) == []


def test_admin_only_routes_refuse_everyone_else_on_the_container(authz_container: Target) -> None:
    assert sweep_admin_only(authz_container) == []
