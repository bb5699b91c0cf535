"""The model as a Lambda container function by digest: its role, log group, published
versions, the alias `live` (weighted for a canary) and the alarm that aborts a canary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mlrig.infra.components.policies import assume_role
from mlrig.infra.endpoint import policies
from mlrig.infra.endpoint.config import EndpointConfig, function_log_group

ALIAS = "live"
Alarm = aws.cloudwatch.MetricAlarm


@dataclass
class FunctionArgs:
    config: EndpointConfig
    bucket_arn: pulumi.Input[str]  # for the capture prefix, when capture is on


class EndpointFunction(pulumi.ComponentResource):
    function: aws.lambda_.Function
    alias: aws.lambda_.Alias
    alarms: list[aws.cloudwatch.MetricAlarm]

    def __init__(
        self, name: str, args: FunctionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlrig:aws:EndpointFunction", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.config
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=function_log_group(cfg.base_stack, cfg.endpoint),
            retention_in_days=cfg.log_retention_days,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-role", assume_role_policy=assume_role("lambda.amazonaws.com"), opts=child
        )
        capture = cfg.captures
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.all(logs.arn, args.bucket_arn).apply(
                lambda a: policies.function_role(a[0], a[1] if capture else None, cfg.endpoint)
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=cfg.prefix,
            package_type="Image",
            image_uri=cfg.image,  # by digest: what was verified is what runs
            publish=True,  # a new image publishes a new version; the old ones stay
            role=role.arn,
            memory_size=cfg.memory_mb,
            timeout=cfg.timeout_s,
            architectures=["x86_64"],
            environment={"variables": _variables(cfg, args.bucket_arn)},
            logging_config={"log_format": "Text", "log_group": logs.name},
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[policy, logs])
            ),
        )
        new_version = self.function.version
        if cfg.canary_percent is not None:
            # The stable version keeps the rest; the new one gets the canary's share.
            served: pulumi.Input[str] = cfg.stable_version or ""
            share = cfg.canary_percent / 100
            routing: aws.lambda_.AliasRoutingConfigArgsDict | None = {
                "additional_version_weights": new_version.apply(lambda v: {v: share})
            }
        else:
            served, routing = cfg.stable_version or new_version, None
        self.alias = aws.lambda_.Alias(
            f"{name}-alias",
            name=ALIAS,
            function_name=self.function.name,
            function_version=served,
            routing_config=routing,
            opts=child,
        )
        # Only while a canary runs: they drive its auto-abort, and a standing alarm costs
        # $0.10 a month, which would end "$0 when idle".
        self.alarms = (
            self._alarms(name, cfg, new_version, child) if cfg.canary_percent is not None else []
        )
        self.register_outputs(
            {
                "function_name": self.function.name,
                "published_version": new_version,
                "alias_arn": self.alias.arn,
                "alarm_names": [a.name for a in self.alarms],
            }
        )

    def _alarms(
        self,
        name: str,
        cfg: EndpointConfig,
        new_version: pulumi.Output[str],
        child: pulumi.ResourceOptions,
    ) -> list[aws.cloudwatch.MetricAlarm]:
        """Errors and p99 of the canary's version alone (Lambda reports a weighted alias'
        invocations per ExecutedVersion)."""
        dimensions: pulumi.Input[Mapping[str, pulumi.Input[str]]] = new_version.apply(
            lambda v: {
                "FunctionName": cfg.prefix,
                "Resource": f"{cfg.prefix}:{ALIAS}",
                "ExecutedVersion": v,
            }
        )
        limits = cfg.limits

        def alarm(
            suffix: str, metric: str, threshold: int, what: str, stat: str | None, p: str | None
        ) -> Alarm:
            return aws.cloudwatch.MetricAlarm(
                f"{name}-{suffix}",
                name=f"{cfg.prefix}-{suffix}",
                namespace="AWS/Lambda",
                metric_name=metric,
                period=60,
                evaluation_periods=1,
                comparison_operator="GreaterThanThreshold",
                threshold=threshold,
                treat_missing_data="notBreaching",  # no traffic is not a failure
                dimensions=dimensions,
                alarm_description=what,
                statistic=stat,
                extended_statistic=p,
                opts=child,
            )

        errors = alarm(
            "errors",
            "Errors",
            limits.errors_per_minute,
            f"more than {limits.errors_per_minute} errors a minute",
            "Sum",
            None,
        )
        latency = alarm(
            "p99",
            "Duration",
            limits.p99_ms,
            f"p99 duration over {limits.p99_ms} ms",
            None,
            "p99",
        )
        return [errors, latency]


def capture_uri(bucket_arn: str, endpoint: str) -> str:
    """Where the function writes its captures: s3://BUCKET/captures/ENDPOINT."""
    bucket = bucket_arn.rsplit(":", 1)[-1]  # arn:aws:s3:::BUCKET
    return f"s3://{bucket}/{policies.CAPTURE_PREFIX}/{endpoint}"


def capture_variables(cfg: EndpointConfig, bucket_arn: str) -> dict[str, str]:
    """The image's capture settings (none with capture off): the share, the prefix its role
    may write and what each record names (what deploy verified)."""
    if not cfg.captures:
        return {}
    return {
        "MLRIG_CAPTURE_PERCENT": str(cfg.capture_percent),
        "MLRIG_CAPTURE_DIR": capture_uri(bucket_arn, cfg.endpoint),
        # Lambda freezes the process between invocations: the capture extension writes the
        # buffer after the answer of the invocation in which its oldest record is this old
        # (or it is half full); a warm task's writer thread wakes this often. It bounds what a
        # retired sandbox loses (the records of its last 5 s) against PUTs: at most one per
        # 5 s per busy sandbox or task ($0.09 a day)
        "MLRIG_CAPTURE_FLUSH_SECONDS": "5",
        "MLRIG_MODEL_NAME": cfg.model,
        "MLRIG_MODEL_VERSION": cfg.model_version,
        "MLRIG_IMAGE_DIGEST": cfg.image.rsplit("@", 1)[-1],
        "MLRIG_RUN_ID": cfg.run_id,
    }


def _variables(cfg: EndpointConfig, bucket_arn: pulumi.Input[str]) -> pulumi.Input[dict[str, str]]:
    """The image's settings: its endpoint and route prefix, and capture's."""
    base = {
        "MLRIG_ENDPOINT": cfg.endpoint,
        # the route's prefix, which the image's Lambda entry strips
        "MLRIG_BASE_PATH": f"/endpoints/{cfg.endpoint}",
    }
    if not cfg.captures:
        return base
    return pulumi.Output.from_input(bucket_arn).apply(
        lambda arn: {**base, **capture_variables(cfg, arn)}
    )
