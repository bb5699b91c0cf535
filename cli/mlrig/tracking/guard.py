"""Deny-by-default checks in front of MLflow's own authorization, run inside the server.

MLflow's basic-auth app decides per object (experiment, run, registered model ...) and does
that well for the routes mlrig's users need. What it leaves open, and this module closes
(each case has a probe in tests/integration/test_authz_*.py):

- Route families no mlrig user needs (AI gateway, assistant, MCP servers, jobs, demo data,
  webhooks, traces and evaluation datasets, review queues, issues, scorers, prompt
  optimisation, workspaces, roles, the user list and other users' permissions). MLflow lets
  any signed-in user reach several of them: a user with no grant at all could generate demo
  experiments, rewrite the server's assistant config, list every user and who is admin, or
  make the server fetch gateway model lists.
  Here they are admin-only: a non-admin gets 403 before MLflow looks at the request.
- Artifact paths that climb, or that are absolute or use backslashes, in any spelling
  (`..`, `%2e%2e`, `%252e%252e`, `\\`, a leading or doubled `/`): 400. MLflow refuses most
  of them itself, but answered an absolute path on upload with a 500 and stored backslash
  paths as literal names.
- A `/graphql` request that is not a POST with a query string: 400 (MLflow answered 500).
- Creating experiments and registered models. MLflow lets any signed-in user create them and
  gives the creator MANAGE: a reader could claim the name a future repository's `mlrig init`
  will use, and keep reading its runs and moving its `@champion`. Renaming one (which needs
  EDIT on it; its grants move with it) claims a name too. Here creating and renaming are for
  the admin, machine identities (`repo-*`, which only the admin makes) and users holding one of
  CREATOR_ROLES (the MLflow roles `mlrig access apply` assigns to editors and to users the
  access file gives `create: true`); anyone else gets 403 with a one-line JSON message.
- An `Authorization` header that is not ASCII (werkzeug raised while parsing it: a 500 on
  every route) or Basic credentials with control characters (a NUL reached PostgreSQL, whose
  refusal came back as a 400 quoting the SQL): dropped, so the answer is 401.

`screen` runs after the auth hook has named the user; `drop_malformed_credentials` before
it reads the header. Flask and MLflow are imported lazily; this module imports nothing from
mlrig (the server image copies it alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

MAX_SCREENED_BODY_BYTES = 1 << 20  # larger JSON bodies are not parsed for artifact paths
MAX_DECODE_ROUNDS = 4  # `%25` nests: decode until stable, at most this often

# Routes any signed-in user may reach; MLflow's validators then decide per object. Paths are
# compared with `/ajax-api/` read as `/api/` (the UI's mirror of every REST route).
USER_PREFIXES = (
    "/api/2.0/mlflow/experiments/",
    "/api/2.0/mlflow/runs/",
    "/api/2.0/mlflow/metrics/",
    "/api/2.0/mlflow/registered-models/",
    "/api/2.0/mlflow/model-versions/",
    "/api/2.0/mlflow/logged-models",
    "/api/2.0/mlflow/artifacts/",
    "/api/2.0/mlflow/upload-artifact",
    "/api/2.0/mlflow-artifacts/",
    "/get-artifact",
    "/model-versions/get-artifact",
    "/graphql",
    "/static-files/",
    "/build/",
)
USER_PATHS = frozenset(
    {
        "/",
        "/version",
        "/health",
        "/api/2.0/mlflow-artifacts/artifacts",  # the listing: MLflow checks the path's experiment
        "/api/2.0/mlflow/users/current",
        "/api/2.0/mlflow/users/get",  # MLflow answers a user about itself only
        "/api/2.0/mlflow/users/update-password",  # likewise: one's own password
        "/api/3.0/mlflow/users/current/permissions",
        "/api/3.0/mlflow/server-info",
        "/api/3.0/mlflow/ui-telemetry",  # the UI reads its telemetry switch (off)
    }
)
# Within the user families, what is still admin-only: generative-AI features mlrig does not use.
ADMIN_WITHIN_USER = ("/api/2.0/mlflow/runs/create-promptlab-run",)

# Where a request names an artifact path: the URL after these prefixes, and these query or
# JSON fields on the artifact routes.
ARTIFACT_URL_PREFIXES = (
    "/api/2.0/mlflow-artifacts/artifacts/",
    "/api/2.0/mlflow-artifacts/mpu/create/",
    "/api/2.0/mlflow-artifacts/mpu/complete/",
    "/api/2.0/mlflow-artifacts/mpu/abort/",
    "/api/2.0/mlflow-artifacts/presigned/",
)
ARTIFACT_FIELD_ROUTES = (
    "/api/2.0/mlflow-artifacts/",
    "/api/2.0/mlflow/artifacts/",
    "/api/2.0/mlflow/upload-artifact",
    "/api/2.0/mlflow/logged-models/",
    "/get-artifact",
    "/model-versions/get-artifact",
    "/api/2.0/mlflow/get-trace-artifact",
    "/api/3.0/mlflow/get-trace-artifact",
)
ARTIFACT_FIELDS = ("path", "artifact_path")

# Routes that give an experiment or registered model a new name (the UI's mirror included):
# creating, and renaming (experiments/update changes nothing but the name).
CREATE_ROUTES = frozenset(
    {
        "/api/2.0/mlflow/experiments/create",
        "/api/2.0/mlflow/registered-models/create",
        "/api/2.0/mlflow/experiments/update",
        "/api/2.0/mlflow/registered-models/rename",
    }
)
# Who may create besides the admin: machine identities by name (the access file and
# `mlrig access add-user` refuse the prefix for people), and holders of these MLflow roles
# (access_plan.ROLE_NAMES["editor"] and access_plan.CREATOR_ROLE).
MACHINE_PREFIX = "repo-"
CREATOR_ROLES = frozenset({"mlrig-editor", "mlrig-creator"})
CREATE_REFUSED = (
    "Permission denied: creating or renaming experiments and registered models is for editors, "
    "machine identities and the admin; ask the stack's admin for the editor role or "
    "`create: true` in the access file."
)


def canonical(path: str) -> str:
    """The route as the REST API spells it: the UI's `/ajax-api/` mirror read as `/api/`."""
    return "/api/" + path[len("/ajax-api/") :] if path.startswith("/ajax-api/") else path


