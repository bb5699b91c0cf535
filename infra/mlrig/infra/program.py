"""The AWS stack as one function of a StackConfig: composes the components, returns outputs.

`infra/__main__.py` (pulumi CLI), the CLI's Automation API and `mlrig stack plan` (mocks)
all run this, so they cannot describe different stacks.
"""

from __future__ import annotations

import pulumi

from mlrig.contract import OutputNames
from mlrig.infra.components.ci_access import CiAccess, CiAccessArgs
from mlrig.infra.components.dns import Domain
from mlrig.infra.components.dvc_remote import DvcRemote, DvcRemoteArgs
from mlrig.infra.components.endpoints_api import EndpointsApi, EndpointsApiArgs
from mlrig.infra.components.network import Network, NetworkArgs
from mlrig.infra.components.registry import Registry, RegistryArgs, enhanced_scanning
from mlrig.infra.components.remote_training import RemoteTraining, RemoteTrainingArgs
from mlrig.infra.components.tracking_server import TrackingServer, TrackingServerArgs
from mlrig.infra.config import SERVER_COMPONENT, TRAINING_COMPONENT, StackConfig
from mlrig.infra.endpoint import config as endpoint_config
from mlrig.infra.endpoint.refs import RefNames
from mlrig.infra.tagging import tagged
from mlrig.tracking.config import CONTAINER_PORT

VPC_CIDR = "10.42.0.0/16"


def build(cfg: StackConfig) -> dict[str, pulumi.Input[object]]:
    prefix, profile = cfg.prefix, cfg.profile
    # The stack's tags, set once: each component hands them down to all its children.
    opts = tagged(cfg.tags)
    remote = DvcRemote(
        "dvc-remote",
        DvcRemoteArgs(
            bucket_prefix=f"{prefix}-"[:37],
            prefix=cfg.dvc_prefix,
            kms_key_arn=cfg.kms_key_arn,
            noncurrent_version_days=cfg.noncurrent_version_days,
            access_log_bucket=cfg.access_log_bucket,
            force_destroy=cfg.force_delete,
        ),
        opts,
    )

    def registry(name: str, lambda_pull: str | None = None) -> Registry:
        return Registry(
            name,
            RegistryArgs(
                repository_name=f"{prefix}/{name}",
                kms_key_arn=cfg.kms_key_arn,
                keep_tagged=cfg.keep_tagged_images,
                untagged_days=cfg.untagged_image_days,
                force_delete=cfg.force_delete,
                lambda_pull_functions=lambda_pull,
            ),
            opts,
        )

    models = registry("models", endpoint_config.function_name_pattern(cfg.stack))
    server_repo = registry("mlflow-server")
    if cfg.enhanced_scanning:
        enhanced_scanning("registry-scanning", opts)
    outputs: dict[str, pulumi.Input[object]] = {
        OutputNames.REGION: cfg.region,
        OutputNames.DVC_REMOTE_URL: remote.url,
        OutputNames.DVC_REMOTE_REGION: cfg.region,
        OutputNames.REGISTRY_URL: models.repository.repository_url,
        OutputNames.ARTIFACTS_URL: pulumi.Output.concat(
            "s3://", remote.bucket.id, "/", cfg.artifacts_prefix
        ),
        OutputNames.SERVER_REPOSITORY_URL: server_repo.repository.repository_url,
        OutputNames.BUCKET_NAME: remote.bucket.id,
        OutputNames.REPOSITORY_NAMES: [models.repository.name, server_repo.repository.name],
        OutputNames.PROFILE: profile.name,
    }
    if not cfg.mlflow_image:
        # Phase one of `mlrig stack up`: the server image must be in ECR before its service.
        return outputs
    network = Network(
        "network",
        NetworkArgs(region=cfg.region, cidr=VPC_CIDR, nat_gateways=profile.private_tasks),
        opts,
    )
    server = TrackingServer(
        SERVER_COMPONENT,
        TrackingServerArgs(
            region=cfg.region,
            profile=profile,
            image=cfg.mlflow_image,
            image_repository_arn=server_repo.repository.arn,
            network=network.ref,
            artifacts=remote.ref(cfg.artifacts_prefix),
            secrets=cfg.secrets,
            domain=Domain(cfg.domain, cfg.hosted_zone_id) if cfg.domain else None,
            force_delete=cfg.force_delete,
            final_snapshot_id=cfg.final_snapshot_id or f"{prefix}-final",
            oidc=cfg.oidc,
        ),
        opts,
    )
    outputs.update(_endpoint_refs(cfg, server, network, models, remote, opts))
    outputs[OutputNames.MLFLOW_TRACKING_URI] = server.url
    outputs[OutputNames.MLFLOW_ADMIN_SECRET_ARN] = server.admin_secret.arn
    training = RemoteTraining(
        TRAINING_COMPONENT,
        RemoteTrainingArgs(
            region=cfg.region,
            repository_arn=models.repository.arn,
            dvc=remote.ref(cfg.dvc_prefix),
            vpc_id=network.vpc.id,
            cluster_arn=server.service.cluster.arn,
            subnet_ids=server.task_subnets,
            public_ip=not server.private_tasks,
            log_retention_days=profile.log_retention_days,
        ),
        opts,
    )
    outputs[OutputNames.REMOTE_TRAINING] = training.outputs
    if cfg.github_repo:
        ci = CiAccess(
            "ci",
            CiAccessArgs(
                github_repo=cfg.github_repo,
                github_ref=cfg.github_ref,
                repository_arn=models.repository.arn,
                dvc=remote.ref(cfg.dvc_prefix),
                existing_provider_arn=cfg.existing_oidc_provider_arn,
                training=training,
                region=cfg.region,
            ),
            opts,
        )
        outputs[OutputNames.CI_ROLE_ARN] = ci.role.arn
    return outputs


