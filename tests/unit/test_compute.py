"""The remote retrain's parts that need no engine: the trainer image's inputs and tag, the
task's environment and result at their one boundary, the local backend's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrig.errors import UsageError


def test_the_task_installs_only_what_its_entrypoint_imports() -> None:
    from packaging.requirements import Requirement

    from mlrig.core.compute import image

    names = {Requirement(r).name.lower() for r in image.task_requirements()}
    assert names == {"boto3", "platformdirs", "psutil", "pydantic", "pyyaml", "requests"}
    assert not names & {"pulumi", "pulumi-aws", "copier", "docker", "mlflow", "typer"}


def test_the_tag_moves_with_the_requirements_and_only_with_an_input() -> None:
    from mlrig.core.compute import image

    first = image.image_tag("churn_model", b"scikit-learn>=1.5\n")
    assert first == image.image_tag("churn_model", b"scikit-learn>=1.5\n")
    assert first != image.image_tag("churn_model", b"scikit-learn>=1.6\n")
    assert first.startswith(f"{image.REPOSITORY}:trainer-churn-model-")
    assert len(first.rsplit("-", 1)[1]) == 16


def test_the_tag_moves_with_every_file_of_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from mlrig.core.compute import image

    context = tmp_path / "task"
    shutil.copytree(image.context_dir(), context)
    monkeypatch.setattr(image, "context_dir", lambda: context)
    first = image.image_tag("churn_model", b"scikit-learn>=1.5\n")
    (context / "__pycache__").mkdir()
    (context / "__pycache__" / "warm_imports.cpython-311.pyc").write_bytes(b"local")
    assert image.image_tag("churn_model", b"scikit-learn>=1.5\n") == first
    with (context / "warm-modules.txt").open("a") as fh:
        fh.write("sklearn.svm\n")
    assert image.image_tag("churn_model", b"scikit-learn>=1.5\n") != first


def test_a_repository_without_requirements_is_one_line(tmp_path: Path) -> None:
    from mlrig.core.compute import image

    with pytest.raises(UsageError, match="has no requirements.txt"):
        image.requirements_of(tmp_path)


def test_the_dockerfile_installs_no_pip_cache_no_tests_and_mlrig_last() -> None:
    from mlrig.core.compute import image

    text = (image.context_dir() / "Dockerfile").read_text()
    assert text.index("COPY requirements.txt task-requirements.txt") < text.index("COPY wheel/")
    assert text.index("COPY wheel/") < text.index("warm_imports.py /tmp/warm/")  # mlrig's too
    assert "apt-get clean" in text and "--no-compile" in text and "pip uninstall" in text
    assert 'CMD ["python", "-m", "mlrig.core.compute.task"]' in text and "ENTRYPOINT" not in text


def test_the_template_requires_the_mlflow_client_not_the_server() -> None:
    from mlrig import assets

    text = (assets.pipeline_template() / "template" / "requirements.txt.jinja").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "mlflow-skinny>=3.1,<4" in lines
    assert not [line for line in lines if line.startswith("mlflow>") or line == "mlflow"]


def _listed() -> set[str]:
    from mlrig.core.compute import image

    text = (image.context_dir() / "warm-modules.txt").read_text()
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def test_the_image_warms_every_module_the_template_s_stages_import() -> None:
    """What a stage of the template imports from outside the standard library and its own
    package is in warm-modules.txt, whose byte-code the image is built with (a module the list
    lacks would be compiled again in every task)."""
    import re
    import sys

    from mlrig import assets

    src = assets.pipeline_template() / "template" / "src"
    statement = re.compile(r"^\s*(?:from ([A-Za-z_][\w.]*) import ([\w, ]+)|import ([\w., ]+))")
    imported: set[str] = set()
    for path in src.rglob("*"):
        if not path.is_file() or not path.name.removesuffix(".jinja").endswith(".py"):
            continue
        for match in filter(None, map(statement.match, path.read_text().splitlines())):
            base, names, plain = match.groups()
            if plain:
                imported |= {n.split(" as ")[0].strip() for n in plain.split(",")}
            elif base != "__future__":
                imported.add(base)
                if base == "sklearn":  # `from sklearn import metrics`: a submodule
                    imported |= {f"sklearn.{n.split(' as ')[0].strip()}" for n in names.split(",")}
    third_party = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert {"pandas", "mlflow.sklearn", "sklearn.model_selection", "sklearn.metrics"} <= (
        third_party
    )
    tops = {"pandas", "numpy", "yaml", "sqlalchemy", "mlflow", "sklearn", "skops", "dvc"}
    listed = _listed()
    missing = {m for m in third_party if m not in listed and m not in tops}
    assert not missing, f"add to docker/task/warm-modules.txt: {sorted(missing)}"
    assert {"mlrig.core.compute.task", "mlrig.core.retrain.retrain", "dvc.repo"} <= listed


def test_warming_imports_what_it_names_and_never_fails_the_build(tmp_path: Path) -> None:
    """warm_imports.py, run as the build runs it: byte-code under PYTHONPYCACHEPREFIX for the
    named distributions' top-level modules and the listed modules (their dependencies'
    modules too); a missing module, a module that exits and a name that is not one are
    skipped, named in its one line, and the step still succeeds."""
    import importlib.util
    import os
    import subprocess
    import sys

    from mlrig.core.compute import image

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "exits.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "mods" / "threaded.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,)).start()\n"
    )
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# the pipeline's\npyyaml>=6  # yaml\nno-such-dist==1\n")
    listed = tmp_path / "modules.txt"
    listed.write_text("json.decoder\nexits\nthreaded\nno_such_module\nos; rm -rf /\n")
    cache = tmp_path / "pycache"
    env = {
        **os.environ,
        "PYTHONPYCACHEPREFIX": str(cache),
        "PYTHONPATH": str(tmp_path / "mods"),
        "PYTHONDONTWRITEBYTECODE": "",
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(image.context_dir() / "warm_imports.py"),
            str(requirements),
            str(listed),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "skipped exits, no_such_module" in proc.stderr and "rm -rf" not in proc.stderr
    assert proc.stderr.startswith("byte-code: 3 of 5 modules imported;")  # yaml, json, threaded
    sources = [importlib.util.find_spec(m).origin for m in ("yaml", "yaml.constructor", "json")]
    for source in [*sources, str(tmp_path / "mods" / "threaded.py")]:
        stem = Path(str(cache) + str(Path(str(source)).resolve().with_suffix("")))
        assert list(stem.parent.glob(f"{stem.name}.*.pyc")), source


SHA = "a" * 40
RUN = "b" * 32


def _task_env(prefix: Path, **over: str) -> dict[str, str]:
    from mlrig.core.compute import task

    env = {
        task.ENV_PREFIX: str(prefix),
        task.ENV_SHA: SHA,
        task.ENV_BRANCH: "main",
        task.ENV_RETRAIN_ID: RUN,
        task.ENV_GIT_REMOTE: "https://example.invalid/team/churn.git",
    }
    return {**env, **over}


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("MLRIG_TASK_SHA", "HEAD", "sha"),
        ("MLRIG_TASK_BRANCH", "-delete", "branch"),
        ("MLRIG_RETRAIN_ID", "../x", "retrain_id"),
        ("MLRIG_TASK_GIT_REMOTE", "--upload-pack=touch /tmp/x", "git_remote"),
        ("MLRIG_TASK_GIT_REMOTE", "https://h/x\nmain", "git_remote"),
        ("MLRIG_TASK_PREFIX", "relative/folder", "MLRIG_TASK_PREFIX"),
        ("MLRIG_TASK_PREFIX", "/srv/../etc", "MLRIG_TASK_PREFIX"),
        ("MLRIG_TASK_PREFIX", "s3://Bad_Bucket/x", "MLRIG_TASK_PREFIX"),
        ("MLRIG_TASK_PREFIX", "s3://bucket/../x", "MLRIG_TASK_PREFIX"),
        ("MLRIG_TASK_PREFIX", "s3://bucket", "MLRIG_TASK_PREFIX"),
        ("MLRIG_TASK_PREFIX", "https://bucket/x", "MLRIG_TASK_PREFIX"),
    ],
)
def test_the_task_refuses_an_environment_it_cannot_trust(
    tmp_path: Path, key: str, value: str, says: str
) -> None:
    from mlrig.core.compute import task

    with pytest.raises(UsageError, match=says):
        task.TaskEnv.from_env(_task_env(tmp_path, **{key: value}))


def test_a_valid_environment_is_read_once(tmp_path: Path) -> None:
    from mlrig.core.compute import task

    cfg = task.TaskEnv.from_env(_task_env(tmp_path))
    assert (cfg.prefix, cfg.sha, cfg.branch, cfg.retrain_id) == (str(tmp_path), SHA, "main", RUN)


def test_secret_files_become_variables_and_nothing_else_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.compute import task

    (tmp_path / "MLFLOW_TRACKING_PASSWORD").write_text("s3cret\n")
    (tmp_path / "not-a-name").write_text("x")
    (tmp_path / "lower").write_text("x")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    task.load_secret_files(tmp_path)
    import os

    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    assert "lower" not in os.environ and "not-a-name" not in os.environ


def test_a_result_is_validated_before_the_caller_uses_it(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from mlrig.core.compute import task

    good = task.TaskResult(
        retrain_id=RUN,
        submitted=SHA,
        ok=True,
        changed=True,
        commit="c" * 40,
        version="3",
        decision="promoted",
        champion_moved=True,
        previous_champion="2",
        started=1.0,
        finished=2.0,
    )
    from mlrig.core.compute.store import FolderStore

    FolderStore(tmp_path).put_text(task.RESULT, good.model_dump_json())
    assert task.TaskResult.model_validate_json((tmp_path / task.RESULT).read_text()) == good
    raw = good.model_dump()
    for key, bad in (("commit", "HEAD~1"), ("version", "1; rm"), ("decision", "maybe")):
        with pytest.raises(ValidationError):
            task.TaskResult.model_validate({**raw, key: bad})
    with pytest.raises(ValidationError):
        task.TaskResult.model_validate({**raw, "extra": 1})


DIGEST = "127.0.0.1:5001/models@sha256:" + "0" * 64


def _spec(**over: object) -> object:
    from mlrig.core.compute.spec import TaskSpec

    fields: dict[str, object] = {
        "project": "churn",
        "image": DIGEST,
        "command": ("python", "-m", "mlrig.core.compute.task"),
        "cpu": 1024,
        "memory_mib": 4096,
    }
    return TaskSpec.model_validate({**fields, **over})


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"cpu": 3000}, "Fargate has no task of 3000 CPU units"),
        ({"cpu": 256, "memory_mib": 4096}, "takes 512-2048 MiB"),
        ({"image": "127.0.0.1:5001/models:latest"}, "not named by digest"),
        ({"labels": {"team": "x"}}, "not an mlrig"),
    ],
)
def test_the_local_backend_refuses_before_the_engine_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over: dict, says: str
) -> None:
    from mlrig.core.compute.local import LocalBackend
    from tests.helpers import env_secret_outputs

    monkeypatch.setenv("MLRIG_HOME", str(tmp_path))
    backend = LocalBackend(env_secret_outputs())
    with pytest.raises(UsageError, match=says):
        backend.submit(_spec(**over))  # type: ignore[arg-type]


def test_a_secret_from_outside_the_stack_folder_is_never_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.compute.local import LocalBackend
    from mlrig.core.compute.spec import SecretRef
    from mlrig.errors import CredentialsError
    from tests.helpers import env_secret_outputs

    monkeypatch.setenv("MLRIG_HOME", str(tmp_path / "home"))
    outside = tmp_path / "elsewhere.password"
    outside.write_text("x")
    secret = SecretRef(name="MLFLOW_TRACKING_PASSWORD", source=str(outside))
    with pytest.raises(CredentialsError, match="not a file under stack"):
        LocalBackend(env_secret_outputs()).submit(_spec(secrets=(secret,)))  # type: ignore[arg-type]


def test_cpu_is_given_in_vcpu() -> None:
    from mlrig.core.compute import remote

    assert [remote.cpu_units(v) for v in (0.25, 0.5, 1, 2, 4)] == [256, 512, 1024, 2048, 4096]
    with pytest.raises(UsageError):
        remote.cpu_units(0)


class _Backend:
    """A backend whose follow fails the way the engine's can."""

    def __init__(self, fail: BaseException) -> None:
        self.fail, self.stopped = fail, ""

    def lines(self, handle: object) -> object:
        yield "• cloning"
        raise self.fail

    def status(self, handle: object) -> object:
        from mlrig.core.compute.spec import TaskStatus

        return TaskStatus(state="stopped", exit_code=143, reason=self.stopped or None)

    def stop(self, handle: object, reason: str) -> None:
        self.stopped = reason


