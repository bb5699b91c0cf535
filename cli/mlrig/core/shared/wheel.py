"""mlrig's own wheel, built from its source checkout, for the images that install it (the
trainer service's, a repository's trainer image) and a hash of what goes into it."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from mlrig import assets
from mlrig.errors import DependencyMissing, ServiceError


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


def source_digest() -> str:
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
