"""IAM policy documents as pure functions of ARNs, so tests and the policy suite read them."""

from __future__ import annotations

import json
from typing import Any


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role(service: str) -> str:
    return document(
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    )


def s3_prefix_read_write(bucket_arn: str, prefix: str) -> list[dict[str, Any]]:
    """Read/write objects under one prefix of one bucket, and list only that prefix."""
    return [
        {
            "Sid": "ListPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
        },
        {
            "Sid": "ObjectsInPrefix",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": f"{bucket_arn}/{prefix}/*",
        },
    ]


# ecr:GetAuthorizationToken has no resource-level permissions: "*" is the only valid value.
ECR_AUTH_TOKEN = {
    "Sid": "EcrLogin",
    "Effect": "Allow",
    "Action": "ecr:GetAuthorizationToken",
    "Resource": "*",
}
ECR_PULL_ACTIONS = [
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
]
ECR_PUSH_ACTIONS = [
    *ECR_PULL_ACTIONS,
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImages",
]


def execution_role(repository_arn: str, log_group_arn: str, secret_arns: list[str]) -> str:
    """What ECS itself needs to start the task: pull its image, write logs, read secrets."""
    return document(
        ECR_AUTH_TOKEN,
        {
            "Sid": "PullServerImage",
            "Effect": "Allow",
            "Action": ECR_PULL_ACTIONS,
            "Resource": repository_arn,
        },
        {
            "Sid": "WriteLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{log_group_arn}:*",
        },
        {
            "Sid": "ReadSecrets",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secret_arns,
        },
    )


def task_role(bucket_arn: str, artifacts_prefix: str) -> str:
    """The MLflow server's own rights: its artifact prefix and nothing else."""
    return document(*s3_prefix_read_write(bucket_arn, artifacts_prefix))


def ci_role(repository_arn: str, bucket_arn: str, dvc_prefix: str) -> str:
    """Push model images and read/write the DVC prefix. No secret at all: CI reaches MLflow
    with a GitHub OIDC token the tracking server maps to the repository's machine identity,
    so not even a machine identity's password (let alone the admin's) is readable by CI."""
    return document(
        ECR_AUTH_TOKEN,
        {
            "Sid": "PushModelImages",
            "Effect": "Allow",
            "Action": ECR_PUSH_ACTIONS,
            "Resource": repository_arn,
        },
        *s3_prefix_read_write(bucket_arn, dvc_prefix),
    )


def github_trust(provider_arn: str, repo: str, ref: str) -> str:
    """Trust only tokens GitHub minted for this repository (and ref or environment)."""
    return document(
        {
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
                "StringLike": {"token.actions.githubusercontent.com:sub": f"repo:{repo}:{ref}"},
            },
        }
    )


def lambda_pull(account: str, region: str, function_pattern: str) -> str:
    """The models repository's policy: Lambda's service may pull images for this stack's
    endpoint functions only (Lambda pulls with its service principal, not the function's
    role, so this is where "pulls only its models" is said)."""
    functions = f"arn:aws:lambda:{region}:{account}:function:{function_pattern}"
    return document(
        {
            "Sid": "LambdaPullForEndpoints",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Condition": {"StringLike": {"aws:sourceArn": functions}},
        }
    )