def _submitted(tmp_path: Path) -> object:
    from mlrig.core.compute import remote
    from mlrig.core.compute.spec import TaskHandle

    handle = TaskHandle(backend="local", id="c" * 64, project="churn")
    prepared = type("P", (), {"root": tmp_path, "outputs": None})()
    return remote.Submitted(handle, None, prepared)  # type: ignore[arg-type]


def test_a_broken_follow_names_the_attach_command(tmp_path: Path) -> None:
    from mlrig.core.compute import remote
    from mlrig.errors import ServiceError

    lines: list[str] = []
    backend = _Backend(ServiceError("the engine's stream broke"))
    with pytest.raises(remote.FollowBroken) as err:
        remote.follow(
            _submitted(tmp_path),  # type: ignore[arg-type]
            out=lines.append,
            ask_stop=lambda: True,
            backend=backend,
        )
    assert lines == ["• cloning"] and backend.stopped == ""
    assert f"mlrig retrain --remote --attach {'c' * 12} --repo {tmp_path}" in err.value.one_line()


@pytest.mark.parametrize("stop", [True, False])
def test_ctrl_c_stops_the_task_only_when_asked_to(tmp_path: Path, stop: bool) -> None:
    from mlrig.core.compute import remote

    backend = _Backend(KeyboardInterrupt())
    follow = lambda: remote.follow(  # noqa: E731
        _submitted(tmp_path),  # type: ignore[arg-type]
        out=lambda _l: None,
        ask_stop=lambda: stop,
        backend=backend,
    )
    if stop:
        status = follow()
        assert status.state == "stopped" and "Ctrl-C" in str(status.reason)
    else:
        with pytest.raises(remote.Interrupted, match="goes on") as err:
            follow()
        assert "--attach cccccccccccc" in err.value.one_line() and backend.stopped == ""


