"""What a retrain saves before it touches anything, and how the repository is put back.

The saved state is a marker file under `.dvc/tmp/` (git ignores it, `dvc checkout` leaves
it): the commit and branch the run started from, which version the registered model's
`champion` alias pointed at, and the run's random id, which every MLflow run its stages
start carries as the `mlrig.retrain.id` tag. It is written before the pipeline starts and
removed only when the run is complete (or undone), so a run killed at any point leaves it
behind and `recover` can finish the undo.

The marker is a file an earlier process left: it is validated before anything acts on
it, and the undo touches only what the run itself did. It acts only while the branch and
HEAD are the run's (its start, or its own unpublished commit on top), only when every
tracked change is to a file the pipeline writes, and it deletes only untracked files the
pipeline declares (dvc.yaml's outputs, the .gitignore DVC keeps beside them, dvc.lock).
A model version the run registered is tagged `mlrig.undone=true`, never deleted.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.adapters import dvc, git
from mlrig.adapters.mlflow_rest import MlflowRest, ModelVersion
from mlrig.core.provenance.record import TAG_UNDONE
from mlrig.errors import ConfigError, Conflict, CredentialsError, MlrigError, UsageError

MARKER = Path(".dvc/tmp/mlrig-retrain.json")
LOG = Path(".dvc/tmp/mlrig-retrain.log")
ALIAS = "champion"

Phase = Literal["running", "published"]
RUNNING: Phase = "running"  # nothing is published yet: undo everything
PUBLISHED: Phase = "published"  # the commit reached the git remote: the run is complete

RUN_TAG = "mlrig.retrain.id"  # on every MLflow run a retrain's stages start: the run's id
UNDONE_TAG = TAG_UNDONE  # on a model version whose retrain was undone
# model versions are looked for from this long before the run started (the server's clock
# may differ from this machine's); the run id, not the time, proves a version is the run's
CLOCK_SKEW_MS = 15 * 60 * 1000

_SHA = r"^[0-9a-f]{40}([0-9a-f]{24})?$"  # sha1, or sha256 repositories


class SavedState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int = Field(gt=0)
    head: str = Field(pattern=_SHA)
    branch: str = Field(min_length=1, max_length=255)
    model: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,254}$")  # a project name: a package
    champion: str | None = Field(pattern=r"^[0-9]{1,12}$")  # @champion before; None: none
    started: float = Field(gt=0)
    phase: Phase = RUNNING
    commit: str | None = Field(default=None, pattern=_SHA)  # the run's own commit, once made
    # False until the first stage that may touch the registry starts: `champion` is read
    # then, so a run where only ingest runs (nothing new) never asks MLflow
    champion_known: bool = True
    # the run's random id (the MLflow runs' RUN_TAG); None in a marker an older mlrig wrote
    retrain_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")

    def save(self, repo: Path) -> None:
        path = repo / MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # one an earlier process left (a symlink too) is not used
        with tmp.open("x") as fh:  # created here, never followed
            fh.write(self.model_dump_json(indent=1) + "\n")
        os.replace(tmp, path)  # a kill leaves the old marker or the new one, never half


def _invalid(repo: Path, what: str) -> ConfigError:
    return ConfigError(
        f"{repo / MARKER} is not a retrain marker mlrig can trust ({what}); nothing was undone",
        hint="check `git status`, `git log` and the champion alias by hand, then delete the file",
    )


def load(repo: Path) -> SavedState | None:
    try:
        raw = json.loads((repo / MARKER).read_text())
        saved = SavedState.model_validate(raw)
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise _invalid(repo, f"{where}: {first['msg']}") from None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise _invalid(repo, type(exc).__name__) from None
    if not git.is_branch_name(repo, saved.branch):
        raise _invalid(repo, f"branch {saved.branch!r} is not a branch name")
    return saved


def clear(repo: Path) -> None:
    (repo / MARKER).unlink(missing_ok=True)


def new(repo: Path, *, head: str, branch: str, model: str, champion: str | None) -> SavedState:
    try:
        return SavedState(
            pid=os.getpid(),
            head=head,
            branch=branch,
            model=model,
            champion=champion,
            started=time.time(),
            retrain_id=secrets.token_hex(16),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(
            f"{repo} cannot be retrained: its {first['loc'][0]} {first['input']!r} "
            f"is not valid ({first['msg']})",
            hint="the model name is .copier-answers.yml's project_name",
        ) from None


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


# -- what the run may have written --------------------------------------------------------
class RunFiles:
    """The paths a run of the pipeline writes: every stage's outs, metrics and plots in
    dvc.yaml as the run's start commit has it, the .gitignore DVC keeps beside each, the
    temporary file an atomic write leaves, and dvc.lock. Any other path is not the run's."""

    def __init__(self, outputs: Iterable[str]) -> None:
        self.files = {"dvc.lock"}
        self.dirs: set[str] = set()
        for out in outputs:
            path = PurePosixPath(out)
            if path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
                continue  # not a path inside the repository: nothing there is the run's
            parent = path.parent
            self.files |= {str(path), str(parent / ".gitignore"), str(parent / f".{path.name}.tmp")}
            self.dirs.add(str(path))  # an output directory: every file under it

    def __contains__(self, rel: object) -> bool:
        text = str(PurePosixPath(str(rel)))
        return text in self.files or any(text.startswith(f"{d}/") for d in self.dirs)


