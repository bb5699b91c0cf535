"""StackOutputs: the one versioned document every part of mlrig reads.

Both stack back-ends (local processes, Pulumi on AWS) write it; bootstrap, image push and
doctor read it and nothing else. It never holds a secret, only where to get one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig import paths
from mlrig.errors import ConfigError, Conflict, StackNotFound, UsageError

SCHEMA_VERSION = 2
# What each schema version brought, one entry per version (docs/releasing.md says when it
# moves): `mlrig --version` names the current one and the reader names them when it refuses
# a file.
SCHEMA_CHANGES: dict[int, str] = {
    1: "name, kind, region, created_at, dvc_remote, mlflow, registry and ci_role_arn",
    2: "compute (an AWS stack's cluster, subnets, security group, roles and log group for "
    "`mlrig retrain --remote`)",
}
OUTPUTS_FILE = "outputs.json"
LOCAL_STATE_FILE = "local.json"  # the local back-end's own state, beside outputs.json


class OutputNames:
    """Names shared by infra/ (pulumi.export), the CLI and the tests."""

    DVC_REMOTE_URL = "dvc_remote_url"
    DVC_REMOTE_REGION = "dvc_remote_region"
    MLFLOW_TRACKING_URI = "mlflow_tracking_uri"
    MLFLOW_ADMIN_SECRET_ARN = "mlflow_admin_secret_arn"
    REGISTRY_URL = "registry_url"
    CI_ROLE_ARN = "ci_role_arn"
    REGION = "region"
    ARTIFACTS_URL = "mlflow_artifacts_url"
    # read only by the AWS driver (two-phase up, teardown checks), exported all the same
    SERVER_REPOSITORY_URL = "mlflow_server_repository_url"
    BUCKET_NAME = "dvc_bucket_name"
    REPOSITORY_NAMES = "ecr_repository_names"
    PROFILE = "profile"
    # what `mlrig retrain --remote` runs on (StackOutputs.compute): cluster, network, roles
    REMOTE_TRAINING = "remote_training"


class SecretRef(BaseModel):
    """Where a secret lives: a 0600 file (local) or an AWS Secrets Manager secret."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    source: Literal["file", "aws-secretsmanager", "env"]
    ref: str = Field(description="file path, secret ARN/name, or environment variable name")
    key: str | None = Field(default=None, description="JSON key inside the secret, if any")


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    username: str
    password: SecretRef


