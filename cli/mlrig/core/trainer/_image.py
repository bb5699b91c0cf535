"""The trainer's container image: docker/trainer with mlrig's own wheel, on mlrig's base image.

The dependencies are pinned to the versions installed here (the ones this mlrig was tested
with), in their own layer; the Pulumi program and the template engine are left out: the
service never provisions a stack or renders a repository.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
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
    from mlrig import settings
    from mlrig.adapters import docker as docker_adapter
    from mlrig.version import __version__

    with tempfile.TemporaryDirectory(prefix="mlrig-trainer-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(context_dir(), ctx, dirs_exist_ok=True)
        (ctx / "requirements.txt").write_text("\n".join(requirements()) + "\n")
        digest = hashlib.sha256(wheel.source_digest().encode())
        for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
            digest.update(path.relative_to(ctx).as_posix().encode() + path.read_bytes())
        # a development version's +local part is no character a tag may hold
        tag = f"{REPOSITORY}:{__version__.replace('+', '-')}-{digest.hexdigest()[:12]}"
        if docker_adapter.image_exists(tag):
            return tag
        progress("building mlrig's wheel")
        wheel.build_wheel(ctx / "wheel")
        progress(f"building {tag}")
        docker_adapter.build_image(
            ctx,
            tag=tag,
            labels={"org.opencontainers.image.version": __version__},
            buildargs={"BASE_IMAGE": base_image or settings.load().base_image},
        )
    return tag
