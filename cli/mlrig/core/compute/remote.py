"""`mlrig retrain --remote`: the caller's side of a retrain run as a one-off task.

submit: the checks a local run makes, the repository's trainer image (built or reused, by
digest), `champion` read, the branch's commit bundled into the stack's storage (`store`:
the DVC remote's folder on a local stack, the DVC bucket on AWS) under
`mlrig-remote/<project>/<run id>/` (the run id is the retrain's random id, known before the
task exists; result.json names the task), and the TaskSpec submitted to the stack's backend
(`local`: a container on the engine; `aws`: a Fargate task on the stack's cluster) with the
repository's machine identity (its password a SecretRef: a file of the stack's folder, or
its Secrets Manager secret, which ECS injects). follow: the task's log lines, then its exit.
apply: result.json validated (TaskResult), the bundle's commit checked to be one child of
the submitted sha holding only the pipeline's files, then published exactly as a local run
publishes (`retrain.apply_commit`: fast-forward, dvc pull, image, git push, the undo on any
failure), and `mlrig.compute.*` tags on train's run. A task that failed, was OOM-killed or
stopped leaves no commit; its versions are tagged undone and `champion` goes back.

The caller keeps `.dvc/tmp/mlrig-remote.json` while a task runs, and the same record in the
store at `mlrig-remote/<project>/tasks/<task id>.json`: `--attach TASK_ID` (a caller that
died, a follow that broke, `--detach`, a CI job after the one that submitted) picks the run up
from either, once it is checked to be this repository's on this stack.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.core.compute import image as trainer_image
from mlrig.core.compute import store as task_store
from mlrig.core.compute import task as task_contract
from mlrig.core.compute.local import check_size
from mlrig.core.compute.spec import Backend, SecretRef, TaskHandle, TaskSpec, TaskStatus
from mlrig.core.retrain import retrain as retrain_core
from mlrig.core.retrain import state as retrain_state
from mlrig.errors import (
    ConfigError,
    Conflict,
    CredentialsError,
    MlrigError,
    ServiceError,
    UsageError,
)

Log = Callable[[str], None]
MARKER = Path(".dvc/tmp/mlrig-remote.json")
RECORDS = "tasks"  # the store's folder of callers' records, one per task
DEFAULT_CPU = 1024  # 1 vCPU
DEFAULT_MEMORY = 4096
TAG_PREFIX = "mlrig.compute."
COMMAND = ("python", "-m", "mlrig.core.compute.task")


def cpu_units(vcpu: float) -> int:
    """--cpu in vCPU (0.25, 0.5, 1, 2, 4, ...) as Fargate CPU units."""
    units = round(vcpu * 1024)
    if units <= 0 or abs(units - vcpu * 1024) > 1e-6:
        raise UsageError(f"--cpu {vcpu} is no number of vCPU Fargate offers")
    return units


class RemoteState(BaseModel):
    """The caller's record of a task in flight (a file an earlier process left: input)."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["local", "aws"]
    # a container id (local) or an ECS task ARN (aws)
    task: str = Field(
        pattern=r"^([0-9a-f]{12,64}|arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/[A-Za-z0-9_-]+/"
        r"([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))$"
    )
    project: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,254}$")
    stack: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    head: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")
    branch: str = Field(min_length=1, max_length=255)
    champion: str | None = Field(pattern=r"^[0-9]{1,12}$")
    retrain_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    prefix: str  # the run's store URL (`store.open_store` checks it before any use)
    image: str
    cpu: int
    memory_mib: int
    spot: bool
    submitted: float

    @property
    def key(self) -> str:
        return task_key(self.task)

    def run_store(self, outputs: Any) -> task_store.Store:
        """The run's folder, once it is where this stack keeps this project's runs."""
        expected = task_store.project_store(outputs, self.project).child(self.retrain_id)
        if self.prefix != expected.url:
            raise ConfigError(
                f"the remote retrain's record names storage {self.prefix[:200]!r}, not stack "
                f"'{outputs.name}''s {expected.url}",
                hint="check the task by hand, then delete the record",
            )
        return expected

    def save(self, root: Path) -> None:
        path = root / MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with tmp.open("x") as fh:
            fh.write(self.model_dump_json(indent=1) + "\n")
        os.replace(tmp, path)

    def saved_state(self) -> retrain_state.SavedState:
        """The undo's record, as a local run saves it before it starts."""
        return retrain_state.SavedState(
            pid=os.getpid(),
            head=self.head,
            branch=self.branch,
            model=self.project,
            champion=self.champion,
            started=self.submitted,
            retrain_id=self.retrain_id,
        )


