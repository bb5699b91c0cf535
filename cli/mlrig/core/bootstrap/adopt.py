"""`mlrig init --adopt`: wire an existing git + DVC repository to a stack without rewriting
it: the DVC remote (endpoints and profiles only in the git-ignored .dvc/config.local), the
repository's machine identity with EDIT on its experiment and model, and the answers file
every other command reads. One commit of exactly those files; the team's stages, code and
data stay as they are (`dvc init` only with --dvc).

Every check runs before anything is written; a failure while writing puts the files back.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlrig import contract
from mlrig.adapters import dvc, git
from mlrig.contract import StackOutputs
from mlrig.core.bootstrap._identity import machine_identity
from mlrig.core.bootstrap._render import checked_stack_answers, identity_answer
from mlrig.core.bootstrap.declaration import Declaration, parse
from mlrig.core.bootstrap.repo import configure_remote
from mlrig.core.shared.names import (
    ADOPTED_KEY,
    RETRAIN_KEY,
    derive_project_name,
    validate_github_repo,
    validate_project_name,
)
from mlrig.core.shared.progress import Progress
from mlrig.errors import Conflict, UsageError
from mlrig.paths import ANSWERS_FILE

DVC_CONFIG = ".dvc/config"
DVC_LOCAL = ".dvc/config.local"
# what `dvc init` writes (with --dvc): committed together with the wiring
DVC_INIT_FILES = (".dvc/.gitignore", DVC_CONFIG, ".dvcignore")


@dataclass(frozen=True)
class AdoptResult:
    path: Path
    project_name: str
    stack: str
    commit: str
    remote: str  # the DVC remote's URL (the stack's)
    files: tuple[str, ...]  # what the adopt commit holds
    dvc_initialised: bool = False
    identity: str = ""
    identity_problem: str = ""
    taken_over: tuple[str, ...] = ()
    retrain_declared: bool = False  # the answers file holds a `retrain` block


def _shown(url: str) -> str:
    """A remote URL as a message may show it: never a password it holds."""
    return re.sub(r"://[^/@\s]*:[^/@\s]*@", "://***@", url)


def check_repository(root: Path, *, dvc_init: bool) -> None:
    """Refuse what adopt must not touch: not a git repository's top, no commit yet, already
    adopted (or generated), uncommitted changes, no DVC without --dvc."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory", hint="pass the repository's root")
    if not git.is_repo(root):
        raise UsageError(
            f"{root} is not a git repository",
            hint="`git init` and commit your files first, or use `mlrig init` for a new one",
        )
    if git.toplevel(root).resolve() != root.resolve():
        raise UsageError(
            f"{root} is not the top of its git repository ({git.toplevel(root)})",
            hint="pass the repository's root",
        )
    if git.commit_of(root, "HEAD") is None:
        raise UsageError(
            f"{root} has no commit yet",
            hint="commit your files first (`git add` and `git commit`): adopt adds one commit "
            "on top of yours",
        )
    if (root / ANSWERS_FILE).exists():
        raise Conflict(
            f"{root} is already wired to a stack ({ANSWERS_FILE} exists)",
            hint=f"nothing to do; to wire it to another stack, remove {ANSWERS_FILE} in a "
            "commit and adopt it again",
        )
    git.require_clean(root, "adopt it")
    if not dvc.is_repo(root) and not dvc_init:
        raise UsageError(
            f"{root} is not a DVC repository",
            hint="pass --dvc to run `dvc init` there (committed with the wiring)",
        )


def check_remote(root: Path, outputs: StackOutputs) -> bool:
    """Refuse a repository whose DVC remote points elsewhere; True when the stack's remote
    is already its default (nothing to write)."""
    want = outputs.dvc_remote.url
    for file in (DVC_CONFIG, DVC_LOCAL):
        text = (root / file).read_text(errors="replace") if (root / file).is_file() else ""
        default, urls = dvc.config_remotes(text)
        clash = urls.get(dvc.REMOTE_NAME)
        if default and default in urls and urls[default] != want:
            raise Conflict(
                f"the DVC remote '{default}' in {file} points to {_shown(urls[default])}, not "
                f"to stack '{outputs.name}''s {want}",
                hint="adopt onto the stack that owns that remote, or unset it "
                "(`dvc remote default --unset`) and adopt again",
            )
        if clash and clash != want:
            raise Conflict(
                f"{file} already has a DVC remote '{dvc.REMOTE_NAME}' at {_shown(clash)}",
                hint=f"rename it (`dvc remote rename {dvc.REMOTE_NAME} NEW`) and adopt again",
            )
    committed = (root / DVC_CONFIG).read_text(errors="replace") if dvc.is_repo(root) else ""
    default, urls = dvc.config_remotes(committed)
    return default is not None and urls.get(default) == want


