"""Machine identities on an AWS stack keep their password in Secrets Manager under
mlrig/<stack>/identities/<user> (moto's standalone server stands in for AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrig import contract
from mlrig.contract import BasicAuth, SecretRef
from mlrig.core.access import identities
from tests.helpers import aws_outputs

pytestmark = pytest.mark.integration


def outputs() -> contract.StackOutputs:
    base = aws_outputs("team", endpoint=None).model_copy(update={"region": "us-east-1"})
    # the admin secret does not exist: anything that read it would fail
    admin = BasicAuth(
        username="admin",
        password=SecretRef(source="aws-secretsmanager", ref="mlrig/team/no-such-admin"),
    )
    return base.model_copy(update={"mlflow": base.mlflow.model_copy(update={"auth": admin})})


def test_the_password_lives_in_its_own_secret_and_rotates_in_place(
    aws_env: str, mlrig_home: Path, tmp_path: Path
) -> None:
    import boto3

    out = outputs()
    contract.save(out)
    assert identities.read_password(out, "repo-churn") is None
    with pytest.raises(identities.MissingIdentity, match="mlrig access add-machine churn"):
        identities.repo_env(out, "churn")

    identities.store_password(out, "repo-churn", "first-password-0001")
    identities.store_password(out, "repo-churn", "second-password-0002")  # a rotation
    sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=aws_env)
    names = [s["Name"] for s in sm.list_secrets()["SecretList"]]
    assert names.count("mlrig/team/identities/repo-churn") == 1
    value = sm.get_secret_value(SecretId="mlrig/team/identities/repo-churn")["SecretString"]
    assert value == "second-password-0002"
    assert identities.secret_location(out, "repo-churn") == (
        "Secrets Manager secret mlrig/team/identities/repo-churn"
    )

    (tmp_path / ".copier-answers.yml").write_text("project_name: churn\nstack: team\n")
    env = identities.repo_env(out, tmp_path)
    assert env["MLFLOW_TRACKING_USERNAME"] == "repo-churn"
    assert env["MLFLOW_TRACKING_PASSWORD"] == "second-password-0002"
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"
