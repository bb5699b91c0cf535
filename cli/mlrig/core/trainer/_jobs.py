"""The retraining service's logic: a FIFO of jobs, one `mlrig retrain` child at a time.

State lives with the stack, never in the repo (a retrain must find the repo as git left
it): `<stack dir>/trainer/<repo name>-<hash of its path>/` holds `jobs.db` and `logs/`.

One service per repository: start-up first takes the state folder's lock (a second
`trainer serve` is refused and touches nothing; the lock is held until stop). Then jobs left
`running` by a service that died are marked failed ("interrupted: service stopped", log
kept), what is left of their process group is killed, and `retrain.recover(repo)` puts the
repo back as it was (a refusal there stops the start with its one line); then queued jobs
run, oldest first. At most MAX_QUEUED jobs wait; `submit` refuses more (QueueFull).

Graceful stop (SIGTERM): the running job is interrupted, not awaited (a retrain can take
minutes, longer than any container stop timeout): its process group gets SIGTERM, then
SIGKILL after a grace period; the job is marked failed the same way; recover runs; queued
jobs stay queued for the next start.

A remote job (`retrain --remote`) is the exception: its task runs on without the service.
Killed or stopped while its task is recorded, it stays `running`, and the next start-up
attaches to the task (see _resume) before any queued job runs: the job then ends succeeded
or failed with the result of its task, as a job never interrupted would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlrig import paths
from mlrig.core.trainer import _resume
from mlrig.core.trainer._store import INTERRUPTED, Compute, Job, JobStore
from mlrig.errors import MlrigError

log = logging.getLogger("mlrig.trainer")
STOP_GRACE = 10.0
MAX_QUEUED = 10  # jobs waiting behind the running one; POST /train answers 429 beyond
POLL = 1.0
# the retrain pipeline's stages as DVC announces them
STAGE_RE = re.compile(r"Running stage '([\w.@-]+)'")
FAILED_RE = re.compile(r"retrain failed at (?:stage )?'?([\w. @-]+?)'?:")
RETRAIN_STEPS = (
    ("running the pipeline", "pipeline"),
    ("committed ", "commit"),
    ("dvc push", "dvc push"),
    ("built ", "image build"),
    ("pushed ", "image push"),
    ("git push", "git push"),
    ("undoing", "undo"),
)
STAGE_POLL = 0.5


def state_dir(stack: str, repo: Path) -> Path:
    repo = repo.resolve()
    key = hashlib.sha256(str(repo).encode()).hexdigest()[:10]
    return paths.stack_dir(stack) / "trainer" / f"{repo.name}-{key}"


def retrain_argv(repo: Path, push_image: bool | None, compute: Compute | None = None) -> list[str]:
    """Contract C: the child each job runs."""
    argv = [sys.executable, "-m", "mlrig", "retrain", "--repo", str(repo), "--json"]
    if push_image is not None:
        argv.append("--push-image" if push_image else "--no-push-image")
    if compute is not None:
        argv.append("--remote")
        if compute.cpu is not None:
            argv += ["--cpu", f"{compute.cpu / 1024:g}"]
        if compute.memory_mib is not None:
            argv += ["--memory", str(compute.memory_mib)]
        if compute.spot:
            argv.append("--spot")
    return argv


def attach_argv(repo: Path, push_image: bool | None, task: str) -> list[str]:
    """The child that picks up a remote job's task after a restart: it follows the task and
    applies (or undoes) its result, printing the result as the job's first child would."""
    argv = [sys.executable, "-m", "mlrig", "retrain", "--repo", str(repo), "--json"]
    if push_image is not None:
        argv.append("--push-image" if push_image else "--no-push-image")
    return [*argv, "--remote", "--attach", task]


def step_of(line: str) -> str | None:
    """The step a log line announces, if any: a DVC stage, the stage or step a failure
    names, or one of `mlrig retrain`'s own steps after the pipeline."""
    for pattern in (STAGE_RE, FAILED_RE):
        match = pattern.search(line)
        if match:
            return match.group(1)
    text = line.lstrip("•* \t")
    return next((step for prefix, step in RETRAIN_STEPS if text.startswith(prefix)), None)


def pipeline_stages(repo: Path) -> set[str]:
    """The stage names in the repo's dvc.yaml (empty when it cannot be read)."""
    import yaml

    try:
        stages = yaml.safe_load((repo / "dvc.yaml").read_text()).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return set()
    return {str(name) for name in stages}


