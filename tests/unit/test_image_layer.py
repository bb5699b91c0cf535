"""The model image mlrig assembles without an engine build: its layer is what `COPY model/
/opt/model/` gives, deterministic; its config is the base's plus the layer, labels and
history; the load archive and the manifest name exactly those bytes; the cache keeps them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mlrig.core.oci import cache as image_cache
from mlrig.core.oci import layer as image_layer

BASE_LAYERS = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]


def base_config(**extra: Any) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-02T03:04:05Z",
        "config": {"User": "1000:1000", "Labels": {"base.label": "kept"}, "Env": ["A=1"]},
        "container": "abc",
        "container_config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": BASE_LAYERS},
        "history": [{"created_by": "base step"}],
        **extra,
    }
    return json.dumps(doc).encode()


def model(root: Path) -> Path:
    (root / "model" / "sub").mkdir(parents=True)
    (root / "model" / "MLmodel").write_text("flavors: {}\n")
    (root / "model" / "sub" / "weights.bin").write_bytes(b"\0" * 1000)
    (root / "model" / "run.sh").write_text("#!/bin/sh\n")
    (root / "model" / "run.sh").chmod(0o750)
    (root / "model" / "sub").chmod(0o700)
    return root / "model"


def layer_of(model_dir: Path) -> image_layer.Layer:
    """The layer of model_dir, written next to it (each call a new file: a cache moves it)."""
    dest = model_dir.parent / f"layer-{len(list(model_dir.parent.glob('layer-*')))}.tar.gz"
    return image_layer.model_layer(model_dir, dest)


def raw(layer: image_layer.Layer) -> bytes:
    return gzip.decompress(layer.path.read_bytes())


def members(layer: image_layer.Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw(layer))) as tar:
        return tar.getmembers()


def test_the_layer_is_what_copy_gives_root_owned_with_the_files_modes(tmp_path: Path) -> None:
    layer = layer_of(model(tmp_path))
    got = {m.name: m for m in members(layer)}
    assert list(got) == [
        "opt",
        "opt/model",
        "opt/model/MLmodel",
        "opt/model/run.sh",
        "opt/model/sub",
        "opt/model/sub/weights.bin",
    ]
    assert got["opt"].isdir() and got["opt"].mode == 0o755
    assert got["opt/model"].isdir() and got["opt/model"].mode == 0o755
    assert got["opt/model/run.sh"].mode == 0o750 and got["opt/model/sub"].mode == 0o700
    assert got["opt/model/sub/weights.bin"].size == 1000
    for m in got.values():
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw(layer)).hexdigest()
    assert layer.digest == "sha256:" + hashlib.sha256(layer.path.read_bytes()).hexdigest()
    assert layer.size == layer.path.stat().st_size


def test_the_same_model_is_the_same_layer_whenever_and_wherever_it_is_written(
    tmp_path: Path,
) -> None:
    one = layer_of(model(tmp_path / "a"))
    other = model(tmp_path / "b")
    for path in other.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))  # another download, other times
    two = layer_of(other)
    assert (one.diff_id, one.digest) == (two.diff_id, two.digest)
    (other / "MLmodel").write_text("flavors: {x: 1}\n")
    assert layer_of(other).diff_id != one.diff_id


def test_the_config_is_the_bases_plus_the_layer_labels_and_history(tmp_path: Path) -> None:
    layer = layer_of(model(tmp_path))
    base_id = image_layer.sha256(base_config())
    labels = {"io.mlrig.model.version": "3", "io.mlrig.test.lines": 'two\nlines "q" $X'}
    config = image_layer.image_config(base_config(), layer, labels, base_id)
    doc = json.loads(config)
    assert doc["rootfs"]["diff_ids"] == [*BASE_LAYERS, layer.diff_id]
    assert doc["config"]["Labels"] == {"base.label": "kept", **labels}
    assert doc["config"]["User"] == "1000:1000" and doc["config"]["Env"] == ["A=1"]
    assert doc["config"]["Image"] == base_id
    assert "container" not in doc and "container_config" not in doc
    assert doc["created"] == "2026-01-02T03:04:05Z"
    copy, label = doc["history"][1:]
    assert copy["created_by"].endswith(f"COPY dir:{layer.diff_id[7:]} in /opt/model/ ")
    assert "empty_layer" not in copy and label["empty_layer"] is True
    assert "io.mlrig.model.version=3" in label["created_by"]
    assert doc["history"][0] == {"created_by": "base step"}
    # the same inputs, the same bytes: the same image ID
    assert image_layer.image_config(base_config(), layer, labels, base_id) == config


def test_the_load_archive_holds_only_the_config_the_new_layer_and_the_manifest(
    tmp_path: Path,
) -> None:
    layer = layer_of(model(tmp_path))
    config = image_layer.image_config(base_config(), layer, {}, "sha256:" + "0" * 64)
    archive = image_layer.write_load_archive(
        tmp_path / "load.tar", config, len(BASE_LAYERS), layer, "mlrig/x:v1"
    )
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    (entry,) = json.loads(files.pop("manifest.json"))
    assert entry["RepoTags"] == ["mlrig/x:v1"]
    assert len(entry["Layers"]) == len(BASE_LAYERS) + 1  # one per diff_id, as the engine asks
    assert files == {
        entry["Config"]: config,
        entry["Layers"][-1]: layer.path.read_bytes(),
    }
    assert entry["Config"] == f"{hashlib.sha256(config).hexdigest()}.json"


def test_the_manifest_appends_the_layer_to_the_bases_with_its_media_types(
    tmp_path: Path,
) -> None:
    layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    base = {
        "schemaVersion": 2,
        "mediaType": image_layer.MANIFEST_TYPE,
        "config": {"mediaType": image_layer.CONFIG_TYPE, "size": 9, "digest": "sha256:b"},
        "layers": [{"mediaType": layer_type, "size": 5, "digest": "sha256:l1"}],
    }
    config = b'{"c": 1}'
    body = image_layer.manifest(json.dumps(base).encode(), config, "sha256:new", 42)
    doc = json.loads(body)
    assert doc["mediaType"] == image_layer.MANIFEST_TYPE and doc["schemaVersion"] == 2
    assert doc["config"] == {
        "mediaType": image_layer.CONFIG_TYPE,
        "size": len(config),
        "digest": image_layer.sha256(config),
    }
    assert doc["layers"] == [
        *base["layers"],
        {"mediaType": layer_type, "size": 42, "digest": "sha256:new"},
    ]


def test_the_cache_keeps_an_images_blobs_and_the_newest_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLRIG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(image_cache, "KEEP", 2)
    src = model(tmp_path)
    ids = []
    for n in range(3):
        layer = layer_of(src)  # a build's own file, which the cache moves into itself
        config = image_layer.image_config(base_config(), layer, {"n": str(n)}, "sha256:b")
        image_id = image_layer.sha256(config)
        image_cache.remember(image_id, "sha256:b", config, layer)
        entry = image_cache.root() / "images" / image_id[7:]
        os.utime(entry, (n, n))
        ids.append((image_id, config))
    assert image_cache.lookup(ids[0][0]) is None
    got = image_cache.lookup(ids[2][0])
    assert got is not None and got.config == ids[2][1] and got.base_id == "sha256:b"
    assert not layer.path.exists()  # moved, not copied
    assert got.layer_path.read_bytes() == layer_of(src).path.read_bytes()
    assert got.layer_digest == layer.digest and got.layer_size == layer.size
    (got.layer_path.parent / "config.json").write_bytes(b"{}")  # damaged: a miss, not a lie
    assert image_cache.lookup(ids[2][0]) is None
    base = base_config()
    image_cache.remember_base_config(image_layer.sha256(base), base)
    assert image_cache.base_config(image_layer.sha256(base)) == base
    assert image_cache.base_config("sha256:" + "9" * 64) is None


def test_the_cache_is_found_by_the_reference_a_build_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLRIG_HOME", str(tmp_path / "home"))
    src = model(tmp_path)
    layer = layer_of(src)
    configs = [
        image_layer.image_config(base_config(), layer, {"n": str(n)}, "sha256:b") for n in (1, 2)
    ]
    first, second = (image_layer.sha256(c) for c in configs)
    image_cache.remember(first, "sha256:b", configs[0], layer, ref="mlrig-models/bc:v1")
    layer = layer_of(src)
    got = image_cache.by_ref("mlrig-models/bc:v1")
    assert got is not None and got.image_id == first
    assert got.labels == {"base.label": "kept", "n": "1"}
    assert image_cache.by_ref("mlrig-models/bc:v2") is None
    # a reference without a tag is :latest, as the engine reads it
    image_cache.remember(second, "sha256:b", configs[1], layer, ref="localhost:5000/bc")
    hit = image_cache.by_ref("localhost:5000/bc:latest")
    assert hit is not None and hit.image_id == second
    # loaded again as another image: the newest build wins
    image_cache.remember(second, "sha256:b", configs[1], layer, ref="mlrig-models/bc:v1")
    again = image_cache.by_ref("mlrig-models/bc:v1")
    assert again is not None and again.image_id == second
    # an ID or a digest names the image itself and is never looked up by name
    assert image_cache.by_ref(first) is None and image_cache.by_ref(f"bc@{first}") is None
    # an image pruned from the cache is a miss, whatever the index says
    shutil.rmtree(image_cache.root() / "images" / second[7:])
    assert image_cache.by_ref("mlrig-models/bc:v1") is None


def test_a_large_model_is_streamed_to_its_layer_not_held_in_memory(tmp_path: Path) -> None:
    import tracemalloc

    src = tmp_path / "model"
    src.mkdir()
    with (src / "weights.bin").open("wb") as fh:
        fh.truncate(64 * 2**20)  # 64 MiB (sparse on disk)
    tracemalloc.start()
    try:
        layer = layer_of(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB of Python memory for a 64 MiB model"
    with tarfile.open(layer.path) as tar:  # gzip detected: the file is the whole layer
        assert tar.getmember("opt/model/weights.bin").size == 64 * 2**20
    archive = image_layer.write_load_archive(tmp_path / "load.tar", b"{}", 0, layer, "x:y")
    assert archive.stat().st_size > layer.size
