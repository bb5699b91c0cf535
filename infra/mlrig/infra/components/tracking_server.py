"""The MLflow tracking server on ECS Fargate: PostgreSQL store, S3 artifacts, basic auth.

Composed of sub-components: the front door (HTTPS), the database, the IAM roles
(`server_roles`) and the ECS task and service (`server_service`), whose container
definition comes from the shared container contract (`server_container`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mlrig.infra.components.database import Database, DatabaseArgs
from mlrig.infra.components.dns import Domain
from mlrig.infra.components.dvc_remote import RemoteRef
from mlrig.infra.components.front_door import FrontDoor, FrontDoorArgs
from mlrig.infra.components.network import NetworkRef
from mlrig.infra.components.server_container import container_definitions
from mlrig.infra.components.server_roles import ServerRoles, ServerRolesArgs
from mlrig.infra.components.server_service import ServerService, ServerServiceArgs
from mlrig.infra.config import Profile, Secrets, server_log_group
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container


@dataclass
class TrackingServerArgs:
    region: str  # the hosts the server accepts, and where its logs go
    profile: Profile
    image: pulumi.Input[str]  # the server image, pushed to image_repository_arn by mlrig
    image_repository_arn: pulumi.Input[str]
    network: NetworkRef
    artifacts: RemoteRef  # the prefix of the remote's bucket MLflow proxies artifacts to
    secrets: Secrets
    domain: Domain | None = None  # None: the HTTP API's own execute-api URL
    force_delete: bool = False  # teardown --purge: lift deletion protection
    final_snapshot_id: str = "mlflow-final"
    oidc: dict[str, Any] | None = None  # issuer, audience, rules: StackConfig.oidc


class TrackingServer(pulumi.ComponentResource):
    url: pulumi.Output[str]
    admin_secret: aws.secretsmanager.Secret

    def __init__(
        self, name: str, args: TrackingServerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:TrackingServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        profile, network = args.profile, args.network
        protected = profile.db_deletion_protection and not args.force_delete
        task_subnets = (
            network.private_subnet_ids if profile.private_tasks else network.public_subnet_ids
        )
        self.task_subnets = task_subnets
        self.private_tasks = profile.private_tasks
        self.front_door = self._front_door(name, args, task_subnets, protected)
        task_sg = self._task_security_group(name, network)
        self.database = Database(
            f"{name}-db",
            DatabaseArgs(
                network=network,
                client_security_group_id=task_sg.id,
                password=args.secrets.db_password,
                profile=profile,
                deletion_protection=protected,
                # Runs are data: kept as a snapshot on teardown unless purged (production: always).
                final_snapshot_id=args.final_snapshot_id
                if (profile.db_deletion_protection or not args.force_delete)
                else None,
            ),
            opts=child,
        )
        self.admin_secret = self._secret(
            f"{name}-admin-password", args.secrets.admin_password, "MLflow admin password"
        )
        flask_secret = self._secret(
            f"{name}-flask-secret", args.secrets.flask_secret, "MLflow Flask session key"
        )
        secret_arns = {  # by the container's environment variable
            ts.ENV_ADMIN_PASSWORD: self.admin_secret.arn,
            ts.ENV_FLASK_SECRET: flask_secret.arn,
            ts_container.ENV_PG_PASSWORD: self.database.password_secret.arn,
        }
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=server_log_group(pulumi.get_stack()),
            retention_in_days=profile.log_retention_days,
            opts=child,
        )
        roles = ServerRoles(
            name,
            ServerRolesArgs(
                image_repository_arn=args.image_repository_arn,
                log_group_arn=log_group.arn,
                secret_arns=list(secret_arns.values()),
                artifacts=args.artifacts,
            ),
            opts=child,
        )
        container = self._container(args, log_group, secret_arns)
        self.service = ServerService(
            name,
            ServerServiceArgs(
                profile=profile,
                container_definitions=container,
                roles=roles,
                subnet_ids=task_subnets,
                security_group_id=task_sg.id,
                front_door=self.front_door,
            ),
            opts=child,
        )
        self.url = self.front_door.url
        self.register_outputs(
            {
                "url": self.url,
                "admin_secret_arn": self.admin_secret.arn,
                "database_address": self.database.instance.address,
            }
        )

    def _front_door(
        self,
        name: str,
        args: TrackingServerArgs,
        task_subnets: Sequence[pulumi.Input[str]],
        protected: bool,
    ) -> FrontDoor:
        # Without a domain there is no certificate for an ALB: the HTTP API serves HTTPS.
        kind = args.profile.front_door if args.domain else "http-api"
        return FrontDoor(
            f"{name}-front",
            FrontDoorArgs(
                kind=kind,
                network=args.network,
                subnet_ids=args.network.public_subnet_ids if kind == "alb" else task_subnets,
                port=ts.CONTAINER_PORT,
                health_path=ts.HEALTH_PATH,
                domain=args.domain,
                deletion_protection=protected,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _container(
        self,
        args: TrackingServerArgs,
        log_group: aws.cloudwatch.LogGroup,
        secret_arns: dict[str, pulumi.Output[str]],
    ) -> pulumi.Output[str]:
        """The container definition, once the database, bucket and secrets are known."""
        allowed = [f"*.execute-api.{args.region}.amazonaws.com", "10.*"]
        if args.domain:
            allowed.insert(0, args.domain.name)
        return pulumi.Output.all(
            args.image,
            self.database.instance.address,
            args.artifacts.bucket_name,
            log_group.name,
            *secret_arns.values(),
        ).apply(
            lambda a: container_definitions(
                a[0],
                db_host=a[1],
                bucket=a[2],
                artifacts_prefix=args.artifacts.prefix,
                profile=args.profile.name,
                size=args.profile.server_size,
                log_group=a[3],
                region=args.region,
                secret_arns=dict(zip(secret_arns, a[4:], strict=True)),
                allowed_hosts=allowed,
                oidc=args.oidc,
            )
        )

    def _task_security_group(self, name: str, network: NetworkRef) -> aws.ec2.SecurityGroup:
        # Tasks accept the server port from the front door only; out: HTTPS (ECR, Secrets
        # Manager, S3, logs) and PostgreSQL inside the VPC. Nothing else, either way.
        return aws.ec2.SecurityGroup(
            f"{name}-task-sg",
            vpc_id=network.vpc_id,
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
                    "cidr_blocks": [network.cidr],
                    "description": "PostgreSQL",
                },
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _secret(
        self, name: str, value: pulumi.Input[str], description: str
    ) -> aws.secretsmanager.Secret:
        secret = aws.secretsmanager.Secret(
            name,
            description=description,
            recovery_window_in_days=7,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-value",
            secret_id=secret.id,
            secret_string=value,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return secret