def task_key(task: str) -> str:
    """What a task is called in records and messages: an ECS task's ID (its ARN's last part),
    a container's id."""
    return task.rsplit("/", 1)[-1]


def short(task: str) -> str:
    """The task as messages name it (and `--attach` takes): an ECS task ID whole, 12
    characters of a container id."""
    return task_key(task) if task.startswith("arn:") else task[:12]


def _parse_state(text: str, where: str) -> RemoteState:
    try:
        return RemoteState.model_validate_json(text)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(
            f"{where} is not a record mlrig can trust ({type(exc).__name__})",
            hint="check the task (`docker ps`, or the ECS console) and the champion alias, "
            "then delete the record",
        ) from None


def load_state(root: Path) -> RemoteState | None:
    try:
        text = (root / MARKER).read_text()
    except FileNotFoundError:
        return None
    return _parse_state(text, str(root / MARKER))


@dataclass(frozen=True)
class Submitted:
    handle: TaskHandle
    state: RemoteState
    prepared: retrain_core.Prepared

    @property
    def attach(self) -> str:
        task = short(self.handle.id)
        return f"mlrig retrain --remote --attach {task} --repo {self.prepared.root}"


def backend_for(outputs: Any) -> Backend:
    """The stack's compute backend: its local engine, or its ECS cluster."""
    if outputs.kind == "local":
        from mlrig.core.compute.local import LocalBackend

        return LocalBackend(outputs)
    from mlrig.core.compute.aws import AwsBackend

    return AwsBackend(outputs)


def task_login(outputs: Any, project: str) -> tuple[dict[str, str], tuple[SecretRef, ...]]:
    """How the task logs in to MLflow: as the repository's machine identity, its password a
    secret. An AWS stack's tracking server always asks for one, also when the caller's
    outputs record no login (CI's, written from the answers: its caller holds an OIDC token,
    which would expire long before a task ends)."""
    from mlrig.core.shared.names import machine_user

    if outputs.mlflow.auth is None and outputs.kind != "aws":
        return {}, ()
    return {"MLFLOW_TRACKING_USERNAME": machine_user(project)}, (_secret(outputs, project),)


def _secret(outputs: Any, project: str) -> SecretRef:
    """The repository's machine identity's password as the task receives it: the stack's
    Secrets Manager secret (by name: ECS reads it in the task's region), or its file."""
    from mlrig.core.access import identities
    from mlrig.core.shared.names import machine_user

    user = machine_user(project)
    if outputs.kind == "aws":
        source = identities.aws_secret_name(outputs.name, user)
    else:
        source = str(identities.local_secret_file(outputs.name, user))
    return SecretRef(name="MLFLOW_TRACKING_PASSWORD", source=source)


def _check_source(root: Path) -> None:
    """The task reads the data source from inside the stack: a path on this machine
    outside the repository is not there (nor on Fargate). One line, before anything."""
    import yaml

    try:
        params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # the pipeline itself reports it, as locally
    source = ((params.get("ingest") or {}) if isinstance(params, dict) else {}).get("source")
    if not isinstance(source, str) or "://" in source:
        return
    path = PurePosixPath(source)
    if path.is_absolute() or ".." in path.parts:
        raise UsageError(
            f"params.yaml's ingest.source {source} is a path on this machine, which the task "
            "cannot read",
            hint="put the data where the stack's storage is and name it there "
            "(remote://<dvc remote>/path or s3://...), or retrain here without --remote",
        )


