"""The MLflow tracking server on ECS Fargate: PostgreSQL store, S3 artifacts, basic auth.

The container definition comes from `mlrig.tracking_server.container_spec`, the same
module the local stack runs the server from, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from mlrig import tracking_server as ts
from mlrig.infra.components import policies
from mlrig.infra.components.database import DB_NAME, DB_USER, Database, DatabaseArgs
from mlrig.infra.components.front_door import FrontDoor, FrontDoorArgs


@dataclass
class TrackingServerArgs:
    region: str
    profile: Any  # mlrig.infra.config.Profile
    image: str
    image_repository_arn: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    vpc_cidr: str
    public_subnet_ids: Sequence[pulumi.Input[str]]
    private_subnet_ids: Sequence[pulumi.Input[str]]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    artifacts_prefix: str
    db_password: Any
    admin_password: Any
    flask_secret: Any
    domain: str | None = None
    hosted_zone_id: str | None = None
    force_delete: bool = False  # teardown --purge: lift deletion protection
    final_snapshot_id: str = "mlflow-final"
    tags: dict[str, str] = field(default_factory=dict)


class TrackingServer(pulumi.ComponentResource):
    url: pulumi.Output[str]
    admin_secret: aws.secretsmanager.Secret

    def __init__(
        self, name: str, args: TrackingServerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:TrackingServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        profile, tags = args.profile, args.tags
        task_subnets = args.private_subnet_ids if profile.private_tasks else args.public_subnet_ids
        front_kind = profile.front_door if args.domain else "http-api"
        self.front_door = FrontDoor(
            f"{name}-front",
            FrontDoorArgs(
                kind=front_kind,
                vpc_id=args.vpc_id,
                vpc_cidr=args.vpc_cidr,
                subnet_ids=args.public_subnet_ids if front_kind == "alb" else task_subnets,
                port=ts.CONTAINER_PORT,
                health_path=ts.HEALTH_PATH,
                domain=args.domain,
                hosted_zone_id=args.hosted_zone_id,
                deletion_protection=profile.db_deletion_protection and not args.force_delete,
                tags=tags,
            ),
            opts=child,
        )
        # Tasks accept the server port from the front door only; out: HTTPS (ECR, Secrets
        # Manager, S3, logs) and PostgreSQL inside the VPC. Nothing else, either way.
        task_sg = aws.ec2.SecurityGroup(
            f"{name}-task-sg",
            vpc_id=args.vpc_id,
            description="mlrig tracking server tasks",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": ts.CONTAINER_PORT,
                    "to_port": ts.CONTAINER_PORT,
                    "security_groups": [self.front_door.security_group.id],
                    "description": "front door",
                }
            ],
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "AWS APIs over HTTPS",
                },
                {
                    "protocol": "tcp",
                    "from_port": 5432,
                    "to_port": 5432,
                    "cidr_blocks": [args.vpc_cidr],
                    "description": "PostgreSQL",
                },
            ],
            tags=tags,
            opts=child,
        )
        self.database = Database(
            f"{name}-db",
            DatabaseArgs(
                vpc_id=args.vpc_id,
                subnet_ids=args.private_subnet_ids,
                client_security_group_id=task_sg.id,
                password=args.db_password,
                instance_class=profile.db_instance_class,
                storage_gb=profile.db_storage_gb,
                max_storage_gb=profile.db_max_storage_gb,
                multi_az=profile.db_multi_az,
                deletion_protection=profile.db_deletion_protection and not args.force_delete,
                # Runs are data: kept as a snapshot on teardown unless purged (production: always).
                final_snapshot_id=args.final_snapshot_id
                if (profile.db_deletion_protection or not args.force_delete)
                else None,
                backup_days=profile.db_backup_days,
                tags=tags,
            ),
            opts=child,
        )
        self.admin_secret = self._secret(
            f"{name}-admin-password", args.admin_password, "MLflow admin password", tags
        )
        flask_secret = self._secret(
            f"{name}-flask-secret", args.flask_secret, "MLflow Flask session key", tags
        )
        secret_arns = {
            ts.ENV_ADMIN_PASSWORD: self.admin_secret.arn,
            ts.ENV_FLASK_SECRET: flask_secret.arn,
            ts.ENV_PG_PASSWORD: self.database.password_secret.arn,
        }
        # Named per stack: log group names are unique in an account and region.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/mlrig/{pulumi.get_stack()}/{name}",
            retention_in_days=profile.log_retention_days,
            tags=tags,
            opts=child,
        )
        execution_role = aws.iam.Role(
            f"{name}-execution-role",
            assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=execution_role.id,
            policy=pulumi.Output.all(
                args.image_repository_arn, log_group.arn, *secret_arns.values()
            ).apply(lambda a: policies.execution_role(a[0], a[1], list(a[2:]))),
            opts=child,
        )
        task_role = aws.iam.Role(
            f"{name}-task-role",
            assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=task_role.id,
            policy=pulumi.Output.from_input(args.bucket_arn).apply(
                lambda arn: policies.task_role(arn, args.artifacts_prefix)
            ),
            opts=child,
        )
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            settings=[
                {
                    "name": "containerInsights",
                    "value": "enabled" if profile.private_tasks else "disabled",
                }
            ],
            tags=tags,
            opts=child,
        )
        capacity = aws.ecs.ClusterCapacityProviders(
            f"{name}-capacity",
            cluster_name=cluster.name,
            capacity_providers=["FARGATE", "FARGATE_SPOT"],
            opts=child,
        )
        allowed = [f"*.execute-api.{args.region}.amazonaws.com", "10.*"]
        if args.domain:
            allowed.insert(0, args.domain)
        container = pulumi.Output.all(
            self.database.instance.address,
            args.bucket_name,
            log_group.name,
            *secret_arns.values(),
        ).apply(
            lambda a: container_definitions(
                args.image,
                db_host=a[0],
                bucket=a[1],
                artifacts_prefix=args.artifacts_prefix,
                profile=profile.name,
                log_group=a[2],
                region=args.region,
                secret_arns=dict(zip(secret_arns, a[3:], strict=True)),
                allowed_hosts=allowed,
            )
        )
        spec_size = ts.CONTAINER_SIZES[profile.name]
        task = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"mlrig-{pulumi.get_stack()}-{name}",
            cpu=str(spec_size[0]),
            memory=str(spec_size[1]),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            container_definitions=container,
            tags=tags,
            opts=child,
        )
        front = self.front_door
        service_extra: dict[str, Any] = {}
        if front.cloud_map_service is not None:
            service_extra["service_registries"] = {
                "registry_arn": front.cloud_map_service.arn,
                "container_name": "mlflow",
                "container_port": ts.CONTAINER_PORT,
            }
        if front.target_group is not None:
            service_extra["load_balancers"] = [
                {
                    "target_group_arn": front.target_group.arn,
                    "container_name": "mlflow",
                    "container_port": ts.CONTAINER_PORT,
                }
            ]
            service_extra["health_check_grace_period_seconds"] = 120
        if profile.fargate_spot:
            # Spot is ~70 % cheaper; an interruption restarts a stateless task (~1 min).
            service_extra["capacity_provider_strategies"] = [
                {"capacity_provider": "FARGATE_SPOT", "weight": 1}
            ]
        else:
            service_extra["launch_type"] = "FARGATE"
        aws.ecs.Service(
            f"{name}-service",
            cluster=cluster.arn,
            task_definition=task.arn,
            desired_count=profile.task_count,
            network_configuration={
                "subnets": task_subnets,
                "security_groups": [task_sg.id],
                # public subnets have no NAT: the IP is the way out.
                "assign_public_ip": not profile.private_tasks,
            },
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100 if profile.task_count > 1 else 0,
            deployment_maximum_percent=200,
            enable_execute_command=False,
            propagate_tags="SERVICE",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[front, capacity]),
            **service_extra,
        )
        self.url = front.url
        self.register_outputs(
            {
                "url": self.url,
                "admin_secret_arn": self.admin_secret.arn,
                "database_address": self.database.instance.address,
            }
        )

    def _secret(
        self, name: str, value: Any, description: str, tags: dict[str, str]
    ) -> aws.secretsmanager.Secret:
        secret = aws.secretsmanager.Secret(
            name,
            description=description,
            recovery_window_in_days=7,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-value",
            secret_id=secret.id,
            secret_string=value,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return secret


def container_definitions(
    image: str,
    *,
    db_host: str,
    bucket: str,
    artifacts_prefix: str,
    profile: str,
    log_group: str,
    region: str,
    secret_arns: dict[str, str],
    allowed_hosts: list[str],
) -> str:
    """The ECS container definition JSON, built from the shared container contract."""
    spec = ts.container_spec(
        image=image,
        db_host=db_host,
        db_name=DB_NAME,
        db_user=DB_USER,
        artifacts_destination=f"s3://{bucket}/{artifacts_prefix}",
        profile=profile,
        allowed_hosts=tuple(allowed_hosts),
    )
    if set(secret_arns) != set(spec.secret_env_names):
        raise ValueError(f"secrets {sorted(secret_arns)} != {sorted(spec.secret_env_names)}")
    return json.dumps(
        [
            {
                "name": "mlflow",
                "image": spec.image,
                "essential": True,
                "user": spec.user,
                "command": list(spec.command),
                "portMappings": [{"containerPort": spec.port, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
                "secrets": [
                    {"name": k, "valueFrom": secret_arns[k]} for k in spec.secret_env_names
                ],
                "readonlyRootFilesystem": False,  # MLflow writes its auth ini and temp files
                "healthCheck": {
                    "command": [
                        "CMD",
                        "python3",
                        "-c",
                        "import urllib.request; urllib.request.urlopen("
                        f"'http://127.0.0.1:{spec.port}{spec.health_path}', timeout=4)",
                    ],
                    "interval": 30,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 60,
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": "mlflow",
                    },
                },
            }
        ]
    )
