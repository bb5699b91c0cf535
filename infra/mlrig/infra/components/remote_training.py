"""What `mlrig retrain --remote` runs on: one-off Fargate tasks on the tracking server's
cluster, which already offers FARGATE and FARGATE_SPOT (`server_service`). Nothing here runs
or costs while no task does: two IAM roles, a log group and a security group. The CLI
registers a task definition per (project, image digest, size) and runs it
(`mlrig.core.compute.aws`); their families start with `config.training_family_prefix`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra import config
from mlrig.infra.components import policies
from mlrig.infra.components.dvc_remote import RemoteRef


@dataclass
class RemoteTrainingArgs:
    region: str
    repository_arn: pulumi.Input[str]  # the stack's models repository: trainer images too
    dvc: RemoteRef  # the DVC prefix the task pulls and pushes
    vpc_id: pulumi.Input[str]
    cluster_arn: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]  # the tracking server's task subnets
    public_ip: bool  # public subnets have no NAT: the task's IP is its way out
    log_retention_days: int


class RemoteTraining(pulumi.ComponentResource):
    execution_role: aws.iam.Role
    task_role: aws.iam.Role
    log_group: aws.cloudwatch.LogGroup
    security_group: aws.ec2.SecurityGroup

    def __init__(
        self, name: str, args: RemoteTrainingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:RemoteTraining", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stack = pulumi.get_stack()
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=config.training_log_group(stack),
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        self.execution_role = aws.iam.Role(
            f"{name}-execution-role",
            description=f"ECS starting mlrig {stack}'s remote training tasks",
            assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=self.execution_role.id,
            policy=pulumi.Output.all(args.repository_arn, self.log_group.arn).apply(
                lambda a: policies.training_execution_role(
                    a[0], a[1], machine_secrets(args.region, a[0], stack)
                )
            ),
            opts=child,
        )
        self.task_role = aws.iam.Role(
            f"{name}-task-role",
            description=f"mlrig {stack}'s remote training tasks",
            assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=self.task_role.id,
            policy=pulumi.Output.all(args.dvc.bucket_arn, self.log_group.arn).apply(
                lambda a: policies.training_task_role(
                    a[0], args.dvc.prefix, config.REMOTE_RESULTS_PREFIX, a[1]
                )
            ),
            opts=child,
        )
        # Nothing reaches a training task; it reaches AWS's APIs, the tracking server's
        # front door and the package index over HTTPS, nothing else.
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description="mlrig remote training tasks",
            ingress=[],
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "HTTPS out",
                }
            ],
            opts=child,
        )
        self.outputs = {
            "cluster_arn": args.cluster_arn,
            "subnet_ids": list(args.subnet_ids),
            "security_group_id": self.security_group.id,
            "assign_public_ip": args.public_ip,
            "task_role_arn": self.task_role.arn,
            "execution_role_arn": self.execution_role.arn,
            "log_group": self.log_group.name,
        }
        # the same, for CI (standard tier: free); the program's export is what `stack up`
        # writes to outputs.json
        self.parameter = aws.ssm.Parameter(
            f"{name}-outputs",
            name=config.training_parameter(stack),
            type="String",
            tier="Standard",
            description="mlrig remote training: cluster, network, roles, log group (no secret)",
            insecure_value=pulumi.Output.all(**self.outputs).apply(
                lambda out: json.dumps(out, sort_keys=True)
            ),
            opts=child,
        )
        self.register_outputs(self.outputs)


def machine_secrets(region: str, repository_arn: str, stack: str) -> str:
    """The ARN pattern of the stack's machine-identity secrets (the account is the
    repository's; Secrets Manager appends 6 random characters to each name)."""
    account = repository_arn.split(":")[4]
    return (
        f"arn:aws:secretsmanager:{region}:{account}:secret:{config.machine_secret_prefix(stack)}*"
    )
