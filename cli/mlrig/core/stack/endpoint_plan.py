"""An endpoint stack's resources, offline: the endpoint program under Pulumi's mocks, its
base stack's outputs answered like its StackReference would (what `deploy --dry-run` and
`stack plan` show, and what the tests assert)."""

from __future__ import annotations

from typing import Any

from mlrig.adapters import pulumi as pulumi_adapter
from mlrig.core.stack.plan import ACCOUNT, RESOLVE_TIMEOUT_S, Plan, PlanError, _Recorder

STACK_REFERENCE = "pulumi:pulumi:StackReference"
SAMPLE_DIGEST = "sha256:" + "ab" * 32


def sample_refs(base_stack: str, region: str, profile: str = "small") -> dict[str, Any]:
    """The base stack's endpoint outputs as the base plan's mocks name its resources: the
    small profile's front-door API, or production's endpoints-only API and private subnets."""
    from mlrig.infra.endpoint.refs import RefNames as R

    api = "a1b2c3d4e5"
    production = profile == "production"
    front = "endpoints" if production else "mlflow-front"
    tier = "private" if production else "public"
    return {
        R.API_ID: api,
        R.API_EXECUTION_ARN: f"arn:aws:execute-api:{region}:{ACCOUNT}:{api}",
        R.API_URL: f"https://{api}.execute-api.{region}.amazonaws.com",
        R.VPC_LINK_ID: f"{front}-link-id",
        R.LINK_SECURITY_GROUP_ID: f"{front}-{'link-sg' if production else 'sg'}-id",
        R.NAMESPACE_ID: f"{front}-ns-id",
        R.CLUSTER_ARN: f"arn:aws:ecs:{region}:{ACCOUNT}:cluster/mlflow-cluster",
        R.VPC_ID: "network-vpc-id",
        R.SUBNET_IDS: [f"network-{tier}-0-id", f"network-{tier}-1-id"],
        R.PUBLIC_IP: not production,
        R.MODELS_REPOSITORY_ARN: (
            f"arn:aws:ecr:{region}:{ACCOUNT}:repository/mlrig-{base_stack}/models"
        ),
        R.BUCKET_ARN: f"arn:aws:s3:::mlrig-{base_stack}-20261126abcdef",
    }


def sample_image(base_stack: str, region: str, digest: str = SAMPLE_DIGEST) -> str:
    return f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/mlrig-{base_stack}/models@{digest}"


class _EndpointRecorder(_Recorder):
    """Records the endpoint's resources; answers the base stack's reference (a read, kept
    apart in `reads`: the endpoint stack neither creates nor changes it)."""

    def __init__(self, plan: Plan, refs: dict[str, Any]) -> None:
        super().__init__(plan)
        self.refs = refs
        self.reads: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(
        self, typ: str, name: str, inputs: dict[str, Any], custom: bool
    ) -> tuple[str, dict[str, Any]]:
        if typ == STACK_REFERENCE:
            self.reads.append((typ, name, dict(inputs)))
            stack_name = str(inputs.get("name", name))
            return stack_name, {"name": stack_name, "outputs": self.refs, "secretOutputNames": []}
        return super().new_resource(typ, name, inputs, custom)


def run_endpoint_program(
    cfg: Any, refs: dict[str, Any] | None = None
) -> tuple[Plan, list[tuple[str, str, dict[str, Any]]]]:
    """(the endpoint's plan, the stack references it read) for an EndpointConfig."""
    from mlrig.infra.endpoint import program
    from mlrig.infra.endpoint.refs import (
        ENDPOINT_PROJECT,
        endpoint_stack_name,
        from_stack_reference,
    )

    plan = Plan(profile="endpoint", region=cfg.region)
    recorder = _EndpointRecorder(plan, refs or sample_refs(cfg.base_stack, cfg.region))
    plan.outputs = pulumi_adapter.run_under_mocks(
        lambda: program.build(cfg, from_stack_reference(cfg.base_stack)),
        stack=endpoint_stack_name(cfg.base_stack, cfg.endpoint),
        on_resource=recorder.new_resource,
        on_call=recorder.call,
        resolve_timeout=RESOLVE_TIMEOUT_S,
        project=ENDPOINT_PROJECT,
    )
    plan.resources.sort(key=lambda r: (r.type, r.name))
    return plan, recorder.reads


__all__ = ["PlanError", "run_endpoint_program", "sample_image", "sample_refs"]
