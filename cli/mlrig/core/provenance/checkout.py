"""`mlrig checkout`: a workspace at the commit or experiment that produced a model version,
image or run, its data pulled from the DVC remote, verified against what the run recorded.

The user's own checkout is never touched: the workspace is a detached git worktree of their
repository when it holds (or can fetch) the commit, else a fresh clone of the remote the run
recorded. Whatever fails on the way, the worktree or clone made so far is removed again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlrig.adapters import dvc, git
from mlrig.contract import StackOutputs
from mlrig.core.provenance import _checkout_verify as checkout_verify
from mlrig.core.provenance import _inputs as provenance_input
from mlrig.core.provenance import record as p
from mlrig.core.provenance.record import RestorePoint
from mlrig.core.shared import dvc_tables
from mlrig.core.shared.progress import Progress, no_progress
from mlrig.core.stack.env import temporary_env
from mlrig.errors import Conflict, MlrigError, ServiceError

Fetch = dvc_tables.Fetch


class NotRestorable(MlrigError):
    """The run cannot be brought back bit for bit (dirty tree, commit not recorded...)."""


@dataclass(frozen=True)
class Target:
    """What checkout restores, in plain terms (a provenance record reduced to it)."""

    run_id: str
    sha: str | None  # None: found only once the recorded remote is cloned
    files: Mapping[str, str]  # {path: md5} of the stage's deps and outs
    tags: Mapping[str, str] = field(default_factory=dict)  # the run's, to resolve in a clone
    exp_ref: str | None = None
    git_remote: str | None = None
    params_md5: str | None = None
    stage: str = p.TRAIN_STAGE
    label: str | None = None  # default folder name: <model>-v<version>
    # a run without mlrig's tags: restore its commit and what that commit's dvc.lock records,
    # and say what cannot be verified against the run (one line each)
    unverified: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workspace:
    root: Path
    sha: str
    source: Path | None  # the repository it is a worktree of; None for a clone
    remote: str | None  # what was cloned
    pulled: int  # files fetched from the DVC remote
    lacking: tuple[str, ...] = ()  # what an unverified checkout could not restore


def default_into(label: str, start: Path | None = None) -> Path:
    """./<label>, except inside a git work tree: next to it, so the user's `git status`
    does not grow an untracked folder."""
    start = (start or Path.cwd()).resolve()
    base = git.toplevel(start).parent if git.is_repo(start) else start
    return base / label


def check_into(into: Path) -> None:
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise Conflict(f"{into} exists and is not empty", hint="pass --into a new or empty DIR")


def source_repo(repo: Path | None, target: Target) -> Path | None:
    """The repository to make a worktree of: --repo (which must hold or fetch the commit),
    else the one around the current directory when it does; None: clone the remote."""
    candidate = repo if repo is not None else Path.cwd()
    if not git.is_repo(candidate):
        if repo is not None:
            raise NotRestorable(f"{repo} is not a git repository", hint="pass --repo a clone")
        return None
    top = git.toplevel(candidate)
    if target.sha and git.commit_of(top, target.sha):
        return top
    if target.sha and target.exp_ref:
        # the experiment's commits only (no ref is made in the user's repository): from its
        # own origin, and from the recorded remote only into a repository the user named
        origin = "origin" if git.remote_url(top) else None
        remotes = (origin, target.git_remote if repo is not None else None)
        for remote in dict.fromkeys(r for r in remotes if r):
            if git.fetch_ref(top, remote, target.exp_ref) and git.commit_of(top, target.sha):
                return top
    if repo is not None:
        raise NotRestorable(
            f"{top} does not hold commit {(target.sha or '?')[:12]} of run {target.run_id}",
            hint="fetch it there, or leave out --repo to clone the recorded remote",
        )
    return None


@contextmanager
def _undo_on_failure(into: Path, source: Path | None) -> Iterator[None]:
    existed = into.exists()
    try:
        yield
    except BaseException:
        if source is not None:
            git.worktree_remove(source, into)
        shutil.rmtree(into, ignore_errors=True)
        if existed:  # it was there, empty: leave it so
            into.mkdir(parents=True, exist_ok=True)
        raise


def _clone(into: Path, target: Target, progress: Progress) -> str:
    """Clone the recorded remote into `into` and check out the run's restore point."""
    if not target.git_remote:
        raise NotRestorable(
            f"run {target.run_id} recorded no git remote and no local repository holds its "
            f"commit {(target.sha or '?')[:12]}",
            hint="run this inside the project's repository or pass --repo DIR",
        )
    progress(f"cloning {target.git_remote}")
    git.clone(target.git_remote, into)
    if target.exp_ref:  # experiments are not cloned; absent, a branch may still record the run
        git.fetch_ref(into, target.git_remote, target.exp_ref, keep=True)
    sha = target.sha or _resolve_in(into, target)
    if not git.commit_of(into, sha):
        what = f"{target.exp_ref} nor commit" if target.exp_ref else "commit"
        raise NotRestorable(
            f"{target.git_remote} has no {what} {sha[:12]}",
            hint="push it from the workspace that ran it (`git push`, `dvc exp push origin -A`)",
        )
    git.checkout_detached(into, sha)
    return sha