class DvcRemote(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class Mlflow(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    tracking_uri: str
    auth: BasicAuth | None = None


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    kind: Literal["oci", "ecr"]
    url: str = Field(description="repository URI: ECR URI or 127.0.0.1:PORT/name")
    auth: BasicAuth | None = Field(default=None, description="oci: basic auth; ecr: from STS")
    endpoint_url: str | None = Field(default=None, description="AWS API endpoint override")

    @property
    def host(self) -> str:
        return self.url.split("/", 1)[0]

    @property
    def repository(self) -> str:
        return self.url.split("/", 1)[1] if "/" in self.url else ""


class AwsCompute(BaseModel):
    """Where `mlrig retrain --remote` runs its one-off Fargate tasks on an AWS stack (the
    program's `remote_training` export)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    cluster_arn: str
    subnet_ids: list[str]
    security_group_id: str
    assign_public_ip: bool = Field(description="public subnets have no NAT: the IP is the way out")
    task_role_arn: str
    execution_role_arn: str
    log_group: str


class StackOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    schema_version: int = SCHEMA_VERSION
    name: str
    kind: Literal["local", "aws"]
    region: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    dvc_remote: DvcRemote
    mlflow: Mlflow
    registry: Registry
    ci_role_arn: str | None = None
    compute: AwsCompute | None = None  # schema 2; None: the stack predates remote training

    @property
    def dvc_remote_url(self) -> str:
        return self.dvc_remote.url

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri

    @property
    def registry_url(self) -> str:
        return self.registry.url


_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
NAME_MAX = 32


def validate_stack_name(name: str) -> str:
    """Stack names end up in bucket, repository and directory names: keep them boring."""
    hint = "use 1-32 lowercase letters, digits and dashes, starting with a letter"
    if not name:
        raise UsageError("stack name is empty", hint=hint)
    if len(name) > NAME_MAX:
        raise UsageError(
            f"stack name is {len(name)} characters, the limit is {NAME_MAX}", hint=hint
        )
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"invalid stack name {name!r}", hint=hint)
    if name.endswith("-") or "--" in name:
        raise UsageError(f"invalid stack name {name!r}: no trailing or double dashes", hint=hint)
    return name


def outputs_path(name: str) -> Path:
    return paths.stack_dir(validate_stack_name(name)) / OUTPUTS_FILE


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write-then-rename so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(outputs: StackOutputs) -> Path:
    path = outputs_path(outputs.name)
    atomic_write(path, outputs.model_dump_json(indent=2) + "\n")
    return path


class WrongFolder(ConfigError):
    """outputs.json names another stack than its folder: a copied or renamed folder."""


def ensure_kind(name: str, kind: str) -> None:
    """Refuse to bring a stack up as one kind when its name already belongs to the other.

    An unreadable outputs.json is no proof of either kind: a local stack's own state
    (local.json) says it is local; otherwise the caller's `up` rewrites the file.
    """
    path = outputs_path(name)
    if not path.exists() and not path.is_symlink():
        return
    try:
        existing = load(name).kind
    except WrongFolder:
        raise
    except ConfigError:
        local = (path.parent / LOCAL_STATE_FILE).exists()
        if kind == "local" or not local:
            return
        existing = "local"
    if existing != kind:
        flag = "--aws" if existing == "aws" else "--local"
        label = {"aws": "an AWS", "local": "a local"}
        raise Conflict(
            f"stack '{name}' is {label[existing]} stack, not {label[kind]} one",
            hint=f"use `mlrig stack up {flag} --stack {name}`, or pick another name",
        )


def list_names() -> list[str]:
    """Every stack folder: one with outputs.json or (a local stack being created, or whose
    outputs.json was lost) local.json. Broken ones are listed too, so they can be shown."""
    root = paths.stacks_dir()
    if not root.is_dir():
        return []
    names: set[str] = set()
    for marker in (OUTPUTS_FILE, LOCAL_STATE_FILE):
        names.update(p.parent.name for p in root.glob(f"*/{marker}"))
    return sorted(n for n in names if _NAME_RE.fullmatch(n))


def load(name: str) -> StackOutputs:
    """The stack's outputs; any unreadable file is one ConfigError naming it and the fix."""
    path = outputs_path(name)
    fix = f"run `mlrig stack up --stack {name}` (with --aws for an AWS stack) to rewrite it"
    if path.is_dir():
        raise ConfigError(
            f"stack outputs file {path} is a directory", hint=f"move it away, then {fix}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if (path.parent / LOCAL_STATE_FILE).exists():
            raise ConfigError(
                f"stack '{name}' has no {OUTPUTS_FILE} (its first `up` did not finish, or the "
                "file was deleted)",
                hint=f"run `mlrig stack up --stack {name}`: it rebuilds the file and its services",
            ) from None
        raise StackNotFound(name, list_names()) from None
    except OSError as exc:
        raise ConfigError(
            f"stack outputs file {path} is not readable ({exc.strerror})",
            hint="fix its permissions (0600, owned by you)",
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"stack outputs file {path} is not text (corrupt)", hint=fix) from None
    if not text.strip():
        raise ConfigError(f"stack outputs file {path} is empty", hint=fix)
    outputs = parse(text, source=str(path), fix=fix)
    if outputs.name != name:
        raise WrongFolder(
            f"stack outputs file {path} names stack '{outputs.name}', not '{name}' (its folder)",
            hint=f"a stack's folder cannot be renamed: move it back to {paths.stacks_dir()}/"
            f"{outputs.name}, or delete the stray file",
        )
    return outputs


@contextmanager
def _without_pydantic_plugins() -> Iterator[None]:
    """Pydantic looks for plugins (an entry-point scan of every installed distribution,
    ~30 ms) when it first builds a model; the contract's models are built, on first use
    (`defer_build`), without them, the way typer builds its parameter adapters."""
    previous = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        else:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = previous


def _known_schemas() -> str:
    return "; ".join(f"{v}: {what}" for v, what in sorted(SCHEMA_CHANGES.items()))


def parse(text: str, source: str = "<text>", fix: str = "") -> StackOutputs:
    fix = fix or "run `mlrig stack up` for this stack again to rewrite it"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"stack outputs file {source} is not valid JSON ({exc.msg})", hint=fix
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"stack outputs file {source} is not a JSON object", hint=fix)
    version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ConfigError(
            f"stack outputs file {source} has schema version {version}, written by a newer "
            f"mlrig; this one reads up to {SCHEMA_VERSION} ({_known_schemas()})",
            hint="upgrade mlrig to the version that wrote it (`mlrig --version` there)",
        )
    if version not in SCHEMA_CHANGES or isinstance(version, bool):
        raise ConfigError(
            f"stack outputs file {source} has schema version {version!r}, which no mlrig "
            f"wrote ({_known_schemas()})",
            hint=fix,
        )
    try:
        with _without_pydantic_plugins():
            return StackOutputs.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(
            f"stack outputs file {source} is invalid at {where}: {first['msg']}", hint=fix
        ) from exc