def _declared_outputs(text: bytes | None) -> list[str]:
    import yaml

    try:
        doc = yaml.safe_load(text or b"") or {}
    except yaml.YAMLError:
        return []
    stages = doc.get("stages") if isinstance(doc, dict) else None
    found: list[str] = []
    for spec in (stages or {}).values() if isinstance(stages, dict) else ():
        spec = spec.get("do", spec) if isinstance(spec, dict) else {}
        for kind in ("outs", "metrics", "plots"):
            entries = spec.get(kind) if isinstance(spec, dict) else None
            for entry in entries if isinstance(entries, list) else ():
                name = next(iter(entry), None) if isinstance(entry, dict) else entry
                if isinstance(name, str) and "${" not in name:  # templated: not one path
                    found.append(name)
    return found


def run_files(repo: Path, saved: SavedState) -> RunFiles:
    spec = f"{saved.head}:dvc.yaml"
    return RunFiles(_declared_outputs(git.show_files(repo, [spec]).get(spec)))


# -- the undo -----------------------------------------------------------------------------
def _refuse(repo: Path, found: str, saved: SavedState) -> Conflict:
    return Conflict(
        f"an interrupted retrain (started on {saved.branch} at {saved.head[:12]}) left "
        f"{repo / MARKER}, but {found}: nothing was undone",
        hint=f"undo it by hand (the run's files are dvc.yaml's outputs and dvc.lock"
        f"{f'; its commit is {saved.commit[:12]}' if saved.commit else ''}), "
        f"then delete {repo / MARKER}",
    )


def check(repo: Path, saved: SavedState) -> RunFiles:
    """The paths the run may have written, once the repository is verified to be as the run
    left it: on its branch, at its start or at its own commit, no change to anything else."""
    branch, head = git.current_branch(repo), git.head(repo)
    if branch != saved.branch:
        now = f"branch {branch}" if branch else "a detached HEAD"
        raise _refuse(repo, f"{repo} is now on {now}", saved)
    if head not in (saved.head, saved.commit):
        raise _refuse(repo, f"{branch} is now at {head[:12]}, a commit the run did not make", saved)
    owned = run_files(repo, saved)
    if head == saved.commit and head != saved.head:
        parent = git.commit_of(repo, f"{head}^")
        others = [p for p in git.files_between(repo, saved.head, head) if p not in owned]
        if parent != saved.head or others:
            what = f"it holds {others[0]}" if others else "its parent is not the run's start"
            raise _refuse(repo, f"the commit {head[:12]} is not only the run's: {what}", saved)
    foreign = [p for p in git.changed_tracked_files(repo) if p not in owned]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise _refuse(repo, f"{foreign[0]}{more} changed since, not by the run", saved)
    return owned


