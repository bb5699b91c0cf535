"""The endpoint's IAM documents as pure functions of ARNs (read by the tests and the linter).

Least privilege: the function writes its own log group and, only with capture on, objects
under `captures/ENDPOINT/`; the authorizer reads one SSM parameter; nothing reads the
bucket. A Lambda function does not pull its image with its role: Lambda's service pulls it
(at create/update) under the models repository's policy, which the base stack scopes to
this stack's endpoint functions (`mlrig.infra.components.policies.lambda_pull`).
"""

from __future__ import annotations

from typing import Any

from mlrig.infra.components.policies import ECR_AUTH_TOKEN, ECR_PULL_ACTIONS, document

CAPTURE_PREFIX = "captures"


def write_logs(log_group_arn: str) -> dict[str, Any]:
    # The group exists (the program makes it, with its retention): no logs:CreateLogGroup.
    return {
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": f"{log_group_arn}:*",
    }


def write_captures(bucket_arn: str, endpoint: str) -> dict[str, Any]:
    return {
        "Sid": "WriteOwnCaptures",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": f"{bucket_arn}/{CAPTURE_PREFIX}/{endpoint}/*",
    }


def function_role(log_group_arn: str, capture_bucket_arn: str | None, endpoint: str) -> str:
    """The model's rights: its logs, and its capture prefix when capture is on."""
    statements = [write_logs(log_group_arn)]
    if capture_bucket_arn is not None:
        statements.append(write_captures(capture_bucket_arn, endpoint))
    return document(*statements)


def authorizer_role(log_group_arn: str, parameter_arn: str) -> str:
    """The key check's rights: its logs and its endpoint's key hashes. The parameter is a
    SecureString under the AWS-managed `aws/ssm` key, whose key policy lets SSM decrypt for
    the account's principals: no kms:Decrypt grant is needed (a customer key would be)."""
    return document(
        write_logs(log_group_arn),
        {
            "Sid": "ReadOwnKeyHashes",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": parameter_arn,
        },
    )


def warm_execution_role(repository_arn: str, log_group_arn: str) -> str:
    """What ECS needs to start a warm endpoint's task: pull from the models repository
    (IAM cannot name one digest; the task definition does) and write its logs."""
    return document(
        ECR_AUTH_TOKEN,
        {
            "Sid": "PullModelImage",
            "Effect": "Allow",
            "Action": ECR_PULL_ACTIONS,
            "Resource": repository_arn,
        },
        write_logs(log_group_arn),
    )


def parameter_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"
