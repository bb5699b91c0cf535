"""A small client of the registry HTTP API v2 with basic auth: manifests (digests, bytes,
config labels), storing a manifest, and monolithic blob uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlrig.errors import CredentialsError, RemoteError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


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
        data: Any = None,  # bytes, or a file to stream
        timeout: float | None = None,
    ) -> Any:
        """One request; path is under the base URL, or a whole URL (an upload's Location)."""
        import requests

        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        try:
            resp = requests.request(
                method,
                url,
                auth=self.auth,
                headers=headers or {},
                timeout=timeout or self.timeout,
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

    def upload_blob(self, repository: str, digest: str, data: bytes | Path) -> None:
        """A blob in one monolithic upload (OCI distribution spec): POST opens the upload,
        PUT <Location>?digest=... sends the whole body and closes it. The registry checks
        the body against the digest. A file's body is streamed from it, never read whole."""
        if isinstance(data, Path):
            with data.open("rb") as fh:
                return self._upload(repository, digest, fh, data.stat().st_size)
        return self._upload(repository, digest, data, len(data))

    def _upload(self, repository: str, digest: str, data: Any, size: int) -> None:
        from urllib.parse import urljoin

        opened = self._get(f"/v2/{repository}/blobs/uploads/", method="POST", data=b"")
        location = opened.headers.get("Location")
        if opened.status_code != 202 or not location:
            raise RemoteError(
                f"registry answered {opened.status_code} for an upload to {repository}: "
                f"{opened.text.strip()[:200]}"
            )
        url = urljoin(f"{self.base_url}/v2/{repository}/blobs/uploads/", str(location))
        url += f"{'&' if '?' in url else '?'}digest={digest}"
        done = self._get(
            url,
            headers={"Content-Type": "application/octet-stream"},
            method="PUT",
            data=data,
            timeout=max(self.timeout, 60 + size / 1_000_000),
        )
        if done.status_code != 201:
            raise RemoteError(
                f"registry answered {done.status_code} for blob {digest[:19]} of {repository}: "
                f"{done.text.strip()[:200]}"
            )
