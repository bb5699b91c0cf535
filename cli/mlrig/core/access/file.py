"""The access file a team keeps: who may use the stack's MLflow, with which role, and which
grants per experiment and registered model. No password is ever in it.

Creating experiments and registered models is for editors and admins; `create: true` lets
another user create them too (the server's guard, mlrig.tracking.guard, enforces it). Machine
identities (`repo-…`) are made by `mlrig init` / `mlrig access add-machine`, never here.

```yaml
users:
  alice: {role: editor}
  bob: {role: reader, create: true}
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

from mlrig.core.shared.names import MACHINE_PREFIX
from mlrig.errors import UsageError

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
    create: bool = Field(
        default=False,
        description="may also create experiments and registered models (editors and admins "
        "always may; the creator gets MANAGE on what it creates)",
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
        if not _USER_RE.fullmatch(name):
            raise UsageError(
                f"{source}: users.{name}: not a valid user name",
                hint="use letters, digits and . _ @ + - (at most 64 characters)",
            )
        if name == admin:
            raise UsageError(
                f"{source}: users.{name}: the stack's admin account is not managed by the file",
                hint="remove it; the admin is for `mlrig access` alone",
            )
        if is_machine(name):
            raise UsageError(
                f"{source}: users.{name}: names starting with {MACHINE_PREFIX} are machine "
                "identities, which the file cannot create, make admin or grant",
                hint="rename the person; a repository's identity comes from `mlrig init` or "
                "`mlrig access add-machine PROJECT`",
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


def _line(exc: Exception, text: str) -> int | None:
    """The 1-based line of a YAML error, within the file: an error found at the end of the
    stream (an unclosed bracket or quote) is reported where the unclosed part began."""
    lines = max(1, len(text.splitlines()))
    for name in ("problem_mark", "context_mark"):
        mark = getattr(exc, name, None)
        if mark is not None and mark.line < lines:
            return int(mark.line) + 1
    return lines if getattr(exc, "problem_mark", None) is not None else None


def _yaml_load(text: str) -> object:
    """yaml.safe_load, refusing a mapping that repeats a key (safe_load keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> object:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may repeat; construct_mapping merges them
            key = loader.construct_object(key_node)
            if not isinstance(key, str | int | float | bool):
                continue  # construct_mapping refuses an unhashable key itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load(path: Path, *, admin: str) -> AccessFile:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"access file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"access file {path} is not readable ({type(exc).__name__})") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as exc:
        line = _line(exc, text)
        where = f" at line {line}" if line is not None else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if isinstance(problem, str) else ""
        raise UsageError(
            f"access file {path} is not valid YAML{where}{why}",
            hint="each key once; close every quote and bracket",
        ) from None
    return parse(data, source=str(path), admin=admin)


def is_machine(name: str) -> bool:
    return name.startswith(MACHINE_PREFIX)


def is_user_name(name: str) -> bool:
    """Whether `name` is a user name the access file would accept."""
    return bool(_USER_RE.fullmatch(name))
