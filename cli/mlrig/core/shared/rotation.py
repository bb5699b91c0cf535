"""A log another process writes, rotated by size the way logrotate does it for a writer that
reopens on a signal: NAME becomes NAME.1 (NAME.1 becomes NAME.2 ..., the file beyond `keep`
is dropped) and the writer, told to reopen, creates a new NAME. Readers open the chain and
follow a file by its inode and its first bytes (`Mark`: file systems reuse a dropped file's
inode at once), so what the writer still appended to NAME.1 before it reopened is read too,
in order, and a reader polling faster than `keep` rotations misses nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SCAN = 16  # rotated files a reader looks for (more than any `keep`)
HEAD = 64  # bytes that tell a file from a later one given the same inode (a line's stamp)


@dataclass(frozen=True)
class Mark:
    """Where a reader stopped: the file (its inode and first bytes) and the offset after its
    last whole line. Mark() is "nothing read yet": the next read starts at the oldest kept
    file."""

    inode: int = 0
    offset: int = 0
    head: bytes = b""


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def rotate(path: Path, keep: int) -> bool:
    """Shift PATH -> PATH.1 -> ... -> PATH.keep, dropping the old PATH.keep and anything kept
    beyond it; False (nothing changed) when PATH does not exist. The writer must be told to
    reopen PATH afterwards: until then it appends to PATH.1."""
    if keep < 1:
        raise ValueError("keep at least one rotated file")
    if not path.exists():
        return False
    for index in range(SCAN, keep, -1):  # a smaller `keep` than before: the surplus goes
        rotated(path, index).unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(rotated(path, index), rotated(path, index + 1))
    try:
        os.replace(path, rotated(path, 1))
    except FileNotFoundError:  # removed meanwhile (its endpoint deleted)
        return False
    return True


def files(path: Path) -> list[Path]:
    """PATH's chain as it stands, oldest first."""
    found = [rotated(path, i) for i in range(SCAN, 0, -1) if rotated(path, i).exists()]
    return [*found, path] if path.exists() else found


def remove(path: Path) -> None:
    """PATH and every rotated file of it."""
    for each in files(path):
        each.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Open:
    inode: int
    size: int
    file: BinaryIO

    def head(self) -> bytes:
        self.file.seek(0)
        return self.file.read(min(HEAD, self.size))

    def holds(self, mark: Mark) -> bool:
        """Whether `mark` was taken on this file (not on a dropped one with its inode)."""
        if self.inode != mark.inode or mark.offset > self.size:
            return False
        return len(mark.head) == min(HEAD, mark.offset, self.size) and (
            self.head()[: len(mark.head)] == mark.head
        )


def _open_chain(path: Path, stack: contextlib.ExitStack) -> list[_Open]:
    """Every file of the chain, opened newest first and returned oldest first. A rotation
    while this runs shifts names, never contents: a file met twice (by inode) counts once,
    at its newer place; a new PATH created meanwhile is left to the next read."""
    found: list[_Open] = []
    seen: set[int] = set()
    for candidate in [path, *(rotated(path, i) for i in range(1, SCAN + 1))]:
        try:
            f = stack.enter_context(candidate.open("rb"))
        except FileNotFoundError:
            continue
        st = os.fstat(f.fileno())
        if st.st_ino in seen:
            continue
        seen.add(st.st_ino)
        found.append(_Open(st.st_ino, st.st_size, f))
    found.reverse()
    return found


def end(path: Path) -> Mark:
    """The mark after everything written so far (a reader starting here reads what comes)."""
    with contextlib.ExitStack() as stack:
        chain = _open_chain(path, stack)
        return Mark(chain[-1].inode, chain[-1].size, chain[-1].head()) if chain else Mark()


def read(
    path: Path, since: Mark | None = None, *, tail_bytes: int | None = None
) -> tuple[list[bytes], Mark]:
    """The whole lines written after `since` (None or Mark(): from the oldest kept file)
    across PATH's chain, oldest first, and the mark after the last one. With `tail_bytes`,
    at most that much of the chain's end (its first, possibly cut, line left out). A marked
    file that was dropped (or truncated) meanwhile: from the oldest kept one."""
    with contextlib.ExitStack() as stack:
        chain = _open_chain(path, stack)
        if not chain:
            return [], since or Mark()
        first, offset = 0, 0
        if since is not None:
            for i, part in enumerate(chain):
                if part.holds(since):
                    first, offset = i, since.offset
                    break
        parts = chain[first:]
        begins = [offset, *([0] * (len(parts) - 1))]
        cut = -1  # the span whose first line may be the end of a line cut in two
        if tail_bytes is not None:
            budget = tail_bytes
            for i in range(len(parts) - 1, -1, -1):
                available = parts[i].size - begins[i]
                if available > budget:
                    begins[i] = parts[i].size - budget
                    cut = i if budget else -1
                    break
                budget -= available
            else:
                i = 0
            parts, begins = parts[i:], begins[i:]
            cut = 0 if cut >= 0 else -1
        lines: list[bytes] = []
        mark = since or Mark()
        for i, (part, begin) in enumerate(zip(parts, begins, strict=True)):
            part.file.seek(begin)
            data = part.file.read(part.size - begin)
            whole = data.rfind(b"\n") + 1 if i == len(parts) - 1 else len(data)
            found = data[:whole].splitlines()
            lines += found[1:] if i == cut else found
            mark = Mark(part.inode, begin + whole, part.head()[: begin + whole])
        return lines, mark
