"""`mlrig stack up/preview/down` for AWS stacks: every failure is one line, nothing half-done.

The Pulumi CLI cannot be installed on these machines, so `up` is exercised up to the point
where it needs it; AWS itself is moto's standalone server (real boto3 calls over HTTP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.main import app

runner = CliRunner()


def _one_line(result) -> str:  # type: ignore[no-untyped-def]
    text = result.output.strip()
    assert "Traceback" not in text and "FileNotFoundError" not in text
    assert len(text.splitlines()) <= 2, text  # rich may wrap one long line once
    return " ".join(text.split())


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "MLRIG_AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from mlrig.adapters import aws

    aws.session.cache_clear()


@pytest.fixture
def no_pulumi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--github-repo", "not-a-repo"], "invalid --github-repo 'not-a-repo'"),
        (["--domain", "Not A Domain"], "invalid --domain"),
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--region", "moon-1"], "invalid AWS region 'moon-1'"),
        (["--region", "mars-1"], "invalid AWS region 'mars-1'"),
        (["--domain", "a..b"], "invalid --domain 'a..b'"),
        (["--domain", "not a domain!"], "invalid --domain 'not a domain!'"),
        (["--github-repo", "-acme/churn"], "invalid --github-repo '-acme/churn'"),
        (["--github-repo", "acme/.."], "invalid --github-repo 'acme/..'"),
        (["--local"], "--local and --aws exclude each other"),
    ],
)
def test_bad_input_is_a_usage_error(mlrig_home: Path, args: list[str], expected: str) -> None:
    result = runner.invoke(
        app, ["stack", "up", "--aws", "--name", "t1", "--yes", "--region", "us-east-1", *args]
    )
    assert result.exit_code == 2
    assert expected in _one_line(result)
    assert not (mlrig_home / "stacks" / "t1").exists()


def test_missing_region(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    result = runner.invoke(app, ["stack", "up", "--aws", "--name", "t1", "--yes"])
    assert result.exit_code == 6
    assert "no AWS region given — pass --region" in _one_line(result)


@pytest.mark.parametrize("command", [["up", "--aws", "--yes"], ["preview"]])
def test_missing_credentials(
    mlrig_home: Path, no_aws_credentials: None, command: list[str]
) -> None:
    result = runner.invoke(app, ["stack", *command, "--name", "t1", "--region", "us-east-1"])
    assert result.exit_code == 6
    assert "no AWS credentials found" in _one_line(result)
    assert not (mlrig_home / "stacks" / "t1").exists()


@pytest.mark.integration
@pytest.mark.parametrize("command", [["up", "--aws", "--yes"], ["preview"]])
def test_missing_pulumi_cli(
    mlrig_home: Path, aws_env: str, no_pulumi: None, command: list[str]
) -> None:
    result = runner.invoke(app, ["stack", *command, "--name", "t1", "--region", "us-east-1"])
    assert result.exit_code == 4
    line = _one_line(result)
    assert "the `pulumi` CLI is not installed" in line
    assert "https://get.pulumi.com" in line
    assert not (mlrig_home / "stacks" / "t1").exists()


def test_declining_the_confirmation_changes_nothing(mlrig_home: Path) -> None:
    result = runner.invoke(
        app, ["stack", "up", "--aws", "--name", "t1", "--region", "us-east-1"], input="n\n"
    )
    assert result.exit_code == 130
    assert "nothing was changed" in result.output


def _aws_outputs(name: str, bucket: str, admin_secret_arn: str):  # type: ignore[no-untyped-def]
    from mlrig.core.stack.aws import stack as aws_stack

    return aws_stack.to_stack_outputs(
        name,
        {
            "region": "us-east-1",
            "dvc_remote_url": f"s3://{bucket}/dvc",
            "dvc_remote_region": "us-east-1",
            "mlflow_tracking_uri": "https://abc.execute-api.us-east-1.amazonaws.com",
            "mlflow_admin_secret_arn": admin_secret_arn,
            "registry_url": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/mlrig-{name}/models",
            "ci_role_arn": "arn:aws:iam::123456789012:role/ci",
        },
    )


@pytest.fixture
def aws_stack_with_data(mlrig_home: Path, aws_env: str) -> dict:
    import boto3
    import requests

    requests.post(f"{aws_env}/moto-api/reset", timeout=10)  # the server is session-wide
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=aws_env)
    ecr = boto3.client("ecr", region_name="us-east-1", endpoint_url=aws_env)
    sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=aws_env)
    bucket = "mlrig-t2-bucket"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="dvc/files/md5/ab/cdef", Body=b"data")
    ecr.create_repository(repositoryName="mlrig-t2/models")
    ecr.create_repository(repositoryName="mlrig-t2/mlflow-server")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "digest": "sha256:" + "1" * 64,
            "size": 1,
            "mediaType": "application/vnd.docker.container.image.v1+json",
        },
        "layers": [],
    }
    ecr.put_image(
        repositoryName="mlrig-t2/models", imageManifest=json.dumps(manifest), imageTag="churn-v1"
    )
    arn = sm.create_secret(Name="mlflow-admin", SecretString="s3cret-admin-pw")["ARN"]
    contract.save(_aws_outputs("t2", bucket, arn))
    return {"s3": s3, "ecr": ecr, "bucket": bucket}


@pytest.mark.integration
def test_down_refuses_while_data_remains(aws_stack_with_data: dict, no_pulumi: None) -> None:
    result = runner.invoke(app, ["stack", "down", "--name", "t2", "--yes"])
    assert result.exit_code == 7
    line = _one_line(result)
    assert "nothing was destroyed" in line
    assert "bucket mlrig-t2-bucket holds 1 object versions" in line
    assert "repository mlrig-t2/models holds 1 images" in line
    assert "--purge" in line
    assert contract.load("t2").kind == "aws"  # the stack is still known


@pytest.mark.integration
def test_down_of_an_empty_stack_needs_the_pulumi_cli(
    aws_stack_with_data: dict, no_pulumi: None
) -> None:
    s3, ecr, bucket = (
        aws_stack_with_data["s3"],
        aws_stack_with_data["ecr"],
        aws_stack_with_data["bucket"],
    )
    for v in s3.list_object_versions(Bucket=bucket)["Versions"]:
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    ecr.batch_delete_image(repositoryName="mlrig-t2/models", imageIds=[{"imageTag": "churn-v1"}])
    result = runner.invoke(app, ["stack", "down", "--name", "t2", "--yes"])
    assert result.exit_code == 4
    assert "the `pulumi` CLI is not installed" in _one_line(result)
    assert contract.load("t2").kind == "aws"


@pytest.mark.integration
def test_purge_asks_first(aws_stack_with_data: dict, no_pulumi: None) -> None:
    result = runner.invoke(app, ["stack", "down", "--name", "t2", "--purge"], input="n\n")
    assert result.exit_code == 130 and "nothing was destroyed" in result.output


@pytest.mark.integration
def test_aws_outputs_resolve_the_admin_password(aws_stack_with_data: dict) -> None:
    from mlrig.core.shared import secrets

    out = contract.load("t2")
    assert out.registry.kind == "ecr" and out.registry.repository == "mlrig-t2/models"
    assert out.mlflow.auth is not None and out.mlflow.auth.username == "admin"
    assert secrets.resolve(out.mlflow.auth.password) == "s3cret-admin-pw"
    shown = runner.invoke(app, ["stack", "outputs", "--name", "t2", "--json"])
    assert shown.exit_code == 0 and "s3cret-admin-pw" not in shown.output


@pytest.mark.integration
def test_down_counts_images_even_when_the_bucket_is_gone(
    aws_stack_with_data: dict, no_pulumi: None
) -> None:
    s3, bucket = aws_stack_with_data["s3"], aws_stack_with_data["bucket"]
    for v in s3.list_object_versions(Bucket=bucket)["Versions"]:
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=bucket)
    result = runner.invoke(app, ["stack", "down", "--name", "t2", "--yes"])
    assert result.exit_code == 7
    line = _one_line(result)
    assert "repository mlrig-t2/models holds 1 images" in line and "bucket" not in line