def _resolve_in(clone: Path, target: Target) -> str:
    """The restore point found in a fresh clone (a trace made without a local repository)."""
    from mlrig.core.provenance import resolve as provenance_resolve

    found = provenance_resolve.resolve(clone, target.run_id, target.tags)
    if not found.restorable or found.restore_point is None:
        raise NotRestorable(found.reason or provenance_resolve.NOT_RECORDED)
    return found.restore_point.sha


def _wire_remote(root: Path, source: Path | None, outputs: StackOutputs) -> None:
    """The workspace's DVC remote: the source repo's config.local if it has one, else the
    stack's remote, written to config.local so the committed .dvc/config stays as it was."""
    from mlrig.core.bootstrap.repo import remote_local_options

    local = source / ".dvc" / "config.local" if source else None
    if local is not None and local.is_file():
        shutil.copy2(local, root / ".dvc" / "config.local")
        return
    dvc.set_local_remote(root, outputs.dvc_remote.url, remote_local_options(outputs))


def _remote_fetch(outputs: StackOutputs) -> Callable[[str], bytes | None]:
    """An object of the stack's DVC remote by its hash (a directory's manifest)."""
    from mlrig.core.bootstrap.repo import remote_local_options

    url, options = outputs.dvc_remote.url, remote_local_options(outputs)
    return lambda md5: dvc.read_object(url, options, md5)


def _lacking(root: Path, missing: list[str], files: Mapping[str, str], remote: Fetch) -> list[str]:
    """What could not be restored, named: a directory out by the files of its manifest that
    the remote had no intact copy of (so the workspace's cache has none), with their md5s."""
    shown: list[str] = []
    for path in missing:
        want = files.get(path)
        if want is None:
            shown.append(path)
            continue
        if not dvc_tables.is_dir(want):
            shown.append(f"{path} (md5 {want})")
            continue

        def fetch(md5: str) -> bytes | None:
            return checkout_verify.cache_object(root, md5) or remote(md5)

        try:
            entries = dvc_tables.manifest(fetch, path, want, "the DVC remote")
        except MlrigError as exc:
            shown.append(f"{path} (md5 {want}; {exc.message})")
            continue
        absent = [e for e in entries if not checkout_verify.cached_intact(root, e.md5)]
        shown += [f"{path}/{e.relpath} (md5 {e.md5})" for e in absent] or [f"{path} (md5 {want})"]
    return shown


def _pull(
    root: Path, target: Target, env: Mapping[str, str], where: str, remote: Fetch
) -> tuple[int, list[str]]:
    """(files fetched, what could not be restored): a missing file fails a verified run's
    checkout; for an unverified one it is a line of the report."""
    if target.unverified and not dvc.is_repo(root):
        return 0, ["data: the commit has no DVC repository (.dvc/), nothing to pull"]
    with temporary_env(env):
        fetched, missing = dvc.pull(root)
        if missing:  # directories named by their files (the manifest may be on the remote only)
            missing = _lacking(root, missing, target.files, remote)
    if missing and target.unverified:
        return fetched, [f"data: the DVC remote {where} has no copy of {m}" for m in missing]
    if missing:
        shown = missing
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ServiceError(
            f"the DVC remote {where} has no intact copy of {', '.join(shown[:3])}{more}: "
            f"run {target.run_id} cannot be restored",
            hint="`dvc push` from a workspace that still has the data",
        )
    return fetched, []


def restore(
    target: Target,
    into: Path,
    outputs: StackOutputs,
    env: Mapping[str, str],
    *,
    repo: Path | None = None,
    progress: Progress = no_progress,
) -> Workspace:
    """Make the workspace at `into` (new or empty) for target, with its data; on any
    failure remove what was made and re-raise."""
    check_into(into)
    source = source_repo(repo, target)
    with _undo_on_failure(into, source):
        if source is not None and target.sha:
            progress(f"worktree of {source} at {target.sha[:12]}")
            into.parent.mkdir(parents=True, exist_ok=True)
            git.worktree_add(source, into, target.sha)
            sha = target.sha
        else:
            sha = _clone(into, target, progress)
        if dvc.is_repo(into):
            _wire_remote(into, source, outputs)
        progress(f"pulling data from {outputs.dvc_remote.url}")
        stack_remote = _remote_fetch(outputs)
        pulled, lacking = _pull(into, target, env, outputs.dvc_remote.url, stack_remote)
    remote = None if source else target.git_remote
    return Workspace(into, sha, source, remote, pulled, tuple(lacking))


