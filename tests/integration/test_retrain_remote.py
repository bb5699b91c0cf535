"""`mlrig retrain --remote` on the real local stack: the repository's trainer image built and
pushed by digest, the task run as a container on the engine, its result applied here.

Two generated repositories with the same pipeline read the same source in the stack's
storage (`remote://storage/...`, which a task can read; a path on this machine it cannot).
Both train their first model in-process; then the source gains rows and one retrains
in-process, the other with --remote: the commits, the gate, the data and the run tags must
be the same, plus `mlrig.compute.*` on the remote run. The faults follow on the remote repo.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import VENV_BIN, append_rows, environ_with, exited, mlrig_on, repo_env, sh

pytestmark = pytest.mark.integration
LOCAL, REMOTE = "localrig", "remoterig"
SOURCE = "remote://storage/incoming/patients.csv"


def _ok(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _init(root: Path, env: dict[str, str], project: str) -> Path:
    sh(root, str(VENV_BIN / "mlrig"), "init", project, "--stack", "local", "--no-input", env=env)
    repo = root / project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(
        text.replace(f"source: {params['ingest']['source']}", f"source: {SOURCE}", 1)
    )
    sh(repo, "git", "commit", "-qam", "Read the patients export from the stack", env=env)
    origin = root / f"{project}-origin.git"
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    sh(repo, "git", "remote", "add", "origin", str(origin), env=env)
    sh(repo, "git", "push", "-q", "origin", "main", env=env)
    return repo


@pytest.fixture(scope="module")
def world(
    local_stack: dict, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("remote")
    env = repo_env(local_stack["home"])
    storage = Path(local_stack["outputs"].dvc_remote_url)
    source = storage / "incoming" / "patients.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    repos = {p: _init(root, env, p) for p in (LOCAL, REMOTE)}
    source.write_bytes((repos[LOCAL] / "data/raw/breast_cancer.csv").read_bytes())
    for repo in repos.values():  # each one's first model, in-process
        assert _ok(mlrig_on(repo, env, "retrain", "--json", "--no-push-image"))["changed"]
    client = MlflowClient(tracking_uri=local_stack["env"]["MLFLOW_TRACKING_URI"])
    with environ_with(local_stack["env"]):
        yield {"repos": repos, "env": env, "source": source, "client": client}


def _tags(client: Any, project: str, version: str) -> dict[str, str]:
    run = client.get_run(client.get_model_version(project, version).run_id)
    return dict(run.data.tags)


def _champion(client: Any, project: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(project, "champion").version)
    except Exception:  # noqa: BLE001 - MLflow's RestException for "no such alias"
        return None


def test_a_remote_retrain_gives_what_a_local_one_gives(world: dict, docker_engine: Any) -> None:
    repos, env, client = world["repos"], world["env"], world["client"]
    append_rows(world["source"], 40, shift=3)
    local = _ok(mlrig_on(repos[LOCAL], env, "retrain", "--json", "--no-push-image"))
    proc = mlrig_on(repos[REMOTE], env, "retrain", "--remote", "--json", "--no-push-image")
    remote = _ok(proc)
    # the task's own lines were streamed (the pipeline's stages ran in the container)
    assert "cloning" in proc.stderr and "Running stage 'train'" in proc.stderr
    for key in ("changed", "snapshot", "version", "champion_moved", "decision"):
        assert remote[key] == local[key], key
    heads = {p: sh(r, "git", "rev-parse", "HEAD", env=env).strip() for p, r in repos.items()}
    assert remote["commit"] == heads[REMOTE]
    # the same commit: subject, author, files, dvc.lock's hashes; pushed to origin
    fmt = "--format=%s%n%an <%ae>"
    shown = {p: sh(r, "git", "log", "-1", fmt, env=env) for p, r in repos.items()}
    assert shown[REMOTE] == shown[LOCAL]
    files = {
        p: sh(r, "git", "show", "--name-only", "--format=", "HEAD", env=env).split()
        for p, r in repos.items()
    }
    assert files[REMOTE] == files[LOCAL]
    assert sh(repos[REMOTE], "git", "status", "--porcelain", env=env) == ""
    origin = repos[REMOTE].parent / f"{REMOTE}-origin.git"
    assert sh(origin, "git", "rev-parse", "main", env=env).strip() == heads[REMOTE]
    locks = {p: yaml.safe_load((r / "dvc.lock").read_text()) for p, r in repos.items()}

    def outs(lock: dict) -> dict[str, str]:
        """The data's hashes (the model's pickle may differ in bytes: the image installs the
        newest versions requirements.txt allows, this venv its own)."""
        return {
            o["path"]: o["md5"]
            for stage in lock["stages"].values()
            for o in stage.get("outs", [])
            if o["path"].startswith("data/") and not o["path"].endswith("record.json")
        }

    assert outs(locks[REMOTE]) == outs(locks[LOCAL]) and outs(locks[LOCAL])
    differ = {"model", "ingested_at"}  # the project's name; when ingest ran
    for name in ("metrics.json", "gate.json", "data/snapshot/record.json"):
        docs = [json.loads((repos[p] / name).read_text()) for p in (LOCAL, REMOTE)]
        assert [{k: v for k, v in d.items() if k not in differ} for d in docs] == [
            {k: v for k, v in docs[0].items() if k not in differ}
        ] * 2, name
    # the same champion and the same lineage tags, plus where it ran
    assert _champion(client, REMOTE) == _champion(client, LOCAL)
    tags = {p: _tags(client, p, remote["version"]) for p in repos}
    same = ("mlrig.data.md5", "mlrig.data.rows", "mlrig.data.source", "mlrig.git.dirty")
    for key in same:
        assert tags[REMOTE].get(key) == tags[LOCAL].get(key) is not None, key
    assert (
        tags[REMOTE]["mlflow.source.git.commit"]
        == sh(repos[REMOTE], "git", "rev-parse", "HEAD^", env=env).strip()
    )
    assert tags[REMOTE]["mlrig.git.remote"] == str(origin)
    assert not any(k.startswith("mlrig.compute.") for k in tags[LOCAL])
    compute = {k: v for k, v in tags[REMOTE].items() if k.startswith("mlrig.compute.")}
    assert compute["mlrig.compute.backend"] == "local"
    assert compute["mlrig.compute.cpu"] == "1024" and compute["mlrig.compute.memory_mib"] == "4096"
    assert (
        compute["mlrig.compute.cost_usd"] == "0"
        and float(compute["mlrig.compute.wall_seconds"]) > 0
    )
    assert "@sha256:" in compute["mlrig.compute.image"]
    # the task's container, bundle and record are gone; no secret reached a label
    task = compute["mlrig.compute.task"]
    assert not docker_engine.containers.list(all=True, filters={"id": task})
    assert not (repos[REMOTE] / ".dvc/tmp/mlrig-remote.json").exists()


def test_trace_shows_where_the_run_trained(world: dict) -> None:
    repo, env = world["repos"][REMOTE], world["env"]
    proc = _mlrig_trace(repo, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("trained on"))
    assert "local task" in line and "(1 vCPU, 4096 MiB" in line and "$0)" in line


def _trainer_ref(docker_engine: Any, local_stack: dict) -> str:
    """This stack's trainer image by digest (the engine may hold other stacks' too)."""
    registry = local_stack["outputs"].registry.url
    return next(
        d
        for image in docker_engine.images.list("mlrig/trainer-task")
        for d in image.attrs["RepoDigests"]
        if d.startswith(f"{registry}@")
    )


# run in the trainer image as its user: is there byte-code for each module a stage imports?
_CACHED = """
import importlib, importlib.util, json, os, sys
wanted = sys.argv[1:]
for name in wanted:
    importlib.import_module(name)
