"""The tracking server's PostgreSQL: private subnets, encrypted, password in Secrets Manager."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from mlrig.tracking_server import DB_NAME, DB_USER

DB_PORT = 5432
ENGINE_VERSION = "16"


@dataclass
class DatabaseArgs:
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]  # private subnets, two AZs
    client_security_group_id: pulumi.Input[str]  # the only source allowed in
    password: Any  # str or secret Output[str]
    instance_class: str = "db.t4g.micro"
    storage_gb: int = 20
    max_storage_gb: int = 50
    multi_az: bool = False
    deletion_protection: bool = False
    final_snapshot_id: str | None = None  # None: deleted without a snapshot (purge)
    backup_days: int = 7
    tags: dict[str, str] = field(default_factory=dict)


class Database(pulumi.ComponentResource):
    instance: aws.rds.Instance
    password_secret: aws.secretsmanager.Secret

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
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
            tags=args.tags,
            opts=child,
        )
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=args.subnet_ids, tags=args.tags, opts=child
        )
        self.password_secret = aws.secretsmanager.Secret(
            f"{name}-password",
            description="mlrig tracking-server database password",
            recovery_window_in_days=7,
            tags=args.tags,
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
            instance_class=args.instance_class,
            allocated_storage=args.storage_gb,
            max_allocated_storage=args.max_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            publicly_accessible=False,
            multi_az=args.multi_az,
            db_name=DB_NAME,
            username=DB_USER,
            password=args.password,
            port=DB_PORT,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[self.security_group.id],
            backup_retention_period=args.backup_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            deletion_protection=protected,
            skip_final_snapshot=snapshot is None,
            final_snapshot_identifier=snapshot,
            apply_immediately=not protected,
            tags=args.tags,
            opts=child,
        )
        self.register_outputs(
            {"address": self.instance.address, "password_secret_arn": self.password_secret.arn}
        )