@dataclass(frozen=True)
class CheckoutResult:
    target: Target
    workspace: Workspace
    differences: list[str]
    seconds: float
    stack: str
    metrics: Mapping[str, float]  # what the run recorded
    warning: str | None = None  # the run was logged by someone other than the repository
    directories: Mapping[str, int] = field(default_factory=dict)  # {dir out: files verified}


def target_of(record: p.ProvenanceRecord) -> Target:
    """What to restore for a traced record; refuses a run that cannot be restored."""
    code, run = record.code, record.the_run()
    if record.refused:
        raise NotRestorable(
            f"run {run.id} is not restorable: {record.refused[0]}",
            hint="nothing was checked out; `mlrig trace` lists every refused value",
        )
    point = code.restore_point
    unverified = tuple(f"{gap.link}: {gap.how}" for gap in record.missing)
    if unverified and code.commit:
        if point is None and not code.remote:
            raise NotRestorable(
                f"no repository here holds commit {code.commit[:12]} of run {run.id}, and the "
                "run records no git remote to clone",
                hint="run this inside a clone of the project or pass --repo DIR",
            )
        point = RestorePoint(sha=code.commit, found_by="commit-tag")  # the commit, unverified
    elif point is None and not code.remote or point is not None and not code.restorable:
        raise NotRestorable(code.reason or f"run {run.id} cannot be restored")
    model = record.model
    # a folder name: only a model name and version as MLflow makes them (no '/', no '..')
    named = model is not None and bool(
        provenance_input.MODEL_NAME.fullmatch(model.name)
        and provenance_input.VERSION.fullmatch(model.version)
    )
    label = f"{model.name}-v{model.version}" if model is not None and named else None
    return Target(
        run_id=run.id,
        sha=point.sha if point else None,
        files=record.expected_hashes(),
        tags=run.tags,
        exp_ref=code.exp_ref or _experiment(point.ref if point else None),
        git_remote=code.remote,
        params_md5=code.params_md5,
        stage=run.tags.get(p.TAG_STAGE, p.TRAIN_STAGE),
        label=label,
        unverified=unverified,
    )


def _experiment(ref: str | None) -> str | None:
    """An experiment's ref; DVC's own bookkeeping refs (refs/exps/exec/…) are none."""
    return ref if ref and not ref.startswith(f"{p.EXP_REFS}/exec/") else None


def _label(target: Target, repo: Path | None) -> str:
    if target.label:
        return target.label
    name = repo.name if repo else Path(target.git_remote or "run").stem
    return f"{name}-{(target.sha or target.run_id)[:8]}"


def recorded_elsewhere(record: p.ProvenanceRecord) -> str | None:
    """One line when the run was logged by someone other than its repository's identity."""
    run = record.run
    if run is None or run.recorded_by_repository_identity is not False:
        return None
    return (
        f"run {run.id} was logged by {run.recorded_by}, not by the repository's identity "
        f"{run.repository_identity}"
    )


def checkout(
    ref: str,
    *,
    into: Path | None = None,
    repo: Path | None = None,
    stack: str | None = None,
    progress: Progress = no_progress,
    repro: bool = False,
) -> CheckoutResult:
    """Trace ref, restore its run's workspace at `into` and verify it (see the module doc).
    repro: the caller will re-run the pipeline there, so a run someone other than the
    repository's identity logged is refused before anything is made (its tags chose the code)."""
    from mlrig import contract
    from mlrig.core.provenance import trace
    from mlrig.core.stack import env as stack_env
    from mlrig.core.stack import stacks

    started = time.monotonic()
    if into is not None:
        check_into(into)  # before anything is traced or made
    record = trace.trace(ref, stack=stack, repo=repo)
    target = target_of(record)
    warning = recorded_elsewhere(record)
    if repro and warning:
        raise NotRestorable(
            f"{warning}: --repro would run the code its tags point to",
            hint="check it out without --repro, read it, then run `dvc repro` there yourself",
        )
    where = trace.find_repo(repo)
    outputs = contract.load(name := stacks.resolve_name(stack, repo=where))
    into = (into or default_into(_label(target, where))).resolve()
    workspace = restore(
        target, into, outputs, stack_env.client_env(outputs), repo=repo, progress=progress
    )
    progress("verifying hashes, params and `dvc status`")
    with stack_env.temporary_env(stack_env.client_env(outputs)):
        found = checkout_verify.verify(
            into,
            target.files,
            target.params_md5,
            target.stage,
            _remote_fetch(outputs),
            outputs.dvc_remote.url,
        )
    seconds = time.monotonic() - started
    return CheckoutResult(
        target,
        workspace,
        found.differences,
        seconds,
        name,
        record.the_run().metrics,
        warning,
        found.directories,
    )
