"""The AWS stack's settings: size profiles and the typed config the program is built from.

`infra/__main__.py` (pulumi CLI) and the CLI's Automation API both produce a StackConfig;
`infra.program.build` takes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from mlrig.tracking import oidc as tracking_oidc

if TYPE_CHECKING:  # the CLI reads PROFILES without importing pulumi
    import pulumi

ProfileName = Literal["small", "production"]
PROJECT = "mlrig"
CONFIG_NAMESPACE = "mlrig"
SERVER_COMPONENT = "mlflow"  # the tracking server's component name (names its log group)


def server_log_group(stack: str) -> str:
    """The tracking server task's log group (streams mlflow/CONTAINER/TASK_ID): its stderr,
    which holds the audit lines `mlrig access log` reads. Named per stack: log group names
    are unique in an account and region."""
    return f"/mlrig/{stack}/{SERVER_COMPONENT}"


@dataclass(frozen=True)
class Profile:
    """Every size and safety choice that differs between profiles; each one is priced."""

    name: ProfileName
    # small: tasks in public subnets behind an HTTP API (no NAT, no load balancer);
    # production: private subnets, one NAT gateway per AZ, an HTTPS ALB.
    private_tasks: bool
    front_door: Literal["http-api", "alb"]
    fargate_spot: bool
    task_count: int
    db_instance_class: str
    db_storage_gb: int
    db_max_storage_gb: int
    db_multi_az: bool
    db_deletion_protection: bool
    db_backup_days: int
    log_retention_days: int
    # The tracking server's task as "CPU:MIB" (a Fargate size) instead of the profile's
    # (`tracking.container.CONTAINER_SIZES`); set by `mlrig stack up --server-size`.
    server_size: str | None = None


PROFILES: dict[str, Profile] = {
    "small": Profile(
        name="small",
        private_tasks=False,
        front_door="http-api",
        fargate_spot=True,
        task_count=1,
        db_instance_class="db.t4g.micro",
        db_storage_gb=20,
        db_max_storage_gb=50,
        db_multi_az=False,
        db_deletion_protection=False,
        db_backup_days=7,
        log_retention_days=14,
    ),
    "production": Profile(
        name="production",
        private_tasks=True,
        front_door="alb",
        fargate_spot=False,
        task_count=2,
        db_instance_class="db.t4g.medium",
        db_storage_gb=50,
        db_max_storage_gb=500,
        db_multi_az=True,
        db_deletion_protection=True,
        db_backup_days=14,
        log_retention_days=90,
    ),
}


@dataclass(frozen=True)
class Secrets:
    """Generated once by the CLI and kept as Pulumi config secrets (never in outputs)."""

    # str in the plan, pulumi.Output[str] (secret) from real config.
    db_password: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    flask_secret: pulumi.Input[str]


@dataclass(frozen=True)
class StackConfig:
    stack: str
    region: str
    profile: Profile
    secrets: Secrets
    # The tracking server is created only once its image is in ECR (phase two of `up`).
    mlflow_image: str | None = None
    github_repo: str | None = None  # owner/repo allowed to assume the CI role
    github_ref: str = "ref:refs/heads/main"  # or "environment:prod", "*"
    existing_oidc_provider_arn: str | None = None
    domain: str | None = None
    hosted_zone_id: str | None = None  # Route 53 zone for the domain's DNS validation
    kms_key_arn: str | None = None  # customer-managed KMS key for S3 and ECR, else AWS-owned
    enhanced_scanning: bool = False
    access_log_bucket: str | None = None
    dvc_prefix: str = "dvc"
    artifacts_prefix: str = "mlflow-artifacts"
    keep_tagged_images: int = 50
    untagged_image_days: int = 7
    noncurrent_version_days: int = 30
    force_delete: bool = False  # set only by `mlrig stack down --purge`
    final_snapshot_id: str | None = None  # set by `mlrig stack down`: unique per teardown
    extra_tags: dict[str, str] = field(default_factory=dict)
    # GitHub repositories whose OIDC tokens the tracking server accepts, each as its machine
    # identity (`mlrig:oidcRules`); the issuer and audience default to GitHub's and
    # `mlrig:<stack>`. They reach the task as MLRIG_OIDC_CONFIG (mlrig/tracking/oidc.py).
    oidc_rules: tuple[tracking_oidc.Rule, ...] = ()
    oidc_issuer: str = tracking_oidc.GITHUB_ISSUER
    oidc_audience: str | None = None

    @property
    def tags(self) -> dict[str, str]:
        return {
            "project": PROJECT,
            "stack": self.stack,
            "managed-by": "pulumi-mlrig",
            **self.extra_tags,
        }

    @property
    def prefix(self) -> str:
        return f"mlrig-{self.stack}"

    @property
    def oidc(self) -> dict[str, Any] | None:
        """The tracking server's OIDC config, or None while no repository has a rule."""
        if not self.oidc_rules:
            return None
        audience = self.oidc_audience or tracking_oidc.default_audience(self.stack)
        config = tracking_oidc.OidcConfig(self.oidc_issuer, audience, self.oidc_rules)
        return tracking_oidc.parse_config(config.to_json()).to_json()  # validated


