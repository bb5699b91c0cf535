"""The trainer's container image: docker/trainer with mlrig's own wheel, on mlrig's base image.

The dependencies are pinned to the versions installed here (the ones this mlrig was tested
with), in their own layer; the Pulumi program and the template engine are left out: the
service never provisions a stack or renders a repository.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from mlrig import assets
from mlrig.core.shared.progress import Progress
from mlrig.errors import DependencyMissing, ServiceError

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


def source_root() -> Path:
    """mlrig's source checkout (the wheel is built from it)."""
    root = Path(assets.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "cli" / "mlrig").is_dir():
        raise DependencyMissing(
            "building the trainer image needs mlrig's source checkout (this mlrig is "
            "installed from a wheel)",
            hint="run it from a clone of mlrig installed with `pip install -e .`",
        )
    return root


# what the wheel is built from (pyproject.toml's package-dir and readme)
WHEEL_SOURCES = ("pyproject.toml", "README.md", "cli", "infra", "pipeline", "docker")


def build_wheel(out: Path) -> Path:
    """mlrig's wheel, built from a private copy of the checkout: setuptools writes build/ and
    mlrig.egg-info/ into the tree it builds, so two builds of one checkout at once (two
    trainer images, or an install beside one) tore each other's files."""
    from mlrig.adapters import processes
    from mlrig.version import __version__

    root = source_root()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    with tempfile.TemporaryDirectory(prefix="mlrig-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in WHEEL_SOURCES:
            if (root / name).is_dir():
                shutil.copytree(root / name, src / name, ignore=skip, symlinks=True)
            else:
                shutil.copy2(root / name, src / name)
        # the copy has no git history for setuptools-scm to read: the wheel gets this
        # mlrig's own version (the image's tag and label name it)
        done = processes.run_captured(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
            + ["-w", str(out), str(src)],
            env={"SETUPTOOLS_SCM_PRETEND_VERSION_FOR_MLRIG": __version__},
        )
    wheels = sorted(out.glob("mlrig-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ServiceError(f"building mlrig's wheel failed: {last}")
    return wheels[0]


def build(progress: Progress = lambda _m: None, base_image: str | None = None) -> str:
    """Build the image (reused when its context is unchanged); returns its tag."""
    from mlrig import settings
    from mlrig.adapters import docker as docker_adapter
    from mlrig.version import __version__

    with tempfile.TemporaryDirectory(prefix="mlrig-trainer-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(context_dir(), ctx, dirs_exist_ok=True)
        (ctx / "requirements.txt").write_text("\n".join(requirements()) + "\n")
        digest = hashlib.sha256(_source_digest().encode())
        for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
            digest.update(path.relative_to(ctx).as_posix().encode() + path.read_bytes())
        # a development version's +local part is no character a tag may hold
        tag = f"{REPOSITORY}:{__version__.replace('+', '-')}-{digest.hexdigest()[:12]}"
        if docker_adapter.image_exists(tag):
            return tag
        progress("building mlrig's wheel")
        build_wheel(ctx / "wheel")
        progress(f"building {tag}")
        docker_adapter.build_image(
            ctx,
            tag=tag,
            labels={"org.opencontainers.image.version": __version__},
            buildargs={"BASE_IMAGE": base_image or settings.load().base_image},
        )
    return tag


def _source_digest() -> str:
    """A hash of what goes into mlrig's wheel: its modules and its data."""
    root = source_root()
    digest = hashlib.sha256()
    for part in ("cli/mlrig", "infra/mlrig", "pipeline", "docker", "pyproject.toml"):
        base = root / part
        files = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()
