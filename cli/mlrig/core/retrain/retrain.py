"""`mlrig retrain`: run a repository's pipeline on whatever data its source now holds, and
publish the result only when it is new and every step succeeded.

ingest -> validate -> preprocess -> train -> evaluate (+ champion gate) run in this process
through DVC's API; in an adopted repository, the team's own stages, then the gate its
answers file declares (the `retrain` block: bootstrap/declaration.py; the gate: _gate.py).
"New" means dvc.lock changed; when it did not, nothing is created. When it did: commit
(dvc.lock, the snapshot record, the metrics), `dvc push`, the champion's image built and
pushed when the gate promoted the candidate, then `git push`. Any failure, and a kill (see
`recover`), puts the repository and the `champion` alias back as they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlrig.adapters import dvc, git
from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.core.retrain import _repo as retrain_repo
from mlrig.core.retrain import state as retrain_state
from mlrig.core.stack import env as stack_env
from mlrig.errors import Conflict, MlrigError, UsageError

Log = Callable[[str], None]


class RetrainFailed(MlrigError):
    exit_code = 9


@dataclass(frozen=True)
class RetrainResult:
    changed: bool
    snapshot: str | None
    version: str | None = None
    champion_moved: bool = False
    decision: str | None = None  # the gate's verdict: "promoted" | "kept"
    image: str | None = None
    digest: str | None = None
    commit: str | None = None
    message: str = ""  # what happened, in one line for people
    previous_champion: str | None = None  # what @champion named before the run (not --json)
    run_id: str | None = None  # train's MLflow run (not --json)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("message")
        data.pop("previous_champion")
        data.pop("run_id")
        return data


@dataclass(frozen=True)
class InTask:
    """A retrain inside a one-off task (`mlrig.core.compute.task`) on a clone of the caller's
    commit: the environment is the task's own (no stack is looked up), the run id is the
    caller's (so the caller's undo finds the versions it registered), and nothing is
    published but `dvc push`: the caller applies the commit, builds the image, pushes git."""

    env: dict[str, str]
    retrain_id: str


def _root(repo: Path) -> Path:
    if not repo.is_dir() or not git.is_repo(repo):
        raise UsageError(f"{repo} is not a git repository", hint="pass --repo DIR")
    root = git.toplevel(repo)
    if not dvc.is_repo(root):
        raise UsageError(
            f"{root} is not a DVC repository", hint="run it in a repo `mlrig init` made"
        )
    return root


def _start(root: Path, log: Log, stack: str | None) -> tuple[str, str]:
    """(head, branch) of a repository a run may start in: no other run, a branch, clean."""
    saved = retrain_state.load(root)
    if saved is not None:
        if retrain_state.alive(saved.pid):
            raise Conflict(
                f"a retrain of {root} is already running (pid {saved.pid})",
                hint="wait for it to finish",
            )
        log("a previous retrain was interrupted: undoing what it left")
        recover(root, stack=stack)
    branch = git.current_branch(root)
    if branch is None:
        raise Conflict(f"{root} is on a detached HEAD", hint="check out the branch to retrain on")
    git.require_clean(root, "retrain")
    return git.head(root), branch


def retrain(
    repo: Path,
    *,
    push_image: bool = True,
    log: Log = lambda _m: None,
    stack: str | None = None,
    in_task: InTask | None = None,
) -> RetrainResult:
    """The retrain on the stack `stack` names (default: the one `stacks.resolve_name` finds
    for the repository), or inside a task (`in_task`)."""
    root = _root(repo.resolve())
    plan = retrain_repo.plan(root)
    model = plan.model
    head, branch = _start(root, log, stack)
    saved = retrain_state.new(root, head=head, branch=branch, model=model, champion=None)
    saved.champion_known = False
    outputs = None
    if in_task:
        saved.retrain_id = in_task.retrain_id
        push_image = False
        env = dict(in_task.env)
    else:
        outputs = retrain_repo.outputs(root, stack)
        env = retrain_repo.credentials(outputs, root)
    env[RUN_CONTEXT_ENV] = _run_context(saved)
    with stack_env.temporary_env(env):
        registry = _Registry({**os.environ, **env})
        saved.save(root)

        def know_champion() -> None:
            """What `champion` names, saved, so an undo or `recover` can put it back."""
            if not saved.champion_known:
                saved.champion = registry.champion(model)
                saved.champion_known = True
                saved.save(root)

        def on_stage(stage: str) -> None:
            """Before any stage but the data stages (which never touch the registry) starts."""
            log(f"Running stage '{stage}'")
            if stage.rsplit(":", 1)[-1] not in plan.data_stages:
                know_champion()

        def decide() -> dict[str, Any]:
            """The gate's decision: gate.json as a generated repository's evaluate wrote it,
            or an adopted repository's declared gate, run here on the run's candidate."""
            from mlrig.core.retrain import _gate

            if plan.declared is None:
                return retrain_repo.gate(root)
            know_champion()
            return _gate.run(registry.rest(), root, plan.declared, saved)

        try:
            result = _run(
                root,
                saved,
                outputs,
                on_stage,
                decide,
                push_image=push_image,
                push_git=in_task is None,
                log=log,
            )
        except BaseException as exc:  # a kill is `recover`'s; anything else is undone here
            _undo(root, saved, registry.rest, exc, log)
            if isinstance(exc, RetrainFailed):
                reason = (  # DVC reports a failed lookup as a failure of the stage it preceded
                    f"retrain failed reading @{retrain_state.ALIAS}: {registry.failure.message}"
                    if registry.failure
                    else exc.message
                )
                raise RetrainFailed(
                    reason,
                    hint=f"the repository is back at {head[:12]}, nothing was published; "
                    f"log: {root / retrain_state.LOG}",
                ) from exc
            raise
        retrain_state.clear(root)
    return result


# MLflow adds this JSON object's tags to every run a stage starts: the retrain's id marks
# the runs (and so the model versions) that are this run's, for an undo to find
RUN_CONTEXT_ENV = "MLFLOW_RUN_CONTEXT"


def _run_context(saved: retrain_state.SavedState) -> str:
    import json

    try:  # tags the environment already asks for stay
        tags = json.loads(os.environ.get(RUN_CONTEXT_ENV) or "{}")
    except ValueError:
        tags = {}
    tags = tags if isinstance(tags, dict) else {}
    return json.dumps({**tags, retrain_state.RUN_TAG: saved.retrain_id})


class _Registry:
    """The MLflow REST client, made on first use (a retrain with nothing new needs none)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._rest: MlflowRest | None = None
        self.failure: MlrigError | None = None  # a lookup that failed inside DVC's run

    def rest(self) -> MlflowRest:
        if self._rest is None:
            self._rest = MlflowRest.from_env(self.env)
        return self._rest

    def champion(self, model: str) -> str | None:
        try:
            return self.rest().champion(model, retrain_state.ALIAS)
        except MlrigError as exc:
            self.failure = exc
            raise


