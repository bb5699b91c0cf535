"""The one Stack surface: the same up, down, status, outputs and env for a local or AWS stack.

`mlrig.core.stack.stacks.open`/`create` pick the back-end; commands only call these methods and
render what they return, so no command ever asks which kind a stack is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from mlrig import contract
from mlrig.contract import StackOutputs
from mlrig.core.shared.progress import Progress, no_progress


@dataclass(frozen=True)
class UpOptions:
    """Everything `stack up` may be told; each back-end reads its own part."""

    mlflow_port: int | None = None  # local, first up only
    registry_port: int | None = None  # local, first up only
    region: str | None = None  # aws (default: AWS_REGION)
    profile: str = "small"  # aws size profile
    github_repo: str | None = None  # aws: owner/repo whose CI may push
    domain: str | None = None  # aws: custom domain of the tracking server
    server_size: str | None = None  # aws: the tracking server's task, CPU:MIB
    backend_url: str | None = None  # aws: Pulumi backend


@dataclass(frozen=True)
class Confirmation:
    """A question to ask before acting, and what to say when the answer is no."""

    question: str
    refused: str


@dataclass(frozen=True)
class ServiceRow:
    """One line of `stack status`: a service (or resource) and whether it is as it should be."""

    name: str
    state: str
    address: str
    ok: bool
    pid: int | None = None
    log: Path | None = None
    detail: str = ""  # why it is not ok, when it is not


@dataclass(frozen=True)
class UpReport:
    outputs: StackOutputs
    headline: str  # "stack 'x' is up"
    next_step: str  # what to run next, one line
    services: list[ServiceRow] = field(default_factory=list)  # as `up` left them


@dataclass(frozen=True)
class DownReport:
    summary: str
    remaining: list[str] = field(default_factory=list)  # what outlives the stack


class Stack(ABC):
    """A named stack of one kind. Construction validates the name and touches nothing."""

    kind: str

    def __init__(self, name: str) -> None:
        self.name = contract.validate_stack_name(name)

    def outputs(self) -> StackOutputs:
        """The stack's StackOutputs document (no secrets in it)."""
        return contract.load(self.name)

    def env(self) -> dict[str, str]:
        """Client environment for MLflow, DVC, docker and AWS, secrets resolved."""
        from mlrig.core.stack.env import client_env

        return client_env(self.outputs())

    @abstractmethod
    def confirm_up(self, options: UpOptions) -> Confirmation | None:
        """What to ask before `up` (after checking the options), or None when nothing."""

    @abstractmethod
    def up(self, options: UpOptions, progress: Progress = no_progress) -> UpReport:
        """Create the stack or bring it back; a running stack is left as it is."""

    @abstractmethod
    def confirm_down(self, purge: bool) -> Confirmation | None:
        """What to ask before `down`, or None when nothing is at stake."""

    @abstractmethod
    def down(self, *, purge: bool = False, progress: Progress = no_progress) -> DownReport:
        """Stop or destroy the stack; its data is kept unless purge (already confirmed)."""

    @abstractmethod
    def status(self) -> list[ServiceRow]:
        """Each part of the stack and whether it is as it should be."""
