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


# -- the AWS workflow's retrain job -----------------------------------------------------------
def test_retrain_trains_on_the_runner_until_remote_retrains_run_on_aws(
    generated: list[Path],
) -> None:
    # `mlrig retrain --remote` refuses an AWS stack in one line (the AWS backend is not wired
    # into it yet): a generated workflow that submitted remote tasks would fail every
    # scheduled retrain, so the job runs the pipeline where it runs, as before
    job = dict(_load(generated[0])["jobs"]["retrain"])
    runs = [str(step.get("run", "")) for step in job["steps"]]
    assert any("mlrig retrain --no-push-image --json" in run for run in runs)
    assert not any("--remote" in run for run in runs)
