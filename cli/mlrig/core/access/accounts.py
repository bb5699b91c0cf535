"""`mlrig access`: users, roles and grants on a stack's MLflow, through MLflow's own user,
permission and role APIs, as the stack's admin (the one thing the admin account is for).

Passwords are generated here and handed to the caller once (`on_password`); they are
never written to the access file, a log or an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mlrig.contract import StackOutputs
from mlrig.core.access import identities
from mlrig.core.access import plan as access_plan
from mlrig.core.access.file import ROLES, AccessFile, is_machine
from mlrig.core.access.plan import ROLE_NAMES, Current, CurrentUser, Step
from mlrig.errors import Aborted, Conflict, UsageError
from mlrig.tracking import config as tracking_server

if TYPE_CHECKING:
    from mlrig.adapters.mlflow_auth import MlflowAuth, User

CACHE_WINDOW = (
    f"a changed password or removed user may still be accepted for up to "
    f"{tracking_server.AUTH_CACHE_TTL_SECONDS} s by a server worker that cached it"
)
OnPassword = Callable[[str, str], None]


def admin_client(outputs: StackOutputs) -> MlflowAuth:
    from mlrig.adapters.mlflow_auth import MlflowAuth
    from mlrig.core.shared import secrets

    auth = outputs.mlflow.auth
    if auth is None:
        raise UsageError(
            f"stack '{outputs.name}' runs MLflow without authentication: no access to manage"
        )
    return MlflowAuth(outputs.mlflow_tracking_uri, auth.username, secrets.resolve(auth.password))


def admin_name(outputs: StackOutputs) -> str:
    return outputs.mlflow.auth.username if outputs.mlflow.auth else tracking_server.ADMIN_USERNAME


@dataclass(frozen=True)
class State:
    users: list[User]
    experiments: dict[str, str]  # id -> name
    roles: dict[str, int]  # MLflow role name -> id

    def current(self) -> Current:
        out: dict[str, CurrentUser] = {}
        for u in self.users:
            grants: dict[tuple[str, str], str] = {}
            for g in u.direct_grants:
                if g.resource_type == "experiment" and g.pattern in self.experiments:
                    grants[("experiment", self.experiments[g.pattern])] = g.permission
                elif g.resource_type == "registered_model" and g.pattern != "*":
                    grants[("registered_model", g.pattern)] = g.permission
            out[u.name] = CurrentUser(
                access_plan.role_of(u.is_admin, u.role_names),
                grants,
                create=access_plan.CREATOR_ROLE in u.role_names,
            )
        return Current(out, frozenset(self.roles))


def read_state(client: MlflowAuth) -> State:
    return State(client.users(), client.experiment_names(), {r.name: r.id for r in client.roles()})


def plan(outputs: StackOutputs, spec: AccessFile) -> tuple[list[Step], State]:
    client = admin_client(outputs)
    state = read_state(client)
    _require_resources(client, spec, outputs.name)
    return access_plan.compute(spec, state.current(), admin=admin_name(outputs)), state


def _require_resources(client: MlflowAuth, spec: AccessFile, stack: str) -> None:
    for name in spec.grants.experiments:
        if client.experiment_id(name) is None:
            raise UsageError(
                f"grants.experiments.{name}: no experiment named {name!r} on stack '{stack}'",
                hint="check the name; a repository's experiment exists once `mlrig init` made it",
            )
    for name in spec.grants.registered_models:
        if not client.registered_model_exists(name):
            raise UsageError(
                f"grants.registered_models.{name}: no registered model named {name!r} on "
                f"stack '{stack}'",
                hint="check the name; a repository's model exists once `mlrig init` made it",
            )


def apply(
    outputs: StackOutputs,
    spec: AccessFile,
    *,
    confirm_removal: Callable[[list[str]], bool],
    on_password: OnPassword,
    on_step: Callable[[Step], None] = lambda _s: None,
) -> list[Step]:
    """Make the stack agree with the file; returns the steps taken ([] when it already did).

    Users to remove are named to `confirm_removal` first; a refusal changes nothing.
    """
    steps, state = plan(outputs, spec)
    removals = [s.user for s in steps if s.destructive]
    if removals and not confirm_removal(removals):
        raise Aborted(
            f"not applied: it would remove {len(removals)} user(s) not in the file "
            f"({', '.join(removals)})",
            hint="pass --yes to confirm, or add them to the file",
        )
    client = admin_client(outputs)
    roles = dict(state.roles)
    for step in steps:
        given: dict[str, str] = {}
        _run(client, step, roles, given.__setitem__)
        on_step(step)
        for user, password in given.items():
            on_password(user, password)  # right after the step: a later failure cannot lose it
    return steps


def _run(client: MlflowAuth, step: Step, roles: dict[str, int], on_password: OnPassword) -> None:
    from mlrig.adapters.mlflow_auth import Grant

    if step.action == "create-role" and not step.permission:  # CREATOR_ROLE: no permissions
        desc = "mlrig: may create experiments and registered models (checked by the server)"
        roles[step.role] = client.create_role(step.role, desc, []).id
    elif step.action == "create-role":
        grants = [Grant(kind, "*", step.permission) for kind in access_plan.KINDS.values()]
        desc = f"mlrig: {step.permission} on every experiment and registered model"
        roles[step.role] = client.create_role(step.role, desc, grants).id
    elif step.action == "create-user":
        password = identities.new_password()
        client.create_user(step.user, password)
        on_password(step.user, password)
        _set_role(client, step.user, "none", step.role, roles)
    elif step.action == "set-role":
        _set_role(client, step.user, step.old, step.role, roles)
    elif step.action == "allow-create":
        client.assign_role(step.user, roles[access_plan.CREATOR_ROLE])
    elif step.action == "deny-create":
        client.unassign_role(step.user, roles[access_plan.CREATOR_ROLE])
    elif step.action == "delete-user":
        client.delete_user(step.user)
    else:
        rid = client.experiment_id(step.resource) if step.kind == "experiment" else step.resource
        assert rid is not None  # checked by _require_resources
        if step.action in ("update", "revoke"):
            client.revoke(step.user, step.kind, rid)
        if step.action in ("grant", "update"):
            client.grant(step.user, step.kind, rid, step.permission)


def _set_role(client: MlflowAuth, user: str, old: str, new: str, roles: dict[str, int]) -> None:
    if new == "admin" and is_machine(user):  # access_file.parse refuses it first
        raise UsageError(
            f"{user} is a machine identity: it can never be an admin",
            hint="give admin to a person; a machine identity has EDIT on its own repository",
        )
    if old == "admin":
        client.set_admin(user, False)
    elif old in ROLE_NAMES:
        client.unassign_role(user, roles[ROLE_NAMES[old]])
    if new == "admin":
        client.set_admin(user, True)
    elif new in ROLE_NAMES:
        client.assign_role(user, roles[ROLE_NAMES[new]])


def add_user(outputs: StackOutputs, name: str, role: str, password: str | None = None) -> str:
    """Create a person's account with a role; returns its password (generated unless given)."""
    from mlrig.core.access.file import parse

    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
    if is_machine(name):
        raise UsageError(
            f"{name}: names starting with repo- are machine identities",
            hint="create one with `mlrig access add-machine PROJECT`",
        )
    spec = parse({"users": {name: {"role": role}}}, source="add-user", admin=admin_name(outputs))
    if password is not None and len(password) < 8:
        raise UsageError("the password is shorter than 8 characters", hint="choose a longer one")
    client = admin_client(outputs)
    state = read_state(client)
    if any(u.name == name for u in state.users):
        raise Conflict(
            f"user {name} already exists on stack '{outputs.name}'",
            hint=f"set its role in the access file; a new password: `mlrig access rotate {name}`",
        )
    given: dict[str, str] = {}
    steps = access_plan.compute(spec, Current({}, frozenset(state.roles)), admin="")
    roles = dict(state.roles)
    for step in steps:
        if step.action == "create-user" and password is not None:
            client.create_user(name, password)
            given[name] = password
            _set_role(client, name, "none", role, roles)
        else:
            _run(client, step, roles, lambda u, p: given.__setitem__(u, p))
    return given[name]


