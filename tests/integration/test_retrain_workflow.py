"""The AWS variant of the generated CI workflow, rendered by real copier through `mlrig init`:
valid for GitHub, keyless (an OIDC token for MLflow, no secret read), `mlrig retrain` on
demand and on a schedule, one image path (`mlrig image build/push` of the champion), and a
champion the gate moved deployed as a canary (`mlrig deploy --canary`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrig import contract
from mlrig.core.bootstrap import init as bootstrap
from tests.helpers import aws_outputs, require

pytestmark = pytest.mark.integration
WORKFLOW = ".github/workflows/ci.yml"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True)  # YAML 1.1 reads the bare key `on` as a boolean
    return dict(data)


def _schema_errors(data: dict[str, Any]) -> list[str]:
    """Against SchemaStore's GitHub workflow schema, as check-jsonschema vendors it."""
    from jsonschema import Draft7Validator

    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("github-workflows.json")
        .read_text()
    )
    return [e.message for e in Draft7Validator(schema).iter_errors(data)]


def _runs(job: dict[str, Any]) -> list[str]:
    return [str(step.get("run", "")) for step in job["steps"]]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLRIG_HOME", str(home))
        contract.save(aws_outputs())
        repo = bootstrap.init(tmp_path_factory.mktemp("wf") / "churn", "prod").path
    text = (repo / WORKFLOW).read_text()
    return text, _load(repo / WORKFLOW)


def test_the_aws_workflow_is_valid_for_github(workflow: tuple[str, dict[str, Any]]) -> None:
    _, data = workflow
    assert _schema_errors(data) == []
    broken = {**data, "jobs": {**data["jobs"], "image": {**data["jobs"]["image"], "runs_on": 1}}}
    assert _schema_errors(broken)  # the check can fail


def test_no_secret_is_read_mlflow_gets_an_oidc_token(workflow: tuple[str, dict[str, Any]]) -> None:
    text, data = workflow
    assert "secretsmanager" not in text.lower()
    assert "MLFLOW_TRACKING_PASSWORD" not in text
    assert "MLFLOW_TRACKING_USERNAME" not in text
    assert "secrets." not in text
    assert data["permissions"]["id-token"] == "write"
    assert data["env"]["MLFLOW_OIDC_AUDIENCE"] == "mlrig:prod"  # contract B's default
    for name, job in data["jobs"].items():
        runs = "\n".join(_runs(job))
        assert "$ACTIONS_ID_TOKEN_REQUEST_URL&audience=$MLFLOW_OIDC_AUDIENCE" in runs, name
        assert 'echo "::add-mask::$token"' in runs, name
        assert "MLFLOW_TRACKING_TOKEN=$token" in runs, name
        assert job.get("permissions", data["permissions"])["id-token"] == "write", name


def test_dispatch_and_schedule_run_mlrig_retrain(workflow: tuple[str, dict[str, Any]]) -> None:
    _, data = workflow
    on = data["on"]
    assert "workflow_dispatch" in on
    assert on["schedule"][0]["cron"].split()[4] == "1"  # weekly
    retrain = data["jobs"]["retrain"]
    assert "workflow_dispatch" in retrain["if"] and "schedule" in retrain["if"]
    lines = [ln.strip() for run in _runs(retrain) for ln in run.splitlines()]
    assert any(ln.startswith("mlrig retrain") for ln in lines)
    assert retrain["permissions"]["contents"] == "write"  # the retrain commit is pushed
    step = next(s for s in retrain["steps"] if "mlrig retrain" in s.get("run", ""))
    assert step["shell"] == "bash"  # GitHub's bash is -eo pipefail: `| tee` hides no failure
    assert "$RUNNER_TEMP/" in step["run"]  # nothing written into the work tree
    # the push/PR pipeline does not run on the schedule (it would train twice)
    assert "schedule" not in data["jobs"]["pipeline"]["if"]


def test_one_image_path_mlrig_builds_and_pushes_the_champion(
    workflow: tuple[str, dict[str, Any]],
) -> None:
    text, data = workflow
    image = data["jobs"]["image"]
    runs = _runs(image)
    assert any("mlrig image build" in r and "models:/churn@champion" in r for r in runs)
    assert any(r.strip().startswith("mlrig image push") for r in runs)
    assert "docker build" not in text and "docker push" not in text
    assert "/latest" not in text and "mlflow artifacts download" not in text
    assert "retrain" in image["needs"] and "champion_moved" in image["if"]
    # mlrig reads the stack's outputs; the runner gets them written, with no MLflow login
    outputs_step = next(s for s in image["steps"] if s.get("name") == "Stack outputs for mlrig")
    assert '"$home/stacks/prod/outputs.json"' in outputs_step["run"]
    assert "auth" not in outputs_step["run"]


def _deploy_step(data: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in data["jobs"]["image"]["steps"] if "mlrig deploy" in s.get("run", ""))


def test_a_champion_the_gate_moved_is_deployed_as_a_canary_keylessly(
    workflow: tuple[str, dict[str, Any]],
) -> None:
    _, data = workflow
    image = data["jobs"]["image"]
    step = _deploy_step(data)
    assert step["if"] == "needs.retrain.outputs.champion_moved == 'true'"
    names = [s.get("name") for s in image["steps"]]
    assert names.index(step["name"]) > names.index("Push it to ECR (digest verified)")
    assert step["env"] == {"MLRIG_ENDPOINT": "churn", "MLRIG_CANARY": "10"}
    assert step["shell"] == "bash"
    # keyless: the same OIDC role and token steps as the image's build and push
    assert any("configure-aws-credentials" in str(s.get("uses")) for s in image["steps"])
    assert "secrets." not in step["run"] and "key" not in step["run"].lower()


def _run_deploy(
    step: dict[str, Any], tmp_path: Path, listed: str, list_exit: int = 0
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The step's script under bash as GitHub runs it (-eo pipefail), with an `mlrig` on PATH
    that answers `deploy list` with `listed` and records every other call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    calls.write_text("")
    (tmp_path / "listed.json").write_text(listed)
    mlrig = bin_dir / "mlrig"
    mlrig.write_text(
        "#!/bin/bash\n"
        f'if [ "$2" = list ]; then cat "{tmp_path}/listed.json"; exit {list_exit}; fi\n'
        f'echo "$*" >> "{calls}"\n'
    )
    mlrig.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "MLRIG_STACK": "prod",
        **{k: str(v) for k, v in step["env"].items()},
    }
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc, calls.read_text().splitlines()


def test_the_deploy_step_canaries_an_existing_endpoint_and_never_creates_one(
    workflow: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    require(shutil.which("jq") is not None, "jq")
    step = _deploy_step(workflow[1])
    proc, calls = _run_deploy(step, tmp_path, '[{"endpoint": "churn", "public": false}]')
    assert proc.returncode == 0, proc.stderr
    assert calls == ["deploy models:/churn@champion --endpoint churn --canary 10 --stack prod"]
    # no endpoint yet: a warning naming the one-time command, nothing deployed (no key in logs)
    proc, calls = _run_deploy(step, tmp_path, '[{"endpoint": "other"}]')
    assert proc.returncode == 0 and calls == []
    assert "::warning" in proc.stdout and "--endpoint churn" in proc.stdout
    # a list that fails fails the step: never read as "no endpoint", nothing deployed
    proc, calls = _run_deploy(step, tmp_path, "", list_exit=3)
    assert proc.returncode != 0 and calls == []
