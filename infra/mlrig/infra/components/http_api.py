"""The small profile's front door: API Gateway HTTP API -> VPC link -> Cloud Map -> tasks.

$0 idle, HTTPS on the execute-api domain with no certificate to manage; limits: 10 MB
payload, 30 s per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components import dns
from mlrig.infra.components.sub_component import adopted_children


@dataclass
class HttpApiArgs:
    vpc_id: pulumi.Input[str]  # Cloud Map's private namespace lives in it
    subnet_ids: Sequence[pulumi.Input[str]]  # where the VPC link's ENIs live
    security_group_id: pulumi.Input[str]  # the link's: egress to the tasks only
    certificate: dns.Certificate | None = None  # a custom domain; None: execute-api URL


class HttpApiFrontDoor(pulumi.ComponentResource):
    """Named like its FrontDoor, so its children keep their names (`<name>-api`, ...)."""

    cloud_map_service: aws.servicediscovery.Service
    url: pulumi.Output[str]
    # What an endpoint stack adds its routes, integrations and Cloud Map services to.
    api: aws.apigatewayv2.Api
    link: aws.apigatewayv2.VpcLink
    namespace: aws.servicediscovery.PrivateDnsNamespace

    def __init__(
        self, name: str, args: HttpApiArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:HttpApiFrontDoor", name, None, opts)
        child = adopted_children(self, opts)
        self.namespace = namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-ns", name=f"{name}.internal", vpc=args.vpc_id, opts=child
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
            opts=child,
        )
        self.link = link = aws.apigatewayv2.VpcLink(
            f"{name}-link",
            name=f"{name}-link",
            subnet_ids=args.subnet_ids,
            security_group_ids=[args.security_group_id],
            opts=child,
        )
        self.api = api = aws.apigatewayv2.Api(
            f"{name}-api",
            name=name,
            protocol_type="HTTP",
            # With a custom domain, the execute-api URL is turned off so there is one way in.
            disable_execute_api_endpoint=args.certificate is not None,
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
            opts=child,
        )
        if args.certificate is None:
            self.url = api.api_endpoint
        else:
            self.url = self._custom_domain(name, args.certificate, api, stage, child)
        self.register_outputs(
            {"url": self.url, "cloud_map_service_arn": self.cloud_map_service.arn}
        )

    def _custom_domain(
        self,
        name: str,
        cert: dns.Certificate,
        api: aws.apigatewayv2.Api,
        stage: aws.apigatewayv2.Stage,
        child: pulumi.ResourceOptions,
    ) -> pulumi.Output[str]:
        domain = aws.apigatewayv2.DomainName(
            f"{name}-domain",
            domain_name=cert.domain,
            domain_name_configuration={
                "certificate_arn": cert.arn,
                "endpoint_type": "REGIONAL",
                "security_policy": "TLS_1_2",
            },
            opts=child,
        )
        aws.apigatewayv2.ApiMapping(
            f"{name}-mapping", api_id=api.id, domain_name=domain.id, stage=stage.id, opts=child
        )
        config = domain.domain_name_configuration
        return dns.alias(name, cert, config.target_domain_name, config.hosted_zone_id, child)
