"""Where `mlrig init` builds a repo: a sibling staging directory moved into place only when
complete, so a failure leaves the target as it was (and --force never overwrites a file)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlrig.errors import Conflict, UsageError


def check_target(target: Path, force: bool) -> None:
    """Refuse a file, a non-empty directory (unless force) and an existing repository."""
    if target.exists() and not target.is_dir():
        raise Conflict(f"{target} exists and is not a directory", hint="choose another path")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not force:
        raise Conflict(
            f"{target} exists and is not empty",
            hint="choose a new or empty directory, or --force to add the repo "
            "next to existing files (none is overwritten)",
        )
    if (target / ".git").exists() or (target / ".dvc").exists():
        raise Conflict(
            f"{target} is already a git or DVC repository",
            hint="`mlrig init` creates a new repository; choose another path",
        )


def refuse_collisions(staging: Path, target: Path) -> None:
    """Fail if the target already has a file the staged repo would write."""
    if not target.is_dir():
        return
    taken = sorted(
        str(p.relative_to(staging))
        for p in staging.rglob("*")
        if not p.is_dir() and (target / p.relative_to(staging)).exists()
    )
    if taken:
        raise Conflict(
            f"{target} already has files the template writes: {', '.join(taken[:5])}",
            hint="move them away or pick another path",
        )


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh directory next to target (same file system, so the final move is a rename),
    removed if the block fails, together with any parent directory made for it."""
    made: list[Path] = []
    try:
        made = _make_parents(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.mlrig-init-", dir=target.parent))
    except OSError as exc:
        _remove_empty(made)
        raise UsageError(
            f"cannot create {target.name!r} in {target.parent}: {exc.strerror or exc}",
            hint="choose a directory you can write to",
        ) from exc
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        raise


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p that returns what it created, outermost first."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()][::-1]
    made = []
    try:
        for d in missing:
            try:
                d.mkdir()
            except FileExistsError:  # made by someone else meanwhile: not ours to remove
                continue
            made.append(d)
    except OSError:
        _remove_empty(made)
        raise
    return made


def _remove_empty(made: list[Path]) -> None:
    for d in reversed(made):
        with contextlib.suppress(OSError):
            d.rmdir()


def place(staging: Path, target: Path) -> None:
    """Move the finished repo into place; on a failure, take back what was moved."""
    if not target.exists():
        os.rename(staging, target)
        return
    moved: list[Path] = []
    try:
        for entry in sorted(staging.iterdir()):
            dest = target / entry.name
            if dest.exists():  # a directory both sides have (checked: no file collides)
                shutil.copytree(entry, dest, dirs_exist_ok=True)
            else:
                os.rename(entry, dest)
                moved.append(dest)
    except BaseException:
        for dest in moved:
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        raise
    shutil.rmtree(staging, ignore_errors=True)