def answers_text(
    outputs: StackOutputs, project: str, github_repo: str, retrain: Declaration | None = None
) -> str:
    """The answers file: the same checked answers `mlrig init` records, marked as adopted,
    and the retrain declaration when there is one."""
    import yaml

    answers = {
        "project_name": project,
        "github_repo": github_repo,
        "mlflow_username": identity_answer(outputs, project),
    }
    checked = checked_stack_answers(outputs, answers)
    header = (
        "# Written by `mlrig init --adopt`: the stack this repository is wired to. Every mlrig\n"
        "# command reads it; no template made this repository (`mlrig update` has none).\n"
    )
    block = {RETRAIN_KEY: retrain.model_dump(mode="json", exclude_none=True)} if retrain else {}
    return header + yaml.safe_dump({ADOPTED_KEY: True, **checked, **block}, sort_keys=False)


@contextmanager
def _restored_on_failure(root: Path, files: tuple[str, ...]) -> Iterator[None]:
    """Put back files (and remove the ones made) when the block fails, `.dvc/` included
    when it did not exist before."""
    before = {f: (root / f).read_bytes() if (root / f).is_file() else None for f in files}
    had_dvc = (root / ".dvc").exists()
    try:
        yield
    except BaseException:
        for file, data in before.items():
            if data is not None:
                (root / file).write_bytes(data)
            else:
                (root / file).unlink(missing_ok=True)
        if not had_dvc:
            shutil.rmtree(root / ".dvc", ignore_errors=True)
        raise


def adopt(
    path: Path,
    stack: str,
    *,
    name: str | None = None,
    github_repo: str = "",
    dvc_init: bool = False,
    take_over: bool = False,
    progress: Progress = lambda _m: None,
    retrain: Mapping[str, object] | None = None,
) -> AdoptResult:
    """Wire the repository at path to stack (see the module doc); nothing changes on a
    refusal. A stack that cannot be reached now does not stop it: the result says which
    command makes the machine identity later. `retrain` (data_stages, gate; see
    declaration.py) is checked against the repository's dvc.yaml and written with the
    answers, so `mlrig retrain` can run it."""
    root = path.expanduser().absolute()
    git.require()
    check_repository(root, dvc_init=dvc_init)
    project = validate_project_name(name) if name is not None else derive_project_name(root.name)
    validate_github_repo(github_repo)
    outputs = contract.load(stack)
    had_dvc = dvc.is_repo(root)
    wired = check_remote(root, outputs) if had_dvc else False
    declared = parse(dict(retrain), root) if retrain is not None else None
    text = answers_text(outputs, project, github_repo, declared)  # checked before anything
    identity, problem, revoked = machine_identity(
        outputs, project, github_repo, progress, take_over=take_over
    )
    files = (ANSWERS_FILE, *(() if had_dvc else DVC_INIT_FILES), DVC_CONFIG, DVC_LOCAL)
    with _restored_on_failure(root, files):
        if not had_dvc:
            progress("dvc init")
            dvc.init(root)
        if not wired:
            progress(f"DVC remote {outputs.dvc_remote.url}")
            configure_remote(root, outputs)
        (root / ANSWERS_FILE).write_text(text)
        changed = set(git.changed_files(root))
        committed = sorted(f for f in set(files) - {DVC_LOCAL} if f in changed or not had_dvc)
        commit = git.commit_paths(
            root,
            f"Wire to mlrig stack '{outputs.name}' ({outputs.kind})\n\n"
            f"Adopted by `mlrig init --adopt`: project {project}, DVC remote "
            f"{outputs.dvc_remote.url}.",
            committed,
        )
    return AdoptResult(
        root,
        project,
        outputs.name,
        commit,
        outputs.dvc_remote.url,
        tuple(committed),
        not had_dvc,
        identity,
        problem,
        revoked,
        declared is not None,
    )