found = {}
for name, module in sorted(sys.modules.items()):
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
    if origin.endswith(".py") and (name in wanted or name.startswith("scipy.")):
        found[name] = os.path.exists(importlib.util.cache_from_source(origin))
print(json.dumps(found))
"""


def test_the_trainer_image_holds_the_byte_code_its_stages_import(
    world: dict, local_stack: dict, docker_engine: Any
) -> None:
    """The image built for the template (size goal: at most 700 MB) starts each task with the
    byte-code of what its stages import, SciPy's modules that scikit-learn loads included:
    none is compiled again in the task."""
    ref = _trainer_ref(docker_engine, local_stack)
    assert docker_engine.images.get(ref).attrs["Size"] <= 700 * 10**6
    wanted = ["pandas", "sklearn.model_selection", "sklearn.ensemble", "mlflow.sklearn"]
    wanted += ["dvc.repo.reproduce", "mlrig.core.compute.task", "json"]
    out = docker_engine.containers.run(
        ref,
        ["python", "-c", _CACHED, *wanted],
        environment={"PYTHONDONTWRITEBYTECODE": "1"},  # found only if the build wrote it
        remove=True,
        network_disabled=True,
    )
    found = json.loads(out.decode().strip().splitlines()[-1])
    assert set(wanted) <= set(found) and sum(k.startswith("scipy.") for k in found) > 100
    assert not [name for name, cached in found.items() if not cached]


def _mlrig_trace(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    model = f"models:/{REMOTE}@champion"
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), "trace", model, "--stack", "local"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _as_before(world: dict) -> tuple[str, str, bytes, str | None]:
    """HEAD, `git status`, dvc.lock and @champion of the remote repo: what 'unchanged' is."""
    repo, env = world["repos"][REMOTE], world["env"]
    return (
        sh(repo, "git", "rev-parse", "HEAD", env=env).strip(),
        sh(repo, "git", "status", "--porcelain", env=env),
        (repo / "dvc.lock").read_bytes(),
        _champion(world["client"], REMOTE),
    )


def _tasks(docker_engine: Any) -> list[Any]:
    return list(docker_engine.containers.list(all=True, filters={"label": "mlrig.task=retrain"}))


def test_a_size_fargate_lacks_is_one_line_and_runs_nothing(world: dict, docker_engine: Any) -> None:
    before = _as_before(world)
    proc = mlrig_on(world["repos"][REMOTE], world["env"], "retrain", "--remote", "--cpu", "3")
    assert proc.returncode == 2
    assert "Fargate has no task of 3072 CPU units (one of 256, 512, 1024" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert _as_before(world) == before and not _tasks(docker_engine)


def test_a_task_stopped_from_outside_publishes_nothing_and_a_second_one_is_refused(
    world: dict, docker_engine: Any
) -> None:
    from mlrig.wait import wait_until

    repo, env = world["repos"][REMOTE], world["env"]
    before = _as_before(world)
    append_rows(world["source"], 30, shift=7)
    first = subprocess.Popen(
        [str(VENV_BIN / "mlrig"), "retrain", "--remote", "--repo", str(repo)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_until(
            lambda: [c for c in _tasks(docker_engine) if c.status == "running"],
            timeout=600,
            what="the first task running",
        )
        second = mlrig_on(repo, env, "retrain", "--remote")
        assert second.returncode == 7, second.stderr
        assert f"a remote retrain of {REMOTE} is already running" in second.stderr
        assert f"--attach {running[0].id[:12]}" in second.stderr
        # the secret is a mounted file: neither a variable nor a label shows it
        info = docker_engine.api.inspect_container(running[0].id)
        assert _identity_password(world) not in json.dumps(info)
        running[0].stop(timeout=10)  # `docker stop`, from outside
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0
    assert "the remote retrain failed: stopped from outside" in err, err[-2000:]
    assert "Traceback" not in err
    assert _as_before(world) == before
    assert not _tasks(docker_engine)


class _AtATerminal:
    """`mlrig retrain --remote` as a person runs it: stdin a terminal (Ctrl-C's question reads
    it there), stderr read line by line as the task's lines stream in."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "mlrig"),
                "retrain",
                "--remote",
                "--no-push-image",
                "--repo",
                str(repo),
            ],
            env=env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(self.proc.stderr)

    def ctrl_c(self, answer: str) -> tuple[int, str, str]:
        """Ctrl-C once the task's own lines stream (the follow is on), then `answer` to the
        question; (exit code, stdout, stderr)."""
        from mlrig.wait import wait_until

        wait_until(
            lambda: any("cloning" in line for line in self.err),
            timeout=600,
            what="the task's first line streamed",
            give_up=lambda: exited(self.proc, "retrain --remote"),
        )
        self.proc.send_signal(signal.SIGINT)
        os.write(self.master, f"{answer}\n".encode())
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=300)
        self.reader.join(timeout=30)
        return code, out, "".join(self.err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        os.close(self.master)


def _error_line(err: str) -> str:
    """The one error line, after the question it follows on the same line."""
    asked, error = err.rsplit("Stop task ", 1)[1].split("error: ")
    assert "? (no: it goes on, attach later)" in asked
    assert "Traceback" not in err and "\n" not in error.strip()
    return error


def test_ctrl_c_and_yes_stops_the_task_and_changes_nothing(world: dict, docker_engine: Any) -> None:
    repo, env = world["repos"][REMOTE], world["env"]
    before = _as_before(world)
    append_rows(world["source"], 20, shift=11)
    run = _AtATerminal(repo, env)
    try:
        code, _out, err = run.ctrl_c("y")
    finally:
        run.close()
    assert code not in (0, 130), err[-2000:]
    line = _error_line(err)
    assert "the remote retrain failed: stopped at the caller's request (Ctrl-C)" in line, line
    assert "nothing was published" in line
    assert _as_before(world) == before
    assert not _tasks(docker_engine)
    assert not (repo / ".dvc/tmp/mlrig-remote.json").exists()


def test_ctrl_c_and_no_leaves_the_task_and_its_attach_command_applies_it(
    world: dict, docker_engine: Any
) -> None:
    repo, env, client = world["repos"][REMOTE], world["env"], world["client"]
    head, _status, _lock, champion = _as_before(world)
    run = _AtATerminal(repo, env)
    try:
        code, _out, err = run.ctrl_c("n")
    finally:
        run.close()
    assert code == 130, err[-2000:]
    line = _error_line(err)
    found = re.search(r"task ([0-9a-f]{12,64}) goes on", line)
    command = re.search(r"`(mlrig retrain --remote --attach \S+(?: --repo \S+)?)`", line)
    assert found and command, line
    task = found.group(1)
    assert [c.id[: len(task)] for c in _tasks(docker_engine)] == [task]  # it goes on
    assert sh(repo, "git", "rev-parse", "HEAD", env=env).strip() == head
    # the printed command, as printed (`mlrig` is on the PATH a user's shell has)
    attached = subprocess.run(
        shlex.split(command.group(1)),
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert attached.returncode == 0, attached.stdout[-3000:] + attached.stderr[-3000:]
    assert "Running stage 'train'" in attached.stderr  # the task's log, followed from its start
    new_head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    assert f"commit {new_head[:12]}" in attached.stdout
    # published as a followed run publishes: one retrain commit on the submitted one, pushed
    assert sh(repo, "git", "rev-parse", "HEAD^", env=env).strip() == head
    subject = sh(repo, "git", "log", "-1", "--format=%s%n%an", env=env).splitlines()
    rows = len(world["source"].read_text().strip().splitlines()) - 1
    assert re.fullmatch(rf"retrain: snapshot [0-9a-f]{{12}}, {rows} rows from {SOURCE}", subject[0])
    assert subject[1] == env["GIT_AUTHOR_NAME"]
    files = {
        ref: sh(repo, "git", "show", "--name-only", "--format=", ref, env=env).split()
        for ref in ("HEAD", "HEAD^")
    }
    assert files["HEAD"] == files["HEAD^"]  # what the earlier retrain commit holds
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    origin = repo.parent / f"{REMOTE}-origin.git"
    assert sh(origin, "git", "rev-parse", "main", env=env).strip() == new_head
    gate = json.loads((repo / "gate.json").read_text())
    expected = str(gate["version"]) if gate["verdict"] == "promoted" else champion
    assert _champion(client, REMOTE) == expected
    tags = _tags(client, REMOTE, str(gate["version"]))
    assert tags["mlrig.compute.task"].startswith(task)
    assert tags["mlflow.source.git.commit"] == head
    assert not _tasks(docker_engine)
    assert not (repo / ".dvc/tmp/mlrig-remote.json").exists()


def test_a_killed_trainer_attaches_to_its_remote_task_when_it_starts_again(
    world: dict, docker_engine: Any
) -> None:
    """`trainer serve` SIGKILLed while its remote job follows the task: the task goes on, and
    the next start-up attaches to it and applies its result; the job ends succeeded."""
    import requests

    from mlrig.core.stack.local.stack import free_port
    from mlrig.core.trainer._jobs import state_dir
    from mlrig.core.trainer._store import JobStore
    from mlrig.wait import wait_until
    from tests.helpers import wait_for_http

    repo, env, client = world["repos"][REMOTE], world["env"], world["client"]
    head, _status, _lock, champion = _as_before(world)
    append_rows(world["source"], 25, shift=13)
    mlrig = str(VENV_BIN / "mlrig")
    auth = {"Authorization": f"Bearer {sh(repo, mlrig, 'trainer', 'token', env=env).strip()}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen:
        with (repo.parent / "trainer.log").open("ab") as log:
            proc = subprocess.Popen(
                [mlrig, "trainer", "serve", "--repo", str(repo), "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_http(
            f"{url}/health", timeout=120, what="the trainer", give_up=lambda: exited(proc, "it")
        )
        return proc

    def finished() -> dict[str, Any] | None:
        job = requests.get(f"{url}/train/{job_id}", headers=auth, timeout=10).json()
        return job if job["state"] in ("succeeded", "failed") else None

    server = serve()
    try:
        body = {"remote": True, "push_image": False}
        answer = requests.post(f"{url}/train", headers=auth, json=body, timeout=10)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        with environ_with({"MLRIG_HOME": env["MLRIG_HOME"]}):
            store = JobStore(state_dir("local", repo))

        def recorded() -> str | None:
            job = store.get(job_id)
            return job.task if job else None

        task = wait_until(recorded, timeout=600, what="the job's task recorded", interval=0.2)
        server.kill()
        server.wait(30)
        left = _tasks(docker_engine)
        assert [(c.id, c.status) for c in left] == [(task, "running")]  # it outlived the service
        server = serve()
        job = wait_until(finished, timeout=900, what="the resumed job finished", interval=1)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    assert job["state"] == "succeeded", f"{job['error']}\n" + "\n".join(job["log_tail"])
    result = job["result"]
    assert result["changed"] is True
    new_head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    assert result["commit"] == new_head
    assert sh(repo, "git", "rev-parse", "HEAD^", env=env).strip() == head
    origin = repo.parent / f"{REMOTE}-origin.git"
    assert sh(origin, "git", "rev-parse", "main", env=env).strip() == new_head
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    expected = result["version"] if result["champion_moved"] else champion
    assert _champion(client, REMOTE) == expected
    assert _tags(client, REMOTE, result["version"])["mlrig.compute.task"] == task
    assert not _tasks(docker_engine)
    assert not (repo / ".dvc/tmp/mlrig-remote.json").exists()


def _identity_password(world: dict) -> str:
    from mlrig.core.access import identities

    with environ_with({"MLRIG_HOME": world["env"]["MLRIG_HOME"]}):
        path = identities.local_secret_file("local", f"repo-{REMOTE}")
    password = path.read_text().strip()
    assert len(password) >= 16
    return password


def test_oom_and_a_missing_digest_are_one_line_each(
    world: dict, local_stack: dict, docker_engine: Any
) -> None:
    from mlrig.core.compute.local import LocalBackend
    from mlrig.core.compute.spec import TaskSpec, TaskStatus
    from mlrig.errors import UsageError
    from mlrig.wait import wait_until

    backend = LocalBackend(local_stack["outputs"])
    registry = local_stack["outputs"].registry.url
    ref = _trainer_ref(docker_engine, local_stack)
    spec = TaskSpec(
        project="oomrig",
        image=ref,
        command=("python", "-c", "b = bytearray(1 << 30); print(len(b))"),
        cpu=256,
        memory_mib=512,
    )
    with environ_with({"MLRIG_HOME": str(local_stack["home"])}):
        handle = backend.submit(spec)
        try:

            def stopped() -> TaskStatus | None:
                found = backend.status(handle)
                return found if found.state == "stopped" else None

            status = wait_until(stopped, timeout=120, what="the task OOM-killed")
            assert status is not None
            assert status.exit_code == 137
            assert status.reason == "OOM-killed (memory limit 512 MiB)"
        finally:
            backend.remove(handle)
        missing = spec.model_copy(update={"image": f"{registry}@sha256:{'0' * 64}"})
        with pytest.raises(UsageError, match="neither on the engine nor in stack 'local'"):
            backend.submit(missing)
    assert not _tasks(docker_engine)
