"""A real OCI registry on loopback: Debian's `docker-registry` (distribution 2.x) binary,
plus a small client for the registry HTTP API (manifest and config digests, health)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from mlrig.errors import CredentialsError, DependencyMissing, RemoteError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


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


class RegistryClient:
    """Registry HTTP API v2 with basic auth (what the local registry and tests need)."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = (username, password or "") if username is not None else None
        self.timeout = timeout

    def _get(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        data: bytes | None = None,
    ) -> Any:
        import requests

        try:
            resp = requests.request(
                method,
                f"{self.base_url}{path}",
                auth=self.auth,
                headers=headers or {},
                timeout=self.timeout,
                data=data,
            )
        except requests.RequestException as exc:
            raise RemoteError(
                f"registry at {self.base_url} is unreachable ({type(exc).__name__})",
                hint="check that the stack is up: `mlrig stack status`",
            ) from exc
        if resp.status_code == 401:
            raise CredentialsError(
                f"registry at {self.base_url} rejected the credentials",
                hint="check `mlrig stack env` credentials",
            )
        return resp

    def ping(self) -> bool:
        return bool(self._get("/v2/").status_code == 200)

    def _manifest(self, repository: str, reference: str, what: str, method: str = "GET") -> Any:
        """The registry's answer for a manifest; None when it has no such tag or digest."""
        resp = self._get(
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": MANIFEST_TYPES},
            method=method,
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RemoteError(f"registry answered {resp.status_code} for {what}")
        return resp

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        resp = self._manifest(repository, reference, f"{repository}:{reference}", method="HEAD")
        return None if resp is None else str(resp.headers.get("Docker-Content-Digest"))

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest the registry names) of a tag's or digest's manifest;
        None when it has none."""
        resp = self._manifest(repository, reference, f"{repository}:{reference}")
        if resp is None:
            return None
        headers = resp.headers
        return (
            resp.content,
            str(headers.get("Content-Type", "")),
            str(headers.get("Docker-Content-Digest", "")),
        )

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Store a manifest under tag (its blobs must be in the repository already); the
        digest the registry answers."""
        resp = self._get(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Content-Type": media_type},
            method="PUT",
            data=body,
        )
        if resp.status_code != 201:
            raise RemoteError(
                f"registry answered {resp.status_code} for tagging {repository}:{tag}: "
                f"{resp.text.strip()[:200]}"
            )
        return str(resp.headers.get("Docker-Content-Digest", ""))

    def config_digest(self, repository: str, reference: str) -> str | None:
        """The image ID (config digest) a tag points to, or None when the tag is free."""
        resp = self._manifest(repository, reference, f"{repository}:{reference}")
        if resp is None:
            return None
        config = (resp.json().get("config") or {}).get("digest")
        return str(config) if config else "unknown"

    def config_labels(self, repository: str, reference: str) -> dict[str, str] | None:
        """The labels in the image config a tag or digest points to; None when unknown."""
        resp = self._manifest(repository, reference, f"{repository}@{reference}")
        if resp is None:
            return None
        manifest = resp.json()
        if manifest.get("manifests"):  # an index: the first platform's image
            return self.config_labels(repository, str(manifest["manifests"][0]["digest"]))
        config = (manifest.get("config") or {}).get("digest")
        if not config:
            return None
        blob = self._get(f"/v2/{repository}/blobs/{config}")
        if blob.status_code != 200:
            return None
        return dict((blob.json().get("config") or {}).get("Labels") or {})
