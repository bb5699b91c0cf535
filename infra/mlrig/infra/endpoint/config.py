"""An endpoint stack's settings: what serves (an image by digest, the alias' versions and
canary share), how big, warm or not, and its limits; checked before any resource exists."""

from __future__ import annotations

import re
from dataclasses import dataclass

CONFIG_NAMESPACE = "mlrig"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
# ECR only, by digest: a tag could move between `deploy` and the function's creation.
IMAGE = re.compile(
    r"(?P<registry>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)@sha256:[0-9a-f]{64}"
)
VERSION = re.compile(r"[1-9][0-9]{0,9}")
LAMBDA_MEMORY_MB = (128, 10240)
# Fargate sizes a warm endpoint may take: (vCPU units, MiB).
WARM_SIZES = {(256, 512), (256, 1024), (512, 1024), (512, 2048), (1024, 2048), (1024, 4096)}


@dataclass(frozen=True)
class Limits:
    """When the canary is aborted: the alias' alarm goes to ALARM over one minute."""

    errors_per_minute: int = 5  # function errors (5xx raised by the handler, timeouts)
    p99_ms: int = 2000  # duration p99 of the alias' invocations


@dataclass(frozen=True)
class EndpointConfig:
    base_stack: str
    endpoint: str
    region: str
    image: str  # ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:...
    # The published version the alias `live` serves; None: the one published from `image`.
    stable_version: str | None = None
    # With a stable version: this share (1-99 %) goes to the version published from image.
    canary_percent: int | None = None
    memory_mb: int = 1024  # the function's (and so its CPU share); the local deploy's 1 GiB
    timeout_s: int = 29  # under API Gateway's 30 s integration limit
    warm: bool = False  # a Fargate service instead of the function
    warm_size: tuple[int, int] = (512, 1024)
    # the share (0-100 %) of predictions the model captures; only > 0 lets it write
    # captures/ENDPOINT/* in the bucket (`captures`)
    capture_percent: int = 0
    limits: Limits = Limits()
    log_retention_days: int = 14
    authorizer_cache_s: int = 60  # API Gateway caches a key's verdict this long
    public: bool = False  # no authorizer: anyone may call it (flagged by status)
    model: str = ""  # for tags: what the image is
    model_version: str = ""
    run_id: str = ""  # the version's run: what its captured records name

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        found = []
        if not NAME.fullmatch(self.endpoint):
            found.append(f"endpoint name {self.endpoint!r} is not 1-40 of a-z 0-9 -")
        match = IMAGE.fullmatch(self.image)
        if not match:
            found.append(f"image {self.image!r} is not an ECR repository@sha256 digest")
        elif match.group("region") != self.region:
            found.append(f"image {self.image!r} is not in {self.region}")
        if self.stable_version is not None and not VERSION.fullmatch(self.stable_version):
            found.append(f"stable version {self.stable_version!r} is not a Lambda version")
        if self.canary_percent is not None:
            if not 1 <= self.canary_percent <= 99:
                found.append(f"canary share {self.canary_percent} is not 1-99")
            if self.stable_version is None:
                found.append("a canary needs the stable version it is compared to")
            if self.warm:
                # ECS rolls a warm service out instead (the CLI's check_warm_canary says how)
                found.append("a warm endpoint has no canary (no weighted alias on ECS)")
        if self.run_id and not re.fullmatch(r"[0-9a-f]{32}", self.run_id):
            found.append(f"run id {self.run_id[:40]!r} is not an MLflow run id")
        if not 0 <= self.capture_percent <= 100:
            found.append(f"capture share {self.capture_percent} is not 0-100")
        if not LAMBDA_MEMORY_MB[0] <= self.memory_mb <= LAMBDA_MEMORY_MB[1]:
            found.append(f"memory {self.memory_mb} MB is outside Lambda's {LAMBDA_MEMORY_MB}")
        if self.warm and self.warm_size not in WARM_SIZES:
            found.append(f"warm size {self.warm_size} is not one of {sorted(WARM_SIZES)}")
        return found

    @property
    def captures(self) -> bool:
        """Does the model write captures (and so hold PutObject on its prefix)?"""
        return self.capture_percent > 0

    @property
    def prefix(self) -> str:
        """Every named resource of this endpoint starts with it (the ECR policy's pattern)."""
        return f"mlrig-{self.base_stack}-ep-{self.endpoint}"

    @property
    def keys_parameter(self) -> str:
        """The SSM SecureString holding the endpoint's key hashes (written by the CLI)."""
        return keys_parameter(self.base_stack, self.endpoint)

    @property
    def repository(self) -> str:
        match = IMAGE.fullmatch(self.image)
        assert match is not None  # checked in __post_init__
        return match.group("repository")

    @property
    def tags(self) -> dict[str, str]:
        tags = {
            "project": "mlrig",
            "stack": self.base_stack,
            "managed-by": "pulumi-mlrig",
            "mlrig-endpoint": self.endpoint,
        }
        if self.model:
            tags["mlrig-model"] = f"{self.model}/{self.model_version}"
        return tags


def keys_parameter(base_stack: str, endpoint: str) -> str:
    return f"/mlrig/{base_stack}/endpoints/{endpoint}/keys"


def function_log_group(base_stack: str, endpoint: str) -> str:
    """The model function's log group (Lambda's own name for it: /aws/lambda/FUNCTION)."""
    return f"/aws/lambda/mlrig-{base_stack}-ep-{endpoint}"


def warm_log_group(base_stack: str, endpoint: str) -> str:
    """A warm endpoint's Fargate task log group (streams ENDPOINT/CONTAINER/TASK_ID)."""
    return f"/mlrig/{base_stack}/endpoints/{endpoint}"


def function_name_pattern(base_stack: str) -> str:
    """The base stack's endpoint functions, for the models repository's Lambda pull policy."""
    return f"mlrig-{base_stack}-ep-*"


def from_pulumi_config() -> EndpointConfig:
    """Read `mlrig:*` config of the current endpoint stack (Automation API or pulumi CLI)."""
    import pulumi

    conf = pulumi.Config(CONFIG_NAMESPACE)
    aws_conf = pulumi.Config("aws")
    size = conf.get("warmSize") or "512:1024"
    cpu, _, memory = size.partition(":")
    return EndpointConfig(
        base_stack=conf.require("baseStack"),
        endpoint=conf.require("endpoint"),
        region=aws_conf.require("region"),
        image=conf.require("image"),
        stable_version=conf.get("stableVersion"),
        canary_percent=conf.get_int("canaryPercent"),
        memory_mb=conf.get_int("memoryMb") or 1024,
        warm=conf.get_bool("warm") or False,
        warm_size=(int(cpu), int(memory)),
        capture_percent=conf.get_int("capturePercent") or 0,
        public=conf.get_bool("public") or False,
        limits=Limits(
            errors_per_minute=conf.get_int("maxErrorsPerMinute") or Limits.errors_per_minute,
            p99_ms=conf.get_int("maxP99Ms") or Limits.p99_ms,
        ),
        model=conf.get("model") or "",
        model_version=conf.get("modelVersion") or "",
        run_id=conf.get("runId") or "",
    )
