"""What a rehearsal is asked (Request) and what it answers (Report of Checks), with the
constants both sides of it share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STACK_NAME = "rehearse"  # bucket and database named as `mlrig stack up --aws` names a stack's
MEMORY_LIMIT_SHARE = 0.80  # a peak above this share of the task memory fails the rehearsal
HEALTH_TIMEOUT = 300.0
FAULTS = ("db-password", "db-down", "bucket")  # what the failure tests break on purpose
FAULT_WAIT_SECONDS = 8  # how long the entrypoint waits for a database that is down
S3_REGION = "us-east-1"


@dataclass
class Request:
    profile: str = "small"
    server_size: str | None = None  # CPU:MIB instead of the profile's (`stack up --server-size`)
    s3_endpoint: str | None = None
    keep: bool = False
    runs: int = 200
    port: int | None = None
    fault: str | None = None  # one of FAULTS: break that dependency on purpose


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    value: float | None = None  # the measured number, when the check measures one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    profile: str
    image: str = ""
    image_size_mb: float = 0.0
    run_config: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    directory: str = ""  # where PostgreSQL, moto and their logs live (gone unless kept)
    kept: bool = False
    url: str = ""

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "ok": not self.failed,
            "image": self.image,
            "image_size_mb": self.image_size_mb,
            "run_config": self.run_config,
            "checks": [c.as_dict() for c in self.checks],
            "directory": self.directory,
            "kept": self.kept,
            "url": self.url,
        }