def test_trace_reads_the_compute_tags_as_input() -> None:
    from mlrig.core.provenance.trace import compute_record

    tags = {
        "mlrig.compute.backend": "local",
        "mlrig.compute.task": "c" * 64,
        "mlrig.compute.cpu": "1024",
        "mlrig.compute.memory_mib": "4096",
        "mlrig.compute.spot": "false",
        "mlrig.compute.image": DIGEST,
        "mlrig.compute.wall_seconds": "61.5",
        "mlrig.compute.cost_usd": "0",
        "mlrig.data.md5": "x",
    }
    found = compute_record(tags)
    assert found is not None and (found.backend, found.cpu, found.wall_seconds) == (
        "local",
        1024,
        61.5,
    )
    assert compute_record({"mlrig.data.md5": "x"}) is None
    for key, bad in (("backend", "mars"), ("task", "$(id)"), ("cpu", "-1"), ("image", "x:latest")):
        assert compute_record({**tags, f"mlrig.compute.{key}": bad}) is None, key


def test_detach_json_ends_with_the_task_id_the_workflow_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated workflow runs `retrain --remote --detach --json | tail -n 1 | jq .task_id`
    and attaches with that id: the last stdout line is JSON naming the whole task id."""
    import json

    from typer.testing import CliRunner

    from mlrig.core.compute import remote
    from mlrig.main import app

    submitted = _submitted(tmp_path)
    asked: list[dict[str, object]] = []

    def submit(repo: Path, **kwargs: object) -> object:
        asked.append({"repo": repo, **kwargs})
        return submitted

    monkeypatch.setattr(remote, "submit", submit)
    result = CliRunner().invoke(
        app, ["retrain", "--remote", "--detach", "--json", "--repo", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    text, last = result.stdout.strip().rsplit("\n", 1)
    assert json.loads(last) == {
        "task_id": "c" * 64,
        "backend": "local",
        "attach": f"mlrig retrain --remote --attach {'c' * 12} --repo {tmp_path}",
    }
    assert f"task {'c' * 12} submitted" in text
    assert len(asked) == 1 and asked[0]["cpu"] == remote.DEFAULT_CPU


def test_detach_without_json_prints_no_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mlrig.core.compute import remote
    from mlrig.main import app

    monkeypatch.setattr(remote, "submit", lambda repo, **kw: _submitted(tmp_path))
    result = CliRunner().invoke(app, ["retrain", "--remote", "--detach", "--repo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "task_id" not in result.stdout and "{" not in result.stdout


ARN = "arn:aws:ecs:us-east-1:123456789012:task/mlflow-cluster/" + "d" * 32


def test_a_store_keeps_only_names_it_made(tmp_path: Path) -> None:
    from mlrig.core.compute import store

    folder = store.open_store(str(tmp_path / "runs"))
    folder.put_text("tasks/x.json", "{}")
    assert folder.read_text("tasks/x.json") == "{}" and folder.names("tasks") == ["x.json"]
    assert folder.read_text("tasks/y.json") is None and folder.names("nothing") == []
    for bad in ("../x", "/etc/passwd", "a/../../b", ".hidden", "a b", ""):
        with pytest.raises(UsageError, match="is not a name"):
            folder.read_text(bad)
    (tmp_path / "runs" / "big.json").write_bytes(b"x" * (store.TEXT_LIMIT + 1))
    with pytest.raises(UsageError, match="larger"):
        folder.read_text("big.json")
    s3 = store.open_store("s3://my-bucket/dvc/mlrig-remote/churn", region="eu-west-1")
    assert isinstance(s3, store.S3Store) and s3.child("r1").url == (
        "s3://my-bucket/dvc/mlrig-remote/churn/r1"
    )


def test_the_record_of_a_fargate_task_is_its_arn_and_messages_name_its_id() -> None:
    from pydantic import ValidationError

    from mlrig.core.compute import remote

    assert remote.short(ARN) == "d" * 32 and remote.task_key(ARN) == "d" * 32
    assert remote.short("c" * 64) == "c" * 12
    record = {
        "backend": "aws",
        "task": ARN,
        "project": "churn",
        "stack": "team",
        "head": SHA,
        "branch": "main",
        "champion": None,
        "retrain_id": RUN,
        "prefix": "s3://b/dvc/mlrig-remote/churn/" + RUN,
        "image": DIGEST,
        "cpu": 1024,
        "memory_mib": 4096,
        "spot": True,
        "submitted": 1.0,
    }
    assert remote.RemoteState.model_validate(record).key == "d" * 32
    for bad in (ARN + "/x", "arn:aws:ecs:us-east-1:1:task/c/" + "d" * 32, "$(id)", "C" * 64):
        with pytest.raises(ValidationError):
            remote.RemoteState.model_validate({**record, "task": bad})


def test_a_fargate_run_is_tagged_with_its_estimated_cost() -> None:
    from mlrig.core.compute import price, remote, task
    from mlrig.core.compute.spec import TaskStatus

    state = remote.RemoteState(
        backend="aws",
        task=ARN,
        project="churn",
        stack="team",
        head=SHA,
        branch="main",
        champion=None,
        retrain_id=RUN,
        prefix="s3://b/dvc/mlrig-remote/churn/" + RUN,
        image=DIGEST,
        cpu=2048,
        memory_mib=8192,
        spot=False,
        submitted=1.0,
    )
    result = task.TaskResult(retrain_id=RUN, submitted=SHA, ok=True, started=0.0, finished=1800.0)
    stopped = TaskStatus(state="stopped", exit_code=0)
    hour = price.quote(price.fargate_size(2048, 8192))
    tags = remote.compute_tags(state, result, stopped)
    assert tags["mlrig.compute.cost_usd"] == f"{hour.on_demand_hour / 2:.4f}"
    spot = remote.compute_tags(state.model_copy(update={"spot": True}), result, stopped)
    assert spot["mlrig.compute.cost_usd"] == f"{hour.spot_hour / 2:.4f}"
    assert float(spot["mlrig.compute.cost_usd"]) < float(tags["mlrig.compute.cost_usd"])
    assert tags["mlrig.compute.task"] == ARN and tags["mlrig.compute.wall_seconds"] == "1800.0"


@pytest.mark.parametrize("bad", ["HEAD", "abc", "../../x", "c" * 11, "-" * 12, ARN + ";id"])
def test_attach_refuses_what_is_no_task_id(tmp_path: Path, bad: str) -> None:
    import subprocess

    from mlrig.core.compute import remote

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(UsageError, match="is not a task"):
        remote.attach(tmp_path, bad, stack=None, log=lambda _m: None)


def test_runs_are_kept_where_the_task_and_ci_roles_may_write() -> None:
    from mlrig.core.compute import store
    from mlrig.infra import config
    from tests.helpers import aws_outputs

    assert store.ROOT == config.REMOTE_RESULTS_PREFIX
    found = store.project_store(aws_outputs("team"), "churn")
    assert found.url == f"s3://bucket/{config.REMOTE_RESULTS_PREFIX}/churn"  # not under dvc/


def test_a_task_on_aws_logs_in_as_the_machine_identity_even_from_ci_outputs() -> None:
    """CI's outputs.json (written from the answers) records no MLflow login: the caller holds
    an OIDC token that expires in minutes. The task still gets the identity's secret."""
    from mlrig.contract import Mlflow
    from mlrig.core.compute import remote
    from tests.helpers import aws_outputs

    ci = aws_outputs("team").model_copy(
        update={"mlflow": Mlflow(tracking_uri="https://mlflow.example.com")}
    )
    for outputs in (ci, aws_outputs("team")):
        env, secrets = remote.task_login(outputs, "churn")
        assert env == {"MLFLOW_TRACKING_USERNAME": "repo-churn"}
        assert [(s.name, s.source) for s in secrets] == [
            ("MLFLOW_TRACKING_PASSWORD", "mlrig/team/identities/repo-churn")
        ]


