"""The endpoint's way in: `ANY /endpoints/NAME/{proxy+}` on the base stack's HTTP API,
behind a Lambda REQUEST authorizer that checks the endpoint's keys (none when public)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from mlrig.infra.components.policies import assume_role
from mlrig.infra.endpoint import authorizer as authorizer_code
from mlrig.infra.endpoint import policies
from mlrig.infra.endpoint.config import EndpointConfig
from mlrig.infra.endpoint.refs import BaseRefs

AUTHORIZER_RUNTIME = "python3.12"


def route_key(endpoint: str) -> str:
    return f"ANY /endpoints/{endpoint}/{{proxy+}}"


@dataclass
class RouteArgs:
    config: EndpointConfig
    base: BaseRefs
    # Lambda: the alias' ARN (AWS_PROXY); warm: the Cloud Map service's (HTTP_PROXY, VPC link)
    target_arn: pulumi.Input[str]
    warm: bool = False


class EndpointRoute(pulumi.ComponentResource):
    route: aws.apigatewayv2.Route
    authorizer: aws.apigatewayv2.Authorizer | None = None

    def __init__(
        self, name: str, args: RouteArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:EndpointRoute", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, base = args.config, args.base
        if args.warm:
            integration = aws.apigatewayv2.Integration(
                f"{name}-integration",
                api_id=base.api_id,
                integration_type="HTTP_PROXY",
                integration_method="ANY",
                connection_type="VPC_LINK",
                connection_id=base.vpc_link_id,
                integration_uri=args.target_arn,
                # the container serves /invocations and /ping, not the route's prefix
                request_parameters={"overwrite:path": "/$request.path.proxy"},
                payload_format_version="1.0",
                timeout_milliseconds=30000,
                opts=child,
            )
        else:
            integration = aws.apigatewayv2.Integration(
                f"{name}-integration",
                api_id=base.api_id,
                integration_type="AWS_PROXY",
                integration_uri=args.target_arn,
                payload_format_version="2.0",
                timeout_milliseconds=30000,
                opts=child,
            )
            aws.lambda_.Permission(
                f"{name}-invoke",
                action="lambda:InvokeFunction",
                function=cfg.prefix,
                qualifier="live",
                principal="apigateway.amazonaws.com",
                source_arn=pulumi.Output.concat(
                    base.api_execution_arn, f"/*/*/endpoints/{cfg.endpoint}/*"
                ),
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=[integration])
                ),
            )
        auth: dict[str, pulumi.Input[str]] = {"authorization_type": "NONE"}
        if not cfg.public:
            self.authorizer = self._authorizer(name, cfg, base, child)
            auth = {"authorization_type": "CUSTOM", "authorizer_id": self.authorizer.id}
        self.route = aws.apigatewayv2.Route(
            f"{name}-route",
            api_id=base.api_id,
            route_key=route_key(cfg.endpoint),
            target=pulumi.Output.concat("integrations/", integration.id),
            opts=child,
            **auth,  # type: ignore[arg-type]
        )
        self.register_outputs({"route_key": self.route.route_key})

    def _authorizer(
        self, name: str, cfg: EndpointConfig, base: BaseRefs, child: pulumi.ResourceOptions
    ) -> aws.apigatewayv2.Authorizer:
        fn_name = f"{cfg.prefix}-auth"
        logs = aws.cloudwatch.LogGroup(
            f"{name}-auth-logs",
            name=f"/aws/lambda/{fn_name}",
            retention_in_days=cfg.log_retention_days,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-auth-role", assume_role_policy=assume_role("lambda.amazonaws.com"), opts=child
        )
        parameter = cfg.keys_parameter
        region = cfg.region
        policy = aws.iam.RolePolicy(
            f"{name}-auth-policy",
            role=role.id,
            # the account is the one the API lives in: its execution ARN names it
            policy=pulumi.Output.all(logs.arn, base.api_execution_arn).apply(
                lambda a: policies.authorizer_role(
                    a[0], policies.parameter_arn(region, str(a[1]).split(":")[4], parameter)
                )
            ),
            opts=child,
        )
        code = Path(authorizer_code.__file__)
        function = aws.lambda_.Function(
            f"{name}-auth-function",
            name=fn_name,
            runtime=AUTHORIZER_RUNTIME,
            handler=f"{code.stem}.handler",
            code=pulumi.AssetArchive({code.name: pulumi.FileAsset(str(code))}),
            role=role.arn,
            memory_size=128,
            timeout=5,
            architectures=["arm64"],
            environment={"variables": {authorizer_code.PARAMETER_ENV: parameter}},
            logging_config={"log_format": "Text", "log_group": logs.name},
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[policy, logs])
            ),
        )
        authorizer = aws.apigatewayv2.Authorizer(
            f"{name}-authorizer",
            api_id=base.api_id,
            name=f"{cfg.prefix}-keys",
            authorizer_type="REQUEST",
            authorizer_uri=function.invoke_arn,
            identity_sources=["$request.header.Authorization"],
            authorizer_payload_format_version="2.0",
            enable_simple_responses=True,
            authorizer_result_ttl_in_seconds=cfg.authorizer_cache_s,
            opts=child,
        )
        aws.lambda_.Permission(
            f"{name}-auth-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="apigateway.amazonaws.com",
            source_arn=pulumi.Output.concat(base.api_execution_arn, "/authorizers/", authorizer.id),
            opts=child,
        )
        return authorizer
