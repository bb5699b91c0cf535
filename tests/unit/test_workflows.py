"""Issue 34 (3): mlrig's own workflows (ci.yml runs the README's test command; release.yml
builds, tests the wheel, attests and publishes by trusted publishing) and the workflows `mlrig
init` generates, checked against GitHub's workflow schema and by actionlint (with shellcheck
on every `run:` script): neither can run here, so a mistake must fail this test instead."""

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


def _retrain_job(generated: list[Path]) -> dict[str, Any]:
    return dict(_load(generated[0])["jobs"]["retrain"])


def _step(job: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("id") == step_id)


def _run_step(
    step: dict[str, Any], tmp_path: Path, *, marker: str | None, statuses: list[str]
) -> tuple[Any, dict[str, str], list[str]]:
    """The step's script under bash -eo pipefail as GitHub runs it, with `aws`, `mlrig`,
    `dvc`, `git` and `sleep` on PATH standing in (each call recorded): the DVC bucket's
    marker object is a file, DescribeTasks answers `statuses` one by one."""
    import subprocess

    state = tmp_path / "state"
    bin_dir = tmp_path / "bin"
    state.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    (state / "calls").write_text("")
    (state / "statuses").write_text("".join(f"{s}\n" for s in statuses))
    if marker is None:
        (state / "marker").unlink(missing_ok=True)
    else:
        (state / "marker").write_text(marker)
    fakes = {
        "aws": f"""echo "aws $*" >> {state}/calls
last="${{*: -1}}"
case "$1 $2" in
  "s3 cp") if [ "$last" = - ]; then [ -f {state}/marker ] && cat {state}/marker || exit 1
           else cat > {state}/marker; fi ;;
  "s3 rm") rm -f {state}/marker ;;
  "ecs describe-tasks") head -n 1 {state}/statuses; sed -i 1d {state}/statuses ;;
esac""",
        "mlrig": f"""echo "mlrig $*" >> {state}/calls
echo '{{"task_id": "{TASK}"}}'""",
        "dvc": 'if [ "$1 $2" = "remote default" ]; then echo storage; '
        "else echo s3://dvc-bkt/dvc; fi",
        "git": "exit 0",
        "sleep": "exit 0",
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    outputs, temp = tmp_path / "github_output", tmp_path / "runner_temp"
    outputs.write_text("")
    temp.mkdir(exist_ok=True)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "GITHUB_OUTPUT": str(outputs),
        "RUNNER_TEMP": str(temp),
        "MLRIG_PENDING": "mlrig-remote/churn/ci-pending",
        "TASK": TASK,
    }
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return proc, written, (state / "calls").read_text().splitlines()


def test_retrain_submits_a_remote_task_and_records_it_for_the_next_run(
    generated: list[Path], tmp_path: Path
) -> None:
    submit = _step(_retrain_job(generated), "submit")
    proc, out, calls = _run_step(submit, tmp_path, marker=None, statuses=[])
    assert proc.returncode == 0, proc.stderr
    assert out["task"] == TASK
    assert out["pending"] == "s3://dvc-bkt/mlrig-remote/churn/ci-pending"
    assert "mlrig retrain --remote --detach --json" in calls
    assert (tmp_path / "state" / "marker").read_text() == TASK


def test_retrain_takes_over_the_task_an_earlier_run_left(
    generated: list[Path], tmp_path: Path
) -> None:
    submit = _step(_retrain_job(generated), "submit")
    proc, out, calls = _run_step(submit, tmp_path, marker=TASK, statuses=[])
    assert proc.returncode == 0, proc.stderr
    assert out["task"] == TASK
    assert not [c for c in calls if c.startswith("mlrig")]  # nothing submitted twice
    assert "::notice" in proc.stdout and TASK in proc.stdout
    # a marker that holds no task ARN is one line, nothing submitted, nothing run
    proc, out, calls = _run_step(submit, tmp_path, marker="$(reboot)", statuses=[])
    assert proc.returncode == 1 and "task" not in out
    assert "::error title=retrain::" in proc.stdout and "aws s3 rm" in proc.stdout
    assert not [c for c in calls if c.startswith("mlrig")]


def test_retrain_waits_in_rounds_with_fresh_credentials_then_applies(
    generated: list[Path], tmp_path: Path
) -> None:
    job = _retrain_job(generated)
    assert job["timeout-minutes"] <= 360  # a hosted runner's limit
    steps = job["steps"]
    waits = [s for s in steps if str(s.get("id", "")).startswith("wait")]
    assert len(waits) == 6 and "SECONDS + 3000" in waits[0]["run"]  # 6 x 50 min < the limit
    for wait in waits:
        before = steps[steps.index(wait) - 1]
        assert str(before["uses"]).startswith("aws-actions/configure-aws-credentials")
        assert before["if"] == wait["if"]
    assert waits[1]["if"].endswith("steps.wait0.outputs.stopped == 'false'")
    apply = _step(job, "retrain")
    assert 'mlrig retrain --remote --attach "$TASK" --json' in apply["run"]
    names = [s.get("name", "") for s in steps]
    at = steps.index(apply)
    assert names[at - 2] == "Fresh AWS credentials (apply)"
    assert "MLFLOW_TRACKING_TOKEN" in steps[at - 1]["run"]  # a token fetched just before
    assert apply["if"].endswith("steps.wait5.outputs.stopped != 'false'")
    assert apply["run"].strip().endswith('aws s3 rm --only-show-errors -- "$PENDING"')
    # the wait polls DescribeTasks until STOPPED (or ECS no longer knows the task)
    proc, out, calls = _run_step(
        waits[0], tmp_path, marker=None, statuses=["PROVISIONING", "RUNNING", "STOPPED"]
    )
    assert proc.returncode == 0, proc.stderr
    assert out == {"stopped": "true"}
    polls = [c for c in calls if c.startswith("aws ecs describe-tasks")]
    assert len(polls) == 3 and "--cluster mlflow-cluster-1a2b" in polls[0]
