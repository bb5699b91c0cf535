"""A real OCI registry on loopback: Debian's `docker-registry` (distribution 2.x) binary
or its container; the client of the registry HTTP API lives in `registry_client`."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from mlrig.adapters.registry_client import MANIFEST_TYPES, RegistryClient
from mlrig.errors import DependencyMissing

__all__ = ["MANIFEST_TYPES", "RegistryClient", "binary", "config_yaml", "fallback_image"]

BINARY_ENV = "MLRIG_REGISTRY_BINARY"


def binary() -> str:
    """The registry program: $MLRIG_REGISTRY_BINARY, else `docker-registry` on PATH."""
    import os

    override = os.environ.get(BINARY_ENV)
    if override:
        path = override if os.access(override, os.X_OK) else None
    else:
        path = shutil.which("docker-registry") or (
            "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
        )
    if not path:
        raise DependencyMissing(
            "the `docker-registry` binary is not installed",
            hint="install it with `apt-get install docker-registry` (or run scripts/setup.sh)",
        )
    return path


IMAGE_ENV = "MLRIG_REGISTRY_IMAGE"
DEFAULT_IMAGE = "registry:2"


def fallback_image() -> str | None:
    """The registry container image, when the binary is missing and the image is present
    or can be pulled (never on offline machines without it)."""
    import os

    from mlrig.adapters import docker as docker_adapter
    from mlrig.errors import ServiceError

    ref = os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    try:
        if docker_adapter.image_exists(ref) or docker_adapter.pull(ref):
            return ref
    except ServiceError:  # no engine either
        return None
    return None


def start_container(image: str, config: Path, storage_root: Path, name: str) -> int:
    """Run the registry image on host networking with the stack's config and storage
    mounted at the same paths; return its main process's PID for supervision."""
    import docker.errors

    from mlrig.adapters import docker as docker_adapter
    from mlrig.errors import ServiceError

    cli = docker_adapter.client()
    with contextlib.suppress(docker.errors.NotFound):  # a leftover of a killed stack
        cli.containers.get(name).remove(force=True)
    try:
        container = cli.containers.run(
            image,
            [str(config)],
            name=name,
            detach=True,
            auto_remove=True,
            network_mode="host",
            volumes={str(storage_root): {"bind": str(storage_root), "mode": "rw"}},
        )
        container.reload()
    except docker.errors.APIError as exc:
        raise ServiceError(
            f"starting the registry container failed: {exc.explanation or exc}"
        ) from exc
    return int(container.attrs["State"]["Pid"])


def htpasswd_line(username: str, password: str) -> str:
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{username}:{hashed}\n"


def config_yaml(*, port: int, storage_dir: Path, htpasswd: Path, http_secret: str) -> str:
    import yaml

    cfg: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": http_secret,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": "mlrig-registry", "path": str(htpasswd)}},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    return yaml.safe_dump(cfg, sort_keys=False)
