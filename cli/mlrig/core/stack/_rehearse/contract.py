"""The AWS task's container contract, moved onto this machine's loopback for the rehearsal."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mlrig.tracking import container as ts_container


@dataclass(frozen=True)
class RunConfig:
    """The `docker run` of the rehearsal, derived from the contract; secrets held apart."""

    image: str
    command: list[str]
    user: str
    port: int
    health_path: str
    memory_mib: int
    cpu_units: int
    contract_env: dict[str, str]
    secret_names: list[str]
    local_env_names: list[str]  # stand-ins for what ECS gives a task (role creds, endpoint)
    network_mode: str = "host"

    def public(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["contract_env_names"] = sorted(doc.pop("contract_env"))
        return doc


def artifacts_prefix() -> str:
    """Where in the bucket a stack's tracking server puts artifacts (the AWS config's default)."""
    from mlrig.infra.config import StackConfig

    return str(StackConfig.__dataclass_fields__["artifacts_prefix"].default)


def db_names() -> tuple[str, str]:
    """The tracking server's database and its owner role, as the AWS stack creates them."""
    return ts_container.DB_NAME, ts_container.DB_USER


def run_config(
    *,
    profile: str,
    image: str,
    db_port: int,
    bucket: str,
    port: int | None = None,
    local_env_names: tuple[str, ...] = (),
    size: str | None = None,
) -> RunConfig:
    """The contract's container (the profile's size, or `size`), moved onto this machine's
    loopback."""
    db_name, db_user = db_names()
    spec = ts_container.container_spec(
        image=image,
        db_host="127.0.0.1",
        db_port=db_port,
        db_name=db_name,
        db_user=db_user,
        profile=profile,
        artifacts_destination=f"s3://{bucket}/{artifacts_prefix()}",
        size=size,
    )
    command = list(spec.command)
    # Host networking shares this machine's ports: bind loopback, not every interface.
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port or spec.port)
    return RunConfig(
        image=spec.image,
        command=command,
        user=spec.user,
        port=port or spec.port,
        health_path=spec.health_path,
        memory_mib=spec.memory,
        cpu_units=spec.cpu,
        contract_env=dict(spec.env),
        secret_names=list(spec.secret_env_names),
        local_env_names=sorted(local_env_names),
    )
