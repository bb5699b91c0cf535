"""Machine identities: one MLflow user per repository made by `mlrig init`, `repo-<project>`,
with EDIT on that repository's experiment and registered model and nothing else.

Its password lives with the stack's secrets: a local stack keeps it in a 0600 file under the
stack's directory (`identities/<user>.password`), an AWS stack in the Secrets Manager secret
`mlrig/<stack>/identities/<user>` (the only secrets the CI role may read). Training in the
repository (through `mlrig.api.tracking_env`) and mlrig commands acting for it (`repo_env`)
log in as it; the admin account stays with stack-wide commands and `mlrig access`.
"""

from __future__ import annotations

import re
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig import contract, paths
from mlrig.contract import StackOutputs
from mlrig.core.shared.names import machine_user
from mlrig.errors import Conflict, CredentialsError, UsageError

if TYPE_CHECKING:
    from mlrig.adapters.mlflow_auth import MlflowAuth, User

MACHINE_PERMISSION = "EDIT"
IDENTITIES_DIR = "identities"
# What machine_user makes of a valid project name; a name read from a repository's answers
# file, a model URI or the server becomes a file or secret name only if it matches.
_MACHINE_RE = re.compile(r"^repo-[a-z0-9]+(?:-[a-z0-9]+)*$")


def new_password() -> str:
    return _secrets.token_urlsafe(24)


def _in_secrets_manager(outputs: StackOutputs) -> bool:
    """Machine identities live where the stack keeps its admin secret: Secrets Manager for an
    AWS stack, the stack's directory for a local one (or any stack whose MLflow is)."""
    auth = outputs.mlflow.auth
    return auth is not None and auth.password.source == "aws-secretsmanager"


def secret_location(outputs: StackOutputs, user: str) -> str:
    """Where the stack keeps a machine identity's password (never the password)."""
    if _in_secrets_manager(outputs):
        return f"Secrets Manager secret {aws_secret_name(outputs.name, user)}"
    return str(local_secret_file(outputs.name, user))


def is_machine_name(user: str) -> bool:
    """Whether `user` is a name machine_user makes (repo- and lowercase words joined by -)."""
    return bool(_MACHINE_RE.fullmatch(user))


def _machine_name(user: str) -> str:
    if not is_machine_name(user):
        raise UsageError(
            f"{user!r} is not a machine identity's name (repo- and the project's name)",
            hint="machine identities are made by `mlrig init` or `mlrig access add-machine`",
        )
    return user


def aws_secret_name(stack: str, user: str) -> str:
    return f"mlrig/{stack}/identities/{_machine_name(user)}"


def local_secret_file(stack: str, user: str) -> Path:
    return paths.stack_dir(stack) / IDENTITIES_DIR / f"{_machine_name(user)}.password"


def read_password(outputs: StackOutputs, user: str) -> str | None:
    """The stored password, or None when the stack has none for this identity (nothing is
    ever stored for a name that is not a machine identity's)."""
    if not is_machine_name(user):
        return None
    if _in_secrets_manager(outputs):
        from mlrig.adapters import aws

        return aws.find_secret_string(aws_secret_name(outputs.name, user), region=outputs.region)
    path = local_secret_file(outputs.name, user)
    if not path.exists():
        return None
    from mlrig.core.shared import secrets

    return secrets.read_secret_file(path)


