"""The production front door: an internet-facing ALB, TLS 1.2+ on 443 only, on a domain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components import dns
from mlrig.infra.components.sub_component import adopted_children

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass
class AlbArgs:
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]  # public subnets: where the ALB's nodes live
    security_group_id: pulumi.Input[str]  # HTTPS in from anywhere, the tasks' port out
    port: int  # the container port it forwards to
    health_path: str
    certificate: dns.Certificate  # an ALB has no default HTTPS name: it needs a domain
    deletion_protection: bool = False


class AlbFrontDoor(pulumi.ComponentResource):
    """Named like its FrontDoor, so its children keep their names (`<name>-alb`, ...)."""

    target_group: aws.lb.TargetGroup
    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: AlbArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:AlbFrontDoor", name, None, opts)
        child = adopted_children(self, opts)
        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            security_groups=[args.security_group_id],
            subnets=args.subnet_ids,
            drop_invalid_header_fields=True,
            idle_timeout=300,
            enable_deletion_protection=args.deletion_protection,
            opts=child,
        )
        self.target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=args.port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=30,
            health_check={"path": args.health_path, "matcher": "200", "interval": 30},
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=alb.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=args.certificate.arn,
            default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
            opts=child,
        )
        self.url = dns.alias(name, args.certificate, alb.dns_name, alb.zone_id, child)
        self.register_outputs({"url": self.url, "target_group_arn": self.target_group.arn})