def admin_only(path: str) -> bool:
    """Whether only an admin may use this route (everything outside the user families)."""
    route = canonical(path)
    if route.startswith(ADMIN_WITHIN_USER):
        return True
    return not (route in USER_PATHS or route.startswith(USER_PREFIXES))


def creates(path: str) -> bool:
    """Whether the route creates or renames an experiment or registered model."""
    return canonical(path) in CREATE_ROUTES


def may_create(username: str, is_admin: bool, role_names: Iterable[str]) -> bool:
    """Whether this user may create experiments and registered models."""
    if is_admin or username.startswith(MACHINE_PREFIX):
        return True
    return not CREATOR_ROLES.isdisjoint(role_names)


def _decodings(value: str) -> Iterable[str]:
    """The value and each percent-decoding of it, until decoding changes nothing."""
    yield value
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(value)
        if decoded == value:
            return
        value = decoded
        yield value


def artifact_path_problem(value: str) -> str | None:
    """Why an artifact path must be refused, or None (a `//` inside makes the rest absolute
    to some stores)."""
    for text in _decodings(value):
        if "\\" in text:
            return "backslash in artifact path"
        if "\x00" in text:
            return "NUL in artifact path"
        if text.startswith("/") or "//" in text:
            return "absolute artifact path"
        if ".." in text.split("/"):
            return "artifact path leaves its folder"
    return None


