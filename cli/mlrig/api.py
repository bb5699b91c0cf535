"""mlrig's public API: everything a repository made (or adopted) by `mlrig init` may call,
nothing else.

Generated repos import only this module (their `tracking.py` does), and so does an adopted
repository's own training script (`log_provenance`), so mlrig's internals can move freely.
Names here keep their meaning and signatures across mlrig releases; a change to them is a
change to the template contract (pipeline/VERSION).
"""

from __future__ import annotations

from pathlib import Path

from mlrig.errors import MlrigError

__all__ = ["MlrigError", "log_provenance", "tracking_env"]


def tracking_env(
    repo: Path | None = None, *, stack: str | None = None, identity: str | None = None
) -> dict[str, str]:
    """The environment that points MLflow's client (and the AWS SDK under it) at the stack
    of the repository at `repo` (default: the current directory's).

    The stack is `stack` when given, else the one every mlrig command would pick:
    $MLRIG_STACK, else the stack in the repo's .copier-answers.yml, else the only stack
    there is. The credentials (MLFLOW_TRACKING_USERNAME/PASSWORD) are a machine identity's:
    `identity` (repo-NAME, made by `mlrig access add-machine NAME`) when given, which any
    repository may use, else the repository's own, `repo-<project_name>` from its answers
    file. It may write only to its own experiment and registered model; keep the result out
    of logs. No other stack secret (the admin's, the registry's) is in it.

    Raises MlrigError, with a message naming the stack and what to do, when the stack
    cannot be found, the identity is unknown or has no stored password, or its credentials
    cannot be read.
    """
    from mlrig import contract
    from mlrig.core.access import identities, identity_env
    from mlrig.core.shared.names import find_answers
    from mlrig.core.stack import stacks
    from mlrig.errors import UsageError

    where = repo or Path.cwd()
    if identity is None and find_answers(where) is None:
        raise UsageError(
            f"{where} is not in a repository made by `mlrig init`: which identity?",
            hint="pass identity='repo-NAME' (a machine identity: `mlrig access add-machine "
            "NAME`) and stack=",
        )
    name = stacks.resolve_name(stack, repo=where)
    try:
        outputs = contract.load(name)
        if identity is not None:
            return identity_env.machine_env(outputs, identity)
        return identities.repo_env(outputs, where)
    except (identities.MissingIdentity, UsageError):  # about the identity, not the stack
        raise
    except MlrigError as exc:
        raise MlrigError(f"cannot reach stack '{name}': {exc.message}", hint=exc.hint) from exc


def log_provenance(
    stage: str | None = None, *, repo: Path | None = None, run_id: str | None = None
) -> dict[str, str]:
    """Record on an MLflow run where it came from, with the same tags the template's train
    stage writes, so `mlrig trace` and `mlrig checkout` follow it: the git commit (and
    remote, without credentials), whether the workspace was dirty (and the changed files'
    MD5), the DVC stage, the hash of each of its deps and outs as dvc.lock records them, the
    MD5 of its params (and the params themselves, unless the run logged them already).

    Call it inside the run (`with mlflow.start_run():`), after the stage has written its
    outputs. `stage` defaults to the stage `dvc repro` runs (DVC_STAGE); `repo` to the
    repository being reproduced (DVC_ROOT) or holding the current directory; `run_id` to
    the active run. Returns the tags. Raises MlrigError with what to do when there is no
    run, no such stage or no git repository.
    """
    from mlrig.core.provenance import log

    return log.log_provenance(stage, repo=repo, run_id=run_id)