def submit(
    repo: Path,
    *,
    cpu: int = DEFAULT_CPU,
    memory_mib: int = DEFAULT_MEMORY,
    spot: bool = False,
    stack: str | None = None,
    log: Log = lambda _m: None,
    base_image: str | None = None,
) -> Submitted:
    """Check, build or reuse the image, bundle the commit, submit the task."""
    from mlrig.adapters import git
    from mlrig.adapters.mlflow_rest import MlflowRest
    from mlrig.core.stack.env import settings_env

    check_size(cpu, memory_mib)
    prepared = retrain_core.prepare(repo, stack=stack, log=log)
    root, outputs, project = prepared.root, prepared.outputs, prepared.model
    backend = backend_for(outputs)
    running = backend.active(project)
    if running:
        raise Conflict(
            f"a remote retrain of {project} is already running (task {short(running[0])})",
            hint=f"follow it: `mlrig retrain --remote --attach {short(running[0])}`, or wait",
        )
    _check_source(root)
    built = trainer_image.build(root, project, outputs, progress=log, base_image=base_image)
    log(f"trainer image {built.reference}")
    champion = MlflowRest.from_env({**os.environ, **prepared.env}).champion(
        project, retrain_state.ALIAS
    )
    retrain_id = secrets.token_hex(16)
    project_store = task_store.project_store(outputs, project)
    run_store = project_store.child(retrain_id)
    with tempfile.TemporaryDirectory(prefix="mlrig-submit-") as tmp:
        bundle = Path(tmp) / task_contract.SOURCE_BUNDLE
        git.bundle_create(root, bundle, [f"refs/heads/{prepared.branch}"])
        run_store.put_file(task_contract.SOURCE_BUNDLE, bundle)
    environment = settings_env(outputs)
    environment.pop("AWS_PROFILE", None)  # the task has its own role, no profile
    environment.update(
        {
            task_contract.ENV_PREFIX: run_store.url,
            task_contract.ENV_SHA: prepared.head,
            task_contract.ENV_BRANCH: prepared.branch,
            task_contract.ENV_RETRAIN_ID: retrain_id,
        }
    )
    name, email = git.author(root) or (None, None)  # who a local run's commit would name
    for var, value in (
        (task_contract.ENV_GIT_REMOTE, _public_remote(root)),
        (task_contract.ENV_GIT_NAME, name),
        (task_contract.ENV_GIT_EMAIL, email),
    ):
        if value:
            environment[var] = value
    login, secret_refs = task_login(outputs, project)
    environment.update(login)
    spec = TaskSpec(
        project=project,
        image=built.reference,
        command=COMMAND,
        environment=environment,
        secrets=secret_refs,
        cpu=cpu,
        memory_mib=memory_mib,
        spot=spot,
        labels={"mlrig.retrain.id": retrain_id},
    )
    try:
        handle = backend.submit(spec)
    except BaseException:
        _quietly(run_store.remove_all)
        raise
    try:  # a task nothing records would move `champion` with nobody to apply or undo it
        state = RemoteState(
            backend=handle.backend,
            task=handle.id,
            project=project,
            stack=outputs.name,
            head=prepared.head,
            branch=prepared.branch,
            champion=champion,
            retrain_id=retrain_id,
            prefix=run_store.url,
            image=built.reference,
            cpu=cpu,
            memory_mib=memory_mib,
            spot=spot,
            submitted=time.time(),
        )
        state.save(root)
    except BaseException:
        _quietly(lambda: backend.stop(handle, "its caller failed before recording it"))
        _quietly(run_store.remove_all)
        raise
    try:  # where a fresh checkout's `--attach` finds it
        project_store.put_text(f"{RECORDS}/{state.key}.json", state.model_dump_json(indent=1))
    except MlrigError as exc:
        log(f"the task's record could not be stored ({exc.message}): attach from this clone")
    log(f"submitted task {short(handle.id)} ({cpu / 1024:g} vCPU, {memory_mib} MiB)")
    return Submitted(handle, state, prepared)


def _quietly(fn: Callable[[], Any]) -> None:
    import contextlib

    with contextlib.suppress(MlrigError, OSError):
        fn()


def _public_remote(root: Path) -> str | None:
    """origin's URL without credentials (what the pipeline's runs record)."""
    from mlrig.adapters import git

    url = git.remote_url(root)
    if not url:
        return None
    url = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/]*@", r"\1", url)  # user:token@ goes
    return url if not url.startswith("-") and "\n" not in url else None


