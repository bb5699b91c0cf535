"""`--warm`: the model as an always-on Fargate service on the base stack's cluster, found by
the HTTP API through the base stack's VPC link and Cloud Map namespace (as the tracking
server is). It listens on the tracking server's container port: the link's security group
(a base-stack resource, left untouched) allows egress to the VPC on that port only."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components.policies import assume_role, document
from mlrig.infra.endpoint import policies
from mlrig.infra.endpoint.config import EndpointConfig, warm_log_group
from mlrig.infra.endpoint.function import capture_variables
from mlrig.infra.endpoint.refs import BaseRefs
from mlrig.tracking.config import CONTAINER_PORT

CONTAINER = "model"


@dataclass
class WarmArgs:
    config: EndpointConfig
    base: BaseRefs


class WarmEndpoint(pulumi.ComponentResource):
    """A rollout starts the new task beside the old one (100 % / 200 %); the new one is
    counted, and found through Cloud Map, once its container health check (GET /ping)
    passes; only then does the old one drain. A new task that never gets healthy trips the
    deployment circuit breaker, which puts the previous task definition back by itself.
    `pulumi up` waits for the service to be steady (either way): the CLI then reads which
    task definition ECS runs, because a rolled-back service is steady too."""

    discovery: aws.servicediscovery.Service
    service: aws.ecs.Service
    task: aws.ecs.TaskDefinition

    def __init__(
        self, name: str, args: WarmArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:WarmEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, base = args.config, args.base
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=warm_log_group(cfg.base_stack, cfg.endpoint),
            retention_in_days=cfg.log_retention_days,
            opts=child,
        )
        execution = aws.iam.Role(
            f"{name}-execution-role",
            assume_role_policy=assume_role("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=execution.id,
            policy=pulumi.Output.all(base.models_repository_arn, logs.arn).apply(
                lambda a: policies.warm_execution_role(a[0], a[1])
            ),
            opts=child,
        )
        task_role = aws.iam.Role(
            f"{name}-task-role",
            assume_role_policy=assume_role("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        if cfg.captures:  # its writer PUTs with these credentials (ECS's endpoint)
            aws.iam.RolePolicy(
                f"{name}-task-policy",
                role=task_role.id,
                policy=pulumi.Output.from_input(base.bucket_arn).apply(
                    lambda arn: document(policies.write_captures(arn, cfg.endpoint))
                ),
                opts=child,
            )
        cpu, memory = cfg.warm_size
        self.task = task = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=cfg.prefix,
            cpu=str(cpu),
            memory=str(memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=execution.arn,
            task_role_arn=task_role.arn,
            container_definitions=pulumi.Output.all(logs.name, base.bucket_arn).apply(
                lambda a: _containers(cfg, a[0], a[1])
            ),
            opts=child,
        )
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=base.vpc_id,
            description=f"mlrig endpoint {cfg.endpoint}: from the HTTP API's VPC link only",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": CONTAINER_PORT,
                    "to_port": CONTAINER_PORT,
                    "security_groups": [base.link_security_group_id],
                    "description": "the HTTP API's VPC link",
                }
            ],
            # pulling the image from ECR (public subnets: through the task's public IP)
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "ECR, CloudWatch Logs (HTTPS)",
                }
            ],
            opts=child,
        )
        self.discovery = aws.servicediscovery.Service(
            f"{name}-discovery",
            name=f"ep-{cfg.endpoint}",
            namespace_id=base.namespace_id,
            dns_config={
                "namespace_id": base.namespace_id,
                "routing_policy": "MULTIVALUE",
                "dns_records": [{"type": "SRV", "ttl": 10}],
            },
            health_check_custom_config={},
            force_destroy=True,
            opts=child,
        )
        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=base.cluster_arn,
            task_definition=task.arn,
            desired_count=1,
            launch_type="FARGATE",
            network_configuration={
                "subnets": base.subnet_ids,
                "security_groups": [group.id],
                "assign_public_ip": base.assign_public_ip,
            },
            service_registries={
                "registry_arn": self.discovery.arn,
                "container_name": CONTAINER,
                "container_port": CONTAINER_PORT,
            },
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100,  # the new task is healthy before the old stops
            deployment_maximum_percent=200,
            wait_for_steady_state=True,
            enable_execute_command=False,
            propagate_tags="SERVICE",
            opts=child,
        )
        self.register_outputs(
            {
                "service_name": self.service.name,
                "discovery_arn": self.discovery.arn,
                "task_definition_arn": task.arn,
            }
        )


def _containers(cfg: EndpointConfig, log_group: str, bucket_arn: str) -> str:
    env = {
        "PORT": str(CONTAINER_PORT),
        "HOST": "0.0.0.0",  # noqa: S104 - the task's own ENI
        "MLRIG_ENDPOINT": cfg.endpoint,
        # the writer's PUTs are signed for this region; credentials come from ECS's endpoint
        **({"AWS_REGION": cfg.region} if cfg.captures else {}),
        **capture_variables(cfg, bucket_arn),
    }
    return json.dumps(
        [
            {
                "name": CONTAINER,
                "image": cfg.image,
                "essential": True,
                "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in env.items()],
                "healthCheck": {
                    "command": ["CMD", "/opt/venv/bin/python", "-I", "/opt/mlrig/healthcheck.py"],
                    "interval": 15,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 30,
                },
                "readonlyRootFilesystem": False,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": cfg.region,
                        "awslogs-stream-prefix": cfg.endpoint,
                    },
                },
            }
        ]
    )