def _endpoint_refs(
    cfg: StackConfig,
    server: TrackingServer,
    network: Network,
    models: Registry,
    remote: DvcRemote,
    opts: pulumi.ResourceOptions,
) -> dict[str, pulumi.Input[object]]:
    """What endpoint stacks attach to (read by their StackReference), the same names on
    both front doors: the small profile's HTTP API, or beside an ALB (which cannot route
    to a Lambda function by itself and costs by the hour) an HTTP API of their own."""
    front = server.front_door
    if front.http_api is not None:
        api, url = front.http_api.api, server.url
        link, link_group, namespace = (
            front.http_api.link,
            front.security_group,
            front.http_api.namespace,
        )
    else:
        own = EndpointsApi(
            "endpoints",
            EndpointsApiArgs(
                vpc_id=network.vpc.id,
                cidr=VPC_CIDR,
                subnet_ids=server.task_subnets,
                port=CONTAINER_PORT,
                api_name=f"{cfg.prefix}-endpoints",
            ),
            opts,
        )
        api, url, link, link_group, namespace = (
            own.api,
            own.url,
            own.link,
            own.security_group,
            own.namespace,
        )
    return {
        RefNames.API_ID: api.id,
        RefNames.API_EXECUTION_ARN: api.execution_arn,
        RefNames.API_URL: url,
        RefNames.VPC_LINK_ID: link.id,
        RefNames.LINK_SECURITY_GROUP_ID: link_group.id,
        RefNames.NAMESPACE_ID: namespace.id,
        RefNames.CLUSTER_ARN: server.service.cluster.arn,
        RefNames.VPC_ID: network.vpc.id,
        RefNames.SUBNET_IDS: server.task_subnets,
        RefNames.PUBLIC_IP: not server.private_tasks,
        RefNames.MODELS_REPOSITORY_ARN: models.repository.arn,
        RefNames.BUCKET_ARN: remote.bucket.arn,
    }


def export(outputs: dict[str, pulumi.Input[object]]) -> None:
    for key, value in outputs.items():
        pulumi.export(key, value)