@dataclass(frozen=True)
class Rotated:
    user: str
    password: str | None  # a person's new password, to hand over once; None for a machine
    stored_at: str | None  # where a machine identity's new password is kept


def rotate(outputs: StackOutputs, name: str, password: str | None = None) -> Rotated:
    if name == admin_name(outputs):
        raise UsageError(
            "the admin password belongs to the stack, not to `mlrig access`",
            hint="local: delete its secret file and run `mlrig stack up`; AWS: rotate the "
            "stack's admin secret",
        )
    client = admin_client(outputs)
    if not any(u.name == name for u in client.users()):
        raise UsageError(f"no user named {name} on stack '{outputs.name}'")
    new = password or identities.new_password()
    if not is_machine(name):
        client.set_password(name, new)
        return Rotated(name, new, None)
    old = identities.read_password(outputs, name)
    identities.store_password(outputs, name, new)
    try:
        client.set_password(name, new)
    except BaseException:
        if old:
            identities.store_password(outputs, name, old)  # MLflow still has the old one
        raise
    return Rotated(name, None, identities.secret_location(outputs, name))


def add_machine(
    outputs: StackOutputs, project: str, github_repo: str = "", *, take_over: bool = False
) -> identities.MachineResult:
    """Create or repair repo-PROJECT; with `github_repo` (owner/name), also let that
    repository's GitHub Actions OIDC tokens act as it (keyless CI). An experiment or model of
    the project's name that someone else manages is refused unless `take_over`
    (identities.ensure_machine)."""
    from mlrig.core.shared.names import validate_github_repo, validate_project_name
    from mlrig.core.stack import oidc_rules

    project = validate_project_name(project)
    validate_github_repo(github_repo)
    client = admin_client(outputs)
    result = identities.ensure_machine(outputs, project, client, take_over=take_over)
    if github_repo:
        oidc_rules.add_rule(outputs.name, repository=github_repo, identity=result.user)
        result = replace(result, oidc_repository=github_repo)
    return result
