"""MLflow's own user, permission and role APIs (basic-auth app, MLflow 3.x) through `requests`,
as the stack's admin: users (`/api/2.0/mlflow/users/...`), per-user grants
(`/api/3.0/mlflow/users/permissions/...`) and roles (`/api/3.0/mlflow/roles/...`), plus the
few experiment and registered-model calls that grants need (a name -> id, create as admin).

No password ever goes into a message: the bodies that carry one are never echoed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlrig.errors import Conflict, CredentialsError, RemoteError, ServiceError, UsageError

V2 = "/api/2.0/mlflow"
V3 = "/api/3.0/mlflow"
WORKSPACE = "default"  # the workspace a server without workspaces keeps everything in


@dataclass(frozen=True)
class Grant:
    resource_type: str  # experiment | registered_model | ... (MLflow's names)
    pattern: str  # an experiment id, a model name, or "*"
    permission: str  # READ | USE | EDIT | MANAGE | NO_PERMISSIONS | DENY


@dataclass(frozen=True)
class Role:
    id: int
    name: str
    grants: tuple[Grant, ...] = ()

    @property
    def synthetic(self) -> bool:
        """MLflow keeps a user's direct grants in a role of its own, `__user_<id>__`."""
        return self.name.startswith("__user_") and self.name.endswith("__")


@dataclass(frozen=True)
class User:
    name: str
    is_admin: bool
    roles: tuple[Role, ...] = field(default_factory=tuple)

    @property
    def direct_grants(self) -> tuple[Grant, ...]:
        return tuple(g for r in self.roles if r.synthetic for g in r.grants)

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles if not r.synthetic)


def _grants(raw: list[dict[str, Any]] | None) -> tuple[Grant, ...]:
    return tuple(
        Grant(str(p["resource_type"]), str(p["resource_pattern"]), str(p["permission"]))
        for p in raw or ()
    )


def _role(raw: dict[str, Any]) -> Role:
    return Role(int(raw["id"]), str(raw["name"]), _grants(raw.get("permissions")))


