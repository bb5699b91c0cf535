"""`stack up --aws` / `down` dispatch, and the two-phase order of `aws_stack.up`.

The Pulumi CLI cannot run on these machines, so the adapter is replaced by a recorder here;
what is asserted is mlrig's own logic: the request the CLI builds, which config is set (and
which of it as secret), the phase order, and the StackOutputs written at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.stack.aws import stack as aws_stack
from mlrig.main import app
from tests.helpers import aws_stack_outputs

runner = CliRunner()


def test_up_aws_builds_the_request(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[aws_stack.AwsStackRequest] = []

    def fake_up(req, progress):  # type: ignore[no-untyped-def]
        seen.append(req)
        return aws_stack_outputs(req.name)

    monkeypatch.setattr(aws_stack, "up", fake_up)
    result = runner.invoke(
        app,
        [
            "stack",
            "up",
            "--aws",
            "--name",
            "team",
            "--region",
            "eu-west-1",
            "--profile",
            "production",
            "--github-repo",
            "acme/churn",
            "--domain",
            "ml.acme.io",
            "--backend-url",
            "s3://acme-state",
            "--yes",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen == [
        aws_stack.AwsStackRequest(
            name="team",
            region="eu-west-1",
            profile="production",
            github_repo="acme/churn",
            domain="ml.acme.io",
            backend_url="s3://acme-state",
        )
    ]
    assert "AWS stack 'team' is up" in result.output


def test_down_dispatches_on_the_stack_kind(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        aws_stack,
        "down",
        lambda name, purge, progress: (
            calls.append((name, purge)) or aws_stack.DownResult(True, ["database snapshot s1"])
        ),
    )
    contract.save(aws_stack_outputs("team"))
    result = runner.invoke(app, ["stack", "down", "--name", "team", "--purge", "--yes"])
    assert result.exit_code == 0, result.output
    assert calls == [("team", True)]
    assert "remains: database snapshot s1" in result.output


class Recorder:
    """Stands in for mlrig.adapters.pulumi: keeps config, logs calls, returns outputs."""

    def __init__(self, config: dict[str, str] | None = None) -> None:
        self.config = dict(config or {})
        self.secret: set[str] = set()
        self.log: list[str] = []

    def select_stack(self, name, program, *, backend_url, passphrase, env=None):  # type: ignore[no-untyped-def]
        self.log.append(f"select {name} {backend_url}")
        assert passphrase and callable(program)
        return self

    def get_config(self, stack, key):  # type: ignore[no-untyped-def]
        return self.config.get(key)

    def set_config(self, stack, values, secret):  # type: ignore[no-untyped-def]
        self.config.update(values)
        self.config.update(secret)
        self.secret |= set(secret)
        self.log.append("config " + ",".join(sorted([*values, *secret])))

    def up(self, stack, on_output):  # type: ignore[no-untyped-def]
        self.log.append("up")
        return {
            "region": "us-east-1",
            "dvc_remote_url": "s3://b/dvc",
            "dvc_remote_region": "us-east-1",
            "registry_url": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x/models",
            "mlflow_server_repository_url": "1.dkr.ecr/x/mlflow-server",
            "mlflow_tracking_uri": "https://x.example",
            "mlflow_admin_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:a",
        }

    def cli_path(self) -> str:
        return "/usr/bin/pulumi"


@pytest.fixture
def recorder(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    from mlrig.adapters import pulumi as pulumi_adapter

    rec = Recorder()
    for fn in ("select_stack", "get_config", "set_config", "up", "cli_path"):
        monkeypatch.setattr(pulumi_adapter, fn, getattr(rec, fn))
    monkeypatch.setattr(aws_stack, "check_credentials", lambda req: "123456789012")
    monkeypatch.setattr(
        aws_stack,
        "build_server_image",
        lambda progress: rec.log.append("build") or "mlrig/mlflow-server:t",
    )
    monkeypatch.setattr(
        aws_stack,
        "push_server_image",
        lambda image, req, url, progress: (
            rec.log.append(f"push {image} {url}") or f"{url}@sha256:abc"
        ),
    )
    return rec


def test_first_up_runs_two_phases_around_the_image(recorder: Recorder) -> None:
    req = aws_stack.AwsStackRequest(name="team", region="us-east-1", github_repo="acme/m")
    out = aws_stack.up(req)
    assert recorder.log[1:] == [
        "config aws:region,mlrig:adminPassword,mlrig:dbPassword,mlrig:flaskSecret,"
        "mlrig:githubRepo,mlrig:profile",
        "up",
        "build",
        "push mlrig/mlflow-server:t 1.dkr.ecr/x/mlflow-server",
        "config mlrig:mlflowImage",
        "up",
    ]
    assert recorder.secret == {"mlrig:dbPassword", "mlrig:adminPassword", "mlrig:flaskSecret"}
    assert len({recorder.config[k] for k in recorder.secret}) == 3  # three distinct secrets
    assert recorder.config["mlrig:mlflowImage"] == "1.dkr.ecr/x/mlflow-server@sha256:abc"
    assert contract.load("team") == out and out.kind == "aws"
    assert out.mlflow.auth is not None and out.mlflow.auth.password.source == "aws-secretsmanager"


def test_a_server_size_is_stack_config_and_stays_until_another_is_given(
    recorder: Recorder,
) -> None:
    recorder.config.update({"mlrig:mlflowImage": "img@sha256:1"})
    sized = aws_stack.AwsStackRequest(name="team", region="us-east-1", server_size="2048:4096")
    aws_stack.up(sized)
    assert recorder.config["mlrig:serverSize"] == "2048:4096"
    aws_stack.up(aws_stack.AwsStackRequest(name="team", region="us-east-1"))
    assert recorder.config["mlrig:serverSize"] == "2048:4096"  # kept, not reset
    assert recorder.log[-2] == "config aws:region,mlrig:profile"


def test_later_up_keeps_secrets_and_image(recorder: Recorder) -> None:
    recorder.config.update(
        {
            "mlrig:dbPassword": "kept",
            "mlrig:adminPassword": "kept2",
            "mlrig:flaskSecret": "kept3",
            "mlrig:mlflowImage": "img@sha256:1",
        }
    )
    aws_stack.up(aws_stack.AwsStackRequest(name="team", region="us-east-1"))
    assert recorder.log[1:] == ["config aws:region,mlrig:profile", "up"]
    assert recorder.config["mlrig:dbPassword"] == "kept"
