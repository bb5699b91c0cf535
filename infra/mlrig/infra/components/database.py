"""The tracking server's PostgreSQL: private subnets, encrypted, password in Secrets Manager."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components.network import NetworkRef
from mlrig.infra.config import Profile
from mlrig.tracking.container import DB_NAME, DB_USER

DB_PORT = 5432
ENGINE_VERSION = "16"


@dataclass
class DatabaseArgs:
    network: NetworkRef  # the instance lives in its private subnets (two AZs)
    client_security_group_id: pulumi.Input[str]  # the only source allowed in
    password: pulumi.Input[str]  # a secret Output from config (a label in the plan)
    profile: Profile  # instance class, storage, multi-AZ, backup days
    deletion_protection: bool = False
    final_snapshot_id: str | None = None  # None: deleted without a snapshot (purge)


class Database(pulumi.ComponentResource):
    instance: aws.rds.Instance
    password_secret: aws.secretsmanager.Secret

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        size = args.profile
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.network.vpc_id,
            description="PostgreSQL from the tracking server",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": DB_PORT,
                    "to_port": DB_PORT,
                    "security_groups": [args.client_security_group_id],
                    "description": "tracking server tasks",
                }
            ],
            egress=[],
            opts=child,
        )
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=args.network.private_subnet_ids, opts=child
        )
        self.password_secret = aws.secretsmanager.Secret(
            f"{name}-password",
            description="mlrig tracking-server database password",
            recovery_window_in_days=7,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-password-value",
            secret_id=self.password_secret.id,
            secret_string=args.password,
            opts=child,
        )
        protected = args.deletion_protection
        snapshot = args.final_snapshot_id
        self.instance = aws.rds.Instance(
            name,
            engine="postgres",
            engine_version=ENGINE_VERSION,
            instance_class=size.db_instance_class,
            allocated_storage=size.db_storage_gb,
            max_allocated_storage=size.db_max_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            publicly_accessible=False,
            multi_az=size.db_multi_az,
            db_name=DB_NAME,
            username=DB_USER,
            password=args.password,
            port=DB_PORT,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[self.security_group.id],
            backup_retention_period=size.db_backup_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            deletion_protection=protected,
            skip_final_snapshot=snapshot is None,
            final_snapshot_identifier=snapshot,
            apply_immediately=not protected,
            opts=child,
        )
        self.register_outputs(
            {"address": self.instance.address, "password_secret_arn": self.password_secret.arn}
        )
