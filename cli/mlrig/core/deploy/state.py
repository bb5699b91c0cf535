"""What the local stack's endpoints are, on disk under the stack's folder: `endpoints/
proxy.json` (nginx's port, chosen once and kept) and `endpoints/NAME/endpoint.json` (its
backends, traffic split, key hashes), written atomically and validated when read; a lock
file per endpoint so two changes of one endpoint refuse instead of racing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from mlrig import contract
from mlrig.core.deploy.traffic import CanaryLimits
from mlrig.core.shared import capture
from mlrig.core.shared.files import private_dir
from mlrig.errors import ConfigError, Conflict, UsageError

NAME_PATTERN = capture.ENDPOINT_PATTERN


class Backend(BaseModel):
    """One model container: a version's image by digest on a loopback port."""

    model: str
    version: str
    digest: str
    image: str  # repository@digest
    container: str
    port: int
    weight: int  # share of traffic in percent
    since: datetime
    run_id: str | None = None  # the version's run (what its captured records name)
    capture: int = 0  # percent of its predictions the container captures


class Key(BaseModel):
    id: str
    hash: str  # {SSHA}: never the secret
    created_at: datetime


class Endpoint(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    public: bool = False
    backends: list[Backend]  # the stable one first; a canary second
    previous: Backend | None = None  # what `rollback` re-points to (kept up, unrouted)
    keys: list[Key] = []
    created_at: datetime
    canary_limits: CanaryLimits | None = None  # the canary's, as `deploy --canary` set them
    capture: int = Field(default=0, ge=0, le=100)  # percent new containers capture

    @property
    def canary(self) -> Backend | None:
        return self.backends[1] if len(self.backends) > 1 else None


class Proxy(BaseModel):
    port: int


def check_canary(canary: int | None) -> None:
    """A --canary share is 1-99 %, checked before anything is resolved, built or started."""
    if canary is not None and not 1 <= canary <= 99:
        raise UsageError(f"--canary {canary} is not a share", hint="pass 1-99 (percent)")


def check_name(name: str) -> str:
    import re

    if not re.fullmatch(NAME_PATTERN, name):  # match would let "name\n" through
        raise UsageError(
            f"endpoint name {name!r} is not valid",
            hint="use 1-40 lowercase letters, digits and dashes, starting with a letter or digit",
        )
    return name


def default_name(model: str) -> str:
    """The endpoint a model gets when none is named: a generated repo's model `churn_v2` is
    served at `churn-v2` (endpoint names have no underscore); anything else is checked as is."""
    return model.lower().replace("_", "-")


class Store:
    def __init__(self, root: Path) -> None:
        self.folder = root / "endpoints"

    def path(self, name: str) -> Path:
        return self.folder / name / "endpoint.json"

    def htpasswd(self, name: str) -> Path:
        return self.folder / name / "htpasswd"

    @property
    def conf(self) -> Path:
        return self.folder / "nginx.conf"

    def read(self, name: str) -> Endpoint | None:
        path = self.path(check_name(name))
        try:
            return Endpoint.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, ValidationError) as exc:
            raise ConfigError(
                f"endpoint state {path} is unreadable ({type(exc).__name__})",
                hint=f"move it away and deploy again (`mlrig deploy --endpoint {name}`)",
            ) from None

    def get(self, name: str) -> Endpoint:
        ep = self.read(name)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise UsageError(
                f"no endpoint {name!r} on this stack (endpoints: {known})",
                hint="see them with `mlrig deploy list`",
            )
        return ep

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.parent.name for p in self.folder.glob("*/endpoint.json"))

    def all(self) -> list[Endpoint]:
        return [ep for ep in (self.read(n) for n in self.names()) if ep is not None]

    def write(self, ep: Endpoint) -> None:
        private_dir(self.folder / ep.name)
        contract.atomic_write(self.path(ep.name), ep.model_dump_json(indent=2) + "\n", 0o600)

    def remove(self, name: str) -> None:
        for path in (self.path(name), self.htpasswd(name)):
            path.unlink(missing_ok=True)

    def forget(self, name: str) -> None:
        """A deleted endpoint's folder, once its lock is released (a state file written
        meanwhile by a deploy of the same name keeps it)."""
        folder = self.folder / check_name(name)
        if not self.path(name).exists():
            (folder / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()

    def proxy(self) -> Proxy | None:
        try:
            return Proxy.model_validate_json((self.folder / "proxy.json").read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, ValidationError):
            return None

    def write_proxy(self, proxy: Proxy) -> None:
        private_dir(self.folder)
        contract.atomic_write(self.folder / "proxy.json", proxy.model_dump_json() + "\n", 0o600)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """This endpoint's lock, or one line when another command holds it."""
        import filelock

        private_dir(self.folder / name)
        lock = filelock.FileLock(self.folder / name / "lock", timeout=0, mode=0o600)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise Conflict(
                f"endpoint {name!r} is being changed by another mlrig command",
                hint="wait for it to finish, then retry",
            ) from None
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def proxy_lock(self) -> Iterator[None]:
        """Held around writing nginx.conf and reloading (every endpoint shares one file)."""
        import filelock

        private_dir(self.folder)
        with filelock.FileLock(self.folder / "proxy.lock", timeout=60, mode=0o600):
            yield
