"""Push any image to a registry the contract can describe (a stack's local OCI registry or
ECR, or one being created) with immutable tags.

A tag that already holds this very image is a no-op; one that holds another is a Conflict.
Every push chunk is checked, transient failures are retried with backoff, and the digest
the engine reports is verified against the registry's own answer before success. The engine
pushes the first new tag; further tags of the same image store the manifest just verified
through the registry's API, each read back the same way. An image mlrig assembled itself
(its blobs in `oci.cache`) goes through the registry API instead: `oci.direct`. Naming a
model image on its model version is `image.push`'s work, on top of this.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mlrig.adapters import docker as docker_adapter
from mlrig.contract import Registry, StackOutputs
from mlrig.core.oci import cache as image_cache
from mlrig.core.oci.steps import (
    PushResult,
    Target,
    login,
    push_tag,
    sorted_tags,
    tag_pushed,
    verified,
)
from mlrig.core.shared.progress import Progress
from mlrig.core.shared.serving_model import LABEL_PREFIX
from mlrig.errors import CredentialsError, UsageError

__all__ = ["PushResult", "Target", "push_to", "registry_target", "tags_for", "target_for"]


def target_for(outputs: StackOutputs, endpoint: str | None = None) -> Target:
    return registry_target(outputs.registry, endpoint, owner=f"stack '{outputs.name}'")


def registry_target(reg: Registry, endpoint: str | None = None, *, owner: str) -> Target:
    """Where and as whom to push: an ECR token (region from the host) or the basic-auth
    credentials the registry records; `owner` names whose registry it is in errors."""
    from mlrig.core.shared import secrets

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
    hexsha = re.fullmatch(r"[0-9a-f]{7,64}", commit or "")  # a label is input too
    return [base] + ([f"{base}-{hexsha[0][:7]}"] if hexsha else [])


def push_to(
    image: str,
    registry: Registry,
    *,
    owner: str,
    endpoint: str | None = None,
    progress: Progress = lambda _m: None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
    started: Callable[[], None] = lambda: None,
    stored: Callable[[str, str, dict[str, str]], None] = lambda _ref, _digest, _labels: None,
) -> PushResult:
    """Push to any registry the contract can describe (a stack's, or one being created).
    An image a build loaded as this reference starts through the registry API at once; the
    engine's ID for the reference is read meanwhile and must be the cached one before any
    tag is stored, else today's path runs with the engine's answer. `started` is called
    on this thread once that registry work runs; `stored` only on the registry API's path,
    once the registry acknowledged the manifest (see `oci.direct.push`)."""
    fallback = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    hinted, tried = image_cache.by_ref(image), None
    if hinted is not None:
        from mlrig.core.oci import direct as serving_push_direct

        target = registry_target(registry, endpoint, owner=owner)
        direct = serving_push_direct.push(
            hinted.image_id,
            hinted.labels,
            tags_for(hinted.labels, fallback),
            target,
            hinted,
            progress=progress,
            on_chunk=on_chunk,
            engine_id=lambda: _engine_id(image),
            started=started,
            stored=stored,
        )
        if direct is not None:
            return direct
        tried = hinted.image_id
    info = docker_adapter.image_info(image)
    if info is None:
        raise UsageError(
            f"image {image} does not exist on this engine", hint="build it with `mlrig image build`"
        )
    image_id, labels = info.id, info.labels
    tags = tags_for(labels, fallback)
    if tried is None:
        target = registry_target(registry, endpoint, owner=owner)
    cached = image_cache.lookup(image_id) if image_id != tried else None
    if cached is not None:  # assembled by mlrig: its own blobs straight to the registry
        from mlrig.core.oci import direct as serving_push_direct

        direct = serving_push_direct.push(
            image_id,
            labels,
            tags,
            target,
            cached,
            progress=progress,
            on_chunk=on_chunk,
            stored=stored,
        )
        if direct is not None:
            return direct
    client, target, current = login(target, tags)
    remote = f"{target.host}/{target.repository}"
    unchanged, todo = sorted_tags(tags, current, image_id, remote)
    digest = None
    if todo:
        digest = push_tag(image_id, remote, todo[0], target, progress, on_chunk)
        manifest = verified(client, target.repository, todo[0], digest, remote)
        for tag in todo[1:]:
            tag_pushed(client, target.repository, tag, manifest, digest, image_id, remote, progress)
    if digest is None:  # everything already there: report what the registry holds
        digest = client.manifest_digest(target.repository, tags[0]) or ""
    name = f"{target.name_host or target.host}/{target.repository}"
    return PushResult(f"{name}@{digest}", digest, todo, unchanged, labels)


def _engine_id(image: str) -> str | None:
    info = docker_adapter.image_info(image)
    return info.id if info else None
