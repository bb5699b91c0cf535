"""Tables read by DVC hash (core/shared/dvc_tables.py): a partitioned snapshot made with the
real git and DVC and pushed to a local-directory remote is read partition by partition, each
md5-checked, in name order; a hostile or damaged manifest, a missing or damaged partition is
one line naming it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlrig.adapters import dvc
from mlrig.core.shared import dvc_tables
from mlrig.errors import ConfigError, ServiceError
from tests.helpers import (
    PARTITIONS,
    SNAPSHOTS,
    PartitionedRepo,
    partition_frame,
    partitioned_repo,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> PartitionedRepo:
    return partitioned_repo(tmp_path_factory.mktemp("partitioned"))


def fetch_from(remote: Path) -> dvc_tables.Fetch:
    return lambda md5: dvc.read_object(str(remote), {}, md5)


def test_a_partitioned_snapshot_is_its_partitions_in_name_order(made: PartitionedRepo) -> None:
    assert dvc_tables.is_dir(made.snapshots_md5)
    table = dvc_tables.read_table(
        fetch_from(made.remote), SNAPSHOTS, made.snapshots_md5, str(made.remote)
    )
    order = ["2026-12-07T0500.parquet", "2026-12-07T0500-2.parquet", "2026-12-08T0500.parquet"]
    want = pd.concat([partition_frame(PARTITIONS[name]) for name in order], ignore_index=True)
    pd.testing.assert_frame_equal(table.frame, want)
    assert list(table.frame["id"]) == [1, 2, 3, 4, 5]  # a minute's -2 after its first
    md5s = {p["name"]: p["md5"] for p in made.partitions}
    assert [(e.relpath, e.md5) for e in table.partitions] == [(n, md5s[n]) for n in order]


def test_partitions_keep_the_order_ingest_wrote_them_in() -> None:
    names = ["2026-12-07T0500-10.parquet", "2026-12-07T0500-2.parquet", "2026-12-07T0500.parquet"]
    names += ["2026-12-06T2359.parquet", "other.csv"]
    assert sorted(names, key=dvc_tables.partition_order) == [
        "2026-12-06T2359.parquet",
        "2026-12-07T0500.parquet",
        "2026-12-07T0500-2.parquet",
        "2026-12-07T0500-10.parquet",
        "other.csv",
    ]


def test_a_single_file_is_read_and_checked_as_before(made: PartitionedRepo) -> None:
    first = made.partitions[0]
    table = dvc_tables.read_table(
        fetch_from(made.remote), f"{SNAPSHOTS}/{first['name']}", first["md5"], "remote"
    )
    assert table.partitions == () and list(table.frame["id"]) == [1, 2]


def _swap(obj: Path, data: bytes | None, tmp_path: Path) -> Path:
    saved = tmp_path / "saved"
    shutil.copy2(obj, saved)
    obj.chmod(0o644)
    if data is None:
        obj.unlink()
    else:
        obj.write_bytes(data)
    return saved


@pytest.mark.parametrize("damage", [None, b"PAR1 not the partition"])
def test_a_missing_or_damaged_partition_is_one_line_naming_it(
    made: PartitionedRepo, tmp_path: Path, damage: bytes | None
) -> None:
    second = made.partitions[1]
    obj = made.object(second["md5"])
    saved = _swap(obj, damage, tmp_path)
    try:
        with pytest.raises(ConfigError if damage is None else ServiceError) as caught:
            dvc_tables.read_table(
                fetch_from(made.remote), SNAPSHOTS, made.snapshots_md5, str(made.remote)
            )
    finally:
        shutil.copy2(saved, obj)
    line = caught.value.one_line()
    assert f"partition {SNAPSHOTS}/{second['name']}" in line and second["md5"] in line
    assert ("is missing" if damage is None else "other bytes") in line and "\n" not in line


def test_a_damaged_manifest_is_refused(made: PartitionedRepo, tmp_path: Path) -> None:
    obj = made.object(made.snapshots_md5)
    saved = _swap(obj, b"[]", tmp_path)
    try:
        with pytest.raises(ServiceError, match=f"the manifest of {SNAPSHOTS}"):
            dvc_tables.read_table(fetch_from(made.remote), SNAPSHOTS, made.snapshots_md5, "r")
    finally:
        shutil.copy2(saved, obj)


def store(manifest: object, files: dict[str, bytes] | None = None) -> tuple[dict, str]:
    """An in-memory store holding a manifest (its md5 right, so only its content is judged)."""
    data = json.dumps(manifest).encode() if not isinstance(manifest, bytes) else manifest
    key = hashlib.md5(data, usedforsecurity=False).hexdigest() + ".dir"
    objects = {key: data}
    for blob in (files or {}).values():
        objects[hashlib.md5(blob, usedforsecurity=False).hexdigest()] = blob
    return objects, key


GOOD = "0" * 32


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        ([{"relpath": "../../etc/passwd.csv", "md5": GOOD}], "leaves the directory"),
        ([{"relpath": "/etc/x.parquet", "md5": GOOD}], "leaves the directory"),
        ([{"relpath": "a/./b.csv", "md5": GOOD}], "not a normalised path"),
        ([{"relpath": "a\\..\\b.csv", "md5": GOOD}], "control characters or '\\'"),
        ([{"relpath": "a.csv\n", "md5": GOOD}], "control characters"),
        ([{"relpath": "a.csv", "md5": "../" + "0" * 29}], "is not 32 hex digits"),
        ([{"relpath": "a.csv", "md5": GOOD + ".dir"}], "is not 32 hex digits"),
        ([{"relpath": "a.csv", "md5": GOOD}, {"relpath": "a.csv", "md5": GOOD}], "twice"),
        ([{"relpath": "a.csv"}], "entry 1 has no md5"),
        (["a.csv"], "entry 1: Input should be a valid dictionary"),
        ({"relpath": "a.csv", "md5": GOOD}, "valid list"),
        (b"\x00not json", "is not JSON"),
    ],
)
def test_a_hostile_manifest_is_one_line_and_nothing_is_fetched(manifest: object, says: str) -> None:
    objects, key = store(manifest)
    asked: list[str] = []

    def fetch(md5: str) -> bytes | None:
        asked.append(md5)
        return objects.get(md5)

    with pytest.raises(ConfigError) as caught:
        dvc_tables.read_table(fetch, SNAPSHOTS, key, "mem")
    line = caught.value.one_line()
    assert says in line and f"manifest of {SNAPSHOTS}" in line and "\n" not in line
    assert asked == [key]  # no partition was looked up


@pytest.mark.parametrize("name", ["sub/a.parquet", "a.txt", ".hidden.csv", "a.parquet.gz"])
def test_a_directory_holding_other_than_plain_partitions_is_no_snapshot(name: str) -> None:
    blob = partition_frame([(1, 0.1, "a", 0)]).to_csv(index=False).encode()
    entry = {"relpath": name, "md5": hashlib.md5(blob, usedforsecurity=False).hexdigest()}
    objects, key = store([entry], {name: blob})
    with pytest.raises(ConfigError, match="not a partition"):
        dvc_tables.read_table(objects.get, SNAPSHOTS, key, "mem")


def test_csv_partitions_and_an_empty_directory() -> None:
    blobs = {
        "b.csv": b"id,x\n2,0.2\n",
        "a.csv": b"id,x\n1,0.1\n",
    }
    entries = [
        {"relpath": n, "md5": hashlib.md5(b, usedforsecurity=False).hexdigest()}
        for n, b in blobs.items()
    ]
    objects, key = store(entries, blobs)
    table = dvc_tables.read_table(objects.get, "data/snapshots", key, "mem")
    assert list(table.frame["id"]) == [1, 2]
    objects, key = store([])
    with pytest.raises(ConfigError, match="holds no partitions"):
        dvc_tables.read_table(objects.get, "data/snapshots", key, "mem")


def test_a_hash_that_is_no_dvc_hash_is_refused_before_any_lookup() -> None:
    with pytest.raises(ConfigError, match="is not a DVC hash"):
        dvc_tables.read_table(lambda _m: pytest.fail("looked up"), "x", "../x.dir", "mem")
    assert dvc.read_object("/nonexistent", {}, "../" + "a" * 29 + ".dir") is None
