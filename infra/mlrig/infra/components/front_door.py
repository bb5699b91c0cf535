"""HTTPS in front of the tracking server: an HTTP API (no idle cost) or an ALB.

small: API Gateway HTTP API -> VPC link -> Cloud Map -> tasks. $0 idle, HTTPS on the
execute-api domain with no certificate to manage; limits: 10 MB payload, 30 s per request.
production: an internet-facing ALB, TLS 1.2+ on 443 only, needs a domain for its certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass
class FrontDoorArgs:
    kind: str  # "http-api" | "alb"
    vpc_id: pulumi.Input[str]
    vpc_cidr: str
    subnet_ids: Sequence[pulumi.Input[str]]  # where the link ENIs / ALB nodes live
    port: int  # the container port it forwards to
    health_path: str
    domain: str | None = None
    hosted_zone_id: str | None = None
    deletion_protection: bool = False
    tags: dict[str, str] = field(default_factory=dict)


class FrontDoor(pulumi.ComponentResource):
    security_group: aws.ec2.SecurityGroup
    url: pulumi.Output[str]
    cloud_map_service: aws.servicediscovery.Service | None = None
    target_group: aws.lb.TargetGroup | None = None

    def __init__(
        self, name: str, args: FrontDoorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:FrontDoor", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._args = args
        ingress: list[Any] = (
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
            vpc_id=args.vpc_id,
            description=f"mlrig {args.kind} to the tasks",
            ingress=ingress,
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": args.port,
                    "to_port": args.port,
                    "cidr_blocks": [args.vpc_cidr],
                    "description": "tracking server",
                }
            ],
            tags=args.tags,
            opts=self._child,
        )
        cert = self._certificate(name) if args.domain else None
        if args.kind == "alb":
            if cert is None:
                raise ValueError("the ALB front door needs a domain for its certificate")
            self.url = self._alb(name, cert)
        else:
            self.url = self._http_api(name, cert)
        self.register_outputs({"url": self.url, "security_group_id": self.security_group.id})

    def _certificate(self, name: str) -> pulumi.Output[str]:
        """An ACM certificate validated through the domain's Route 53 zone; its ARN."""
        args, child = self._args, self._child
        assert args.domain is not None
        zone_id: pulumi.Input[str] = (
            args.hosted_zone_id
            or aws.route53.get_zone_output(name=args.domain.split(".", 1)[1]).zone_id
        )
        cert = aws.acm.Certificate(
            f"{name}-cert",
            domain_name=args.domain,
            validation_method="DNS",
            key_algorithm="EC_prime256v1",
            tags=args.tags,
            opts=child,
        )
        option = cert.domain_validation_options[0]
        record = aws.route53.Record(
            f"{name}-cert-validation",
            zone_id=zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        self._zone_id = zone_id
        return aws.acm.CertificateValidation(
            f"{name}-cert-ready",
            certificate_arn=cert.arn,
            validation_record_fqdns=[record.fqdn],
            opts=child,
        ).certificate_arn

    def _alias(
        self, name: str, target_name: pulumi.Input[str], target_zone: pulumi.Input[str]
    ) -> None:
        aws.route53.Record(
            f"{name}-alias",
            zone_id=self._zone_id,
            name=self._args.domain,
            type="A",
            aliases=[
                {"name": target_name, "zone_id": target_zone, "evaluate_target_health": False}
            ],
            opts=self._child,
        )

    def _http_api(self, name: str, cert: pulumi.Output[str] | None) -> pulumi.Output[str]:
        args, child = self._args, self._child
        namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-ns", name=f"{name}.internal", vpc=args.vpc_id, tags=args.tags, opts=child
        )
        self.cloud_map_service = aws.servicediscovery.Service(
            f"{name}-discovery",
            name="mlflow",
            namespace_id=namespace.id,
            dns_config={
                "namespace_id": namespace.id,
                "routing_policy": "MULTIVALUE",
                "dns_records": [{"type": "SRV", "ttl": 10}],
            },
            health_check_custom_config={},
            force_destroy=True,
            tags=args.tags,
            opts=child,
        )
        link = aws.apigatewayv2.VpcLink(
            f"{name}-link",
            name=f"{name}-link",
            subnet_ids=args.subnet_ids,
            security_group_ids=[self.security_group.id],
            tags=args.tags,
            opts=child,
        )
        api = aws.apigatewayv2.Api(
            f"{name}-api",
            name=name,
            protocol_type="HTTP",
            # With a custom domain, the execute-api URL is turned off so there is one way in.
            disable_execute_api_endpoint=cert is not None,
            tags=args.tags,
            opts=child,
        )
        integration = aws.apigatewayv2.Integration(
            f"{name}-integration",
            api_id=api.id,
            integration_type="HTTP_PROXY",
            integration_method="ANY",
            connection_type="VPC_LINK",
            connection_id=link.id,
            integration_uri=self.cloud_map_service.arn,
            payload_format_version="1.0",
            timeout_milliseconds=30000,
            opts=child,
        )
        aws.apigatewayv2.Route(
            f"{name}-route",
            api_id=api.id,
            route_key="$default",
            target=pulumi.Output.concat("integrations/", integration.id),
            opts=child,
        )
        # Throttling caps what a flood of requests can cost (billed per request).
        stage = aws.apigatewayv2.Stage(
            f"{name}-stage",
            api_id=api.id,
            name="$default",
            auto_deploy=True,
            default_route_settings={"throttling_burst_limit": 200, "throttling_rate_limit": 100},
            tags=args.tags,
            opts=child,
        )
        if cert is None:
            return api.api_endpoint
        domain = aws.apigatewayv2.DomainName(
            f"{name}-domain",
            domain_name=args.domain,
            domain_name_configuration={
                "certificate_arn": cert,
                "endpoint_type": "REGIONAL",
                "security_policy": "TLS_1_2",
            },
            tags=args.tags,
            opts=child,
        )
        aws.apigatewayv2.ApiMapping(
            f"{name}-mapping", api_id=api.id, domain_name=domain.id, stage=stage.id, opts=child
        )
        config = domain.domain_name_configuration
        self._alias(name, config.target_domain_name, config.hosted_zone_id)
        return pulumi.Output.from_input(f"https://{args.domain}")

    def _alb(self, name: str, cert: pulumi.Output[str]) -> pulumi.Output[str]:
        args, child = self._args, self._child
        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            security_groups=[self.security_group.id],
            subnets=args.subnet_ids,
            drop_invalid_header_fields=True,
            idle_timeout=300,
            enable_deletion_protection=args.deletion_protection,
            tags=args.tags,
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
            tags=args.tags,
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=alb.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=cert,
            default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
            tags=args.tags,
            opts=child,
        )
        self._alias(name, alb.dns_name, alb.zone_id)
        return pulumi.Output.from_input(f"https://{args.domain}")
