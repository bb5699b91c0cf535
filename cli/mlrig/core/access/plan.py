"""From an access file and what the server holds now, the steps that make them agree.

Pure: no I/O. The file is authoritative for
- the users it lists (created, their role and `create` capability set; people not listed are
  removed, after confirmation; never the stack's admin, never a machine identity `repo-*`,
  which the file cannot list),
- the experiments and registered models it lists: for each of those, the grants of the
  users it lists are exactly the file's (a listed user with no entry there loses the grant).
Grants on anything the file does not list are left as they are (MLflow gives a creator
MANAGE on what it creates; `mlrig access show` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from mlrig.core.access.file import AccessFile, is_machine

# The role a user has, as MLflow roles: reader/editor are roles mlrig creates in MLflow with a
# wildcard grant on every experiment and registered model; admin is MLflow's admin flag.
ROLE_NAMES = {"reader": "mlrig-reader", "editor": "mlrig-editor"}
ROLE_PERMISSION = {"reader": "READ", "editor": "EDIT"}
# `create: true`: an MLflow role without permissions whose holders the server's guard lets
# create experiments and registered models (tracking.guard.CREATOR_ROLES, with the editor role).
CREATOR_ROLE = "mlrig-creator"
KINDS = {"experiments": "experiment", "registered_models": "registered_model"}

Action = Literal[
    "create-role",
    "create-user",
    "set-role",
    "allow-create",
    "deny-create",
    "grant",
    "update",
    "revoke",
    "delete-user",
]
ORDER: tuple[Action, ...] = get_args(Action)  # the order apply runs its steps in


@dataclass(frozen=True)
class CurrentUser:
    role: str  # none | reader | editor | admin
    grants: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> perm
    create: bool = False  # holds CREATOR_ROLE


@dataclass(frozen=True)
class Current:
    users: dict[str, CurrentUser]
    roles: frozenset[str] = frozenset()  # MLflow role names that exist


@dataclass(frozen=True)
class Step:
    action: Action
    user: str = ""
    role: str = ""  # create-role: the MLflow role; create-user / set-role: the new role
    old: str = ""  # set-role: the old role; update: the old permission
    kind: str = ""  # experiment | registered_model
    resource: str = ""
    permission: str = ""

    @property
    def destructive(self) -> bool:
        return self.action == "delete-user"

    def describe(self) -> str:
        what = f"{self.kind.replace('_', ' ')} {self.resource}"
        powers = (
            f"{self.permission} on every experiment and model"
            if self.permission
            else "may create experiments and models"
        )
        return {
            "create-role": f"+ role {self.role} ({powers})",
            "allow-create": f"~ user {self.user}: may create experiments and models",
            "deny-create": f"~ user {self.user}: may no longer create experiments and models",
            "create-user": f"+ user {self.user} (role {self.role})",
            "set-role": f"~ user {self.user}: role {self.old} -> {self.role}",
            "grant": f"+ grant {self.permission} on {what} to {self.user}",
            "update": f"~ grant on {what} to {self.user}: {self.old} -> {self.permission}",
            "revoke": f"- grant {self.old} on {what} from {self.user}",
            "delete-user": f"- user {self.user}",
        }[self.action]


def role_of(is_admin: bool, role_names: tuple[str, ...] | list[str]) -> str:
    if is_admin:
        return "admin"
    for role in ("editor", "reader"):
        if ROLE_NAMES[role] in role_names:
            return role
    return "none"


def compute(spec: AccessFile, current: Current, *, admin: str) -> list[Step]:
    steps: list[Step] = []
    needed = {spec.users[u].role for u in spec.users} & set(ROLE_NAMES)
    for role in sorted(needed):
        if ROLE_NAMES[role] not in current.roles:
            steps.append(
                Step("create-role", role=ROLE_NAMES[role], permission=ROLE_PERMISSION[role])
            )
    if any(u.create for u in spec.users.values()) and CREATOR_ROLE not in current.roles:
        steps.append(Step("create-role", role=CREATOR_ROLE))
    for name, user in sorted(spec.users.items()):
        now = current.users.get(name)
        if now is None:
            steps.append(Step("create-user", user=name, role=user.role))
        elif now.role != user.role:
            steps.append(Step("set-role", user=name, role=user.role, old=now.role))
        has_create = now is not None and now.create
        if user.create and not has_create:
            steps.append(Step("allow-create", user=name))
        elif has_create and not user.create:
            steps.append(Step("deny-create", user=name))
    for key, kind in KINDS.items():
        table: dict[str, dict[str, str]] = getattr(spec.grants, key)
        for resource, wanted in sorted(table.items()):
            for name in sorted(spec.users):
                now = current.users.get(name)
                have = now.grants.get((kind, resource)) if now else None
                want = wanted.get(name)
                base = Step("grant", user=name, kind=kind, resource=resource)
                if want and not have:
                    steps.append(_with(base, permission=want))
                elif want and have != want:
                    steps.append(_with(base, action="update", permission=want, old=have or ""))
                elif have and not want:
                    steps.append(_with(base, action="revoke", old=have))
    for name in sorted(current.users):
        if name not in spec.users and name != admin and not is_machine(name):
            steps.append(Step("delete-user", user=name))
    return sorted(steps, key=lambda s: ORDER.index(s.action))


def _with(step: Step, **changes: str) -> Step:
    from dataclasses import replace

    return replace(step, **changes)  # type: ignore[arg-type]
