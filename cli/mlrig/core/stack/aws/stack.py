"""The AWS stack's lifecycle (up, preview, down) through the Pulumi Automation API.

State lives in a `file://` backend under the mlrig home unless a backend URL is given; the
secrets passphrase is generated once into a 0600 file. `up` runs in two phases: ECR and the
bucket first, then mlrig builds and pushes the tracking-server image, then the rest.
"""

from __future__ import annotations

import hashlib
import os
import secrets as _secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlrig import assets, contract, paths
from mlrig.contract import OutputNames, StackOutputs
from mlrig.core.shared import aws_inputs
from mlrig.core.shared.progress import Progress
from mlrig.core.stack import oidc_rules
from mlrig.errors import Conflict, UsageError

PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"
SECRET_KEYS = ("dbPassword", "adminPassword", "flaskSecret")


@dataclass(frozen=True)
class AwsStackRequest:
    name: str
    region: str
    profile: str = "small"
    aws_profile: str | None = None
    github_repo: str | None = None
    domain: str | None = None
    backend_url: str | None = None
    server_size: str | None = None  # CPU:MIB; None keeps what the stack has (the profile's)

    def validate(self) -> AwsStackRequest:
        from mlrig.infra.config import PROFILES

        contract.validate_stack_name(self.name)
        aws_inputs.check_region(self.region)
        if self.profile not in PROFILES:
            raise UsageError(
                f"unknown profile {self.profile!r}",
                hint=f"use one of: {', '.join(sorted(PROFILES))}",
            )
        aws_inputs.check_github_repo(self.github_repo)
        aws_inputs.check_domain(self.domain)
        aws_inputs.check_server_size(self.server_size)
        return self


@dataclass
class DownResult:
    destroyed: bool
    remaining: list[str] = field(default_factory=list)


def state_dir(name: str) -> Path:
    return paths.stack_dir(name) / "pulumi"


def backend_url(name: str, override: str | None) -> str:
    """The override, else the URL this stack was created with, else a local file backend."""
    remembered = state_dir(name) / "backend-url"
    if override:
        url = override
    elif remembered.exists():
        url = remembered.read_text().strip()
    else:
        root = paths.home() / "pulumi-state"
        root.mkdir(parents=True, exist_ok=True)
        url = f"file://{root}"
    contract.atomic_write(remembered, url + "\n")
    return url


def passphrase(name: str) -> str:
    """The stack's secrets passphrase: from the environment, else generated once (0600)."""
    from mlrig.core.shared import secrets

    return os.environ.get(PASSPHRASE_ENV) or secrets.ensure_secret_file(
        state_dir(name) / "passphrase", nbytes=32
    )


def resolve_region(region: str | None) -> str:
    """--region, else the environment's AWS region, else one clear error."""
    found = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not found:
        from mlrig.errors import CredentialsError

        raise CredentialsError(
            "no AWS region given", hint="pass --region (e.g. us-east-1) or set AWS_REGION"
        )
    return found


def check_credentials(req: AwsStackRequest) -> str:
    """The AWS account the credentials belong to, or one clear CredentialsError."""
    from mlrig.adapters import aws

    if req.aws_profile:
        os.environ["AWS_PROFILE"] = req.aws_profile
        aws.session.cache_clear()
    return aws.caller_identity(region=req.region)["account"]


def _program(req: AwsStackRequest) -> Callable[[], None]:
    def program() -> None:
        from mlrig.infra import program as infra
        from mlrig.infra.config import from_pulumi_config

        infra.export(infra.build(from_pulumi_config()))

    return program


def _open(req: AwsStackRequest) -> Any:
    from mlrig.adapters import pulumi as pulumi_adapter

    env = {"AWS_PROFILE": req.aws_profile} if req.aws_profile else {}
    stack = pulumi_adapter.select_stack(
        req.name,
        _program(req),
        backend_url=backend_url(req.name, req.backend_url),
        passphrase=passphrase(req.name),
        env=env,
    )
    plain = {"aws:region": req.region, "mlrig:profile": req.profile}
    if req.github_repo:
        plain["mlrig:githubRepo"] = req.github_repo
    if req.domain:
        plain["mlrig:domain"] = req.domain
    if req.server_size:
        plain["mlrig:serverSize"] = req.server_size
    plain.update(oidc_rules.pulumi_config(req.name))  # which repos' OIDC tokens MLflow takes
    # Generated once; Pulumi keeps them encrypted with the passphrase, never in outputs.
    fresh = {
        f"mlrig:{k}": _secrets.token_urlsafe(24)
        for k in SECRET_KEYS
        if pulumi_adapter.get_config(stack, f"mlrig:{k}") is None
    }
    pulumi_adapter.set_config(stack, plain, fresh)
    return stack


