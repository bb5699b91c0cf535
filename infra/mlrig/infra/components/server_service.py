"""The tracking server's ECS cluster, task definition and service, behind its front door."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mlrig.infra.components.front_door import FrontDoor
from mlrig.infra.components.server_container import CONTAINER_NAME
from mlrig.infra.components.server_roles import ServerRoles
from mlrig.infra.components.sub_component import adopted_children
from mlrig.infra.config import Profile
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container


@dataclass
class ServerServiceArgs:
    profile: Profile  # task size and count, Spot or not, public or private subnets
    container_definitions: pulumi.Input[str]  # server_container.container_definitions
    roles: ServerRoles
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    front_door: FrontDoor  # registers the tasks in its Cloud Map service or target group


class ServerService(pulumi.ComponentResource):
    """Named like its TrackingServer, so its children keep their names (`<name>-service`)."""

    service: aws.ecs.Service
    cluster: aws.ecs.Cluster  # warm endpoints run their tasks on it too

    def __init__(
        self, name: str, args: ServerServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:TrackingServerService", name, None, opts)
        child = adopted_children(self, opts)
        profile = args.profile
        self.cluster = cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            settings=[
                {
                    "name": "containerInsights",
                    "value": "enabled" if profile.private_tasks else "disabled",
                }
            ],
            opts=child,
        )
        capacity = aws.ecs.ClusterCapacityProviders(
            f"{name}-capacity",
            cluster_name=cluster.name,
            capacity_providers=["FARGATE", "FARGATE_SPOT"],
            opts=child,
        )
        cpu, memory, _ = ts_container.container_size(profile.name, profile.server_size)
        task = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"mlrig-{pulumi.get_stack()}-{name}",
            cpu=str(cpu),
            memory=str(memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=args.roles.execution_role.arn,
            task_role_arn=args.roles.task_role.arn,
            container_definitions=args.container_definitions,
            opts=child,
        )
        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=cluster.arn,
            task_definition=task.arn,
            desired_count=profile.task_count,
            network_configuration={
                "subnets": args.subnet_ids,
                "security_groups": [args.security_group_id],
                # public subnets have no NAT: the IP is the way out.
                "assign_public_ip": not profile.private_tasks,
            },
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100 if profile.task_count > 1 else 0,
            deployment_maximum_percent=200,
            enable_execute_command=False,
            propagate_tags="SERVICE",
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[args.front_door, capacity])
            ),
            **self._placement(args),
        )
        self.register_outputs({"service_name": self.service.name, "cluster_arn": cluster.arn})

    @staticmethod
    def _placement(args: ServerServiceArgs) -> dict[str, Any]:
        """How tasks reach the front door, and which capacity they run on."""
        front, extra = args.front_door, dict[str, Any]()
        if front.cloud_map_service is not None:
            extra["service_registries"] = {
                "registry_arn": front.cloud_map_service.arn,
                "container_name": CONTAINER_NAME,
                "container_port": ts.CONTAINER_PORT,
            }
        if front.target_group is not None:
            extra["load_balancers"] = [
                {
                    "target_group_arn": front.target_group.arn,
                    "container_name": CONTAINER_NAME,
                    "container_port": ts.CONTAINER_PORT,
                }
            ]
            extra["health_check_grace_period_seconds"] = 120
        if args.profile.fargate_spot:
            # Spot is ~70 % cheaper; an interruption restarts a stateless task (~1 min).
            extra["capacity_provider_strategies"] = [
                {"capacity_provider": "FARGATE_SPOT", "weight": 1}
            ]
        else:
            extra["launch_type"] = "FARGATE"
        return extra
