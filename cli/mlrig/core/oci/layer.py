"""The model image assembled by mlrig itself: the serving base plus one layer holding the
model, as `COPY model/ /opt/model/` gives it, without an engine build.

Pure byte work (tar, gzip, JSON, sha256): the layer, the image config derived from the
base's exact config, the archive the engine loads and the manifest a registry stores. Every
output is deterministic, so the same model on the same base is the same image ID.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_DIR = "opt/model"  # where COPY put the model; its parents are in the layer too
MTIME = 0  # every entry's time: the same files give the same layer
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Layer:
    path: Path  # the gzipped layer, what a registry stores (written once, streamed)
    diff_id: str  # sha256 of the uncompressed tar: what the config names
    digest: str  # sha256 of the gzipped file
    size: int  # bytes of the gzipped file


class _Hashing(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to `out` (or nowhere)."""

    def __init__(self, out: Any = None) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:  # tarfile asks where it is; nothing here seeks
        return self.size

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += len(view)
        if self.out is not None:
            self.out.write(view)
        return len(view)


def _normalized(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """Root-owned, no user names, a fixed time: what COPY writes, minus the clock."""
    info.name = name
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = MTIME
    return info


def _directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return _normalized(info, name)


def model_layer(model_dir: Path, dest: Path) -> Layer:
    """The layer `COPY model/ /opt/model/` makes: opt/ and opt/model/ (0755), then every
    file, folder and link of model_dir in sorted order with its own permission bits. It is
    streamed to `dest` gzipped (fixed header time), hashed on the way both uncompressed (the
    diff_id) and compressed: memory stays flat whatever the model's size."""
    with dest.open("wb") as out:
        packed = _Hashing(out)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=packed, mtime=0) as gz:
            raw = _Hashing(gz)
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_directory("opt"))
                tar.addfile(_directory(MODEL_DIR))
                for path in sorted(
                    model_dir.rglob("*"), key=lambda p: p.relative_to(model_dir).parts
                ):
                    name = f"{MODEL_DIR}/{path.relative_to(model_dir).as_posix()}"
                    info = _normalized(tar.gettarinfo(str(path), arcname=name), name)
                    info.mode &= 0o7777
                    if info.isfile():
                        with path.open("rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
    diff_id = f"sha256:{raw.hash.hexdigest()}"
    return Layer(dest, diff_id, f"sha256:{packed.hash.hexdigest()}", packed.size)


def image_config(base_config: bytes, layer: Layer, labels: dict[str, str], base_id: str) -> bytes:
    """The base's config with the model layer's diff_id appended, the labels added to its
    own and a history entry per step the old two-step build recorded (COPY, LABEL). The
    times are the base's, so the same model on the same base is the same image ID.
    `container` and `container_config` (the base's last build step) are left out."""
    cfg: dict[str, Any] = json.loads(base_config)
    created = cfg.get("created")
    inner = dict(cfg.get("config") or {})
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    inner["Image"] = base_id  # what a build step records: the image it ran on
    cfg["config"] = inner
    for key in ("container", "container_config"):  # they describe the base's last step
        cfg.pop(key, None)
    rootfs = dict(cfg.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), layer.diff_id]
    cfg["rootfs"] = rootfs
    label_text = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    when = {"created": created} if created else {}
    cfg["history"] = [
        *(cfg.get("history") or []),
        when | {"created_by": f"/bin/sh -c #(nop) COPY dir:{layer.diff_id[7:]} in /opt/model/ "},
        when | {"created_by": f"/bin/sh -c #(nop)  LABEL {label_text}", "empty_layer": True},
    ]
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def write_load_archive(
    dest: Path, config: bytes, base_layers: int, layer: Layer, ref: str | None
) -> Path:
    """A docker-save archive at dest holding only the config, manifest.json and the new
    layer (streamed from its file): the engine finds the base's layers by chain ID and loads
    just this one, tagged ref (None: untagged, known by its ID alone)."""
    config_name = f"{sha256(config)[7:]}.json"
    new = f"{layer.diff_id[7:]}/layer.tar"
    layers = [f"base-{i}/layer.tar" for i in range(base_layers)] + [new]
    tags = [ref] if ref else None
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": layers}])
    with tarfile.open(dest, mode="w") as tar:
        for name, data in ((config_name, config), ("manifest.json", manifest.encode())):
            info = _normalized(tarfile.TarInfo(name), name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        info = _normalized(tarfile.TarInfo(new), new)
        info.size, info.mode = layer.size, 0o644
        with layer.path.open("rb") as fh:
            tar.addfile(info, fh)
    return dest


def manifest(base_manifest: bytes, config: bytes, layer_digest: str, layer_size: int) -> bytes:
    """The new image's manifest: the base's layer descriptors plus the model's, the new
    config; media types as the base's manifest has them."""
    base: dict[str, Any] = json.loads(base_manifest)
    layers = list(base.get("layers") or [])
    layer_type = str(layers[-1].get("mediaType", LAYER_TYPE)) if layers else LAYER_TYPE
    config_type = str((base.get("config") or {}).get("mediaType", CONFIG_TYPE))
    doc = {
        "schemaVersion": 2,
        "mediaType": str(base.get("mediaType", MANIFEST_TYPE)),
        "config": {"mediaType": config_type, "size": len(config), "digest": sha256(config)},
        "layers": [*layers, {"mediaType": layer_type, "size": layer_size, "digest": layer_digest}],
    }
    return json.dumps(doc, indent=3).encode()
