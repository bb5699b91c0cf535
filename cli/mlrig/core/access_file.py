"""The access file a team keeps: who may use the stack's MLflow, with which role, and which
grants per experiment and registered model. No password is ever in it.

```yaml
users:
  alice: {role: editor}
  bob: {role: reader}
grants:
  experiments: {demo_model: {alice: EDIT, bob: READ}}
  registered_models: {demo_model: {alice: EDIT, bob: READ}}
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mlrig.errors import UsageError

MACHINE_PREFIX = "repo-"  # machine identities (one per repository) are named repo-<project>
ROLES = ("none", "reader", "editor", "admin")
PERMISSIONS = ("READ", "EDIT", "MANAGE")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


Role = Literal["none", "reader", "editor", "admin"]
Permission = Annotated[Literal["READ", "EDIT", "MANAGE"], BeforeValidator(_upper)]


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(
        default="none",
        description="reader: READ on every experiment and model; editor: EDIT on every one; "
        "admin: MLflow admin; none: only the grants below",
    )


class Grants(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiments: dict[str, dict[str, Permission]] = Field(default_factory=dict)
    registered_models: dict[str, dict[str, Permission]] = Field(default_factory=dict)


class AccessFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: dict[str, UserSpec] = Field(default_factory=dict)
    grants: Grants = Field(default_factory=Grants)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse(data: object, *, source: str, admin: str) -> AccessFile:
    """Validate a loaded document; any problem is one line naming the field."""
    if data is None:
        data = {}
    try:
        spec = AccessFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(
            f"{source}: {_location(first['loc'])}: {first['msg']}",
            hint="users: {NAME: {role: reader|editor|admin|none}}, grants: {experiments|"
            "registered_models: {NAME: {USER: READ|EDIT|MANAGE}}}",
        ) from None
    for name in spec.users:
        if not _USER_RE.match(name):
            raise UsageError(
                f"{source}: users.{name}: not a valid user name",
                hint="use letters, digits and . _ @ + - (at most 64 characters)",
            )
        if name == admin:
            raise UsageError(
                f"{source}: users.{name}: the stack's admin account is not managed by the file",
                hint="remove it; the admin is for `mlrig access` alone",
            )
    for kind, table in (
        ("experiments", spec.grants.experiments),
        ("registered_models", spec.grants.registered_models),
    ):
        for resource, grants in table.items():
            if not resource.strip():
                raise UsageError(f"{source}: grants.{kind}: an empty name", hint="name it")
            for user in grants:
                if user not in spec.users:
                    raise UsageError(
                        f"{source}: grants.{kind}.{resource}.{user}: no such user in `users`",
                        hint=f"add {user} under users (with a role) or remove the grant",
                    )
    return spec


def load(path: Path, *, admin: str) -> AccessFile:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"access file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"access file {path} is not readable ({type(exc).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"access file {path} is not valid YAML{where}") from None
    return parse(data, source=str(path), admin=admin)


def is_machine(name: str) -> bool:
    return name.startswith(MACHINE_PREFIX)
