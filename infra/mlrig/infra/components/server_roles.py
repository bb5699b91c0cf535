"""The tracking server's two IAM roles: what ECS needs to start it, and what it may do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components import policies
from mlrig.infra.components.dvc_remote import RemoteRef
from mlrig.infra.components.sub_component import adopted_children


@dataclass
class ServerRolesArgs:
    image_repository_arn: pulumi.Input[str]  # the execution role pulls from it
    log_group_arn: pulumi.Input[str]  # ... writes the server's logs to it
    secret_arns: Sequence[pulumi.Input[str]]  # ... and hands these to the container
    artifacts: RemoteRef  # the task role reads and writes this prefix, nothing else


class ServerRoles(pulumi.ComponentResource):
    """Named like its TrackingServer, so its children keep their names (`<name>-task-role`)."""

    execution_role: aws.iam.Role
    task_role: aws.iam.Role

    def __init__(
        self, name: str, args: ServerRolesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:TrackingServerRoles", name, None, opts)
        child = adopted_children(self, opts)
        self.execution_role = aws.iam.Role(
            f"{name}-execution-role",
            assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=self.execution_role.id,
            policy=pulumi.Output.all(
                args.image_repository_arn, args.log_group_arn, *args.secret_arns
            ).apply(lambda a: policies.execution_role(a[0], a[1], list(a[2:]))),
            opts=child,
        )
        self.task_role = aws.iam.Role(
            f"{name}-task-role",
            assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        prefix = args.artifacts.prefix
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=self.task_role.id,
            policy=pulumi.Output.from_input(args.artifacts.bucket_arn).apply(
                lambda arn: policies.task_role(arn, prefix)
            ),
            opts=child,
        )
        self.register_outputs(
            {"execution_role_arn": self.execution_role.arn, "task_role_arn": self.task_role.arn}
        )
