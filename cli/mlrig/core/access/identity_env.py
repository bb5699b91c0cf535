"""The client environment of one identity on a stack (`mlrig stack env --as`,
`mlrig.api.tracking_env`): a repository's machine identity, whose password the stack keeps,
or a person, who types theirs. Neither reads the admin's secret, and both leave out the
registry's account: training needs MLflow and the DVC remote only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from mlrig.contract import StackOutputs
from mlrig.core.access import identities
from mlrig.core.access.file import is_machine, is_user_name
from mlrig.errors import CredentialsError, UsageError

Kind = Literal["admin", "machine", "person"]


def kind_of(outputs: StackOutputs, user: str) -> Kind:
    """Who `--as USER` names on this stack: its admin, a machine identity or a person (a
    name no MLflow user can have, or a stack without logins: one line)."""
    auth = outputs.mlflow.auth
    if auth is None:
        raise UsageError(
            f"stack '{outputs.name}' runs MLflow without authentication: it has no identities",
            hint="`mlrig stack env` without --as prints its environment",
        )
    if user == auth.username:
        return "admin"
    if is_machine(user):
        if not identities.is_machine_name(user):
            raise UsageError(
                f"{user!r} is not a machine identity's name (repo- and the project's name, "
                "lowercase words joined by -)",
                hint="`mlrig access show` lists the stack's identities",
            )
        return "machine"
    if not is_user_name(user):
        raise UsageError(
            f"{user!r} is not an MLflow user name (letters, digits and . _ @ + -)",
            hint="`mlrig access show` lists the stack's users",
        )
    return "person"


def machine_env(outputs: StackOutputs, user: str, *, verify: bool = False) -> dict[str, str]:
    """The stack's settings with the machine identity `user` (repo-PROJECT) logged in.

    With `verify`, MLflow is asked first whether it accepts the stored password, so a stale
    one is one line with its repair rather than a 401 in the middle of a training run.
    """
    from mlrig.core.stack.env import settings_env

    if kind_of(outputs, user) != "machine":
        raise UsageError(
            f"{user!r} is not a machine identity (their names start with repo-)",
            hint="pass the repository's identity, repo-PROJECT",
        )
    repair = (
        f"create or repair it: `mlrig access add-machine PROJECT --stack {outputs.name}` "
        "(PROJECT: the repository's project name)"
    )
    password = identities.read_password(outputs, user)
    if not password:
        raise identities.MissingIdentity(
            f"machine identity {user} has no stored password on stack '{outputs.name}'",
            hint=repair,
        )
    if verify:
        _check_login(outputs, user, password, fix=repair)
    return {**settings_env(outputs), **_login(user, password)}


def person_env(outputs: StackOutputs, user: str, password: str) -> dict[str, str]:
    """The stack's settings with a person logged in, once MLflow has accepted the password
    they typed (it is kept nowhere)."""
    from mlrig.core.stack.env import settings_env

    fix = f"check the name and password; an admin can set a new one: `mlrig access rotate {user}`"
    _check_login(outputs, user, password, fix=fix)
    return {**settings_env(outputs), **_login(user, password)}


def env_as(outputs: StackOutputs, user: str, ask_password: Callable[[str], str]) -> dict[str, str]:
    """The environment of `user` on the stack: the admin's (when named), a machine identity's
    (its stored password) or a person's (`ask_password(user)`), each checked with MLflow."""
    kind = kind_of(outputs, user)
    if kind == "admin":
        from mlrig.core.stack.env import client_env

        return client_env(outputs)
    if kind == "machine":
        return machine_env(outputs, user, verify=True)
    return person_env(outputs, user, ask_password(user))


def _login(user: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def _check_login(outputs: StackOutputs, user: str, password: str, *, fix: str) -> None:
    from mlrig.adapters.mlflow_auth import MlflowAuth

    if not MlflowAuth(outputs.mlflow_tracking_uri, user, password).can_login(user, password):
        raise CredentialsError(
            f"the tracking server of stack '{outputs.name}' does not accept the password of {user}",
            hint=fix,
        )
