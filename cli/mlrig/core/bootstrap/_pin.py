"""The mlrig a generated repository's CI installs: mlrig==X, and the sha256 of X's files as
the configured package index lists them, recorded beside the pin (`mlrig_sha256` in
.copier-answers.yml) so the workflow installs mlrig with `--require-hashes`.

The index's answer is input: each listed file is validated here (pydantic) and only the
sha256 of files named `mlrig-X-*.whl` or `mlrig-X.tar.gz` is kept. No hash is never an
error: the result then says why, and the workflow says in one line that it installs the pin
without a hash check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mlrig.adapters import package_index
from mlrig.core.shared.progress import Progress
from mlrig.errors import ServiceError
from mlrig.version import is_release

PROJECT = "mlrig"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    version: str
    sha256: tuple[str, ...] = ()  # sorted; empty: the workflow installs without a hash check
    why_none: str = ""  # when sha256 is empty: why, in words a user can act on

    @property
    def answer(self) -> str:
        """The `mlrig_sha256` answer: the hashes separated by single spaces."""
        return " ".join(self.sha256)


class _IndexFile(BaseModel):
    """One file as a PEP 691 page lists it (PEP 503 anchors are read into the same shape);
    what else the index says about it is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    filename: str = Field(min_length=1, max_length=300)
    hashes: dict[str, str] = Field(default_factory=dict)


_LISTING = TypeAdapter(list[_IndexFile])


def _release_files(version: str) -> re.Pattern[str]:
    v = re.escape(version)
    return re.compile(rf"{PROJECT}-{v}(?:-[A-Za-z0-9_.]+)+\.whl|{PROJECT}-{v}\.tar\.gz")


def hashes_from(listing: object, version: str, host: str) -> Pin:
    """The sha256 of mlrig==version's files in an index's listing (a list of files, each
    {"filename", "hashes"}), or a Pin without hashes saying why: a listing that breaks the
    simple API's shape, or a file of this version with a hash that is no sha256, gives none."""
    try:
        files = _LISTING.validate_python(listing)
    except ValidationError:
        return Pin(
            version, (), f"the index at {host} listed {PROJECT}'s files in a form it cannot read"
        )
    ours = [f for f in files if _release_files(version).fullmatch(f.filename)]
    if not ours:
        return Pin(version, (), f"the index at {host} has no file of {PROJECT}=={version}")
    found = []
    for file in ours:
        digest = file.hashes.get("sha256")
        if digest is None:
            return Pin(version, (), f"the index at {host} gives no sha256 for {file.filename}")
        if not _SHA256.fullmatch(digest):
            return Pin(
                version, (), f"the index at {host} gives {file.filename} a sha256 that is not one"
            )
        found.append(digest)
    return Pin(version, tuple(sorted(set(found))))


def pin(
    version: str,
    *,
    recorded: str = "",
    recorded_version: str = "",
    progress: Progress = lambda _m: None,
) -> Pin:
    """What CI installs for mlrig==version. A version the repository already pins keeps the
    hashes recorded with it (the files a release first had are the ones to trust); another
    release asks the configured index; a development version has no hashes (no index has it)."""
    if not is_release(version):
        return Pin(version, (), f"{PROJECT} {version} is a development version that no index has")
    kept = tuple(recorded.split())
    if kept and recorded_version == version and all(_SHA256.fullmatch(h) for h in kept):
        return Pin(version, kept)
    index = package_index.index_url()
    host = package_index.host_of(index)
    progress(f"asking the package index at {host} for the sha256 of mlrig {version}'s files")
    try:
        listing = package_index.project_files(index, PROJECT)
    except ServiceError as exc:
        return Pin(version, (), exc.message)
    if listing is None:
        return Pin(version, (), f"the index at {host} has no project {PROJECT}")
    return hashes_from(listing, version, host)
