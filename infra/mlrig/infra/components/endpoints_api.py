"""Where endpoints attach when the tracking server's front door is an ALB (production): an
HTTP API of their own, with no route until an endpoint stack adds one, a VPC link into the
tasks' private subnets and a Cloud Map namespace for warm endpoints.

The small profile's front door already is such an API (`http_api.HttpApiFrontDoor`), and
endpoints share it. Here the ALB stays the tracking server's alone: endpoint traffic never
passes it, and this API costs nothing while no request arrives (a VPC link for an HTTP API
has no charge; the namespace is one private hosted zone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class EndpointsApiArgs:
    vpc_id: pulumi.Input[str]
    cidr: str  # the VPC's: the link opens connections to warm tasks inside it only
    subnet_ids: Sequence[pulumi.Input[str]]  # the tasks' private subnets: the link's ENIs
    port: int  # the container port warm endpoints listen on
    api_name: str = "endpoints"  # the stack's prefix in it: names an account sees


class EndpointsApi(pulumi.ComponentResource):
    api: aws.apigatewayv2.Api
    link: aws.apigatewayv2.VpcLink
    security_group: aws.ec2.SecurityGroup  # the link's
    namespace: aws.servicediscovery.PrivateDnsNamespace
    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: EndpointsApiArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:EndpointsApi", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # A VPC link only opens connections: no ingress; out, the warm tasks' port only.
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-link-sg",
            vpc_id=args.vpc_id,
            description="mlrig endpoints' VPC link to warm endpoint tasks",
            ingress=[],
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": args.port,
                    "to_port": args.port,
                    "cidr_blocks": [args.cidr],
                    "description": "warm endpoint tasks",
                }
            ],
            opts=child,
        )
        self.link = aws.apigatewayv2.VpcLink(
            f"{name}-link",
            name=f"{args.api_name}-link",
            subnet_ids=args.subnet_ids,
            security_group_ids=[self.security_group.id],
            opts=child,
        )
        self.namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-ns", name=f"{name}.internal", vpc=args.vpc_id, opts=child
        )
        self.api = aws.apigatewayv2.Api(
            f"{name}-api", name=args.api_name, protocol_type="HTTP", opts=child
        )
        # No $default route: a path no endpoint stack has routed answers 404 at API Gateway.
        # Throttling caps what a flood of requests can cost (billed per request).
        aws.apigatewayv2.Stage(
            f"{name}-stage",
            api_id=self.api.id,
            name="$default",
            auto_deploy=True,
            default_route_settings={"throttling_burst_limit": 200, "throttling_rate_limit": 100},
            opts=child,
        )
        self.url = self.api.api_endpoint
        self.register_outputs({"url": self.url, "api_id": self.api.id, "vpc_link_id": self.link.id})