def restore(repo: Path, saved: SavedState, rest: MlflowRest | None, log: object = None) -> None:
    """Put the repository and the alias back as `saved` recorded them: branch and tracked
    files at the saved commit, files the run created removed, DVC outputs matching the
    saved dvc.lock, `champion` on its old version (or gone, if there was none), and each
    model version the run registered tagged as undone. Refuses (Conflict, nothing changed)
    when the repository is not as the run left it."""
    say: Callable[[str], None] = log if callable(log) else (lambda _m: None)
    owned = check(repo, saved)
    git.reset_to(repo, saved.head)
    # the work tree was clean when the run started, but an untracked file may be the
    # user's, made since: remove only the pipeline's outputs. A .gitignore the run made
    # (DVC writes one beside each output) hides the files it lists until it is gone, so
    # look again after each round
    removed: set[str] = set()
    while made := [p for p in git.untracked_files(repo) if p in owned and p not in removed]:
        for rel in made:
            removed.add(rel)
            target = repo / rel
            if target.is_file() or target.is_symlink():
                target.unlink(missing_ok=True)
    if (repo / "dvc.lock").exists():  # else no stage had run: nothing to check out
        try:
            dvc.checkout(repo)
        except MlrigError as exc:  # outputs the cache no longer holds: `dvc pull` brings them
            say(f"dvc checkout after the undo: {exc.message.splitlines()[0]}")
    # champion_known: a stage after ingest started, so train may have registered a version
    # (a run killed in ingest never asks MLflow, and its undo needs no server). Versions
    # first: one the alias cannot be taken from is still marked
    if rest is not None and saved.champion_known:
        mark_undone(rest, saved, say)
    if rest is not None and saved.champion_known:
        restore_alias(rest, saved, say)
    say(f"repository back at {saved.head[:12]}")


def restore_alias(rest: MlflowRest, saved: SavedState, say: Callable[[str], None]) -> None:
    """`champion` back on the version it named before the run (or gone, if there was none)."""
    now = rest.champion(saved.model, ALIAS)
    if now != saved.champion:
        if saved.champion is None:
            _delete_alias(rest, saved, now)
        else:
            rest.set_alias(saved.model, ALIAS, saved.champion)
        say(f"@{ALIAS} moved back to {saved.champion or '(none)'} from {now}")


def _delete_alias(rest: MlflowRest, saved: SavedState, now: str | None) -> None:
    """Remove the alias the undone run created. MLflow lets only a model's managers delete
    an alias; a repository's identity may edit, not manage."""
    try:
        rest.delete_alias(saved.model, ALIAS)
    except CredentialsError:
        raise CredentialsError(
            f"@{ALIAS} of {saved.model} names version {now}, which the undone run made, and "
            "this login may not remove an alias",
            hint=f"have an MLflow admin delete @{ALIAS} of {saved.model}, then run "
            "`mlrig retrain --recover` again",
        ) from None


def run_versions(rest: MlflowRest, saved: SavedState) -> list[ModelVersion]:
    """The versions of the model this run registered, oldest first, not yet undone. A version
    is the run's only when its MLflow run carries the run's random id (RUN_TAG): a version
    anyone else registered meanwhile is never the run's."""
    if saved.retrain_id is None:
        return []
    found: list[ModelVersion] = []
    since = int(saved.started * 1000) - CLOCK_SKEW_MS
    for version in rest.model_versions_created_since(saved.model, since):
        if not version.run_id or version.tags.get(UNDONE_TAG) == "true":
            continue
        try:
            tags: dict[str, Any] = rest.run(version.run_id).tags
        except UsageError:  # the run is gone: nothing proves the version is this run's
            continue
        if tags.get(RUN_TAG) == saved.retrain_id:
            found.append(version)
    return sorted(found, key=lambda v: int(v.version) if v.version.isdigit() else 0)


def mark_undone(rest: MlflowRest, saved: SavedState, say: Callable[[str], None]) -> list[str]:
    """Tag each model version the undone run registered (run_versions) `mlrig.undone=true`
    and say so in its description; return their numbers. Tagged, not deleted: the undo stays
    reversible, keeps the run's record, and needs no more than the edit permission a
    repository's identity has."""
    if saved.retrain_id is None:
        say("the marker has no run id (an older mlrig wrote it): model versions not marked")
        return []
    marked: list[str] = []
    for version in run_versions(rest, saved):
        rest.set_model_version_tag(saved.model, version.version, UNDONE_TAG, "true")
        rest.set_model_version_description(
            saved.model,
            version.version,
            f"Undone: registered by retrain {saved.retrain_id}, which was interrupted or "
            f"failed and was rolled back; no commit records this version.",
        )
        marked.append(version.version)
        say(f"model version {version.version} tagged {UNDONE_TAG}=true: its retrain was undone")
    return marked
