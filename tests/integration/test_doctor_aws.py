"""doctor's AWS rows against moto's standalone server: identity, ECR token, S3 remote."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from mlrig import contract
from mlrig.contract import DvcRemote, Mlflow, Registry, StackOutputs
from mlrig.core.doctor import doctor

pytestmark = pytest.mark.integration


def aws_outputs(endpoint: str) -> StackOutputs:
    return StackOutputs(
        name="cloud",
        kind="aws",
        region="us-east-1",
        dvc_remote=DvcRemote(url="s3://team-dvc/dvc", endpoint_url=endpoint, region="us-east-1"),
        mlflow=Mlflow(tracking_uri="http://127.0.0.1:9"),  # nobody listens: must fail
        registry=Registry(
            kind="ecr", url="123456789012.dkr.ecr.us-east-1.amazonaws.com/m", endpoint_url=endpoint
        ),
    )


def test_aws_rows(mlrig_home: Path, aws_env: str) -> None:
    contract.save(aws_outputs(aws_env))
    checks = {c.name: c for c in doctor.stack_checks("cloud")}
    assert checks["aws identity"].status == "ok"
    assert checks["aws identity"].detail.startswith("arn:aws:")
    assert checks["ecr token"].status == "ok"
    assert checks["mlflow health"].status == "fail"
    assert checks["mlflow health"].fix.startswith("check the tracking service")
    # the bucket does not exist yet: the remote row fails and says why
    assert checks["dvc remote"].status == "fail"
    assert "NoSuchBucket" in checks["dvc remote"].detail

    boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1").create_bucket(
        Bucket="team-dvc"
    )
    remote = {c.name: c for c in doctor.stack_checks("cloud")}["dvc remote"]
    assert remote.status == "ok" and "list permission" in remote.detail
