"""ECR: immutable tags, scan on push, encryption, lifecycle, no force delete by default."""

from __future__ import annotations

import json

from tests.helpers import make_plan

REPO = "aws:ecr/repository:Repository"


def test_repositories(any_plan) -> None:
    repos = {r.inputs["name"]: r.inputs for r in any_plan.of_type(REPO)}
    assert set(repos) == {"mlrig-plan/models", "mlrig-plan/mlflow-server"}
    for inputs in repos.values():
        assert inputs["imageTagMutability"] == "IMMUTABLE"
        assert inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert inputs["encryptionConfigurations"] == [{"encryptionType": "AES256"}]
        assert inputs["forceDelete"] is False
    assert any_plan.outputs["registry_url"] == (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlrig-plan/models"
    )


def test_lifecycle_policy_values(any_plan) -> None:
    policies = any_plan.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert sorted(p.inputs["repository"] for p in policies) == [
        "mlrig-plan/mlflow-server",
        "mlrig-plan/models",
    ]
    for pol in policies:
        untagged, tagged = json.loads(pol.inputs["policy"])["rules"]
        assert untagged["selection"] == {
            "tagStatus": "untagged",
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": 7,
        }
        assert tagged["selection"] == {
            "tagStatus": "tagged",
            "tagPatternList": ["*"],
            "countType": "imageCountMoreThan",
            "countNumber": 50,
        }
        assert untagged["action"] == tagged["action"] == {"type": "expire"}


def test_kms_and_enhanced_scanning_by_config() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/abcd"
    plan = make_plan("small", kms_key_arn=key, enhanced_scanning=True)
    for repo in plan.of_type(REPO):
        assert repo.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS", "kmsKey": key}]
    scan = plan.one("aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration")
    assert scan.inputs["scanType"] == "ENHANCED"
    assert scan.inputs["rules"] == [
        {
            "scanFrequency": "SCAN_ON_PUSH",
            "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}],
        }
    ]


def test_purge_turns_on_force_delete() -> None:
    for repo in make_plan("small", force_delete=True).of_type(REPO):
        assert repo.inputs["forceDelete"] is True