def stage_running(modules: list[str], stages: set[str]) -> str | None:
    """The stage whose `python -m <package>.<stage>` runs now, if one does."""
    for module in reversed(modules):
        name = module.rsplit(".", 1)[-1]
        if name in stages:
            return name
    return None


def result_of(line: str | None) -> dict[str, Any] | None:
    if not line:
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def error_of(returncode: int, stderr_tail: list[str]) -> str:
    """mlrig's one-line error, else the child's last words, else its exit code."""
    for line in reversed(stderr_tail):
        text = line.strip()
        if text.lower().startswith("error:"):
            return text[len("error:") :].strip()
    last = next((ln.strip() for ln in reversed(stderr_tail) if ln.strip()), "")
    return f"exit code {returncode}" + (f": {last}" if last else "")


class Trainer:
    """Jobs in a JobStore, run one at a time by one worker thread."""

    def __init__(
        self,
        repo: Path,
        store: JobStore,
        *,
        command: Callable[[Job], list[str]] | None = None,
        attach: Callable[[Job, str], list[str]] | None = None,
        recover: Callable[[], object] | None = None,
        env: Mapping[str, str] | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.repo = repo.resolve()
        self.store = store
        self.max_queued = max_queued
        self._held: Any = None  # the store's lock while this trainer owns its jobs
        self._command = command or (
            lambda job: retrain_argv(self.repo, job.push_image, job.compute)
        )
        self._attach = attach or (lambda job, task: attach_argv(self.repo, job.push_image, task))
        self._recover = recover or self._recover_repo
        self._resumed: list[tuple[Job, str]] = []  # remote jobs start-up picks up, in order
        self.resumed: tuple[str, ...] = ()  # their ids, for the service's start-up lines
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._child: Any = None  # the running Child, for stop()
        self._thread: threading.Thread | None = None
        # called on the worker thread with each finished job (the monitor schedule's gate
        # and canary step); its failure is logged, never the worker's end
        self.on_finished: Callable[[Job], None] | None = None

    def _recover_repo(self) -> object:
        from mlrig.core.retrain import retrain

        # on the stack the jobs retrain on (serve passes it in their environment)
        return retrain.recover(self.repo, stack=self._env.get("MLRIG_STACK") or None)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> list[str]:
        """Recover from a service that died, then start the worker. Returns the ids of the
        jobs found interrupted."""
        from mlrig.adapters import trainer_process

        self._held = self.store.lock()  # Conflict while another service owns these jobs
        try:
            left = self.store.in_state("running")
            for job in left:
                if job.pgid and job.started_at:
                    trainer_process.kill_leftover_group(
                        job.pgid, not_before=job.started_at.timestamp()
                    )
                if job.compute is None:
                    self.store.finish(job.id, "failed", error=INTERRUPTED)
            applying = self._applying()  # read before the undo clears it
            self._recover()
            interrupted = [job for job in left if job.compute is None]
            for job in left:
                if job.compute is not None and not self._resume(job, applying):
                    interrupted.append(job)
            self.resumed = tuple(job.id for job, _task in self._resumed)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._loop, name="trainer-worker", daemon=True)
        self._thread.start()
        return [job.id for job in interrupted]

    def _applying(self) -> str | None:
        """The run id in the retrain marker: an apply (or a local run) under way when the
        service stopped; UNREADABLE when the marker cannot be read (recover says why)."""
        from mlrig.core.retrain import state as retrain_state

        try:
            return _resume.applying(retrain_state.load(self.repo))
        except MlrigError:
            return _resume.UNREADABLE

    def _resume(self, job: Job, applying: str | None) -> bool:
        """Pick up the remote `job` a stopped service left (True), or mark it interrupted."""
        from mlrig.adapters import git
        from mlrig.core.compute import remote

        try:
            state = remote.load_state(self.repo)
            branch, head = git.current_branch(self.repo), git.head(self.repo)
        except MlrigError as exc:
            decision = _resume.Resume(None, exc.one_line())
        else:
            decision = _resume.decide(job, state, applying=applying, branch=branch, head=head)
        if decision.task is None:
            log.warning("job %s was interrupted by the last stop: %s", job.id, decision.why)
            self.store.finish(job.id, "failed", error=INTERRUPTED)
            return False
        log.info("job %s: %s", job.id, decision.why)
        self.store.set_pgid(job.id, None)
        self.store.set_step(job.id, "remote task")
        self._resumed.append((job, decision.task))
        return True

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Interrupt the running job (if any), recover the repo, end the worker."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            child = self._child
        if child is not None:
            child.terminate(grace)
        try:
            if self._thread is not None:
                self._thread.join()
            if child is not None:
                try:
                    self._recover()
                except MlrigError as exc:  # stopping anyway: say why the repo was left so
                    log.error("could not put %s back: %s", self.repo, exc.one_line())
        finally:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    # -- requests -------------------------------------------------------------------------
    def submit(
        self,
        push_image: bool | None = None,
        *,
        compute: dict[str, Any] | None = None,
        unless_busy: bool = False,
    ) -> Job:
        """The new queued job; QueueFull when `max_queued` wait already (or, unless_busy,
        when any job is queued or running)."""
        job = self.store.add(
            push_image,
            compute=Compute.model_validate(compute) if compute is not None else None,
            max_queued=self.max_queued,
            unless_busy=unless_busy,
        )
        self._wake.set()
        return job

    def view(self, job: Job) -> dict[str, Any]:
        data = job.model_dump(mode="json", exclude={"pgid", "push_image", "compute", "task"})
        data["log_tail"] = self.store.log_tail(job.id)
        return data

    # -- the worker -----------------------------------------------------------------------
    def _loop(self) -> None:
        resumed, self._resumed = self._resumed, []
        for left, task in resumed:  # before any queued job: each is still `running`
            if self._stopping.is_set():
                return  # still `running`: the next start-up picks it up again
            self._run(left, self._attach(left, task))
            self._finished(left.id)
        while not self._stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(POLL)
                self._wake.clear()
                continue
            self._run(job)
            self._finished(job.id)

    def _finished(self, job_id: str) -> None:
        done = self.store.get(job_id)
        if self.on_finished is None or done is None or not done.done:
            return
        try:
            self.on_finished(done)
        except Exception:  # noqa: BLE001 - the queue keeps running whatever a hook does
            log.exception("after job %s", job_id)

    def _run(self, job: Job, argv: list[str] | None = None) -> None:
        from mlrig.adapters import trainer_process
        from mlrig.core.retrain import state as retrain_state

        def on_line(line: str) -> None:
            step = step_of(line)
            if step:
                self.store.set_step(job.id, step)

        try:
            with self._lock:
                if self._stopping.is_set():  # stopped between claim and start: not run
                    self.store.finish(job.id, "failed", error=INTERRUPTED)
                    return
                child = trainer_process.Child(
                    argv or self._command(job),
                    log_path=self.store.log_path(job.id),
                    on_line=on_line,
                    env=self._env,
                    cwd=self.repo,
                    follow=self.repo / retrain_state.LOG,  # the pipeline's own output
                )
                self._child = child
            self.store.set_pgid(job.id, child.pgid)
            stages, seen, task = pipeline_stages(self.repo), None, job.task
            while child.running(STAGE_POLL):
                stage = stage_running(child.modules(), stages)
                if stage and stage != seen:
                    self.store.set_step(job.id, stage)
                    seen = stage
                if job.compute is not None and task is None:
                    task = self._record_task(job)
            done = child.wait()
        except MlrigError as exc:
            self.store.finish(job.id, "failed", error=exc.one_line())
            return
        finally:
            with self._lock:
                self._child = None
        if self._stopping.is_set() and done.returncode != 0:
            following = self._applying() is None  # an apply under way is undone by stop()
            if job.compute is not None and following and self._record_task(job) is not None:
                self.store.set_pgid(job.id, None)  # its task goes on: the next start attaches
                return
            self.store.finish(job.id, "failed", error=INTERRUPTED)
        elif done.returncode != 0:
            self.store.finish(job.id, "failed", error=error_of(done.returncode, done.stderr_tail))
        elif (result := result_of(done.last_stdout)) is None:
            self.store.finish(job.id, "failed", error="retrain printed no JSON result")
        else:
            self.store.finish(job.id, "succeeded", result=result)

    def _record_task(self, job: Job) -> str | None:
        """The remote job's task, recorded on the job once the caller's record names one
        its child submitted (None until then)."""
        from mlrig.core.compute import remote

        current = self.store.get(job.id)
        if current is not None and current.task is not None:
            return current.task
        try:
            task = _resume.submitted_by(job, remote.load_state(self.repo))
            if task is not None:
                self.store.set_task(job.id, task)
        except MlrigError as exc:  # a record mlrig cannot trust: the child itself says so
            log.warning("job %s: %s", job.id, exc.one_line())
            return None
        return task
