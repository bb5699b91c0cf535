"""An AWS endpoint deploys only an image its stack's ECR holds, by digest: checked against
ECR on moto's standalone server before anything is written (no client patched). The MLflow
half of REF's resolution is the local deploy's, tested with a real tracking server there.
A second or two once moto is up."""

from __future__ import annotations

import json

import pytest

from mlrig.core.deploy import aws as aws_deploy
from mlrig.errors import UsageError
from tests.helpers import aws_outputs

pytestmark = pytest.mark.integration

REPO = "mlrig-team/models"


@pytest.fixture
def pushed(aws_env: str) -> tuple[str, str]:
    """(the repository URL as the stack records it, the digest of an image pushed to it)."""
    import boto3

    ecr = boto3.client("ecr", region_name="us-east-1")
    try:
        url = ecr.create_repository(repositoryName=REPO)["repository"]["repositoryUri"]
    except ecr.exceptions.RepositoryAlreadyExistsException:
        url = ecr.describe_repositories(repositoryNames=[REPO])["repositories"][0]["repositoryUri"]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 2,
                "digest": "sha256:" + "0" * 64,
            },
            "layers": [],
        }
    )
    ecr.put_image(repositoryName=REPO, imageManifest=manifest, imageTag="churn-v7")
    # the digest as ECR reports it (moto's own digest differs from the manifest's sha256)
    found = ecr.describe_images(repositoryName=REPO, imageIds=[{"imageTag": "churn-v7"}])
    return url, str(found["imageDetails"][0]["imageDigest"])


def test_an_image_in_the_stacks_ecr_is_deployed_by_digest(pushed: tuple[str, str]) -> None:
    url, digest = pushed
    outputs = aws_outputs("team").model_copy(update={"region": "us-east-1"})
    outputs = outputs.model_copy(
        update={"registry": outputs.registry.model_copy(update={"url": url})}
    )
    target = aws_deploy.verify_image(outputs, "churn", "7", url, digest)
    assert target.image == f"{url}@{digest}"
    # a digest ECR does not hold, and an image another registry holds: refused in one line
    with pytest.raises(UsageError, match="is not in ECR"):
        aws_deploy.verify_image(outputs, "churn", "7", url, "sha256:" + "9" * 64)
    with pytest.raises(UsageError, match="not to stack 'team''s registry"):
        aws_deploy.verify_image(outputs, "churn", "7", "123.dkr.ecr.x/other", digest)