def request_problem(method: str, path: str, args: Mapping[str, list[str]], body: Any) -> str | None:
    """Why a request is malformed in a way MLflow would mishandle, or None."""
    route = canonical(path)
    for prefix in ARTIFACT_URL_PREFIXES:
        if route.startswith(prefix):
            problem = artifact_path_problem(route[len(prefix) :])
            if problem:
                return problem
    if route.startswith(ARTIFACT_FIELD_ROUTES):
        values = [v for name in ARTIFACT_FIELDS for v in args.get(name, [])]
        if isinstance(body, dict):
            values += [body[name] for name in ARTIFACT_FIELDS if isinstance(body.get(name), str)]
        for value in values:
            if problem := artifact_path_problem(value):
                return problem
    if route == "/graphql":
        if method != "POST":  # MLflow reads a JSON body and answered a GET with a 500
            return "GraphQL takes a POST with a JSON body"
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            return "a GraphQL request needs a query"
    return None


# --- Flask side (inside the server) ---


def _answer(status: int, text: str):  # type: ignore[no-untyped-def]
    from flask import Response

    return Response(text, status=status, mimetype="text/plain")


def _json_body(request: Any) -> Any:
    length = request.content_length
    if request.is_json and length is not None and length <= MAX_SCREENED_BODY_BYTES:
        return request.get_json(silent=True)  # cached: MLflow's handler reads the same parse
    return None


def _is_admin(username: str | None) -> bool:
    from mlflow.server import auth

    if not username:
        return False
    try:
        return bool(auth.store.get_user(username).is_admin)
    except Exception:  # noqa: BLE001 - an unknown user is no admin
        return False


def _json_answer(status: int, code: str, text: str):  # type: ignore[no-untyped-def]
    import json

    from flask import Response

    body = json.dumps({"error_code": code, "message": text})
    return Response(body, status=status, mimetype="application/json")


def _may_create(username: str | None) -> bool:
    """may_create for a signed-in user, read from MLflow's user store (any failure: no)."""
    from mlflow.server import auth

    if not username:
        return False
    try:
        user = auth.store.get_user(username)
        if user.is_admin or username.startswith(MACHINE_PREFIX):
            return True
        roles = auth.store.list_user_roles(user.id)  # not cached: a revoked role counts at once
        return may_create(username, False, (role.name for role in roles))
    except Exception:  # noqa: BLE001 - an unknown user or an unreadable store: refused
        return False


def malformed_credentials(header: str) -> bool:
    """Whether an `Authorization` header must be ignored: bytes werkzeug cannot parse
    (non-ASCII), or Basic credentials with control characters, which MLflow passes on to its
    user store (PostgreSQL refused a NUL with a 400 that quoted the SQL statement)."""
    import base64
    import binascii

    try:
        header.encode("ascii")
    except UnicodeEncodeError:
        return True
    scheme, _, payload = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False  # werkzeug reads it as no credentials: 401 anyway
    return any(byte < 0x20 or byte == 0x7F for byte in decoded)


def drop_malformed_credentials() -> None:
    """Before the hook reads `Authorization`: a malformed header is removed, so the request
    goes on as one without credentials (401)."""
    from flask import request

    header = request.environ.get("HTTP_AUTHORIZATION")
    if header is not None and malformed_credentials(header):
        request.environ.pop("HTTP_AUTHORIZATION", None)
        request.__dict__.pop("authorization", None)  # werkzeug caches the parsed header


def screen(result):  # type: ignore[no-untyped-def]
    """After the hook decided who is asking: `result` unchanged (a werkzeug Authorization or
    MLflow's 401 response), or a 400/403 response for what MLflow would let through."""
    from flask import Response, request

    if isinstance(result, Response):
        return result
    body = None
    route = canonical(request.path)
    if route == "/graphql" or route.startswith(ARTIFACT_FIELD_ROUTES):  # else the body is moot
        try:
            body = _json_body(request)
        except Exception:  # noqa: BLE001 - MLflow answers an unreadable body itself
            body = None
    args = {k: request.args.getlist(k) for k in request.args}
    if problem := request_problem(request.method, request.path, args, body):
        return _answer(400, f"Bad request: {problem}.")
    if admin_only(request.path) and not _is_admin(getattr(result, "username", None)):
        return _answer(403, "Permission denied: this route is for the stack's admin.")
    if creates(request.path) and not _may_create(getattr(result, "username", None)):
        return _json_answer(403, "PERMISSION_DENIED", CREATE_REFUSED)
    return result
