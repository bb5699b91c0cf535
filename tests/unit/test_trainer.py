"""The trainer's queue, store and child handling, with a stand-in for `mlrig retrain`.

The stand-in is a small script written by these tests (never the service's command): it
prints what `mlrig retrain --json` prints, in the modes a test asks for. The real command
runs in tests/integration/test_trainer_service.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrig.core.compute.remote import RemoteState
from mlrig.core.trainer import _jobs as core
from mlrig.core.trainer import _resume
from mlrig.core.trainer._store import INTERRUPTED, Compute, Job, JobStore
from mlrig.errors import ConfigError
from mlrig.wait import wait_until
from tests.helpers import git_as_tester

RESULT = {
    "changed": True,
    "snapshot": "abc123",
    "version": "3",
    "champion_moved": True,
    "decision": "promoted",
    "image": None,
    "digest": None,
    "commit": "f" * 40,
}

STUB = textwrap.dedent(
    """
    import json, os, pathlib, subprocess, sys, time
    mode = sys.argv[1]
    print("• running the pipeline (dvc repro)", file=sys.stderr, flush=True)
    log = pathlib.Path(".dvc/tmp/mlrig-retrain.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write("ingested 569 rows\\n")
    if mode.startswith("stage:"):  # a stage runs as `python -m <package>.<stage>`
        go = pathlib.Path(mode[6:])
        subprocess.run([sys.executable, "-m", "pkg.validate", str(go)], check=True,
                       env={**os.environ, "PYTHONPATH": "src"})
    if mode.startswith("hang:"):
        pathlib.Path(mode[5:]).write_text(str(os.getpid()))
        time.sleep(600)
    if mode == "fail":
        print("error: retrain failed at validate: stage 'validate' failed: column 'age' "
              "is missing", file=sys.stderr)
        sys.exit(9)
    if mode == "silent":
        sys.exit(0)
    print("new model version 3: champion moved to it")
    print(json.dumps(RESULT))
    """
).replace("RESULT", json.dumps(RESULT).replace("true", "True").replace("null", "None"))

STAGE_MODULE = textwrap.dedent(
    """
    import pathlib, sys, time
    go = pathlib.Path(sys.argv[1])
    while not go.exists():
        time.sleep(0.05)
    """
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src/pkg").mkdir(parents=True)
    (root / "src/pkg/__init__.py").write_text("")
    (root / "src/pkg/validate.py").write_text(STAGE_MODULE)
    (root / "dvc.yaml").write_text("stages:\n  ingest: {cmd: x}\n  validate: {cmd: y}\n")
    (root / "stub.py").write_text(STUB)
    return root


class Harness:
    """A Trainer on the stub; each submitted job takes the next mode (default: success)."""

    def __init__(self, repo: Path, state: Path) -> None:
        self.repo, self.state = repo, state
        self.modes: deque[str] = deque()
        self.recovered = 0
        self.attached: list[tuple[str, str]] = []  # (job id, task) start-up attached to
        self.trainer = self.make()

    def make(self) -> core.Trainer:
        def command(job: Job) -> list[str]:
            mode = self.modes.popleft() if self.modes else "ok"
            return [sys.executable, str(self.repo / "stub.py"), mode]

        def attach(job: Job, task: str) -> list[str]:
            self.attached.append((job.id, task))
            return command(job)

        def recover() -> bool:
            self.recovered += 1
            return False

        return core.Trainer(
            self.repo, JobStore(self.state), command=command, attach=attach, recover=recover
        )

    def done(self, job_id: str, timeout: float = 60) -> Job:
        def finished() -> Job | None:
            job = self.trainer.store.get(job_id)
            return job if job and job.done else None

        return wait_until(finished, timeout=timeout, what=f"job {job_id} finished", interval=0.05)


@pytest.fixture
def harness(repo: Path, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(repo, tmp_path / "state")
    yield h
    h.trainer.stop(grace=2)


# -- the store ----------------------------------------------------------------------------------
def test_store_runs_jobs_oldest_first_and_one_at_a_time(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    first, second = store.add(None), store.add(False)
    assert [j.id for j in store.recent()] == [second.id, first.id]
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == first.id and claimed.state == "running"
    assert claimed.started_at is not None
    assert store.claim_next() is None  # one running: nothing else starts
    store.finish(first.id, "succeeded", result={"changed": False})
    nxt = store.claim_next()
    assert nxt is not None and nxt.id == second.id and nxt.push_image is False
    again = JobStore(tmp_path).get(first.id)  # a new store on the same folder: persisted
    assert again is not None and again.result == {"changed": False} and again.finished_at


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = store.add(None)
    store.log_path(job.id).write_text("".join(f"line {i}\n" for i in range(100)))
    tail = store.log_tail(job.id, 5)
    assert tail == [f"line {i}" for i in range(95, 100)]
    assert store.log_tail("nope") == []


# -- parsing the child's output -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("Running stage 'validate':", "validate"),
        ("error: retrain failed at validate: stage 'validate' failed: x", "validate"),
        ("error: retrain failed at dvc push: remote unreachable", "dvc push"),
        ("• running the pipeline (dvc repro)", "pipeline"),
        ("• committed 0123456789ab: retrain: snapshot ab", "commit"),
        ("• pushed 127.0.0.1:5000/m@sha256:00", "image push"),
        ("rows: 569", None),
    ],
)
def test_step_of_a_log_line(line: str, step: str | None) -> None:
    assert core.step_of(line) == step


def test_stage_running_names_the_innermost_known_stage() -> None:
    stages = {"ingest", "validate", "train"}
    assert core.stage_running(["mlrig", "demo.train"], stages) == "train"
    assert core.stage_running(["mlrig"], stages) is None
    assert core.stage_running(["mlrig", "demo.helpers"], stages) is None


def test_error_of_prefers_mlrigs_one_line() -> None:
    tail = ["• undoing the run", "error: retrain failed at validate: column 'age'"]
    assert core.error_of(9, tail) == "retrain failed at validate: column 'age'"
    assert core.error_of(1, ["Traceback", "KeyError: 'x'"]) == "exit code 1: KeyError: 'x'"
    assert core.error_of(-9, []) == "exit code -9"


def test_retrain_argv_follows_the_contract(tmp_path: Path) -> None:
    argv = core.retrain_argv(tmp_path, None)
    assert argv == [sys.executable, "-m", "mlrig", "retrain", "--repo", str(tmp_path), "--json"]
    assert core.retrain_argv(tmp_path, False)[-1] == "--no-push-image"
    assert core.retrain_argv(tmp_path, True)[-1] == "--push-image"


# -- the worker ---------------------------------------------------------------------------------
def test_a_job_succeeds_with_the_result_and_the_pipeline_log(harness: Harness) -> None:
    assert harness.trainer.start() == []
    assert harness.recovered == 1  # start-up always recovers the repo first
    job = harness.done(harness.trainer.submit(None).id)
    assert job.state == "succeeded", job.error
    assert job.result == RESULT and job.error is None
    assert job.started_at and job.finished_at and job.started_at <= job.finished_at
    view = harness.trainer.view(job)
    assert "pgid" not in view
    assert "ingested 569 rows" in view["log_tail"]  # the followed pipeline log
    assert json.dumps(RESULT) in view["log_tail"]


def test_a_failed_job_names_its_step_and_error(harness: Harness) -> None:
    harness.modes.extend(["fail", "silent"])
    harness.trainer.start()
    failed = harness.done(harness.trainer.submit(False).id)
    assert failed.state == "failed" and failed.step == "validate"
    assert failed.error == (
        "retrain failed at validate: stage 'validate' failed: column 'age' is missing"
    )
    assert failed.result is None
    silent = harness.done(harness.trainer.submit(None).id)
    assert silent.state == "failed" and silent.error == "retrain printed no JSON result"


def test_the_running_stage_is_read_from_the_process_tree(harness: Harness, tmp_path: Path) -> None:
    go = tmp_path / "go"
    harness.modes.append(f"stage:{go}")
    harness.trainer.start()
    job_id = harness.trainer.submit(None).id

    def step() -> str | None:
        job = harness.trainer.store.get(job_id)
        return job.step if job and job.step == "validate" else None

    wait_until(step, timeout=30, what="the validate stage seen", interval=0.05)
    go.write_text("")
    assert harness.done(job_id).state == "succeeded"


def test_queued_jobs_run_in_order_never_two_at_once(harness: Harness) -> None:
    harness.trainer.start()
    ids = [harness.trainer.submit(None).id for _ in range(4)]
    jobs = [harness.done(i) for i in ids]
    assert [j.state for j in jobs] == ["succeeded"] * 4
    for earlier, later in zip(jobs, jobs[1:], strict=False):
        assert earlier.finished_at and later.started_at
        assert earlier.finished_at <= later.started_at


def test_stop_interrupts_the_running_job_and_keeps_the_queue(
    harness: Harness, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    harness.modes.append(f"hang:{pid_file}")
    harness.trainer.start()
    running = harness.trainer.submit(None).id
    queued = harness.trainer.submit(None).id
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))
    harness.trainer.stop(grace=2)
    job = harness.trainer.store.get(running)
    assert job is not None and job.state == "failed" and job.error == INTERRUPTED
    assert harness.trainer.store.log_tail(running)  # its log is kept
    assert not _alive(pid)
    assert harness.recovered == 2  # on start, and after the interrupted job
    waiting = harness.trainer.store.get(queued)
    assert waiting is not None and waiting.state == "queued"
    # the next start runs it
    harness.trainer = harness.make()
    harness.trainer.start()
    assert harness.done(queued).state == "succeeded"


def test_start_marks_a_job_left_running_failed_and_kills_its_group(
    repo: Path, tmp_path: Path
) -> None:
    """What a service killed with SIGKILL leaves: a running row and an orphaned group."""
    state = tmp_path / "state"
    store = JobStore(state)
    job = store.add(None)
    claimed = store.claim_next()
    assert claimed is not None
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    store.set_pgid(job.id, orphan.pid)
    store.log_path(job.id).write_text("• running the pipeline (dvc repro)\n")
    waiting = store.add(None)
    h = Harness(repo, state)
    try:
        assert h.trainer.start() == [job.id]
        orphan.wait(30)  # TimeoutExpired unless start-up killed it (it sleeps for 600 s)
        failed = h.trainer.store.get(job.id)
        assert failed is not None and failed.state == "failed" and failed.error == INTERRUPTED
        assert h.trainer.store.log_tail(job.id) == ["• running the pipeline (dvc repro)"]
        assert h.recovered == 1
        assert h.done(waiting.id).state == "succeeded"
    finally:
        h.trainer.stop(grace=2)


def test_the_child_dies_with_the_service(repo: Path, tmp_path: Path) -> None:
    """A process that ran a job and was SIGKILLed takes its child along (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from mlrig.adapters.trainer_process import Child
        child = Child([sys.executable, {str(repo / "stub.py")!r}, "hang:{pid_file}"],
                      log_path=Path({str(tmp_path / "log")!r}), on_line=lambda _l: None)
        child.wait()
        """
    )
    service = subprocess.Popen([sys.executable, "-c", script], cwd=repo)
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30))
    assert _alive(pid)
    service.kill()
    service.wait(10)
    wait_until(lambda: not _alive(pid), timeout=30, what="the child gone")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_state_lives_with_the_stack_never_in_the_repo(mlrig_home: Path, tmp_path: Path) -> None:
    root = core.state_dir("dev", tmp_path / "demo")
    assert root.parent == mlrig_home / "stacks/dev/trainer"
    assert root.name.startswith("demo-")
    assert core.state_dir("dev", tmp_path / "other" / "demo") != root
    assert not root.is_relative_to(tmp_path / "demo")


# -- a remote job the service left: start-up attaches to its task -------------------------------
TASK = "c0ffee" * 10 + "abcd"  # a container id (64 hex)


def _record(repo: Path, *, task: str = TASK, head: str, submitted: float) -> RemoteState:
    """The caller's record `retrain --remote` keeps while its task runs."""
    state = RemoteState(
        backend="local",
        task=task,
        project="demo",
        stack="dev",
        head=head,
        branch="main",
        champion="2",
        retrain_id="e" * 32,
        prefix="/srv/storage/mlrig-remote/demo/" + "e" * 32,
        image="127.0.0.1:5000/demo-trainer@sha256:" + "a" * 64,
        cpu=1024,
        memory_mib=4096,
        spot=False,
        submitted=submitted,
    )
    state.save(repo)
    return state


def _remote_job(**changes: object) -> Job:
    from datetime import UTC, datetime

    fields: dict[str, object] = {
        "id": "d" * 32,
        "state": "running",
        "compute": Compute(),
        "task": TASK,
        "created_at": datetime.now(UTC),
        "started_at": datetime.fromtimestamp(1000.0, UTC),
    }
    fields.update(changes)
    return Job.model_validate(fields)


HEAD = "1" * 40


@pytest.mark.parametrize(
    ("changes", "record", "applying", "where", "why"),
    [
        ({}, {}, None, ("main", HEAD), "attaching to task c0ffeec0ffee"),
        ({}, {}, "f" * 32, ("main", HEAD), "attaching to task"),  # another run's marker
        ({"compute": None}, {}, None, ("main", HEAD), "a local retrain"),
        ({"task": None}, {}, None, ("main", HEAD), "never recorded"),
        ({}, None, None, ("main", HEAD), "no record of task c0ffeec0ffee"),
        ({}, {"task": "ab" * 32}, None, ("main", HEAD), "another task (abababababab)"),
        ({}, {}, "e" * 32, ("main", HEAD), "stopped while applying task c0ffeec0ffee's"),
        ({}, {}, _resume.UNREADABLE, ("main", HEAD), "stopped while applying"),
        ({}, {}, None, ("main", "2" * 40), "result was applied, or the branch moved"),
        ({}, {}, None, ("other", HEAD), "result was applied, or the branch moved"),
        ({}, {}, None, (None, HEAD), "result was applied, or the branch moved"),
    ],
)
def test_start_up_attaches_only_to_its_own_unapplied_task(
    tmp_path: Path,
    changes: dict[str, object],
    record: dict[str, object] | None,
    applying: str | None,
    where: tuple[str | None, str],
    why: str,
) -> None:
    state = None
    if record is not None:
        state = _record(tmp_path, head=HEAD, submitted=2000.0).model_copy(update=record)
    job = _remote_job(**changes)
    decision = _resume.decide(job, state, applying=applying, branch=where[0], head=where[1])
    attaches = why.startswith("attaching")
    assert decision.task == (TASK if attaches else None)
    assert why in decision.why


def test_the_task_recorded_is_the_one_submitted_after_the_job_started(tmp_path: Path) -> None:
    job = _remote_job(task=None)  # started at t=1000
    assert _resume.submitted_by(job, _record(tmp_path, head=HEAD, submitted=1001.0)) == TASK
    assert _resume.submitted_by(job, _record(tmp_path, head=HEAD, submitted=999.0)) is None
    assert _resume.submitted_by(job, None) is None
    local = _remote_job(task=None, compute=None)
    assert _resume.submitted_by(local, _record(tmp_path, head=HEAD, submitted=1001.0)) is None


def test_a_task_id_is_validated_before_it_is_kept(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = store.add(None, compute=Compute())
    for bad in ("--upload-pack=x", "c0ffee", "arn:aws:ecs:eu-west-1:1:task/c/" + "a" * 32):
        with pytest.raises(ConfigError):
            store.set_task(job.id, bad)
    arn = "arn:aws:ecs:eu-west-1:123456789012:task/mlrig-dev/" + "a" * 32
    store.set_task(job.id, arn)
    kept = store.get(job.id)
    assert kept is not None and kept.task == arn


def test_the_attach_child_follows_the_contract(tmp_path: Path) -> None:
    argv = core.attach_argv(tmp_path, False, TASK)
    assert argv[1:] == [
        "-m", "mlrig", "retrain", "--repo", str(tmp_path), "--json", "--no-push-image",
        "--remote", "--attach", TASK,
    ]  # fmt: skip


def _git_repo(repo: Path) -> str:
    git_as_tester(repo, "init", "-q", "-b", "main")
    git_as_tester(repo, "add", "--all")
    git_as_tester(repo, "commit", "-qm", "first")
    return git_as_tester(repo, "rev-parse", "HEAD")


def _left_running(store: JobStore, task: str | None) -> Job:
    """What a service killed while a remote job followed its task leaves: a running row."""
    job = store.add(True, compute=Compute(cpu=2048))
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == job.id
    if task:
        store.set_task(job.id, task)
    return claimed


def test_start_attaches_to_a_remote_job_left_running_before_the_queue(
    repo: Path, tmp_path: Path
) -> None:
    head = _git_repo(repo)
    state = tmp_path / "state"
    store = JobStore(state)
    job = _left_running(store, TASK)
    _record(repo, head=head, submitted=time.time())
    waiting = store.add(None)
    h = Harness(repo, state)
    try:
        assert h.trainer.start() == []  # picked up, not interrupted
        assert h.trainer.resumed == (job.id,)
        resumed = h.done(job.id)
        assert resumed.state == "succeeded" and resumed.result == RESULT
        assert h.attached == [(job.id, TASK)]
        assert h.recovered == 1  # the local undo ran first (a half-done apply)
        later = h.done(waiting.id)
        assert later.state == "succeeded"
        assert resumed.finished_at and later.started_at
        assert resumed.finished_at <= later.started_at
    finally:
        h.trainer.stop(grace=2)


def test_start_marks_a_remote_job_interrupted_when_its_result_was_applied(
    repo: Path, tmp_path: Path
) -> None:
    head = _git_repo(repo)
    state = tmp_path / "state"
    store = JobStore(state)
    job = _left_running(store, TASK)
    _record(repo, head=head, submitted=time.time())
    git_as_tester(repo, "commit", "-q", "--allow-empty", "-m", "the task's commit, applied")
    h = Harness(repo, state)
    try:
        assert h.trainer.start() == [job.id]
        failed = h.trainer.store.get(job.id)
        assert failed is not None and failed.state == "failed" and failed.error == INTERRUPTED
        assert h.attached == []
    finally:
        h.trainer.stop(grace=2)


def test_a_stop_leaves_a_remote_job_with_a_task_running_for_the_next_start(
    repo: Path, tmp_path: Path
) -> None:
    head = _git_repo(repo)
    pid_file = tmp_path / "child.pid"
    h = Harness(repo, tmp_path / "state")
    h.modes.append(f"hang:{pid_file}")
    h.trainer.start()
    job = h.trainer.submit(None, compute={"cpu": 1024})
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    _record(repo, head=head, submitted=time.time())  # what the child writes once submitted

    def recorded() -> str | None:
        found = h.trainer.store.get(job.id)
        return found.task if found else None

    assert wait_until(recorded, timeout=30, what="the task recorded") == TASK
    h.trainer.stop(grace=2)
    left = h.trainer.store.get(job.id)
    assert left is not None and left.state == "running" and left.pgid is None
    assert "task" not in h.trainer.view(left)  # bookkeeping, as the process group
    h.trainer = h.make()
    h.trainer.start()
    assert h.done(job.id).state == "succeeded"
    assert h.attached == [(job.id, TASK)]


def _applying(repo: Path, head: str) -> None:
    """The marker an apply of the recorded task's result saves before it touches the repo."""
    from mlrig.core.retrain.state import SavedState

    SavedState(
        pid=2**22 + 1, head=head, branch="main", model="demo", champion="2",
        started=time.time(), retrain_id="e" * 32,
    ).save(repo)  # fmt: skip


def test_start_marks_a_remote_job_interrupted_when_it_was_applying(
    repo: Path, tmp_path: Path
) -> None:
    """Killed while applying: the undo (recover) puts the repo and `champion` back and tags
    the versions undone, as for a local run; applying the result again would not be a run's."""
    head = _git_repo(repo)
    state = tmp_path / "state"
    job = _left_running(JobStore(state), TASK)
    _record(repo, head=head, submitted=time.time())
    _applying(repo, head)
    h = Harness(repo, state)
    try:
        assert h.trainer.start() == [job.id]
        failed = h.trainer.store.get(job.id)
        assert failed is not None and failed.state == "failed" and failed.error == INTERRUPTED
        assert h.attached == [] and h.recovered == 1
    finally:
        h.trainer.stop(grace=2)


def test_a_stop_while_applying_ends_the_remote_job_interrupted(repo: Path, tmp_path: Path) -> None:
    head = _git_repo(repo)
    pid_file = tmp_path / "child.pid"
    h = Harness(repo, tmp_path / "state")
    h.modes.append(f"hang:{pid_file}")
    h.trainer.start()
    job = h.trainer.submit(None, compute={})
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    _record(repo, head=head, submitted=time.time())
    wait_until(lambda: (found := h.trainer.store.get(job.id)) and found.task, timeout=30)
    _applying(repo, head)  # the child went on to apply the result
    h.trainer.stop(grace=2)
    done = h.trainer.store.get(job.id)
    assert done is not None and done.state == "failed" and done.error == INTERRUPTED
