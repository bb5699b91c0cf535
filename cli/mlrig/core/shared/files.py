"""The local stack's files on disk: private modes (0700/0600), and disk errors as one line.

A stack's folder holds MLflow's store and password hashes, registry blobs and DVC objects,
so nothing in it may be readable by other local users.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from mlrig import paths
from mlrig.errors import ConfigError

PRIVATE_UMASK = 0o077  # for mlrig itself while it writes, and for every service it starts
LOOSE_BITS = 0o077


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700; tighten it when mlrig made it earlier."""
    old = os.umask(PRIVATE_UMASK)  # mkdir's mode covers only the last part, umask all
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    if path.stat().st_mode & LOOSE_BITS:
        os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def loose_modes(
    root: Path, *, guarded: tuple[str, ...] = (), limit: int = 5
) -> tuple[int, list[Path]]:
    """How many paths under root (root included) other users may use, and the first few.

    Below a `guarded` folder (a name relative to root) that is itself private, looser
    modes are not counted: clients write there with their own umask (DVC even makes its
    objects read-only 0444 on purpose) and the private folder is what keeps others out.
    """
    count, examples = 0, list[Path]()
    if not root.exists():
        return 0, []
    fences = {root / name for name in guarded}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if here in fences and not here.stat().st_mode & LOOSE_BITS:
            dirs.clear()
            continue
        for path in (here, *(here / f for f in sorted(files))):
            try:
                mode = path.lstat().st_mode
            except OSError:  # vanished while we looked
                continue
            if path.is_symlink() or not mode & LOOSE_BITS:
                continue
            count += 1
            if len(examples) < limit:
                examples.append(path)
    return count, examples


def storage_error(exc: OSError, path: Path) -> ConfigError:
    """An OS error while writing mlrig's own files, as the one line that says what to do."""
    where = paths.home()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConfigError(
            f"no space left on the device holding {path}",
            hint=f"free space there (or set MLRIG_HOME away from {where}) and run it again",
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ConfigError(
            f"cannot write {path} ({exc.strerror or exc})",
            hint=f"make {where} writable, or set MLRIG_HOME to a writable directory",
        )
    return ConfigError(
        f"cannot write {path} ({exc.strerror or exc})",
        hint=f"check the disk and permissions under {where}, then run it again",
    )


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def is_storage(exc: BaseException) -> bool:
    """An OS error about the disk itself (full, read-only, not ours), not a network one."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS
