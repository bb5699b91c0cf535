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


def training_execution_role(
    repository_arn: str, log_group_arn: str, secrets_arn_pattern: str
) -> str:
    """What ECS needs to start a remote training task: pull the trainer image from the
    stack's repository, write the task's log stream, and read the repositories'
    machine-identity passwords (injected as `secrets`, never plain environment)."""
    return document(
        ECR_AUTH_TOKEN,
        {
            "Sid": "PullTrainerImage",
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
            "Sid": "ReadMachineIdentities",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secrets_arn_pattern,
        },
    )


def training_task_role(
    bucket_arn: str, dvc_prefix: str, results_prefix: str, log_group_arn: str
) -> str:
    """The training task's own rights: the DVC cache (pull the data, push what it made),
    its results prefix (the bundle and result.json the caller applies) and its log group."""
    return document(
        *_sids("Dvc", s3_prefix_read_write(bucket_arn, dvc_prefix)),
        *_sids("Results", s3_prefix_read_write(bucket_arn, results_prefix)),
        {
            "Sid": "WriteLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{log_group_arn}:*",
        },
    )


def _sids(prefix: str, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**st, "Sid": prefix + st["Sid"]} for st in statements]


def ci_training(
    *,
    region: str,
    account: str,
    cluster_arn: str,
    family_prefix: str,
    role_arns: list[str],
    log_group_arn: str,
    bucket_arn: str,
    results_prefix: str,
    parameter_arn: str,
    project_tag: str,
) -> str:
    """What CI needs to run `mlrig retrain --remote` and the generated workflow's own steps
    around it: register and run the stack's training task definitions on its cluster
    (tagged at creation), describe and list its tasks there and stop the training ones
    (tagged `project_tag`), pass the two training roles to ECS only, read the task's log
    and the stack's training outputs, and read, write, list and delete under the results
    prefix (bundles, result.json, the callers' task records, the workflow's ci-pending).
    ECR (the trainer image's reuse check and push) and the DVC prefix are `ci_role`'s."""
    on_cluster = {"ArnEquals": {"ecs:cluster": cluster_arn}}
    cluster_name = cluster_arn.rsplit("/", 1)[-1]
    families = f"arn:aws:ecs:{region}:{account}:task-definition/{family_prefix}*:*"
    tasks = f"arn:aws:ecs:{region}:{account}:task/{cluster_name}/*"
    return document(
        {
            "Sid": "RegisterTrainingTasks",
            "Effect": "Allow",
            "Action": "ecs:RegisterTaskDefinition",
            "Resource": families,
        },
        {
            "Sid": "RunTrainingTasks",
            "Effect": "Allow",
            "Action": "ecs:RunTask",
            "Resource": families,
            "Condition": on_cluster,
        },
        {
            "Sid": "WatchTrainingTasks",
            "Effect": "Allow",
            "Action": "ecs:DescribeTasks",
            "Resource": tasks,
            "Condition": on_cluster,
        },
        {
            # the cluster also runs the tracking server's tasks: CI stops only those that
            # RunTask tagged as training tasks (the tag is set at creation, TagAtCreation)
            "Sid": "StopTrainingTasks",
            "Effect": "Allow",
            "Action": "ecs:StopTask",
            "Resource": tasks,
            "Condition": {
                **on_cluster,
                "StringLike": {f"aws:ResourceTag/{project_tag}": "*"},
            },
        },
        {
            # ListTasks has no resource of its own (its container-instance one does not
            # apply to Fargate): "*" narrowed to the cluster by its condition key.
            "Sid": "ListTrainingTasks",
            "Effect": "Allow",
            "Action": "ecs:ListTasks",
            "Resource": "*",
            "Condition": on_cluster,
        },
        {
            "Sid": "TagAtCreation",
            "Effect": "Allow",
            "Action": "ecs:TagResource",
            "Resource": [families, tasks],
            "Condition": {
                "StringEquals": {"ecs:CreateAction": ["RegisterTaskDefinition", "RunTask"]}
            },
        },
        {
            "Sid": "PassTrainingRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": role_arns,
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
        },
        {
            "Sid": "ReadTrainingLogs",
            "Effect": "Allow",
            "Action": "logs:GetLogEvents",
            "Resource": f"{log_group_arn}:log-stream:*",
        },
        {
            "Sid": "ReadTrainingOutputs",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": parameter_arn,
        },
        *_sids("Results", s3_prefix_read_write(bucket_arn, results_prefix)),
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
