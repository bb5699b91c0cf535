"""CI access: GitHub OIDC, one role trusted by one repo/ref, scoped rights, no users or keys."""

from __future__ import annotations

from tests.helpers import REPO, make_plan, policy_doc, statement

ROLE = "aws:iam/role:Role"
PROVIDER_ARN = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
BUCKET_ARN = "arn:aws:s3:::mlrig-plan-20261126abcdef"


def test_oidc_provider(any_plan) -> None:
    provider = any_plan.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert provider["url"] == "https://token.actions.githubusercontent.com"
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]


def test_trust_is_limited_to_the_repository_and_branch(any_plan) -> None:
    role = any_plan.one(ROLE, "ci-role")
    (trust,) = policy_doc(role, "assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Federated": PROVIDER_ARN}
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"] == {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
        "StringLike": {
            "token.actions.githubusercontent.com:sub": f"repo:{REPO}:ref:refs/heads/main"
        },
    }
    assert any_plan.outputs["ci_role_arn"] == "arn:aws:iam::123456789012:role/ci-role"


def test_environment_scoped_trust_by_config() -> None:
    role = make_plan("small", github_ref="environment:prod").one(ROLE, "ci-role")
    (trust,) = policy_doc(role, "assumeRolePolicy")["Statement"]
    assert trust["Condition"]["StringLike"] == {
        "token.actions.githubusercontent.com:sub": f"repo:{REPO}:environment:prod"
    }


def test_role_rights(any_plan) -> None:
    policy = any_plan.one("aws:iam/rolePolicy:RolePolicy", "ci-policy")
    assert policy.inputs["role"] == "ci-role"
    sids = [s["Sid"] for s in policy_doc(policy)["Statement"]]
    assert sids == [
        "EcrLogin",
        "PushModelImages",
        "ListPrefix",
        "ObjectsInPrefix",
    ]
    push = statement(policy, "PushModelImages")
    assert push["Resource"] == "arn:aws:ecr:us-east-1:123456789012:repository/mlrig-plan/models"
    assert "ecr:PutImage" in push["Action"] and "ecr:DeleteRepository" not in push["Action"]
    assert statement(policy, "ObjectsInPrefix")["Resource"] == f"{BUCKET_ARN}/dvc/*"
    assert statement(policy, "ListPrefix")["Condition"] == {
        "StringLike": {"s3:prefix": ["dvc", "dvc/*"]}
    }


def test_ci_reads_no_secret_least_of_all_the_admins(any_plan) -> None:
    """CI reaches MLflow keyless (GitHub OIDC): the role may read no secret, and nothing in its
    policy names the admin secret the stack exports."""
    policy = any_plan.one("aws:iam/rolePolicy:RolePolicy", "ci-policy")
    statements = policy_doc(policy)["Statement"]
    assert statements  # the policy was rendered: an unknown output would leave nothing here
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert not [a for a in actions if a.startswith(("secretsmanager:", "kms:"))], s
    admin_arn = any_plan.outputs["mlflow_admin_secret_arn"]
    assert admin_arn.startswith("arn:aws:secretsmanager:")
    assert admin_arn not in str(statements) and "secretsmanager" not in str(statements)


def test_existing_provider_is_reused() -> None:
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    plan = make_plan("small", existing_oidc_provider_arn=arn)
    assert plan.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider") == []
    (trust,) = policy_doc(plan.one(ROLE, "ci-role"), "assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Federated": arn}


def test_no_ci_role_without_a_repository() -> None:
    plan = make_plan("small", github_repo=None)
    assert [r.name for r in plan.of_type(ROLE)] == [
        "mlflow-execution-role",
        "mlflow-task-role",
        "training-execution-role",
        "training-task-role",
    ]
    assert "ci_role_arn" not in plan.outputs