def _undo(
    root: Path,
    saved: retrain_state.SavedState,
    rest: Callable[[], MlflowRest],
    exc: BaseException,
    log: Log,
) -> None:
    """Put the repository and the alias back after `exc`; an undo that fails (reaching MLflow
    included) leaves the marker for `recover` to finish, and says so in one line."""
    log("undoing the run")
    try:
        retrain_state.restore(root, saved, rest(), log)
    except MlrigError as undo:  # the marker stays: `recover` finishes the undo
        raise RetrainFailed(
            f"{exc} (and the undo failed: {undo.message})",
            hint=f"run `mlrig retrain --recover --repo {root}` once the cause is fixed",
        ) from exc
    retrain_state.clear(root)


def _step(name: str, fn: Callable[[], Any]) -> Any:
    """Run one step; its failure becomes one line naming it."""
    try:
        return fn()
    except dvc.StageFailed as exc:
        raise RetrainFailed(f"retrain failed at {exc.stage}: {exc.reason}") from exc
    except MlrigError as exc:
        raise RetrainFailed(f"retrain failed at {name}: {exc.message}") from exc


def _run(
    root: Path,
    saved: retrain_state.SavedState,
    outputs: Any,
    on_stage: Callable[[str], None],
    decide: Callable[[], dict[str, Any]],
    *,
    push_image: bool,
    push_git: bool = True,
    log: Log,
) -> RetrainResult:
    lock = root / "dvc.lock"
    before = lock.read_bytes() if lock.exists() else b""
    log("running the pipeline (dvc repro)")
    _step("dvc repro", lambda: dvc.reproduce(root, root / retrain_state.LOG, on_stage))
    snap = retrain_repo.snapshot(root)
    if (lock.read_bytes() if lock.exists() else b"") == before:
        return RetrainResult(
            False,
            snap.md5,
            message=f"nothing new: {snap.describe()} {'is' if snap.md5 else 'are'} "
            "already the latest",
            previous_champion=saved.champion,
        )
    gate = _step("gate", decide)
    version = str(gate["version"]) if gate.get("version") else retrain_repo.registered_version(root)
    message = _commit_message(snap)
    commit = _step("commit", lambda: git.commit_paths(root, message, _run_changes(root, saved)))
    saved.commit = commit
    saved.save(root)
    log(f"committed {commit[:12]}: {message}")
    _step("dvc push", lambda: dvc.push(root))
    log("dvc push done")
    promoted = gate.get("verdict") == "promoted"
    image = digest = None
    if promoted and push_image:
        image, digest = _image(root, saved.model, outputs, log)
    if push_git and git.remote_url(root):
        _step("git push", lambda: git.push_branch(root, saved.branch))
        log(f"git push origin {saved.branch}")
    saved.phase = retrain_state.PUBLISHED
    saved.save(root)
    return RetrainResult(
        True,
        snap.md5,
        version=version,
        champion_moved=promoted,
        decision=str(gate["verdict"]) if gate.get("verdict") else None,
        image=image,
        digest=digest,
        commit=commit,
        message=retrain_repo.decision_line(version, gate),
        previous_champion=saved.champion,
        run_id=retrain_repo.run_id(root),
    )


