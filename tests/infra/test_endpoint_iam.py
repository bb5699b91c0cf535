"""The endpoint's IAM, linted by a real linter (parliament, the pure-Python IAM policy
linter) and by mlrig's own policy rules, on the documents the program plans; least privilege
asserted statement by statement. checkov is not used: it pins boto3/botocore 1.35 (ours are
1.43) and packaging 23, so it cannot share this environment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlrig.infra import policy as house_policy
from mlrig.infra.components import policies as base_policies
from tests.helpers import endpoint_plan
from tests.helpers import parliament_findings as findings


def plan(**changes: Any) -> Any:
    return endpoint_plan(**changes)[0]


VARIANTS = {
    "lambda": {},
    "lambda-capture": {"capture_percent": 10},
    "canary": {"stable_version": "4", "canary_percent": 10},
    "warm-capture": {"warm": True, "capture_percent": 10},
}


# Accepted findings, each with its reason: ECS's agent needs a registry token to pull the
# warm task's image (AWS's own AmazonECSTaskExecutionRolePolicy grants the same action), and
# the community auditor flags every action that returns a credential.
ACCEPTED = {("churn-execution-policy", "CREDENTIALS_EXPOSURE: ")}


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_every_role_policy_is_clean_for_parliament(variant: str) -> None:
    docs = plan(**VARIANTS[variant]).of_type("aws:iam/rolePolicy:RolePolicy")
    assert docs
    for res in docs:
        found = {(res.name, f) for f in findings(res.inputs["policy"])}
        assert found - ACCEPTED == set(), res.name


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_the_house_policy_rules_pass(variant: str) -> None:
    assert house_policy.violations(plan(**VARIANTS[variant]).resources) == []


def test_the_linter_catches_what_it_must() -> None:
    wildcard = base_policies.document({"Effect": "Allow", "Action": "ssm:*", "Resource": "*"})
    typo = base_policies.document(
        {"Effect": "Allow", "Action": "ssm:GetParameterz", "Resource": "arn:aws:ssm:::x"}
    )
    assert any(f.startswith("RESOURCE_STAR") for f in findings(wildcard))
    assert any(f.startswith("UNKNOWN_ACTION") for f in findings(typo))


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_least_privilege(variant: str) -> None:
    """No wildcard action anywhere; Resource "*" only for ecr:GetAuthorizationToken (it has no
    resource-level permission: AWS accepts nothing else), which only a warm task's execution
    role has; no read of the bucket at all, writes only under captures/ENDPOINT/."""
    for res in plan(**VARIANTS[variant]).of_type("aws:iam/rolePolicy:RolePolicy"):
        for st in json.loads(res.inputs["policy"])["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert all("*" not in a for a in actions), (res.name, actions)
            if st["Resource"] == "*":
                assert actions == ["ecr:GetAuthorizationToken"]
                assert res.name == "churn-execution-policy"
            assert not any(a.startswith("s3:") and a != "s3:PutObject" for a in actions)
            if "s3:PutObject" in actions:
                assert st["Resource"].endswith("/captures/churn/*")
            if any(a.startswith("ecr:") for a in actions) and st["Resource"] != "*":
                assert st["Resource"].endswith(":repository/mlrig-plan/models")
