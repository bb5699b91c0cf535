"""A repository's `monitor:` and `deploy:` blocks of params.yaml: what the trainer service's
schedule watches, when it acts, and whether a new champion goes out as a canary.

params.yaml is a file anyone with the repository may edit: `load` is the one door, and every
value passes this module's pydantic models before it names an endpoint, a URL or a number the
loop acts on. A missing block is the default (monitor off, no automatic deploy); a bad one is
one ConfigError naming the file and the field.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlrig.core.deploy.state import NAME_PATTERN
from mlrig.errors import ConfigError

_DURATION = re.compile(r"^(?P<n>[1-9][0-9]{0,5})(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_ENV = re.compile(r"^env:(?P<name>[A-Z_][A-Z0-9_]{0,127})$")
MIN_INTERVAL = timedelta(seconds=10)


def duration(text: str) -> timedelta:
    """30s, 15m, 1h, 7d as a timedelta (ValueError otherwise)."""
    match = _DURATION.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"{str(text)[:40]!r} is no duration: use e.g. 30s, 15m, 1h or 1d")
    return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftThresholds(_Strict):
    """The monitor's decision lines (mlrig.core.monitor.stats.Thresholds' fields)."""

    wasserstein: float = Field(default=0.1, gt=0, le=10)
    jensen_shannon: float = Field(default=0.1, gt=0, le=1)
    psi: float = Field(default=0.2, gt=0, le=10)
    alpha: float = Field(default=0.05, gt=0, lt=1)


class MonitorPolicy(_Strict):
    # none: no scheduled checks at all; record: checks (monitor runs, audit) and no action
    action: Literal["none", "record", "alert", "retrain"] = "none"
    interval: str = "1h"  # how often the trainer service checks
    window: str = "24h"  # the captured traffic each check compares
    metric: Literal["wasserstein", "psi"] = "wasserstein"
    thresholds: DriftThresholds = DriftThresholds()
    min_samples: int = Field(default=200, ge=10, le=10_000_000)
    consecutive: int = Field(default=3, ge=1, le=100)  # drifted windows in a row before acting
    webhook: str | None = None  # https://... or env:NAME (the URL may hold a token)

    @field_validator("interval", "window")
    @classmethod
    def _duration(cls, value: str) -> str:
        if duration(value) < MIN_INTERVAL:
            raise ValueError(f"{value} is shorter than {MIN_INTERVAL.seconds}s")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is None or _ENV.fullmatch(value):
            return value
        # never echo the value: a webhook URL carries its token in the path
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?", value):
            raise ValueError("is neither an http(s) URL nor env:NAME")
        return value

    @property
    def every(self) -> timedelta:
        return duration(self.interval)

    @property
    def since(self) -> timedelta:
        return duration(self.window)


class DeployPolicy(_Strict):
    endpoint: str | None = Field(default=None, pattern=NAME_PATTERN)  # default: the project's name
    canary: int = Field(default=0, ge=0, le=99)  # percent for a newly promoted champion; 0 = off


class Policy(_Strict):
    monitor: MonitorPolicy = MonitorPolicy()
    deploy: DeployPolicy = DeployPolicy()


def parse(data: object, where: str = "params.yaml") -> Policy:
    """The two blocks of a parsed params.yaml (other blocks belong to the pipeline)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} is no mapping", hint="restore it from git history")
    blocks = {k: data[k] for k in ("monitor", "deploy") if data.get(k) is not None}
    try:
        return Policy.model_validate(blocks)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        why = first["msg"].removeprefix("Value error, ")
        if field.endswith("webhook"):
            why = "is neither an http(s) URL nor env:NAME"
        raise ConfigError(
            f"{where}: {field} {why}",
            hint="see the monitor page of the docs for the monitor: and deploy: blocks",
        ) from None


def load(repo: Path) -> Policy:
    """The repository's policy from its params.yaml."""
    import yaml

    file = repo / "params.yaml"
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{file} cannot be read ({problem})") from None
    return parse(data if data is not None else {}, str(file))