def _run_changes(root: Path, saved: retrain_state.SavedState) -> list[str]:
    """The changed and new paths the run wrote (dvc.yaml's outputs, their .gitignore,
    dvc.lock): what its commit holds. A file someone else changed or made meanwhile is not
    the run's to commit, nor to push."""
    owned = retrain_state.run_files(root, saved)
    changed = git.changed_tracked_files(root) + git.untracked_files(root)
    return sorted({p for p in changed if p in owned})


def _commit_message(snap: retrain_repo.Snapshot) -> str:
    """The retrain commit's message. The record is a file a stage wrote: its source and
    hash become one printable line (no trailer or second paragraph smuggled in)."""

    def line(text: str, limit: int) -> str:
        return "".join(c if c.isprintable() else "?" for c in text)[:limit]

    if not snap.md5:
        return "retrain: new pipeline inputs"
    where = f" from {line(snap.source, 200)}" if snap.source else ""
    return f"retrain: snapshot {line(snap.md5, 12)}, {snap.rows} rows{where}"


def _image(root: Path, model: str, outputs: Any, log: Log) -> tuple[str, str]:
    """Build the champion's serving image and push it, digest verified."""
    from mlrig.core.image import build as image_core
    from mlrig.core.image import push as serving_push

    uri = f"models:/{model}@{retrain_state.ALIAS}"
    built = _step(
        "image build",
        lambda: image_core.build(uri, repo=root, stack=outputs.name, progress=log),
    )
    log(f"built {built.ref}")
    pushed = _step("image push", lambda: serving_push.push(built.ref, outputs, progress=log))
    log(f"pushed {pushed.reference}")
    return pushed.reference, pushed.digest


# -- a run made elsewhere (a remote task): its commit applied here ------------------------------
@dataclass(frozen=True)
class Prepared:
    """What a remote run starts from: the repository checked as a local run checks it."""

    root: Path
    model: str
    head: str
    branch: str
    outputs: Any  # StackOutputs
    env: dict[str, str]  # the repository's machine identity's environment


def prepare(repo: Path, *, stack: str | None, log: Log) -> Prepared:
    """The checks a local run makes before it starts (a generated, clean repository on a
    branch, no other run; an interrupted one's leftovers undone), and its credentials."""
    root = _root(repo.resolve())
    model = retrain_repo.project_name(root)
    head, branch = _start(root, log, stack)
    outputs = retrain_repo.outputs(root, stack)
    return Prepared(root, model, head, branch, outputs, retrain_repo.credentials(outputs, root))


def model_name(repo: Path) -> str:
    """The model a retrain of the repository registers (a remote run's records name it)."""
    return retrain_repo.project_name(_root(repo.resolve()))


