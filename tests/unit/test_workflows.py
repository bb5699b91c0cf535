"""Issue 34 (3): mlrig's own workflows (ci.yml runs the README's test command; release.yml
builds, tests the wheel, attests and publishes by trusted publishing) and the workflows `mlrig
init` generates, checked against GitHub's workflow schema and by actionlint (with shellcheck
on every `run:` script): neither can run here, so a mistake must fail this test instead.
Issue 33 (7): the AWS workflow's retrain job submits `retrain --remote`, waits in rounds with
fresh credentials and applies; its scripts run here under bash with `aws`/`mlrig` stand-ins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import init as bootstrap
from tests.helpers import REPO_ROOT, actionlint_findings, aws_outputs, workflow_schema_errors

WORKFLOWS = REPO_ROOT / ".github/workflows"
OWN = [WORKFLOWS / "ci.yml", WORKFLOWS / "release.yml"]


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True)
    return dict(data)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The CI workflow `mlrig init` writes for a repository on an AWS and on a local stack."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("render")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRIG_HOME", str(home))
        src, ref = bootstrap.template_repo()
        local = aws_outputs("dev").model_copy(update={"kind": "local", "ci_role_arn": None})
        for outputs in (aws_outputs(), local):
            dest = out / outputs.kind
            bootstrap_render.render(src, ref, dest, project="churn", outputs=outputs)
    return [out / kind / ".github/workflows/ci.yml" for kind in ("aws", "local")]


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_the_project_workflows_match_the_schema(path: Path) -> None:
    assert workflow_schema_errors(path) == []


def test_actionlint_finds_nothing_in_the_project_or_generated_workflows(
    generated: list[Path],
) -> None:
    assert actionlint_findings(*OWN, *generated) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    text = (WORKFLOWS / "release.yml").read_text()
    typo = tmp_path / "typo.yml"
    typo.write_text(text.replace("runs-on:", "runs_on:", 1))
    assert any("runs_on" in e or "runs-on" in e for e in workflow_schema_errors(typo))
    # an untrusted value expanded into a script, and a shell word left unquoted
    injected = tmp_path / "injected.yml"
    injected.write_text(
        text.replace(
            'version="${TAG#v}"',
            'version="${{ github.event.head_commit.message }}"; ls $RUNNER_TEMP',
            1,
        )
    )
    findings = actionlint_findings(injected)
    assert any("github.event.head_commit.message" in f for f in findings), findings
    assert any("SC2086" in f for f in findings), findings


def test_ci_runs_the_readmes_test_command_on_the_full_history() -> None:
    readme = (REPO_ROOT / "README.md").read_text().split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block
    test_command = block.group(1).splitlines()[1].split("#", 1)[0].strip()
    assert test_command == "scripts/test"
    (job,) = _load(WORKFLOWS / "ci.yml")["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    assert f"bash {test_command}" in runs
    checkout = next(
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")
    )
    assert checkout["with"]["fetch-depth"] == 0  # setuptools-scm reads the version from git


def test_release_builds_tests_the_wheel_attests_and_publishes_without_a_token() -> None:
    release = _load(WORKFLOWS / "release.yml")
    assert release["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    assert release["permissions"] == {"contents": "read"}  # jobs ask for more one by one
    jobs = release["jobs"]
    assert jobs["test-wheel"]["needs"] == "build"
    assert set(jobs["publish"]["needs"]) == {"build", "test-wheel"}
    build = "\n".join(s.get("run", "") for s in jobs["build"]["steps"])
    assert "python -m build" in build
    assert jobs["build"]["steps"][0]["with"]["fetch-depth"] == 0
    smoke = "\n".join(s.get("run", "") for s in jobs["test-wheel"]["steps"])
    for command in ('bin/pip" install -q dist/mlrig-*.whl', "mlrig --version", "mlrig stack plan"):
        assert command in smoke
    assert "mlrig init model --stack ci --no-input" in smoke
    assert not any("actions/checkout" in str(s.get("uses")) for s in jobs["test-wheel"]["steps"])

    publish = jobs["publish"]
    assert publish["permissions"] == {
        "id-token": "write",
        "attestations": "write",
        "contents": "read",
    }
    assert publish["environment"]["name"] == "pypi"
    uses = {str(s.get("uses", "")).split("@")[0]: s for s in publish["steps"]}
    assert uses["actions/attest-build-provenance"]["with"] == {"subject-path": "dist/*"}
    pypi = uses["pypa/gh-action-pypi-publish"]
    assert "with" not in pypi  # trusted publishing: no password, no token input
    assert "secrets." not in (WORKFLOWS / "release.yml").read_text()
    order = [str(s.get("uses", "")).split("@")[0] for s in publish["steps"]]
    assert order.index("actions/attest-build-provenance") < order.index(
        "pypa/gh-action-pypi-publish"
    )


# -- the AWS workflow's retrain job: submit a remote task, wait in rounds, apply -----------------
TASK = (
    "arn:aws:ecs:eu-west-1:123456789012:task/mlflow-cluster-1a2b/0123456789abcdef0123456789abcdef"
)
CLUSTER = "arn:aws:ecs:eu-west-1:123456789012:cluster/mlflow-cluster-1a2b"
STORE = "mlrig-remote/churn"  # the generated repository's project is `churn`
PENDING = f"{STORE}/ci-pending"
RECORD = f"{STORE}/tasks/0123456789abcdef0123456789abcdef.json"  # mlrig's record of TASK


def _retrain_job(generated: list[Path]) -> dict[str, Any]:
    return dict(_load(generated[0])["jobs"]["retrain"])


def _step(job: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("id") == step_id)


def _named(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name") == name)


class FakeRunner:
    """A step's script under bash -eo pipefail as GitHub runs it (the job's env, the step's
    env), with `aws`, `mlrig`, `dvc`, `git` and `sleep` on PATH standing in, each call
    recorded. The DVC bucket `dvc-bkt` is a folder (`s3 cp/rm`, `s3api list-objects-v2`
    answer from it); DescribeTasks answers `statuses` one by one; `mlrig` prints `mlrig_out`
    and exits `mlrig_exit`."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.bucket = tmp_path / "bucket"
        self.bin = tmp_path / "bin"
        for folder in (self.bucket, self.bin, tmp_path / "runner_temp"):
            folder.mkdir(exist_ok=True)
        self.statuses: list[str] = []
        self.mlrig_out = f'submitted\n{{"task_id": "{TASK}", "backend": "aws", "attach": "x"}}'
        self.mlrig_exit = 0
        self.mlrig_forgets = False  # mlrig removes the task's record (applied or undone)

    def put(self, key: str, text: str = "{}") -> None:
        (self.bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (self.bucket / key).write_text(text)

    def has(self, key: str) -> bool:
        return (self.bucket / key).is_file()

    def run(
        self, job: dict[str, Any], step: dict[str, Any]
    ) -> tuple[Any, dict[str, str], list[str]]:
        import subprocess

        state, b = self.root, self.bucket
        (state / "calls").write_text("")
        (state / "statuses").write_text("".join(f"{s}\n" for s in self.statuses))
        (state / "mlrig.out").write_text(self.mlrig_out + "\n")
        forget = f"rm -f {b}/{RECORD}" if self.mlrig_forgets else ":"
        fakes = {
            "aws": f"""echo "aws $*" >> {state}/calls
args=("$@"); last="${{args[-1]}}"
case "$1 $2" in
  "s3 cp") if [ "$last" = - ]; then key="${{args[-2]#s3://dvc-bkt/}}"; cat "{b}/$key" || exit 1
           else key="${{last#s3://dvc-bkt/}}"; mkdir -p "$(dirname "{b}/$key")"
                cat > "{b}/$key"; fi ;;
  "s3 rm") key="${{last#s3://dvc-bkt/}}"; rm -f "{b}/$key" ;;
  "s3api list-objects-v2")
    [ "$3 $4" = "--bucket dvc-bkt" ] && [ "$5" = --prefix ] || exit 2
    keys=$(cd {b} && find . -type f | sed 's#^\\./##' | while read -r k; do
      case "$k" in "$6"*) echo "$k" ;; esac; done | sort)
    if [ -z "$keys" ]; then echo None; else tr '\\n' '\\t' <<<"$keys" | sed 's/\\t$//'; echo; fi ;;
  "ecs describe-tasks") head -n 1 {state}/statuses; sed -i 1d {state}/statuses ;;
  *) exit 2 ;;
esac""",
            "mlrig": f"""echo "mlrig $*" >> {state}/calls
cat {state}/mlrig.out
{forget}
exit {self.mlrig_exit}""",
            "dvc": 'if [ "$1 $2" = "remote default" ]; then echo storage; '
            "else echo s3://dvc-bkt/dvc; fi",
            "git": "exit 0",
            "sleep": "exit 0",
        }
        for name, body in fakes.items():
            (self.bin / name).write_text(f"#!/bin/bash\n{body}\n")
            (self.bin / name).chmod(0o755)
        outputs = state / "github_output"
        outputs.write_text("")
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "GITHUB_OUTPUT": str(outputs),
            "RUNNER_TEMP": str(state / "runner_temp"),
            **{k: str(v) for k, v in job.get("env", {}).items()},
            **{k: v for k, v in _step_env(step).items()},
        }
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = outputs.read_text().splitlines()
        written = dict(line.split("=", 1) for line in lines if "=" in line)
        return proc, written, (state / "calls").read_text().splitlines()