def preflight(req: AwsStackRequest) -> str:
    """Everything that can fail before touching state: input, credentials, the Pulumi CLI."""
    from mlrig.adapters import pulumi as pulumi_adapter

    req.validate()
    account = check_credentials(req)
    pulumi_adapter.cli_path()
    return account


def up(req: AwsStackRequest, progress: Progress = lambda _m: None) -> StackOutputs:
    from mlrig.adapters import pulumi as pulumi_adapter

    contract.ensure_kind(req.name, "aws")
    preflight(req)
    stack = _open(req)
    if pulumi_adapter.get_config(stack, "mlrig:mlflowImage") is None:
        progress("phase 1/2: bucket and ECR repositories")
        first = pulumi_adapter.up(stack, on_output=lambda line: None)
        image = build_server_image(progress)
        pushed = push_server_image(image, req, first[OutputNames.SERVER_REPOSITORY_URL], progress)
        pulumi_adapter.set_config(stack, {"mlrig:mlflowImage": pushed}, {})
    progress("phase 2/2: network, database, tracking server, CI access")
    outputs = pulumi_adapter.up(stack, on_output=lambda line: None)
    result = to_stack_outputs(req.name, outputs, aws_profile=req.aws_profile)
    contract.save(result)
    return result


def preview(req: AwsStackRequest) -> dict[str, int]:
    from mlrig.adapters import pulumi as pulumi_adapter

    preflight(req)
    return pulumi_adapter.preview(_open(req), on_output=lambda line: None)


def to_stack_outputs(
    name: str, out: dict[str, Any], aws_profile: str | None = None
) -> StackOutputs:
    """The contract document from the program's exports (names shared via OutputNames)."""
    from mlrig.contract import AwsCompute, BasicAuth, DvcRemote, Mlflow, Registry, SecretRef
    from mlrig.tracking.config import ADMIN_USERNAME

    region = str(out[OutputNames.REGION])
    return StackOutputs(
        name=name,
        kind="aws",
        region=region,
        dvc_remote=DvcRemote(
            url=str(out[OutputNames.DVC_REMOTE_URL]),
            region=str(out[OutputNames.DVC_REMOTE_REGION]),
            profile=aws_profile,
        ),
        mlflow=Mlflow(
            tracking_uri=str(out[OutputNames.MLFLOW_TRACKING_URI]),
            auth=BasicAuth(
                username=ADMIN_USERNAME,
                password=SecretRef(
                    source="aws-secretsmanager", ref=str(out[OutputNames.MLFLOW_ADMIN_SECRET_ARN])
                ),
            ),
        ),
        registry=Registry(kind="ecr", url=str(out[OutputNames.REGISTRY_URL])),
        ci_role_arn=out.get(OutputNames.CI_ROLE_ARN),
        compute=AwsCompute.model_validate(out[OutputNames.REMOTE_TRAINING])
        if out.get(OutputNames.REMOTE_TRAINING)
        else None,
    )


def remaining_data(outputs: StackOutputs, bucket: str, repositories: list[str]) -> list[str]:
    """What `down` would destroy that holds data: objects (any version) and images."""
    from mlrig.adapters import aws

    gone = {"NoSuchBucket", "RepositoryNotFoundException"}  # already deleted: nothing held
    found = []
    try:
        s3 = aws.client("s3", region=outputs.region)
        listing = s3.list_object_versions(Bucket=bucket, MaxKeys=1000)
        count = len(listing.get("Versions", [])) + len(listing.get("DeleteMarkers", []))
        if count:
            more = "+" if listing.get("IsTruncated") else ""
            found.append(f"bucket {bucket} holds {count}{more} object versions")
    except Exception as exc:
        if _error_code(exc) not in gone:
            raise aws.translate(exc, f"checking what bucket {bucket} holds") from exc
    ecr = aws.client("ecr", region=outputs.region)
    for repo in repositories:
        try:
            images = ecr.list_images(repositoryName=repo, maxResults=1000).get("imageIds", [])
        except Exception as exc:
            if _error_code(exc) not in gone:
                raise aws.translate(exc, f"checking what repository {repo} holds") from exc
            continue
        if images:
            found.append(f"repository {repo} holds {len(images)} images")
    return found


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None


