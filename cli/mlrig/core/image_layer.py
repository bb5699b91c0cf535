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
    tar: bytes  # uncompressed: its digest is the diff_id the config names
    gz: bytes  # what a registry stores
    diff_id: str
    digest: str


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


def model_layer(model_dir: Path) -> Layer:
    """The layer `COPY model/ /opt/model/` makes: opt/ and opt/model/ (0755), then every
    file, folder and link of model_dir in sorted order with its own permission bits."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_directory("opt"))
        tar.addfile(_directory(MODEL_DIR))
        for path in sorted(model_dir.rglob("*"), key=lambda p: p.relative_to(model_dir).parts):
            name = f"{MODEL_DIR}/{path.relative_to(model_dir).as_posix()}"
            info = _normalized(tar.gettarinfo(str(path), arcname=name), name)
            info.mode &= 0o7777
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    return Layer(raw, gz, sha256(raw), sha256(gz))


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


def load_archive(config: bytes, base_layers: int, layer: Layer, ref: str) -> bytes:
    """A docker-save archive holding only the config, manifest.json and the new layer: the
    engine finds the base's layers by chain ID and loads just this one, tagged ref."""
    config_name = f"{sha256(config)[7:]}.json"
    new = f"{layer.diff_id[7:]}/layer.tar"
    layers = [f"base-{i}/layer.tar" for i in range(base_layers)] + [new]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": layers}])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            (config_name, config),
            (new, layer.gz),
            ("manifest.json", manifest.encode()),
        ):
            info = _normalized(tarfile.TarInfo(name), name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


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
