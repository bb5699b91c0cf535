"""Images in and out of the engine as docker-save archives: one image's exact config bytes
(read from a streamed `docker save`, never written to disk) and loading an archive."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from mlrig.adapters.docker import client, consume_stream
from mlrig.errors import RemoteError


class _Stream(io.RawIOBase):
    """A file over an iterator of byte chunks, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buf), len(self._rest))
        buf[:n], self._rest = self._rest[:n], self._rest[n:]
        return n


def image_config(image_id: str) -> bytes:
    """The config of image_id exactly as the engine stores it (`<hex>.json` in its saved
    archive); the archive is read as it streams and dropped once that member is seen."""
    name = f"{image_id.removeprefix('sha256:')}.json"
    chunks = iter(client().api.get_image(image_id, chunk_size=1 << 20))
    with tarfile.open(fileobj=io.BufferedReader(_Stream(chunks), 1 << 20), mode="r|") as tar:
        for member in tar:
            if member.name == name:
                fh = tar.extractfile(member)
                if fh is not None:
                    return fh.read()
    raise RemoteError(f"the engine's archive of {image_id[:19]} holds no {name}")


def load(archive: Path) -> None:
    """Load a docker-save archive, streamed from its file (layers the engine has already
    may be left out of it)."""
    import docker.errors

    try:
        with archive.open("rb") as fh:
            consume_stream(client().api.load_image(fh, quiet=True), "loading the image")
    except docker.errors.APIError as exc:
        raise RemoteError(f"loading the image failed: {exc.explanation or exc}") from exc