def _step_env(step: dict[str, Any]) -> dict[str, str]:
    """The step's env with the submit step's outputs as GitHub would expand them."""
    outputs = {
        "${{ steps.submit.outputs.task }}": TASK,
        "${{ steps.submit.outputs.bucket }}": "dvc-bkt",
    }
    return {k: outputs.get(str(v), str(v)) for k, v in step.get("env", {}).items()}


@pytest.fixture
def runner(tmp_path: Path) -> FakeRunner:
    return FakeRunner(tmp_path)


def test_retrain_submits_a_remote_task_and_records_it_for_the_next_run(
    generated: list[Path], runner: FakeRunner
) -> None:
    job = _retrain_job(generated)
    assert job["env"]["MLRIG_REMOTE"] == STORE
    proc, out, calls = runner.run(job, _step(job, "submit"))
    assert proc.returncode == 0, proc.stderr
    assert out == {"bucket": "dvc-bkt", "task": TASK}
    assert "mlrig retrain --remote --detach --json" in calls
    assert (runner.bucket / PENDING).read_text() == TASK
    # no dvc pull, no training on the runner: the task does both
    assert not any("dvc pull" in str(s.get("run", "")) for s in job["steps"])


def test_retrain_refuses_a_submission_without_a_task_arn(
    generated: list[Path], runner: FakeRunner
) -> None:
    job = _retrain_job(generated)
    for last in ('{"task_id": "0123456789ab", "backend": "local"}', "a human line"):
        runner.mlrig_out = f"submitted\n{last}"
        proc, out, _calls = runner.run(job, _step(job, "submit"))
        assert proc.returncode == 1 and "task" not in out
        assert "::error title=retrain::" in proc.stdout and "without a task ARN" in proc.stdout
        assert not runner.has(PENDING)  # nothing for the next run to take over
    runner.mlrig_exit = 4  # a refused submission fails the step through the pipe
    runner.mlrig_out = "a remote retrain of churn is already running"
    proc, out, _calls = runner.run(job, _step(job, "submit"))
    assert proc.returncode == 4 and "task" not in out and not runner.has(PENDING)