def sized(profile: Profile, server_size: str | None) -> Profile:
    """The profile with its tracking server at `server_size` ("CPU:MIB"), checked; itself
    when None."""
    if server_size is None:
        return profile
    from mlrig.tracking import container as ts_container

    ts_container.parse_size(server_size)
    return replace(profile, server_size=server_size)


def from_pulumi_config() -> StackConfig:
    """Read `mlrig:*` config of the current Pulumi stack (pulumi CLI or Automation API)."""
    import pulumi

    conf = pulumi.Config(CONFIG_NAMESPACE)
    aws_conf = pulumi.Config("aws")
    profile = conf.get("profile") or "small"
    if profile not in PROFILES:
        raise ValueError(f"mlrig:profile must be one of {sorted(PROFILES)}, not {profile!r}")
    return StackConfig(
        stack=pulumi.get_stack(),
        region=aws_conf.require("region"),
        profile=sized(PROFILES[profile], conf.get("serverSize")),
        secrets=Secrets(
            db_password=conf.require_secret("dbPassword"),
            admin_password=conf.require_secret("adminPassword"),
            flask_secret=conf.require_secret("flaskSecret"),
        ),
        mlflow_image=conf.get("mlflowImage"),
        github_repo=conf.get("githubRepo"),
        github_ref=conf.get("githubRef") or "ref:refs/heads/main",
        existing_oidc_provider_arn=conf.get("oidcProviderArn"),
        domain=conf.get("domain"),
        hosted_zone_id=conf.get("hostedZoneId"),
        kms_key_arn=conf.get("kmsKeyArn"),
        enhanced_scanning=conf.get_bool("enhancedScanning") or False,
        access_log_bucket=conf.get("accessLogBucket"),
        force_delete=conf.get_bool("forceDelete") or False,
        final_snapshot_id=conf.get("finalSnapshotId"),
        oidc_rules=tracking_oidc.parse_config(
            {
                "issuer": tracking_oidc.GITHUB_ISSUER,
                "audience": "-",
                "rules": conf.get_object("oidcRules") or [],
            }
        ).rules,
        oidc_issuer=conf.get("oidcIssuer") or tracking_oidc.GITHUB_ISSUER,
        oidc_audience=conf.get("oidcAudience"),
    )


# --- remote training (`mlrig retrain --remote`): names the program and the CLI share ---
TRAINING_COMPONENT = "training"  # names its resources (`training-logs`, ...)
REMOTE_RESULTS_PREFIX = "mlrig-remote"  # the DVC bucket's prefix tasks upload results under
TRAINING_PROJECT_TAG = "mlrig.project"  # the tag RunTask puts on every training task


def training_parameter(stack: str) -> str:
    """The SSM parameter holding the `remote_training` outputs (a String, no secret): where
    CI finds them, as its outputs.json is written from the repository's answers."""
    return f"/mlrig/{stack}/remote-training"


def training_log_group(stack: str) -> str:
    """The remote training tasks' log group (streams train/trainer/TASK_ID)."""
    return f"/mlrig/{stack}/training"


def training_family_prefix(stack: str) -> str:
    """Every remote training task definition's family starts so (the CI role may register
    and run those only)."""
    return f"mlrig-{stack}-train-"


def machine_secret_prefix(stack: str) -> str:
    """The Secrets Manager names of the stack's machine identities' passwords
    (`mlrig.core.access.identities.aws_secret_name`): the only secrets a training task gets."""
    return f"mlrig/{stack}/identities/repo-"
