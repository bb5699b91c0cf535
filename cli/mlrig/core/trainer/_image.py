"""The trainer's container image: docker/trainer with mlrig's own wheel, on mlrig's base image.

The dependencies are pinned to the versions installed here (the ones this mlrig was tested
with), in their own layer; the Pulumi program and the template engine are left out: the
service never provisions a stack or renders a repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlrig import assets
from mlrig.core.shared import wheel
from mlrig.core.shared.progress import Progress
from mlrig.errors import DependencyMissing

REPOSITORY = "mlrig/trainer"
# mlrig's requirements the trainer never imports (stack provisioning, `mlrig init`)
OMITTED = frozenset({"pulumi", "pulumi-aws", "copier"})


def context_dir() -> Path:
    return assets.docker_dir() / "trainer"


def requirements(omit: frozenset[str] = OMITTED) -> list[str]:
    """`name==version` for every installed distribution mlrig's runtime requirements pull in
    (extras followed, markers evaluated here), sorted; `omit` and what only they need are left
    out."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in distribution("mlrig").requires or []]
    todo = [r for r in todo if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in omit or (name in pins and set(req.extras) <= extras_seen[name]):
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError as exc:
            raise DependencyMissing(
                f"{name} (required by mlrig) is not installed",
                hint="reinstall mlrig with its dependencies",
            ) from exc
        pins[name] = dist.version
        extras = extras_seen.setdefault(name, set()) | set(req.extras)
        extras_seen[name] = extras
        for raw in dist.requires or []:
            sub = Requirement(raw)
            wanted = sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in ("", *sorted(extras))
            )
            if wanted:
                todo.append(sub)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def build(progress: Progress = lambda _m: None, base_image: str | None = None) -> str:
    """Build the image (reused when its context is unchanged); returns its tag."""
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.image import wheel_image
    from mlrig.version import __version__

    files = {"requirements.txt": ("\n".join(requirements()) + "\n").encode()}
    digest = hashlib.sha256(wheel.source_digest().encode())
    for name, data in wheel_image.context_files(context_dir(), files):
        digest.update(name.encode() + data)
    # a development version's +local part is no character a tag may hold
    tag = f"{REPOSITORY}:{__version__.replace('+', '-')}-{digest.hexdigest()[:12]}"
    if docker_adapter.image_exists(tag):
        return tag
    wheel_image.build(
        context_dir(),
        files,
        tag=tag,
        labels={"org.opencontainers.image.version": __version__},
        base_image=base_image,
        progress=progress,
    )
    return tag
