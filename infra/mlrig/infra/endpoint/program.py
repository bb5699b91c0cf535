"""The endpoint program: one function of (EndpointConfig, BaseRefs), run by the CLI's
Automation API (base refs through a StackReference), by `deploy --dry-run` and by the
tests under mocks. It creates only this endpoint's resources."""

from __future__ import annotations

import pulumi

from mlrig.infra.endpoint.config import EndpointConfig
from mlrig.infra.endpoint.function import EndpointFunction, FunctionArgs
from mlrig.infra.endpoint.refs import BaseRefs, from_stack_reference
from mlrig.infra.endpoint.route import EndpointRoute, RouteArgs, route_key
from mlrig.infra.endpoint.warm import WarmArgs, WarmEndpoint
from mlrig.infra.tagging import tagged


class Outputs:
    """The endpoint stack's exports, read back by the CLI."""

    URL = "url"
    ROUTE_KEY = "route_key"
    KIND = "kind"  # lambda | warm
    FUNCTION_NAME = "function_name"
    PUBLISHED_VERSION = "published_version"  # the version `image` published
    SERVED_VERSION = "served_version"  # the alias' main version
    CANARY_PERCENT = "canary_percent"
    ALARM_NAMES = "alarm_names"
    IMAGE = "image"
    # warm: what the CLI asks ECS about after `up` (did the rollout stay, or roll back?)
    CLUSTER_ARN = "cluster_arn"
    SERVICE_NAME = "service_name"
    TASK_DEFINITION_ARN = "task_definition_arn"


def build(cfg: EndpointConfig, base: BaseRefs) -> dict[str, pulumi.Input[object]]:
    opts = tagged(cfg.tags)
    outputs: dict[str, pulumi.Input[object]] = {
        Outputs.URL: pulumi.Output.concat(base.api_url, f"/endpoints/{cfg.endpoint}"),
        Outputs.ROUTE_KEY: route_key(cfg.endpoint),
        Outputs.IMAGE: cfg.image,
        Outputs.CANARY_PERCENT: cfg.canary_percent or 0,
    }
    if cfg.warm:
        warm = WarmEndpoint(cfg.endpoint, WarmArgs(cfg, base), opts)
        EndpointRoute(
            cfg.endpoint,
            RouteArgs(cfg, base, target_arn=warm.discovery.arn, warm=True),
            opts,
        )
        outputs.update(
            {
                Outputs.KIND: "warm",
                Outputs.CLUSTER_ARN: base.cluster_arn,
                Outputs.SERVICE_NAME: warm.service.name,
                Outputs.TASK_DEFINITION_ARN: warm.task.arn,
            }
        )
        return outputs
    fn = EndpointFunction(cfg.endpoint, FunctionArgs(cfg, base.bucket_arn), opts)
    EndpointRoute(cfg.endpoint, RouteArgs(cfg, base, target_arn=fn.alias.arn), opts)
    outputs.update(
        {
            Outputs.KIND: "lambda",
            Outputs.FUNCTION_NAME: fn.function.name,
            Outputs.PUBLISHED_VERSION: fn.function.version,
            Outputs.SERVED_VERSION: fn.alias.function_version,
            Outputs.ALARM_NAMES: [a.name for a in fn.alarms],
        }
    )
    return outputs


def main() -> None:
    """The Automation API's inline program: config from the stack, base through a reference."""
    from mlrig.infra.endpoint.config import from_pulumi_config

    cfg = from_pulumi_config()
    for key, value in build(cfg, from_stack_reference(cfg.base_stack)).items():
        pulumi.export(key, value)
