"""What a push needs of an image mlrig assembled, kept per image ID: its config bytes, its
model layer gzipped (digest, size) and its serving base's ID; each serving base's exact
config, taken once from the engine; and the manifest each registry repository holds for a
serving base, read once from it (a new version's manifest lists the base's layers as that
registry got them).

Under $MLRIG_HOME/cache/. The newest KEEP images are kept (by when they were built), older
entries are pruned at each build: nothing asks the engine, and a pruned or missing entry
only means that image is pushed through the engine as before. Each reference a build
loaded is indexed to its image ID (`by_ref`), so a push can start before the engine is
asked; the engine still decides: a push checks its ID for the reference before any tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlrig import paths
from mlrig.core.oci.layer import Layer, sha256

KEEP = 16  # model images
KEEP_BASES = 8  # serving bases' configs
KEEP_REFS = 64  # references builds loaded
KEEP_BASE_MANIFESTS = 16  # serving bases' manifests, per registry repository


@dataclass(frozen=True)
class Cached:
    image_id: str
    base_id: str
    config: bytes
    layer_path: Path  # the gzipped layer
    layer_digest: str
    layer_size: int

    @property
    def labels(self) -> dict[str, str]:
        """The image's labels, as its config holds them (what the engine reports)."""
        inner = json.loads(self.config).get("config") or {}
        return {str(k): str(v) for k, v in (inner.get("Labels") or {}).items()}


def root() -> Path:
    return paths.home() / "cache"


def _images() -> Path:
    return root() / "images"


def _bases() -> Path:
    return root() / "serving-base"


def _refs() -> Path:
    return root() / "refs"


def _base_manifests() -> Path:
    return root() / "base-manifests"


def normalized(ref: str) -> str | None:
    """A reference as a name (`repo` is `repo:latest`); None for an image ID or a digest,
    which are never indexed (they name the image themselves)."""
    if "@" in ref or ref.startswith("sha256:") or not ref:
        return None
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def _ref_file(ref: str) -> Path:
    return _refs() / f"{hashlib.sha256(ref.encode()).hexdigest()[:32]}.json"


def _hex(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def _atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def base_config(base_id: str) -> bytes | None:
    """The serving base's config bytes as the engine has them, when taken before."""
    path = _bases() / f"{_hex(base_id)}.json"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if sha256(data) == base_id else None


def remember_base_config(base_id: str, config: bytes) -> None:
    _atomic(_bases() / f"{_hex(base_id)}.json", config)
    _prune(_bases(), KEEP_BASES)


def _base_manifest_file(base_id: str, where: str) -> Path:
    key = hashlib.sha256(f"{where} {base_id}".encode()).hexdigest()[:32]
    return _base_manifests() / f"{key}.json"


def base_manifest(base_id: str, where: str) -> tuple[bytes, str] | None:
    """The manifest (bytes, media type) the repository `where` (host/repository) held for
    the serving base when a push last read it; None when not known. Only a hint: the
    registry may have lost the base's blobs since (see `oci.direct`)."""
    try:
        entry = json.loads(_base_manifest_file(base_id, where).read_text())
        body = str(entry["manifest"]).encode()
        if entry["where"] != where or entry["base"] != base_id:
            return None
        config = (json.loads(body).get("config") or {}).get("digest")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (body, str(entry.get("media_type", ""))) if config == base_id else None


def remember_base_manifest(base_id: str, where: str, body: bytes, media_type: str) -> None:
    entry = {"where": where, "base": base_id, "media_type": media_type, "manifest": body.decode()}
    _atomic(_base_manifest_file(base_id, where), json.dumps(entry).encode())
    _prune(_base_manifests(), KEEP_BASE_MANIFESTS)


def forget_base_manifest(base_id: str, where: str) -> None:
    _base_manifest_file(base_id, where).unlink(missing_ok=True)


def remember(
    image_id: str, base_id: str, config: bytes, layer: Layer, ref: str | None = None
) -> None:
    """Store an assembled image's blobs (written to a new folder, then renamed into place),
    and the reference the engine loaded it as."""
    name = normalized(ref) if ref else None
    if name:
        _atomic(_ref_file(name), json.dumps({"ref": name, "id": image_id}).encode())
        _prune(_refs(), KEEP_REFS)
    final = _images() / _hex(image_id)
    if (final / "meta.json").exists():
        os.utime(final)  # built again: newest
        return
    _images().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=_images(), prefix=".new-"))
    (tmp / "config.json").write_bytes(config)
    shutil.move(layer.path, tmp / "layer.tar.gz")  # the build's own file: moved, not read
    meta = {"base": base_id, "digest": layer.digest, "size": layer.size}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, final)
    except OSError:  # another build of the same image won the race
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(_images(), KEEP)


def lookup(image_id: str) -> Cached | None:
    """The image's blobs, when this cache holds them whole (config hash checked)."""
    entry = _images() / _hex(image_id)
    try:
        meta = json.loads((entry / "meta.json").read_text())
        config = (entry / "config.json").read_bytes()
        layer = entry / "layer.tar.gz"
        size = layer.stat().st_size
    except (OSError, ValueError):
        return None
    if sha256(config) != image_id or size != int(meta.get("size", -1)):
        return None
    return Cached(image_id, str(meta["base"]), config, layer, str(meta["digest"]), size)


def by_ref(ref: str) -> Cached | None:
    """The cached image a build last loaded as ref, when the cache still holds it whole.
    Only a hint: the engine may have retagged ref since (see `oci.push`)."""
    name = normalized(ref)
    if name is None:
        return None
    try:
        entry = json.loads(_ref_file(name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("ref") != name:
        return None
    return lookup(str(entry.get("id", "")))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # pruned by another process meanwhile
        return 0.0


def _prune(folder: Path, keep: int) -> None:
    entries = sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".")), key=_mtime, reverse=True
    )
    for old in entries[keep:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
