"""Push a serving image to a stack's registry (local OCI or ECR) with immutable tags.

A tag that already holds this very image is a no-op; one that holds another is a Conflict.
Every push chunk is checked, transient failures are retried with backoff, and the digest
the engine reports is verified against the registry's own answer before success. The engine
pushes the first new tag; further tags of the same image store the manifest just verified
through the registry's API, each read back the same way.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters.registry import RegistryClient
from mlrig.contract import Registry, StackOutputs
from mlrig.core.progress import Progress
from mlrig.core.serving_model import LABEL_PREFIX
from mlrig.errors import Conflict, CredentialsError, RemoteError, UsageError

ATTEMPTS = 3
_TRANSIENT = re.compile(
    r"connection (refused|reset)|EOF|timeout|timed out|broken pipe|"
    r"\b50[234]\b|toomanyrequests|i/o",
    re.IGNORECASE,
)
_AUTH = re.compile(r"unauthorized|authentication required|no basic auth|denied", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    host: str  # where the engine pushes (an ECR host or its endpoint override)
    repository: str
    username: str
    password: str
    kind: str
    refresh: Callable[[], tuple[str, str]] | None = None  # ECR: fetch a new token
    name_host: str = ""  # the registry's own name (ECR host) when pushing via an override

    @property
    def api_base(self) -> str:
        loopback = self.host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
        return f"{'http' if loopback else 'https'}://{self.host}"


@dataclass
class PushResult:
    reference: str  # host/repository@sha256:...
    digest: str
    tags: list[str]
    unchanged: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # the image's, for provenance tags


def target_for(outputs: StackOutputs, endpoint: str | None = None) -> Target:
    return registry_target(outputs.registry, endpoint, owner=f"stack '{outputs.name}'")


def registry_target(reg: Registry, endpoint: str | None = None, *, owner: str) -> Target:
    """Where and as whom to push: an ECR token (region from the host) or the basic-auth
    credentials the registry records; `owner` names whose registry it is in errors."""
    from mlrig.core import secrets

    if reg.kind == "ecr":
        from mlrig.adapters import ecr

        def fetch(force: bool = False) -> tuple[str, str]:
            if force:
                ecr.forget(reg.host)
            auth = ecr.authorization(reg.host, endpoint_url=reg.endpoint_url)
            return auth.username, auth.password

        user, password = fetch()
        return Target(
            ecr.data_plane(reg.host, endpoint),
            reg.repository,
            user,
            password,
            "ecr",
            refresh=lambda: fetch(force=True),
            name_host=reg.host,
        )
    if not reg.auth:
        raise CredentialsError(
            f"{owner} records no registry credentials",
            hint="run `mlrig stack up` again for this stack",
        )
    host = endpoint.removeprefix("http://").removeprefix("https://") if endpoint else reg.host
    return Target(
        host, reg.repository, reg.auth.username, secrets.resolve(reg.auth.password), "oci"
    )


def tags_for(labels: dict[str, str], fallback: str) -> list[str]:
    """<model>-v<version> and <model>-v<version>-<git short sha>; else the image's own tag."""
    name = labels.get(f"{LABEL_PREFIX}.model.name")
    version = labels.get(f"{LABEL_PREFIX}.model.version")
    commit = labels.get(f"{LABEL_PREFIX}.git.commit")
    if not (name and version):
        return [fallback]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{name}-v{version}").strip(".-")[:100]
    return [base] + ([f"{base}-{commit[:7]}"] if commit else [])


def _current(client: RegistryClient, repository: str, tags: list[str]) -> dict[str, str | None]:
    """The image ID (config digest) each tag holds in the registry now, None when free;
    asked concurrently (each request is a password check on a basic-auth registry)."""
    if len(tags) == 1:
        return {tags[0]: client.config_digest(repository, tags[0])}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(tags)) as pool:
        found = {tag: pool.submit(client.config_digest, repository, tag) for tag in tags}
        return {tag: future.result() for tag, future in found.items()}


def _login(target: Target, tags: list[str]) -> tuple[RegistryClient, Target, dict[str, str | None]]:
    """A client of the registry and what its tags hold now (`_current`): that first
    authenticated answer also proves the credentials, so no separate ping is spent."""
    client = RegistryClient(target.api_base, target.username, target.password)
    try:
        return client, target, _current(client, target.repository, tags)
    except CredentialsError:
        if not target.refresh:
            raise CredentialsError(
                f"registry {target.host} rejected the credentials for '{target.username}'",
                hint="check the stack's registry password (`mlrig stack env`)",
            ) from None
    user, password = target.refresh()  # a cached ECR token the registry no longer takes
    fresh = Target(
        target.host, target.repository, user, password, target.kind, name_host=target.name_host
    )
    client = RegistryClient(fresh.api_base, user, password)
    try:
        return client, fresh, _current(client, fresh.repository, tags)
    except CredentialsError:
        raise CredentialsError(
            f"registry {target.host} rejected the ECR authorization token (expired or revoked)",
            hint="refresh your AWS credentials and retry",
        ) from None


