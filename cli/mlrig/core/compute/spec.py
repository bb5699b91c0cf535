"""The one-off training task's contract: what a compute backend runs. The same spec runs as a
container on the local engine (the local stack's compute backend) and as a Fargate RunTask on
the stack's ECS cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class SecretRef(BaseModel):
    """A secret the backend injects as an environment variable: never in `environment`, the
    task definition's plain values, a label or a log line."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")  # the variable inside the task
    # AWS: a Secrets Manager ARN (optionally ":json-key::"); local: a file under the stack folder
    source: str


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    project: str  # the repository's project name: one remote retrain per project at a time
    image: str  # registry/name@sha256:<64 hex>, never a tag
    command: tuple[str, ...]  # argv, no shell
    environment: dict[str, str] = {}  # non-secret values only
    secrets: tuple[SecretRef, ...] = ()
    cpu: int  # Fargate CPU units (1024 = 1 vCPU), checked against tracking.container.FARGATE_MEMORY
    memory_mib: int
    spot: bool = False
    labels: dict[str, str] = {}  # mlrig.* labels (local) / ECS tags (AWS)


class TaskHandle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: Literal["local", "aws"]
    id: str  # container id (local) or task ARN (AWS)
    project: str


class TaskStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    state: Literal["pending", "running", "stopped"]
    exit_code: int | None = None
    reason: str | None = None  # e.g. "OOM-killed (memory limit 4096 MiB)", "stopped from outside"


class Backend(Protocol):
    def submit(self, spec: TaskSpec) -> TaskHandle: ...
    def lines(self, handle: TaskHandle) -> Iterator[str]: ...  # follows until the task stops
    def status(self, handle: TaskHandle) -> TaskStatus: ...
    def stop(self, handle: TaskHandle, reason: str) -> None: ...
    def active(self, project: str) -> list[str]: ...  # ids of the project's tasks not stopped
    def remove(self, handle: TaskHandle) -> None: ...  # a stopped task's leftovers