def down(name: str, *, purge: bool, progress: Progress = lambda _m: None) -> DownResult:
    """Destroy the stack; refuse while data remains unless purge (already confirmed)."""
    from mlrig.adapters import pulumi as pulumi_adapter

    outputs = contract.load(name)
    if outputs.kind != "aws":
        raise UsageError(f"stack '{name}' is a {outputs.kind} stack, not an AWS one")
    bucket = outputs.dvc_remote_url.removeprefix("s3://").split("/", 1)[0]
    repos = [
        outputs.registry.repository,
        outputs.registry.repository.rsplit("/", 1)[0] + "/mlflow-server",
    ]
    data = remaining_data(outputs, bucket, repos)
    if data and not purge:
        raise Conflict(
            "nothing was destroyed: " + "; ".join(data),
            hint="copy out what you need, then run `mlrig stack down --purge` "
            "(it asks for confirmation) to delete it with the stack",
        )
    req = AwsStackRequest(
        name=name, region=outputs.region or "us-east-1", aws_profile=outputs.dvc_remote.profile
    )
    pulumi_adapter.cli_path()
    stack = _open(req)
    # A unique snapshot name, so a stack torn down twice does not collide with itself.
    snapshot = f"mlrig-{name}-final-{datetime.now(UTC):%Y%m%d%H%M}"
    settings = {"mlrig:finalSnapshotId": snapshot}
    if purge:
        progress("allowing deletion of non-empty bucket and repositories")
        settings["mlrig:forceDelete"] = "true"
    pulumi_adapter.set_config(stack, settings, {})
    progress("applying teardown settings")
    pulumi_adapter.up(stack, on_output=lambda line: None)
    progress("destroying")
    pulumi_adapter.destroy(stack, on_output=lambda line: None)
    remaining = []
    profile = pulumi_adapter.get_config(stack, "mlrig:profile")
    if profile == "production" or not purge:
        remaining.append(
            f"database snapshot {snapshot} with the MLflow runs (restore it, or "
            "delete it in RDS when no longer needed)"
        )
    contract.outputs_path(name).unlink(missing_ok=True)
    return DownResult(destroyed=True, remaining=remaining)


def server_build_context() -> Path:
    return assets.docker_dir() / "mlflow-server"


def build_server_image(progress: Progress = lambda _m: None, base_image: str | None = None) -> str:
    """Build docker/mlflow-server with mlrig's server modules; returns its tag."""
    import shutil
    import tempfile
    from importlib.metadata import version

    from mlrig import settings, tracking
    from mlrig.adapters import docker as docker_adapter

    mlflow_version = version("mlflow")
    with tempfile.TemporaryDirectory(prefix="mlrig-server-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(server_build_context(), ctx, dirs_exist_ok=True)
        # the tracking-server plugin: a package that imports only itself
        shutil.copytree(
            Path(tracking.__file__).parent,
            ctx / "mlrig" / "tracking",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        digest = hashlib.sha256()
        for f in sorted(p for p in ctx.rglob("*") if p.is_file()):
            digest.update(f.relative_to(ctx).as_posix().encode() + f.read_bytes())
        tag = f"mlrig/mlflow-server:{mlflow_version}-{digest.hexdigest()[:12]}"
        if docker_adapter.image_exists(tag):
            return tag
        progress(f"building {tag}")
        docker_adapter.build_image(
            ctx,
            tag=tag,
            labels={},
            buildargs={
                "BASE_IMAGE": base_image or settings.load().base_image,
                "MLFLOW_VERSION": mlflow_version,
            },
        )
    return tag


def push_server_image(
    image: str, req: AwsStackRequest, repository_url: str, progress: Progress = lambda _m: None
) -> str:
    """Push with mlrig's own push code (immutable tags, digest check); returns image@digest.

    The stack has no outputs yet (phase 1 of `up`), so the push is told only the ECR
    repository; its region comes from the host and the token from the AWS credentials.
    """
    from mlrig.contract import Registry
    from mlrig.core.oci import push as oci_push

    registry = Registry(kind="ecr", url=repository_url)
    owner = f"AWS stack '{req.name}'"
    return oci_push.push_to(image, registry, owner=owner, progress=progress).reference
