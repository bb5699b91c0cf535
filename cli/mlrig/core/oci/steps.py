"""The steps both push paths share (`oci.push` through the engine,
`oci.direct` through the registry API): where and as whom to push, what the tags
hold now (which also proves the credentials, refreshing an ECR token once), conflicts, the
engine push with its retries, and reading a tag back before it counts as pushed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mlrig.adapters import docker as docker_adapter
from mlrig.adapters.registry import RegistryClient
from mlrig.core.shared.progress import Progress
from mlrig.errors import Conflict, CredentialsError, RemoteError

ATTEMPTS = 3
TRANSIENT = re.compile(
    r"connection (refused|reset)|EOF|timeout|timed out|broken pipe|"
    r"\b50[234]\b|toomanyrequests|i/o",
    re.IGNORECASE,
)
AUTH = re.compile(r"unauthorized|authentication required|no basic auth|denied", re.IGNORECASE)
T = TypeVar("T")


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


def current_tags(client: RegistryClient, repository: str, tags: list[str]) -> dict[str, str | None]:
    """The image ID (config digest) each tag holds in the registry now, None when free;
    asked concurrently (each request is a password check on a basic-auth registry)."""
    if len(tags) == 1:
        return {tags[0]: client.config_digest(repository, tags[0])}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(tags)) as pool:
        found = {tag: pool.submit(client.config_digest, repository, tag) for tag in tags}
        return {tag: future.result() for tag, future in found.items()}


def login(target: Target, tags: list[str]) -> tuple[RegistryClient, Target, dict[str, str | None]]:
    """A client of the registry and what its tags hold now (`current_tags`): that first
    authenticated answer also proves the credentials, so no separate ping is spent."""
    client = RegistryClient(target.api_base, target.username, target.password)
    try:
        return client, target, current_tags(client, target.repository, tags)
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
        return client, fresh, current_tags(client, fresh.repository, tags)
    except CredentialsError:
        raise CredentialsError(
            f"registry {target.host} rejected the ECR authorization token (expired or revoked)",
            hint="refresh your AWS credentials and retry",
        ) from None


def sorted_tags(
    tags: list[str], current: dict[str, str | None], image_id: str, remote: str
) -> tuple[list[str], list[str]]:
    """(tags that hold this image already, free tags); a tag holding another is a Conflict."""
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
    return unchanged, todo


def verified(
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


def tag_pushed(
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
    layer), then read back and checked like the first (`verified`); the engine names the
    image so too."""
    progress(f"tagging {remote}:{tag} (the manifest just pushed)")
    client.put_manifest(repository, tag, manifest[0], manifest[1])
    verified(client, repository, tag, digest, remote)
    docker_adapter.tag_image(image_id, remote, tag)


def retried(
    call: Callable[[], T],
    progress: Progress,
    *,
    what: str = "",
    also: tuple[str, ...] = (),
    stop: threading.Event | None = None,
) -> T:
    """call, again after a backoff (MLRIG_PUSH_BACKOFF s, doubling) when it failed in a way
    that may pass: a reset or refused connection, a 5xx, throttling, or a message holding
    one of `also`; never a credentials error, and not once `stop` is set (the push is being
    given up)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except CredentialsError:
            raise
        except RemoteError as exc:
            passing = TRANSIENT.search(exc.message) or any(w in exc.message for w in also)
            given_up = stop is not None and stop.is_set()
            if attempt == ATTEMPTS or not passing or AUTH.search(exc.message) or given_up:
                raise
            again = f"retrying {what} in" if what else "retrying in"
            progress(f"transient failure, {again} {2 ** (attempt - 1)} s: {exc.message}")
            time.sleep(float(os.environ.get("MLRIG_PUSH_BACKOFF", "1")) * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def push_tag(
    image_id: str,
    remote: str,
    tag: str,
    target: Target,
    progress: Progress,
    on_chunk: Callable[[dict[str, Any]], None] | None,
) -> str:
    def once() -> str | None:
        progress(f"pushing {remote}:{tag}")
        try:
            return docker_adapter.push_image(
                remote, tag, username=target.username, password=target.password, on_chunk=on_chunk
            )
        except RemoteError as exc:
            if AUTH.search(exc.message):
                raise CredentialsError(
                    f"registry {target.host} refused the push ({exc.message.split(': ', 1)[-1]})",
                    hint="check the registry credentials",
                ) from exc
            raise

    docker_adapter.tag_image(image_id, remote, tag)
    try:
        digest = retried(once, progress)
    except BaseException:
        docker_adapter.remove_tag(f"{remote}:{tag}")  # no half-tagged images left
        raise
    if not digest:
        raise RemoteError(f"pushing {remote}:{tag} ended without a digest", hint="push again")
    return digest