def push(
    image: str,
    outputs: StackOutputs,
    *,
    endpoint: str | None = None,
    progress: Progress = lambda _m: None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> PushResult:
    """Push to a stack's registry, then name the image on the model version it serves."""
    from mlrig.core import image_push_tags

    result = push_to(
        image,
        outputs.registry,
        owner=f"stack '{outputs.name}'",
        endpoint=endpoint,
        progress=progress,
        on_chunk=on_chunk,
    )
    image_push_tags.record(outputs, result.labels, result.reference, result.digest, progress)
    return result


def push_to(
    image: str,
    registry: Registry,
    *,
    owner: str,
    endpoint: str | None = None,
    progress: Progress = lambda _m: None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> PushResult:
    """Push to any registry the contract can describe (a stack's, or one being created)."""
    info = docker_adapter.image_info(image)
    if info is None:
        raise UsageError(
            f"image {image} does not exist on this engine", hint="build it with `mlrig image build`"
        )
    image_id, labels = info.id, info.labels
    fallback = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    tags = tags_for(labels, fallback)
    client, target, current = _login(registry_target(registry, endpoint, owner=owner), tags)
    remote = f"{target.host}/{target.repository}"

    unchanged, todo = [], []
    for tag in tags:
        existing = current[tag]
        if existing is None:
            todo.append(tag)
        elif existing == image_id:
            unchanged.append(tag)
        else:
            raise Conflict(
                f"{remote}:{tag} already exists with a different image "
                f"(the repository's tags are immutable)",
                hint="register a new model version, or push from another commit",
            )
    digest = None
    if todo:
        digest = _push_tag(image_id, remote, todo[0], target, progress, on_chunk)
        manifest = _verified(client, target.repository, todo[0], digest, remote)
        for tag in todo[1:]:
            _tag_pushed(
                client, target.repository, tag, manifest, digest, image_id, remote, progress
            )
    if digest is None:  # everything already there: report what the registry holds
        digest = client.manifest_digest(target.repository, tags[0]) or ""
    name = f"{target.name_host or target.host}/{target.repository}"
    return PushResult(f"{name}@{digest}", digest, todo, unchanged, labels)


def _verified(
    client: RegistryClient, repository: str, tag: str, digest: str, remote: str
) -> tuple[bytes, str]:
    """The manifest the registry holds under tag, read back: it must be the one the engine
    pushed (the digest the registry names and the hash of the bytes it sends both equal
    the engine's digest). Its bytes and media type."""
    import hashlib

    got = client.manifest(repository, tag)
    named = got[2] if got else None
    hashed = f"sha256:{hashlib.sha256(got[0]).hexdigest()}" if got else None
    if got is None or named != digest or hashed != digest:
        raise RemoteError(
            f"{remote}:{tag} was pushed but the registry reports digest {named or hashed}, "
            f"not {digest}",
            hint="push again",
        )
    return got[0], got[1]


def _tag_pushed(
    client: RegistryClient,
    repository: str,
    tag: str,
    manifest: tuple[bytes, str],
    digest: str,
    image_id: str,
    remote: str,
    progress: Progress,
) -> None:
    """One more tag on a manifest just pushed and verified: the same bytes stored under it
    through the registry's API (one request, where a second engine push re-checks every
    layer), then read back and checked like the first (`_verified`); the engine names the
    image so too."""
    progress(f"tagging {remote}:{tag} (the manifest just pushed)")
    client.put_manifest(repository, tag, manifest[0], manifest[1])
    _verified(client, repository, tag, digest, remote)
    docker_adapter.tag_image(image_id, remote, tag)


def _push_tag(
    image_id: str,
    remote: str,
    tag: str,
    target: Target,
    progress: Progress,
    on_chunk: Callable[[dict[str, Any]], None] | None,
) -> str:
    docker_adapter.tag_image(image_id, remote, tag)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                progress(f"pushing {remote}:{tag}")
                digest = docker_adapter.push_image(
                    remote,
                    tag,
                    username=target.username,
                    password=target.password,
                    on_chunk=on_chunk,
                )
                break
            except RemoteError as exc:
                if _AUTH.search(exc.message):
                    raise CredentialsError(
                        f"registry {target.host} refused the push "
                        f"({exc.message.split(': ', 1)[-1]})",
                        hint="check the registry credentials",
                    ) from exc
                if attempt == ATTEMPTS or not _TRANSIENT.search(exc.message):
                    raise
                progress(f"transient failure, retrying in {2 ** (attempt - 1)} s: {exc.message}")
                time.sleep(float(os.environ.get("MLRIG_PUSH_BACKOFF", "1")) * 2 ** (attempt - 1))
    except BaseException:
        docker_adapter.remove_tag(f"{remote}:{tag}")  # no half-tagged images left
        raise
    if not digest:
        raise RemoteError(f"pushing {remote}:{tag} ended without a digest", hint="push again")
    return digest
