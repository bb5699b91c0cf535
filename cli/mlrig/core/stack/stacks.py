"""Back-end-agnostic stack operations: everything here reads StackOutputs only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig import contract, paths

if TYPE_CHECKING:
    from mlrig.contract import StackOutputs
    from mlrig.core.stack.facade import Stack

STACK_ENV = "MLRIG_STACK"
ANSWERS_FILE = paths.ANSWERS_FILE


def resolve_name(
    flag: str | None = None, *, repo: Path | None = None, default: str | None = None
) -> str:
    """Answer "which stack?" the one way every command does.

    The --stack flag, else $MLRIG_STACK, else the stack the repository at `repo` (default:
    the current directory or a parent of it) was created against, else the only stack
    there is, else `default` when no stack exists yet (commands that create one pass it);
    otherwise a one-line error that lists the choices.
    """
    from mlrig.errors import UsageError

    if flag:
        return flag
    if os.environ.get(STACK_ENV):
        return os.environ[STACK_ENV]
    from_repo = repo_stack(repo or Path.cwd())
    if from_repo:
        return from_repo
    names = contract.list_names()
    if len(names) == 1:
        return names[0]
    if not names and default:
        return default
    where = f"there are {len(names)}: {', '.join(names)}" if names else "no stack exists yet"
    raise UsageError(
        f"which stack? {where}",
        hint="pass --stack NAME or export MLRIG_STACK (create one with `mlrig stack up`)",
    )


def repo_stack(start: Path) -> str | None:
    """The stack named in the answers file of the repo that holds `start`, if any (the file
    is checked first: a bad one is one ConfigError, never a guess)."""
    from mlrig.core.shared.names import find_answers, load_answers

    answers = find_answers(start)
    if answers is None:
        return None
    return load_answers(answers, required=()).get("stack") or None


def outputs(name: str) -> StackOutputs:
    """The outputs of the stack called `name`, whichever kind it is, without loading its
    back-end (`stack outputs` and a push read only this document)."""
    return contract.load(contract.validate_stack_name(name))


def open(name: str) -> Stack:  # shadows the builtin on purpose: read as stacks.open(name)
    """The existing stack called `name`, whichever kind it is (unknown: StackNotFound).

    A local stack whose outputs.json is lost or corrupt still opens (its own state says it
    is local), so `status` and `down` keep working and `up` can rebuild the file.
    """
    from mlrig.errors import ConfigError, StackNotFound

    try:
        return create(name, contract.load(name).kind)
    except StackNotFound:
        raise
    except contract.WrongFolder:
        raise
    except ConfigError:
        if (paths.stack_dir(name) / contract.LOCAL_STATE_FILE).is_file():
            return create(name, "local")
        raise


def create(name: str, kind: str) -> Stack:
    """The `kind` stack called `name`, existing or about to be made by `up`.

    The one place where a stack's kind picks its back-end.
    """
    from mlrig.errors import UsageError

    if kind == "local":  # each back-end imported only when used (AWS's pulls in YAML, Pulumi)
        from mlrig.core.stack.local.facade import LocalFacade

        return LocalFacade(name)
    if kind == "aws":
        from mlrig.core.stack.aws.facade import AwsFacade

        return AwsFacade(name)
    raise UsageError(f"unknown stack kind {kind!r}", hint="use local or aws")


@dataclass(frozen=True)
class StackSummary:
    name: str
    kind: str
    mlflow: str
    registry: str
    dvc_remote: str
    problem: str = ""  # why the stack cannot be read, for a broken one


def list_stacks() -> list[StackSummary]:
    """Every stack; one whose files cannot be read is listed as broken with the reason,
    so it never hides the others."""
    from mlrig.errors import MlrigError

    result = []
    for name in contract.list_names():
        try:
            out = contract.load(name)
        except MlrigError as exc:
            result.append(StackSummary(name, "broken", "-", "-", "-", exc.one_line()))
            continue
        result.append(
            StackSummary(
                out.name, out.kind, out.mlflow_tracking_uri, out.registry_url, out.dvc_remote_url
            )
        )
    return result
