"""The repository's machine identity on a stack, made by `mlrig init` and by
`mlrig init --adopt` alike (here, below both, so neither imports the other)."""

from __future__ import annotations

from mlrig import contract
from mlrig.core.shared.progress import Progress


def machine_identity(
    outputs: contract.StackOutputs,
    project: str,
    github_repo: str,
    progress: Progress,
    *,
    take_over: bool = False,
) -> tuple[str, str, tuple[str, ...]]:
    """The repository's machine identity on the stack (its experiment and registered model
    made as admin, EDIT on both): (user, "", revoked) or ("", why not, ()). A stack that
    cannot be reached now does not stop init: the message names the command that makes the
    identity later. A name someone else manages does stop it (identities.NameTaken)."""
    from mlrig.core.access import accounts as access
    from mlrig.core.access import identities
    from mlrig.core.shared.names import machine_user
    from mlrig.errors import MlrigError

    if outputs.mlflow.auth is None:
        return "", "", ()
    progress(f"machine identity {machine_user(project)} on stack '{outputs.name}'")
    try:
        result = access.add_machine(outputs, project, github_repo, take_over=take_over)
    except identities.NameTaken:
        raise
    except MlrigError as exc:
        repo_opt = f" --github-repo {github_repo}" if github_repo else ""
        return (
            "",
            (
                f"no machine identity yet ({exc.message}); once the stack answers, run "
                f"`mlrig access add-machine {project}{repo_opt} --stack {outputs.name}`"
            ),
            (),
        )
    return result.user, "", result.revoked
