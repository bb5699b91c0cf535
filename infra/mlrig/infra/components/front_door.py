"""HTTPS in front of the tracking server: an HTTP API (no idle cost) or an ALB.

The front door owns what both shapes share (the security group, the domain's certificate)
and builds one of them: `http_api.HttpApiFrontDoor` (small) or `alb.AlbFrontDoor`
(production, which needs a domain for its certificate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from mlrig.infra.components import dns
from mlrig.infra.components.alb import AlbArgs, AlbFrontDoor
from mlrig.infra.components.http_api import HttpApiArgs, HttpApiFrontDoor
from mlrig.infra.components.network import NetworkRef


@dataclass
class FrontDoorArgs:
    kind: Literal["http-api", "alb"]
    network: NetworkRef
    subnet_ids: Sequence[pulumi.Input[str]]  # where the link ENIs / ALB nodes live
    port: int  # the container port it forwards to
    health_path: str
    domain: dns.Domain | None = None
    deletion_protection: bool = False


class FrontDoor(pulumi.ComponentResource):
    security_group: aws.ec2.SecurityGroup
    url: pulumi.Output[str]
    cloud_map_service: aws.servicediscovery.Service | None = None
    target_group: aws.lb.TargetGroup | None = None
    http_api: HttpApiFrontDoor | None = None  # endpoints are routed on it (small profile)

    def __init__(
        self, name: str, args: FrontDoorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:FrontDoor", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ingress: list[aws.ec2.SecurityGroupIngressArgsDict] = (
            [
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "HTTPS",
                }
            ]
            if args.kind == "alb"
            else []
        )
        # A VPC link only opens connections; it needs no ingress at all.
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.network.vpc_id,
            description=f"mlrig {args.kind} to the tasks",
            ingress=ingress,
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": args.port,
                    "to_port": args.port,
                    "cidr_blocks": [args.network.cidr],
                    "description": "tracking server",
                }
            ],
            opts=child,
        )
        cert = dns.certificate(name, args.domain, child) if args.domain else None
        # The shapes share the front door's name, so their children keep theirs.
        if args.kind == "alb":
            if cert is None:
                raise ValueError("the ALB front door needs a domain for its certificate")
            alb = AlbFrontDoor(
                name,
                AlbArgs(
                    vpc_id=args.network.vpc_id,
                    subnet_ids=args.subnet_ids,
                    security_group_id=self.security_group.id,
                    port=args.port,
                    health_path=args.health_path,
                    certificate=cert,
                    deletion_protection=args.deletion_protection,
                ),
                opts=child,
            )
            self.target_group, self.url = alb.target_group, alb.url
        else:
            api = HttpApiFrontDoor(
                name,
                HttpApiArgs(
                    vpc_id=args.network.vpc_id,
                    subnet_ids=args.subnet_ids,
                    security_group_id=self.security_group.id,
                    certificate=cert,
                ),
                opts=child,
            )
            self.cloud_map_service, self.url = api.cloud_map_service, api.url
            self.http_api = api
        self.register_outputs({"url": self.url, "security_group_id": self.security_group.id})
