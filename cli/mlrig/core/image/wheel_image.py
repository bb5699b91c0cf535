"""An image that installs mlrig's own wheel: the trainer service's (core/trainer) and a
repository's trainer image for a remote retrain (core/compute).

Both are built the same way: a private copy of a docker/ context with the files the caller
computed written into it, mlrig's wheel built into its wheel/ folder, on the base image
`resolve_base_image` picks (the one given, which must be on the engine, else mlrig's own).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from mlrig.core.shared import wheel
from mlrig.core.shared.progress import Progress


def context_files(context: Path, files: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    """(path relative to the context, bytes) of every file the build's context holds before
    the wheel goes in, in the order of the copy's sorted paths: what a tag may hash."""
    found = {
        path.relative_to(context).as_posix(): path.read_bytes()
        for path in context.rglob("*")
        if path.is_file()
    }
    found.update(files)
    return sorted(found.items(), key=lambda item: PurePosixPath(item[0]).parts)


def build(
    context: Path,
    files: Mapping[str, bytes],
    *,
    tag: str,
    labels: dict[str, str],
    base_image: str | None = None,
    progress: Progress = lambda _m: None,
) -> None:
    """Build tag from a copy of context with files (relative path -> bytes) written into
    it and mlrig's wheel, on the resolved base image (resolved first: no wheel is built
    for an engine that does not answer or a base image it does not have)."""
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.image.build import resolve_base_image

    base = resolve_base_image(base_image, progress)
    with tempfile.TemporaryDirectory(prefix="mlrig-wheel-image-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(context, ctx, dirs_exist_ok=True)
        for name, data in files.items():
            (ctx / name).write_bytes(data)
        progress("building mlrig's wheel")
        wheel.build_wheel(ctx / "wheel")
        progress(f"building {tag}")
        docker_adapter.build_image(ctx, tag=tag, labels=labels, buildargs={"BASE_IMAGE": base})