_WANTED = re.compile(
    r"^[0-9a-f]{12,64}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)


def attach(repo: Path, task_id: str, *, stack: str | None, log: Log) -> Submitted:
    """The task a caller submitted from this repository, to follow and apply: its record in
    this clone, else the one the caller left in the stack's storage (a fresh checkout)."""
    from mlrig import contract
    from mlrig.adapters import git
    from mlrig.core.stack import stacks

    root = Path(git.toplevel(repo.resolve()))
    wanted = task_key(task_id.strip()).lower()
    if not _WANTED.fullmatch(wanted):
        raise UsageError(
            f"{task_id[:120]!r} is not a task `retrain --remote` printed",
            hint="pass its task ID or ARN (a container id: 12 characters at least)",
        )
    state = load_state(root)
    if state is None or not state.key.startswith(wanted):
        project = retrain_core.model_name(root)
        outputs = contract.load(stacks.resolve_name(stack, repo=root))
        state = _stored_state(outputs, project, wanted)
        if state is None:
            raise UsageError(
                f"no remote retrain {wanted} of {project} on stack '{outputs.name}' to attach to "
                "(applied or undone already, or never submitted)",
                hint="pass the task ID `retrain --remote` printed",
            )
        state.save(root)
    prepared = _prepared_for(root, state, stack)
    handle = TaskHandle(backend=state.backend, id=state.task, project=state.project)
    log(f"attached to task {short(state.task)}")
    return Submitted(handle, state, prepared)


def _stored_state(outputs: Any, project: str, wanted: str) -> RemoteState | None:
    """The caller's record of task `wanted` (a prefix of its key) in the stack's storage,
    checked to be this project's on this stack; None when there is none."""
    store = task_store.project_store(outputs, project)
    names = [n for n in store.names(RECORDS) if n.endswith(".json") and n.startswith(wanted)]
    if len(names) > 1:
        raise UsageError(f"{wanted} names more than one task", hint="pass more of its ID")
    if not names:
        return None
    where = f"{store.url}/{RECORDS}/{names[0]}"
    state = _parse_state(store.read_text(f"{RECORDS}/{names[0]}") or "", where)
    if state.project != project or state.stack != outputs.name or f"{state.key}.json" != names[0]:
        raise ConfigError(
            f"{where} is not a record of {project} on stack '{outputs.name}'",
            hint="delete it if it is not yours to keep",
        )
    state.run_store(outputs)
    return state


def _prepared_for(root: Path, state: RemoteState, stack: str | None) -> retrain_core.Prepared:
    from mlrig import contract
    from mlrig.core.access import identities
    from mlrig.core.stack import stacks

    if retrain_core.model_name(root) != state.project:
        raise ConfigError(
            f"{root / MARKER} names project {state.project}, not this repository's",
            hint="delete the file if it is not this repository's",
        )
    outputs = contract.load(stacks.resolve_name(stack or state.stack, repo=root))
    if outputs.name != state.stack or outputs.kind != state.backend:
        raise UsageError(
            f"task {short(state.task)} ran on stack '{state.stack}', not '{outputs.name}'",
            hint=f"attach with --stack {state.stack}",
        )
    state.run_store(outputs)
    env = identities.repo_env(outputs, root)
    return retrain_core.Prepared(root, state.project, state.head, state.branch, outputs, env)


class FollowBroken(MlrigError):
    exit_code = 10


class Interrupted(MlrigError):
    exit_code = 130


def follow(
    sub: Submitted,
    *,
    out: Callable[[str], None],
    ask_stop: Callable[[], bool],
    backend: Any = None,
) -> TaskStatus:
    """Stream the task's lines until it stops; its final status. Ctrl-C asks `ask_stop`:
    True stops the task (its status is then the stopped one), False leaves it running
    (Interrupted, naming the attach command); a broken stream is FollowBroken, likewise."""
    backend = backend or backend_for(sub.prepared.outputs)
    try:
        for line in backend.lines(sub.handle):
            out(line)
    except KeyboardInterrupt:
        if not ask_stop():
            raise Interrupted(
                f"stopped following; task {short(sub.handle.id)} goes on",
                hint=f"apply its result later: `{sub.attach}`",
            ) from None
        backend.stop(sub.handle, "stopped at the caller's request (Ctrl-C)")
    except (ServiceError, CredentialsError) as exc:  # the network, or credentials that expired
        raise FollowBroken(
            f"following task {short(sub.handle.id)} broke ({exc.message}); the task goes on",
            hint=f"reattach: `{sub.attach}`",
        ) from None
    return _wait_stopped(backend, sub.handle)


def _wait_stopped(backend: Any, handle: TaskHandle) -> TaskStatus:
    from mlrig.wait import wait_until

    found: list[TaskStatus] = []

    def stopped() -> bool:
        found[:] = [backend.status(handle)]
        return found[0].state == "stopped"

    # ECS gives a stopped container 30 s before SIGKILL, then takes its time to say STOPPED
    wait_until(
        stopped,
        timeout=60 if handle.backend == "local" else 300,
        interval=0.5 if handle.backend == "local" else 5,
        what=f"task {short(handle.id)} to stop",
    )
    return found[0]


def apply(
    sub: Submitted,
    status: TaskStatus,
    *,
    push_image: bool,
    log: Log,
) -> retrain_core.RetrainResult:
    """The stopped task's result, published (or its registrations undone); the task's
    container and the bundle are removed once the run is applied or undone."""
    state, prepared = sub.state, sub.prepared
    saved = state.saved_state()
    backend = backend_for(prepared.outputs)
    prefix = state.run_store(prepared.outputs)
    try:
        result = _read_result(prefix, state)  # a failed task's says why, when it got that far
        # an exit code is unknown only for a task ECS has forgotten: its result then decides
        if result is None or not result.ok or status.exit_code not in (0, None):
            why = status.reason or (result.error if result else None)
            raise retrain_core.RetrainFailed(
                f"the remote retrain failed: {why or f'the task exited {status.exit_code}'}",
                hint="nothing was published; `champion` is as before",
            )
        if not result.changed:
            outcome = retrain_core.RetrainResult(False, result.snapshot, message=result.message)
        elif _applied_already(prepared, result):  # a caller killed after publishing it
            log(f"{str(result.commit)[:12]} is applied already: only the task's files go")
            _tag_compute(prepared, state, result, status)
            _forget(backend, sub, prefix)
            return retrain_core.RetrainResult(True, commit=result.commit, **_fields(result))
        else:
            _refuse_undone(prepared, result)  # `retrain --recover` rolled this run back
            commit = _fetch_commit(prepared, saved, prefix, result)
            outcome = retrain_core.apply_commit(
                prepared, saved, commit, push_image=push_image, fields=_fields(result), log=log
            )
            _tag_compute(prepared, state, result, status)
    except BaseException as exc:
        try:  # versions tagged undone, `champion` back (again, when apply_commit did: a no-op)
            retrain_core.undo_registry(prepared, saved, log)
        except MlrigError as undo:
            log(f"undoing the registry failed: {undo.message}")
        _forget(backend, sub, prefix)
        code = status.exit_code
        if isinstance(exc, retrain_core.RetrainFailed) and code is not None and code != 0:
            exc.exit_code = code  # the task's own exit code
        raise
    _forget(backend, sub, prefix)
    return outcome


def _applied_already(prepared: retrain_core.Prepared, result: task_contract.TaskResult) -> bool:
    """The branch already holds the task's commit (an apply published it, then its caller died
    before the task's files were removed): applying again would find the branch moved and
    undo a published run's registrations."""
    from mlrig.adapters import git

    return bool(result.commit) and (
        git.current_branch(prepared.root) == prepared.branch
        and git.head(prepared.root) == result.commit
    )


def _refuse_undone(prepared: retrain_core.Prepared, result: task_contract.TaskResult) -> None:
    """A run whose version was tagged undone (an interrupted apply, then `retrain --recover`)
    is not applied: its commit would name a version the registry says was rolled back."""
    from mlrig.adapters.mlflow_rest import MlflowRest

    if not result.version:
        return
    rest = MlflowRest.from_env({**os.environ, **prepared.env})
    found = _step(
        "the task's model version", lambda: rest.model_version(prepared.model, str(result.version))
    )
    if found.tags.get(retrain_state.UNDONE_TAG) == "true":
        raise retrain_core.RetrainFailed(
            f"model version {result.version} of this run was undone (`retrain --recover`): "
            "nothing applied",
            hint="retrain again for a new run",
        )


def _read_result(prefix: task_store.Store, state: RemoteState) -> task_contract.TaskResult | None:
    text = _step("the task's result", lambda: prefix.read_text(task_contract.RESULT))
    if text is None:
        return None
    try:
        result = task_contract.TaskResult.model_validate_json(text)
    except (ValidationError, ValueError):
        raise retrain_core.RetrainFailed(
            f"the task's {task_contract.RESULT} is not a result mlrig can trust: nothing applied"
        ) from None
    if result.retrain_id != state.retrain_id or result.submitted != state.head:
        raise retrain_core.RetrainFailed(
            f"the task's {task_contract.RESULT} is another run's: nothing applied"
        )
    return result


def _fetch_commit(
    prepared: retrain_core.Prepared,
    saved: retrain_state.SavedState,
    prefix: task_store.Store,
    result: task_contract.TaskResult,
) -> str:
    """The bundle's one commit, fetched, once it is a child of the submitted sha that holds
    only the files the pipeline writes."""
    from mlrig.adapters import git

    root = prepared.root
    ref = f"refs/heads/{saved.branch}"
    with tempfile.TemporaryDirectory(prefix="mlrig-result-") as tmp:
        bundle = Path(tmp) / task_contract.RESULT_BUNDLE
        if not _step("the result bundle", lambda: prefix.get_file(bundle.name, bundle)):
            raise retrain_core.RetrainFailed("the task left no result bundle: nothing applied")
        heads = _step("the result bundle", lambda: git.bundle_heads(root, bundle))
        commit = heads.get(ref)
        if commit is None or commit != result.commit:
            raise retrain_core.RetrainFailed(
                f"the task's bundle does not hold {ref} at {str(result.commit)[:12]}: "
                "nothing applied"
            )
        _step("the result bundle", lambda: git.fetch_bundle(root, bundle, ref))
    parents = git.run(root, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    owned = retrain_state.run_files(root, saved)
    others = [p for p in git.files_between(root, saved.head, commit) if p not in owned]
    if parents != [saved.head] or others:
        what = f"it changes {others[0]}" if others else "it is not one child of the submitted sha"
        raise retrain_core.RetrainFailed(f"the task's commit is not a retrain's: {what}")
    return commit


def _step(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except MlrigError as exc:
        raise retrain_core.RetrainFailed(f"{what} cannot be read: {exc.message}") from exc


def _fields(result: task_contract.TaskResult) -> dict[str, Any]:
    return {
        "snapshot": result.snapshot,
        "version": result.version,
        "champion_moved": result.champion_moved,
        "decision": result.decision,
        "message": result.message,
        "previous_champion": result.previous_champion,
        "run_id": result.run_id,
    }


def compute_tags(
    state: RemoteState, result: task_contract.TaskResult, status: TaskStatus
) -> dict[str, str]:
    """`mlrig.compute.*`: where the run trained, on what, for how long, at what cost (the
    local engine bills nothing; a Fargate task, its wall time at the list price of its size,
    Spot's when it asked for Spot: an estimate, as `--dry-run`'s)."""
    wall = max(result.finished - result.started, 0.0)
    cost = 0.0
    if state.backend == "aws":
        from mlrig.core.compute import price

        q = price.quote(price.fargate_size(state.cpu, state.memory_mib))
        cost = (q.spot_hour if state.spot else q.on_demand_hour) * wall / 3600
    return {
        f"{TAG_PREFIX}backend": state.backend,
        f"{TAG_PREFIX}task": state.task,
        f"{TAG_PREFIX}cpu": str(state.cpu),
        f"{TAG_PREFIX}memory_mib": str(state.memory_mib),
        f"{TAG_PREFIX}spot": "requested" if state.spot else "false",
        f"{TAG_PREFIX}image": state.image,
        f"{TAG_PREFIX}wall_seconds": f"{wall:.1f}",
        f"{TAG_PREFIX}cost_usd": f"{cost:.4f}" if cost else "0",
    }


def _tag_compute(
    prepared: retrain_core.Prepared,
    state: RemoteState,
    result: task_contract.TaskResult,
    status: TaskStatus,
) -> None:
    from mlrig.adapters.mlflow_rest import MlflowRest

    if not result.run_id:
        return
    rest = MlflowRest.from_env({**os.environ, **prepared.env})
    for key, value in compute_tags(state, result, status).items():
        rest.set_run_tag(result.run_id, key, value)


def _forget(backend: Backend, sub: Submitted, prefix: task_store.Store) -> None:
    """The run is over (applied or undone): its container, bundles and records go."""
    import contextlib

    with contextlib.suppress(MlrigError):
        if backend.status(sub.handle).state == "stopped":
            backend.remove(sub.handle)
    _quietly(prefix.remove_all)
    records = task_store.project_store(sub.prepared.outputs, sub.state.project)
    _quietly(lambda: records.remove(f"{RECORDS}/{sub.state.key}.json"))
    (sub.prepared.root / MARKER).unlink(missing_ok=True)