class MlflowAuth:
    """One tracking server, as a user allowed to manage users (the stack's admin)."""

    def __init__(self, tracking_uri: str, username: str, password: str, timeout: float = 30.0):
        import requests

        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (username, password)

    def _call(
        self, method: str, path: str, what: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> dict[str, Any] | None:
        import requests

        try:
            resp = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServiceError(
                f"the MLflow tracking server at {self.base} is unreachable ({type(exc).__name__})",
                hint="check that the stack is up: `mlrig stack status`",
            ) from exc
        if resp.status_code == 401:
            raise CredentialsError(
                f"MLflow at {self.base} rejected the admin credentials while trying to {what}",
                hint="check the stack's admin secret (`mlrig doctor`)",
            )
        if resp.status_code == 403:
            raise CredentialsError(
                f"MLflow at {self.base} refused to {what}: the account is not an admin",
                hint="`mlrig access` acts as the stack's admin",
            )
        try:
            body = resp.json()
        except ValueError:
            body = {}
        code = body.get("error_code") if isinstance(body, dict) else None
        if resp.status_code == 404 or code == "RESOURCE_DOES_NOT_EXIST":
            if missing_ok:
                return None
            raise UsageError(f"cannot {what}: it does not exist on MLflow at {self.base}")
        if code == "RESOURCE_ALREADY_EXISTS":
            raise Conflict(f"cannot {what}: it already exists")
        if resp.status_code != 200:
            text = str(body.get("message") if isinstance(body, dict) else "") or resp.text
            first = (text[:200].splitlines() or [""])[0]
            raise RemoteError(f"MLflow answered {resp.status_code} to {what}: {first}")
        return body if isinstance(body, dict) else {}

    # --- users ---
    def users(self) -> list[User]:
        body = self._call("GET", f"{V2}/users/list", "list users") or {}
        return [
            User(
                str(u["username"]),
                bool(u.get("is_admin")),
                tuple(_role(r) for r in u.get("roles") or ()),
            )
            for u in body.get("users") or ()
        ]

    def create_user(self, name: str, password: str) -> None:
        self._call(
            "POST",
            f"{V2}/users/create",
            f"create user {name}",
            json={"username": name, "password": password},
        )

    def delete_user(self, name: str) -> None:
        self._call("DELETE", f"{V2}/users/delete", f"delete user {name}", json={"username": name})

    def set_password(self, name: str, password: str) -> None:
        self._call(
            "PATCH",
            f"{V2}/users/update-password",
            f"set the password of user {name}",
            json={"username": name, "password": password},
        )

    def set_admin(self, name: str, is_admin: bool) -> None:
        self._call(
            "PATCH",
            f"{V2}/users/update-admin",
            f"change the admin flag of user {name}",
            json={"username": name, "is_admin": is_admin},
        )

    # --- direct grants (the user's own role) ---
    def grant(self, user: str, resource_type: str, resource_id: str, permission: str) -> None:
        self._call(
            "POST",
            f"{V3}/users/permissions/grant",
            f"grant {permission} on {resource_type} {resource_id} to {user}",
            json={
                "username": user,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "permission": permission,
            },
        )

    def revoke(self, user: str, resource_type: str, resource_id: str) -> None:
        self._call(
            "POST",
            f"{V3}/users/permissions/revoke",
            f"revoke {user}'s permission on {resource_type} {resource_id}",
            json={"username": user, "resource_type": resource_type, "resource_id": resource_id},
        )

    # --- roles ---
    def roles(self) -> list[Role]:
        body = self._call("GET", f"{V3}/roles/list", "list roles", params={"workspace": WORKSPACE})
        return [_role(r) for r in (body or {}).get("roles") or ()]

    def create_role(self, name: str, description: str, grants: list[Grant]) -> Role:
        body = self._call(
            "POST",
            f"{V3}/roles/create",
            f"create role {name}",
            json={"name": name, "workspace": WORKSPACE, "description": description},
        )
        role_id = int((body or {})["role"]["id"])
        for g in grants:
            self._call(
                "POST",
                f"{V3}/roles/permissions/add",
                f"add {g.permission} on {g.resource_type} {g.pattern} to role {name}",
                json={
                    "role_id": role_id,
                    "resource_type": g.resource_type,
                    "resource_pattern": g.pattern,
                    "permission": g.permission,
                },
            )
        return Role(role_id, name, tuple(grants))

    def assign_role(self, user: str, role_id: int) -> None:
        self._call(
            "POST",
            f"{V3}/roles/assign",
            f"assign role {role_id} to {user}",
            json={"username": user, "role_id": role_id},
        )

    def unassign_role(self, user: str, role_id: int) -> None:
        self._call(
            "DELETE",  # MLflow's route takes DELETE only (a POST was answered 405)
            f"{V3}/roles/unassign",
            f"unassign role {role_id} from {user}",
            json={"username": user, "role_id": role_id},
        )

    # --- the resources grants point at ---
    def experiment_id(self, name: str) -> str | None:
        body = self._call(
            "GET",
            f"{V2}/experiments/get-by-name",
            f"read experiment {name}",
            missing_ok=True,
            params={"experiment_name": name},
        )
        return str(body["experiment"]["experiment_id"]) if body else None

    def experiment_names(self) -> dict[str, str]:
        """{experiment id: name} of every active and deleted experiment."""
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            payload: dict[str, Any] = {"max_results": 1000, "view_type": "ALL"}
            if token:
                payload["page_token"] = token
            body = self._call("POST", f"{V2}/experiments/search", "list experiments", json=payload)
            for e in (body or {}).get("experiments") or ():
                found[str(e["experiment_id"])] = str(e["name"])
            token = (body or {}).get("next_page_token")
            if not token:
                return found

    def create_experiment(self, name: str) -> str:
        body = self._call(
            "POST", f"{V2}/experiments/create", f"create experiment {name}", json={"name": name}
        )
        return str((body or {})["experiment_id"])

    def registered_model_exists(self, name: str) -> bool:
        body = self._call(
            "GET",
            f"{V2}/registered-models/get",
            f"read registered model {name}",
            missing_ok=True,
            params={"name": name},
        )
        return body is not None

    def create_registered_model(self, name: str) -> None:
        self._call(
            "POST",
            f"{V2}/registered-models/create",
            f"create registered model {name}",
            json={"name": name},
        )

    def can_login(self, user: str, password: str) -> bool:
        """Whether MLflow accepts these credentials (a read any user may make)."""
        import requests

        try:
            resp = requests.get(
                f"{self.base}{V2}/users/current", auth=(user, password), timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ServiceError(f"the MLflow tracking server at {self.base} is unreachable") from exc
        return resp.status_code == 200