def undo_registry(prepared: Prepared, saved: retrain_state.SavedState, log: Log) -> None:
    """A run that produced nothing to apply: the versions it registered tagged undone and
    `champion` back where it was (the repository was never touched)."""
    rest = MlflowRest.from_env({**os.environ, **prepared.env})
    retrain_state.mark_undone(rest, saved, log)
    retrain_state.restore_alias(rest, saved, log)


def apply_commit(
    prepared: Prepared,
    saved: retrain_state.SavedState,
    commit: str,
    *,
    push_image: bool,
    fields: dict[str, Any],
    log: Log,
) -> RetrainResult:
    """Publish a run's commit made elsewhere, as a local run publishes its own: the commit
    (already fetched, a child of `saved.head` holding only the run's files) fast-forwarded
    onto the branch, its DVC outputs pulled, the champion's image built and pushed when it
    moved, `git push`. Any failure (and a kill: the marker is saved first, `recover` finishes)
    puts the repository and `champion` back. `fields`: the run's RetrainResult fields."""
    root = prepared.root
    saved.pid = os.getpid()
    saved.save(root)
    with stack_env.temporary_env(prepared.env):
        rest = MlflowRest.from_env({**os.environ, **prepared.env})
        try:
            if git.current_branch(root) != saved.branch or git.head(root) != saved.head:
                raise Conflict(f"{root} moved while the task ran: nothing was applied")
            git.require_clean(root, "apply a remote retrain")
            _step("apply", lambda: git.fast_forward(root, commit))
            saved.commit = commit
            saved.save(root)
            log(f"applied {commit[:12]}")
            _step("dvc pull", lambda: dvc.pull(root))
            image = digest = None
            if fields.get("champion_moved") and push_image:
                image, digest = _image(root, saved.model, prepared.outputs, log)
            if git.remote_url(root):
                _step("git push", lambda: git.push_branch(root, saved.branch))
                log(f"git push origin {saved.branch}")
            saved.phase = retrain_state.PUBLISHED
            saved.save(root)
        except BaseException as exc:
            _undo(root, saved, lambda: rest, exc, log)
            if isinstance(exc, MlrigError):
                raise RetrainFailed(
                    exc.message,
                    hint=f"the repository is back at {saved.head[:12]}, nothing was published",
                ) from exc
            raise
    retrain_state.clear(root)
    return RetrainResult(True, image=image, digest=digest, commit=commit, **fields)


def recover(repo: Path, log: Log = lambda _m: None, stack: str | None = None) -> bool:
    """Undo what a killed retrain left behind (True when there was something to undo).

    Raises, changing nothing: ConfigError when the marker is not one mlrig can trust,
    Conflict when a run is still going or the repository is no longer as the run left it
    (another branch or commit, other changes); the marker then stays for a later try."""
    root = _root(repo.resolve())
    saved = retrain_state.load(root)
    if saved is None:
        return False
    if retrain_state.alive(saved.pid):
        raise Conflict(
            f"a retrain of {root} is still running (pid {saved.pid})", hint="wait for it to end"
        )
    if saved.phase == retrain_state.PUBLISHED or _pushed(root, saved):
        retrain_state.clear(root)  # killed after the last step: the run is complete
        return False
    model = retrain_repo.plan(root).model
    if saved.model != model:
        raise Conflict(
            f"{root / retrain_state.MARKER} names model {saved.model}, but this repository's "
            f"is {model}: nothing was undone",
            hint="check `git status` and the champion alias by hand, then delete the file",
        )
    retrain_state.check(root, saved)  # refuse before asking the stack for anything
    env = retrain_repo.credentials(retrain_repo.outputs(root, stack), root)
    with stack_env.temporary_env(env):
        retrain_state.restore(root, saved, MlflowRest.from_env({**os.environ, **env}), log)
    retrain_state.clear(root)
    return True


def _pushed(root: Path, saved: retrain_state.SavedState) -> bool:
    """The run's commit is what origin's branch holds (`git push` updates the remote-tracking
    ref): it was killed after publishing, before the marker said so."""
    if saved.commit is None or git.current_branch(root) != saved.branch:
        return False
    tracking = git.commit_of(root, f"refs/remotes/origin/{saved.branch}")
    return tracking == saved.commit == git.head(root)
