"""A new repo's git and DVC wiring: git and DVC initialised, the DVC remote pointed at the
stack (endpoints only in the git-ignored config.local), the data added, one first commit."""

from __future__ import annotations

from pathlib import Path

from mlrig.adapters import dvc, git
from mlrig.contract import StackOutputs


def remote_local_options(outputs: StackOutputs) -> dict[str, str]:
    """DVC remote settings that belong in the git-ignored .dvc/config.local."""
    r = outputs.dvc_remote
    options = {"endpointurl": r.endpoint_url, "region": r.region, "profile": r.profile}
    return {k: v for k, v in options.items() if v}


def configure_remote(root: Path, outputs: StackOutputs) -> None:
    """(Re)wire a repo's default DVC remote to a stack, e.g. in a fresh clone."""
    dvc.add_remote(root, outputs.dvc_remote.url, remote_local_options(outputs))


def wire_and_commit(root: Path, outputs: StackOutputs, data: str, ref: str) -> str:
    """Turn the rendered files at root into a git+DVC repo with `data` tracked by DVC, and
    commit everything once; return the commit."""
    git.init(root)
    dvc.init(root)
    configure_remote(root, outputs)
    dvc.add(root, data)
    return git.commit_all(
        root,
        f"Initial commit from mlrig template {ref}\n\n"
        f"Wired to stack '{outputs.name}' ({outputs.kind}).",
    )