def test_retrain_takes_over_the_task_an_earlier_run_left(
    generated: list[Path], runner: FakeRunner
) -> None:
    job = _retrain_job(generated)
    submit = _step(job, "submit")
    runner.put(PENDING, TASK)
    runner.put(RECORD)
    proc, out, calls = runner.run(job, submit)
    assert proc.returncode == 0, proc.stderr
    assert out["task"] == TASK
    assert not [c for c in calls if c.startswith("mlrig")]  # nothing submitted twice
    assert "::notice" in proc.stdout and TASK in proc.stdout
    # a marker whose run mlrig applied or undid since (no record left): a new submission
    (runner.bucket / RECORD).unlink()
    proc, out, calls = runner.run(job, submit)
    assert proc.returncode == 0, proc.stderr
    assert "applied or undone already" in proc.stdout
    assert "mlrig retrain --remote --detach --json" in calls
    assert f"aws s3 rm --only-show-errors -- s3://dvc-bkt/{PENDING}" in calls
    assert runner.has(PENDING)  # the new task's
    # a marker that holds no task ARN is one line, nothing submitted, nothing run
    runner.put(PENDING, "$(reboot)")
    proc, out, calls = runner.run(job, submit)
    assert proc.returncode == 1 and "task" not in out
    assert "::error title=retrain::" in proc.stdout and "aws s3 rm" in proc.stdout
    assert "reboot" not in proc.stdout  # the object's text is never echoed
    assert not [c for c in calls if c.startswith("mlrig")]


