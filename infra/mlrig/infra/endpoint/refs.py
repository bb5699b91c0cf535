"""What an endpoint stack reads from its base stack: output names shared by both programs
and the tests, and the typed bundle the endpoint program is built on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI reads the names without importing pulumi
    import pulumi

BASE_PROJECT = "mlrig"
ENDPOINT_PROJECT = "mlrig-endpoint"


class RefNames:
    """Base-stack outputs for endpoint stacks, the same on both profiles: the small
    profile's front-door HTTP API, or (production, ALB) the base stack's endpoints-only
    HTTP API, VPC link (private subnets) and namespace. Exported once the tracking server
    exists (phase two of `stack up`)."""

    API_ID = "endpoints_api_id"
    API_EXECUTION_ARN = "endpoints_api_execution_arn"
    API_URL = "endpoints_api_url"
    VPC_LINK_ID = "endpoints_vpc_link_id"
    LINK_SECURITY_GROUP_ID = "endpoints_link_security_group_id"
    NAMESPACE_ID = "endpoints_namespace_id"
    CLUSTER_ARN = "endpoints_cluster_arn"
    VPC_ID = "endpoints_vpc_id"
    SUBNET_IDS = "endpoints_subnet_ids"
    PUBLIC_IP = "endpoints_assign_public_ip"
    MODELS_REPOSITORY_ARN = "endpoints_models_repository_arn"
    BUCKET_ARN = "endpoints_bucket_arn"


def names() -> list[str]:
    return [v for k, v in vars(RefNames).items() if k.isupper()]


def stack_reference_name(base_stack: str) -> str:
    """The base stack as a StackReference names it on a self-managed (file/S3) backend."""
    return f"organization/{BASE_PROJECT}/{base_stack}"


def endpoint_stack_name(base_stack: str, endpoint: str) -> str:
    return f"{base_stack}.{endpoint}"


@dataclass(frozen=True)
class BaseRefs:
    """The base stack's parts an endpoint attaches to (it creates none of them)."""

    api_id: pulumi.Input[str]
    api_execution_arn: pulumi.Input[str]
    api_url: pulumi.Input[str]
    vpc_link_id: pulumi.Input[str]
    link_security_group_id: pulumi.Input[str]
    namespace_id: pulumi.Input[str]
    cluster_arn: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    assign_public_ip: pulumi.Input[bool]
    models_repository_arn: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]


def from_stack_reference(base_stack: str) -> BaseRefs:
    """The base stack's outputs through a StackReference (a read: never created or changed)."""
    import pulumi

    ref = pulumi.StackReference("base", stack_name=stack_reference_name(base_stack))

    def out(name: str) -> pulumi.Output[Any]:
        return ref.require_output(name)

    return BaseRefs(
        api_id=out(RefNames.API_ID),
        api_execution_arn=out(RefNames.API_EXECUTION_ARN),
        api_url=out(RefNames.API_URL),
        vpc_link_id=out(RefNames.VPC_LINK_ID),
        link_security_group_id=out(RefNames.LINK_SECURITY_GROUP_ID),
        namespace_id=out(RefNames.NAMESPACE_ID),
        cluster_arn=out(RefNames.CLUSTER_ARN),
        vpc_id=out(RefNames.VPC_ID),
        subnet_ids=out(RefNames.SUBNET_IDS),
        assign_public_ip=out(RefNames.PUBLIC_IP),
        models_repository_arn=out(RefNames.MODELS_REPOSITORY_ARN),
        bucket_arn=out(RefNames.BUCKET_ARN),
    )
