"""mlrig's public API: everything a repository made by `mlrig init` may call, nothing else.

Generated repos import only this module (their `tracking.py` does), so mlrig's internals
can move freely. Names here keep their meaning and signatures across mlrig releases; a
change to them is a change to the template contract (pipeline/VERSION).
"""

from __future__ import annotations

from pathlib import Path

from mlrig.errors import MlrigError

__all__ = ["MlrigError", "tracking_env"]


def tracking_env(repo: Path | None = None) -> dict[str, str]:
    """The environment that points MLflow's client (and the AWS SDK under it) at the stack
    of the repository at `repo` (default: the current directory's).

    The stack is the one every mlrig command would pick: $MLRIG_STACK, else the stack in
    the repo's .copier-answers.yml, else the only stack there is. The credentials
    (MLFLOW_TRACKING_USERNAME/PASSWORD) are the repository's own machine identity,
    `repo-<project_name>`, which may write only to the repository's experiment and
    registered model; keep the result out of logs.

    Raises MlrigError, with a message naming the stack and what to do, when the stack
    cannot be found, the repository has no machine identity yet, or its credentials
    cannot be read.
    """
    from mlrig import contract
    from mlrig.core.access import identities
    from mlrig.core.stack import stacks

    name = stacks.resolve_name(None, repo=repo)
    try:
        return identities.repo_env(contract.load(name), repo or Path.cwd())
    except identities.MissingIdentity:
        raise
    except MlrigError as exc:
        raise MlrigError(f"cannot reach stack '{name}': {exc.message}", hint=exc.hint) from exc