def store_password(outputs: StackOutputs, user: str, password: str) -> None:
    if _in_secrets_manager(outputs):
        from mlrig.adapters import aws

        aws.put_secret_string(
            aws_secret_name(outputs.name, user),
            password,
            description=f"MLflow password of the machine identity {user} (mlrig)",
            region=outputs.region,
        )
        return
    path = local_secret_file(outputs.name, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    contract.atomic_write(path, password + "\n", mode=0o600)


def project_of(repo_or_project: Path | str) -> str:
    """A project name as given, or the `project_name` of the generated repo holding a path."""
    if isinstance(repo_or_project, str):
        return repo_or_project
    from mlrig.core.shared.names import find_answers, load_answers
    from mlrig.paths import ANSWERS_FILE

    answers = find_answers(repo_or_project)
    if answers is not None:
        return str(load_answers(answers)["project_name"])
    raise UsageError(
        f"{repo_or_project} is not in a repository made by `mlrig init` "
        f"(no {ANSWERS_FILE} with a project_name)",
        hint="run this inside the repository, or pass --repo",
    )


class MissingIdentity(CredentialsError):
    """A repository made before machine identities existed, or whose identity was removed."""


def missing_identity(outputs: StackOutputs, project: str) -> MissingIdentity:
    user = machine_user(project)
    return MissingIdentity(
        f"repository '{project}' has no machine identity ({user}) on stack '{outputs.name}'",
        hint=f"create it: `mlrig access add-machine {project} --stack {outputs.name}`",
    )


def repo_env(outputs: StackOutputs, repo_or_project: Path | str) -> dict[str, str]:
    """The stack's client environment logged in as the repository's machine identity.

    No stack secret is read here (the admin's, the registry's): a repo's CI may hold only
    its own identity.
    """
    from mlrig.core.stack.env import client_env, settings_env

    if outputs.mlflow.auth is None:  # a stack without MLflow authentication
        return client_env(outputs)
    project = project_of(repo_or_project)
    env = settings_env(outputs)
    user = machine_user(project)
    password = read_password(outputs, user)
    if not password:
        raise missing_identity(outputs, project)
    env["MLFLOW_TRACKING_USERNAME"] = user
    env["MLFLOW_TRACKING_PASSWORD"] = password
    return env


def acting_env(outputs: StackOutputs, project: str) -> dict[str, str]:
    """For an mlrig command acting on one model: the environment of the machine identity of
    the repository that owns it (a model `mlrig init` made is named after its project), or
    the admin's for a model no repository identity owns (made outside mlrig, or before
    machine identities existed)."""
    from mlrig.core.stack.env import client_env

    try:
        return repo_env(outputs, project)  # reads the identity's secret once
    except MissingIdentity:
        return client_env(outputs)


@dataclass(frozen=True)
class MachineResult:
    user: str
    project: str
    experiment_id: str
    created: bool  # the MLflow user was made now
    password_set: bool  # a new password was set and stored
    where: str  # where the password is kept
    oidc_repository: str = ""  # the GitHub repository whose OIDC tokens act as this identity
    revoked: tuple[str, ...] = ()  # foreign grants taken away by --take-over ("bob: MANAGE on …")


class NameTaken(Conflict):
    """The repository's experiment or registered model is managed by someone else."""


TAKE_OVER_FLAG = "--take-over"
CLAIMING = ("MANAGE", "EDIT")  # what --take-over revokes from others; READ is left as it is


def foreign_grants(
    users: list[User], machine: str, experiment_id: str | None, project: str
) -> list[tuple[str, str, str]]:
    """(user, kind, permission) of every direct MANAGE or EDIT grant on the project's
    experiment or registered model held by someone other than an admin or its own machine
    identity (MLflow gives whoever creates an object MANAGE on it; a registered model created
    as a prompt is a `prompt` grant on the same name)."""
    targets = {("registered_model", project), ("prompt", project)}
    if experiment_id is not None:
        targets.add(("experiment", experiment_id))
    found = []
    for u in sorted(users, key=lambda u: u.name):
        if u.is_admin or u.name == machine:
            continue
        for g in u.direct_grants:
            if (g.resource_type, g.pattern) in targets and g.permission in CLAIMING:
                found.append((u.name, g.resource_type, g.permission))
    return found


def _describe(grant: tuple[str, str, str], project: str) -> str:
    name, kind, permission = grant
    return f"{name}: {permission} on {kind.replace('_', ' ')} {project}"


def ensure_machine(
    outputs: StackOutputs, project: str, client: MlflowAuth, *, take_over: bool = False
) -> MachineResult:
    """Create (or repair) the repository's identity, as admin: its experiment and registered
    model (created if missing), the user, EDIT on both, and the stored password. Idempotent:
    an identity whose password is stored and accepted is left as it is.

    The names belong to the repository: when someone else (not an admin, not this identity)
    holds MANAGE on an existing experiment or model of the project's name, nothing is changed
    and NameTaken says who; with `take_over`, every MANAGE and EDIT others hold directly on
    the two is revoked first (listed in the result's `revoked`)."""
    user = machine_user(project)
    found_id = client.experiment_id(project)
    users = client.users()
    foreign = foreign_grants(users, user, found_id, project)
    if not take_over and any(permission == "MANAGE" for _, _, permission in foreign):
        holders = sorted({name for name, _, permission in foreign if permission == "MANAGE"})
        raise NameTaken(
            f"the experiment or registered model '{project}' on stack '{outputs.name}' is "
            f"managed by {', '.join(holders)}, not by this repository",
            hint=f"pass {TAKE_OVER_FLAG} to revoke their MANAGE and EDIT on both, or choose "
            "another project name",
        )
    for name, kind, _ in foreign if take_over else ():
        client.revoke(name, kind, str(found_id) if kind == "experiment" else project)
    revoked = tuple(_describe(g, project) for g in foreign) if take_over else ()
    experiment_id = found_id or client.create_experiment(project)
    if not client.registered_model_exists(project):
        client.create_registered_model(project)
    existing = {u.name: u for u in users}
    stored = read_password(outputs, user)
    created = password_set = False
    if user not in existing:
        password = stored or new_password()
        client.create_user(user, password)
        created = True
        if password != stored:
            store_password(outputs, user, password)
            password_set = True
    elif not stored or not client.can_login(user, stored):
        password = new_password()
        store_password(outputs, user, password)
        client.set_password(user, password)
        password_set = True
    grants = (
        {(g.resource_type, g.pattern): g.permission for g in existing[user].direct_grants}
        if (user in existing)
        else {}
    )
    for kind, resource in (("experiment", experiment_id), ("registered_model", project)):
        have = grants.get((kind, resource))
        if have == MACHINE_PERMISSION:
            continue
        if have is not None:
            client.revoke(user, kind, resource)
        client.grant(user, kind, resource, MACHINE_PERMISSION)
    return MachineResult(
        user,
        project,
        experiment_id,
        created,
        password_set,
        secret_location(outputs, user),
        revoked=revoked,
    )