def test_retrain_waits_in_rounds_with_fresh_credentials_then_applies(
    generated: list[Path], runner: FakeRunner
) -> None:
    job = _retrain_job(generated)
    assert job["timeout-minutes"] <= 360  # a hosted runner's limit
    assert job["concurrency"] == {"group": "retrain", "cancel-in-progress": False}
    steps = job["steps"]
    waits = [s for s in steps if str(s.get("id", "")).startswith("wait")]
    assert len(waits) == 6 and "SECONDS + 3000" in waits[0]["run"]  # 6 x 50 min < the limit
    for wait in waits:
        before = steps[steps.index(wait) - 1]
        assert str(before["uses"]).startswith("aws-actions/configure-aws-credentials")
        assert before["with"]["role-to-assume"] == aws_outputs().ci_role_arn
        assert before["if"] == wait["if"]
    assert waits[1]["if"].endswith("steps.wait0.outputs.stopped == 'false'")
    apply = _step(job, "retrain")
    assert 'mlrig retrain --remote --attach "$TASK" --no-push-image --json' in apply["run"]
    names = [s.get("name", "") for s in steps]
    at = steps.index(apply)
    assert names[at - 2] == "Fresh AWS credentials (apply)"
    assert "MLFLOW_TRACKING_TOKEN" in steps[at - 1]["run"]  # a token fetched just before
    assert apply["if"].endswith("steps.wait5.outputs.stopped != 'false'")
    outlived = _named(job, "The task outlived this job")
    assert outlived["if"].endswith("steps.wait5.outputs.stopped == 'false'")
    # the wait polls DescribeTasks on the ARN's cluster until STOPPED
    runner.statuses = ["PROVISIONING", "RUNNING", "STOPPED"]
    proc, out, calls = runner.run(job, waits[0])
    assert proc.returncode == 0, proc.stderr
    assert out == {"stopped": "true"}
    polls = [c for c in calls if c.startswith("aws ecs describe-tasks")]
    assert len(polls) == 3
    assert polls[0] == f"aws ecs describe-tasks --cluster {CLUSTER} --tasks {TASK} " + (
        "--query tasks[0].lastStatus --output text"
    )
    # ... or until ECS no longer lists it
    runner.statuses = ["RUNNING", "None"]
    proc, out, _calls = runner.run(job, waits[3])
    assert proc.returncode == 0 and out == {"stopped": "true"}


def test_retrain_applies_the_result_and_says_whether_the_champion_moved(
    generated: list[Path], runner: FakeRunner
) -> None:
    job = _retrain_job(generated)
    apply = _step(job, "retrain")
    runner.mlrig_out = 'log line\n{"changed": true, "champion_moved": true}'
    proc, out, calls = runner.run(job, apply)
    assert proc.returncode == 0, proc.stderr
    assert out == {"champion_moved": "true"}
    assert calls == [f"mlrig retrain --remote --attach {TASK} --no-push-image --json"]
    runner.mlrig_exit = 137  # the task's own exit code: the step (and the job) fails
    runner.mlrig_out = "the remote retrain failed: OOM-killed (memory limit 4096 MiB)"
    proc, out, _calls = runner.run(job, apply)
    assert proc.returncode == 137 and out == {}
    # the image job reads the applied result: a moved champion is built, pushed, canaried
    assert job["outputs"]["champion_moved"] == "${{ steps.retrain.outputs.champion_moved }}"


def test_retrain_forgets_the_task_only_once_its_run_is_applied_or_undone(
    generated: list[Path], runner: FakeRunner
) -> None:
    job = _retrain_job(generated)
    forget = _named(job, "Forget the task once its run is applied or undone")
    assert forget["if"].startswith("always()")  # after a failed or cancelled apply too
    assert job["steps"][-1] is forget
    # mlrig still records the run (the task outlived the job, the apply broke before it
    # changed anything): the marker stays for the next run to attach to
    runner.put(PENDING, TASK)
    runner.put(RECORD)
    proc, _out, _calls = runner.run(job, forget)
    assert proc.returncode == 0, proc.stderr
    assert runner.has(PENDING) and "the next run attaches to it" in proc.stdout
    # applied or undone (mlrig removed its record): the marker goes
    (runner.bucket / RECORD).unlink()
    proc, _out, calls = runner.run(job, forget)
    assert proc.returncode == 0, proc.stderr
    assert not runner.has(PENDING)
    assert f"aws s3 rm --only-show-errors -- s3://dvc-bkt/{PENDING}" in calls


def test_the_retrain_job_calls_only_options_mlrig_retrain_has(generated: list[Path]) -> None:
    import shlex

    import typer

    from mlrig.main import app

    retrain = typer.main.get_command(app).commands["retrain"]  # type: ignore[attr-defined]
    declared = {opt for param in retrain.params for opt in (*param.opts, *param.secondary_opts)}
    runs = "\n".join(str(s.get("run", "")) for s in _retrain_job(generated)["steps"])
    calls = [line.split("|")[0] for line in runs.splitlines() if line.strip().startswith("mlrig ")]
    assert len(calls) == 2
    used = {w for call in calls for w in shlex.split(call) if w.startswith("--")}
    assert used == {"--remote", "--detach", "--json", "--attach", "--no-push-image"}
    assert used <= declared