def _result(**over: object) -> object:
    from mlrig.core.compute import task

    base: dict[str, object] = {
        "retrain_id": RUN,
        "submitted": SHA,
        "ok": True,
        "changed": True,
        "commit": "c" * 40,
        "version": "4",
        "started": 0.0,
        "finished": 1.0,
    }
    return task.TaskResult(**{**base, **over})  # type: ignore[arg-type]


def test_a_result_on_the_branch_already_is_not_applied_again(tmp_path: Path) -> None:
    import subprocess

    from mlrig.core.compute import remote
    from mlrig.core.retrain import retrain as retrain_core

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "--allow-empty", "-m", "x")
    head = git("rev-parse", "HEAD")
    prepared = retrain_core.Prepared(tmp_path, "churn", SHA, "main", None, {})
    assert remote._applied_already(prepared, _result(commit=head))  # type: ignore[arg-type]
    assert not remote._applied_already(prepared, _result())  # type: ignore[arg-type]
    other = retrain_core.Prepared(tmp_path, "churn", SHA, "dev", None, {})
    assert not remote._applied_already(other, _result(commit=head))  # type: ignore[arg-type]


@pytest.mark.parametrize("undone", [True, False])
def test_a_run_recover_rolled_back_is_not_applied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, undone: bool
) -> None:
    from mlrig.adapters import mlflow_rest
    from mlrig.adapters.mlflow_rest import ModelVersion
    from mlrig.core.compute import remote
    from mlrig.core.retrain import retrain as retrain_core
    from mlrig.core.retrain import state as retrain_state

    class Rest:
        def model_version(self, name: str, version: str) -> ModelVersion:
            tags = {retrain_state.UNDONE_TAG: "true"} if undone else {}
            return ModelVersion(name, version, "r" * 32, tags)

    monkeypatch.setattr(mlflow_rest.MlflowRest, "from_env", classmethod(lambda cls, env: Rest()))
    prepared = retrain_core.Prepared(tmp_path, "churn", SHA, "main", None, {})
    if undone:
        with pytest.raises(retrain_core.RetrainFailed, match="was undone"):
            remote._refuse_undone(prepared, _result())  # type: ignore[arg-type]
    else:
        remote._refuse_undone(prepared, _result())  # type: ignore[arg-type]
