"""`mlrig checkout` of a run that trained on a partitioned snapshot (a real git + DVC repo whose
ingest stage's directory out data/snapshots/ holds three Parquet partitions, pushed to a
local-directory remote): restored and verified partition by partition; a partition the remote
lacks, or one changed, missing or added in the workspace, is named with its md5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlrig.adapters import dvc
from mlrig.contract import DvcRemote, StackOutputs
from mlrig.core.provenance import _checkout_verify as verify
from mlrig.core.provenance import checkout as co
from mlrig.errors import ServiceError
from tests.helpers import (
    SNAPSHOTS,
    PartitionedRepo,
    git_as_tester,
    md5_of,
    partitioned_repo,
    sample,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> PartitionedRepo:
    return partitioned_repo(tmp_path_factory.mktemp("checkout-partitions"))


def target(made: PartitionedRepo, **changes: object) -> co.Target:
    fields: dict = dict(run_id="r" * 32, sha=made.sha, files=made.files, label="m-v1")
    fields.update(changes)
    return co.Target(**fields)


def outputs(made: PartitionedRepo) -> StackOutputs:
    return sample().model_copy(update={"dvc_remote": DvcRemote(url=str(made.remote))})


def remote(made: PartitionedRepo) -> verify.dvc_tables.Fetch:
    return lambda md5: dvc.read_object(str(made.remote), {}, md5)


def test_every_partition_is_restored_and_verified(made: PartitionedRepo, tmp_path: Path) -> None:
    ws = co.restore(target(made), tmp_path / "ws", outputs(made), {}, repo=made.path)
    names = sorted(p.name for p in (ws.root / SNAPSHOTS).iterdir())
    assert names == sorted(p["name"] for p in made.partitions)
    found = verify.verify(ws.root, made.files, None, "train", remote(made), "r")
    assert found.differences == [] and found.directories == {SNAPSHOTS: 3}
    git_as_tester(made.path, "worktree", "remove", "--force", str(ws.root))


def test_a_changed_missing_or_added_partition_is_one_line_each(
    made: PartitionedRepo, tmp_path: Path
) -> None:
    ws = co.restore(target(made), tmp_path / "ws", outputs(made), {}, repo=made.path)
    folder = ws.root / SNAPSHOTS
    first, second = made.partitions[0], made.partitions[1]
    (folder / first["name"]).unlink()
    (folder / first["name"]).write_bytes(b"rewritten")
    (folder / second["name"]).unlink()
    (folder / "2026-12-09T0500.parquet").write_bytes(b"new")
    shutil.rmtree(ws.root / ".dvc" / "cache")  # the manifest comes from the remote then
    found = verify.verify(ws.root, made.files, None, "train", remote(made), "r")
    lines = [line for line in found.differences if not line.startswith("dvc status")]
    assert lines[0].startswith(f"{SNAPSHOTS}/{first['name']}: md5 ")
    assert lines[0].endswith(f"the run recorded {first['md5']}")
    assert (
        lines[1] == f"{SNAPSHOTS}/{second['name']}: missing (the run recorded md5 {second['md5']})"
    )
    assert lines[2] == f"{SNAPSHOTS}/2026-12-09T0500.parquet: not in the run's {SNAPSHOTS}"
    assert len(lines) == 3 and found.directories == {}
    # without a manifest anywhere, the directory is one line saying its files are not named
    found = verify.verify(ws.root, made.files, None, "train", lambda _m: None, "r")
    (line,) = [d for d in found.differences if d.startswith(f"{SNAPSHOTS}:")]
    assert f"the run recorded {made.snapshots_md5}; not named file by file" in line
    assert "is missing from the DVC remote r" in line
    git_as_tester(made.path, "worktree", "remove", "--force", str(ws.root))


def _aside(made: PartitionedRepo, md5: str) -> tuple[Path, Path]:
    obj = made.object(md5)
    aside = obj.with_name(obj.name + ".aside")
    obj.rename(aside)
    return obj, aside


def test_a_partition_the_remote_lacks_is_named_and_nothing_is_left(
    made: PartitionedRepo, tmp_path: Path
) -> None:
    last = made.partitions[-1]
    obj, aside = _aside(made, last["md5"])
    worktrees = git_as_tester(made.path, "worktree", "list")
    try:
        with pytest.raises(ServiceError) as caught:
            co.restore(target(made), tmp_path / "ws", outputs(made), {}, repo=made.path)
    finally:
        aside.rename(obj)
    line = caught.value.one_line()
    assert f"has no intact copy of {SNAPSHOTS}/{last['name']} (md5 {last['md5']})" in line
    assert "\n" not in line and not (tmp_path / "ws").exists()
    assert git_as_tester(made.path, "worktree", "list") == worktrees


def test_an_unverified_run_lists_the_partitions_that_could_not_be_restored(
    made: PartitionedRepo, tmp_path: Path
) -> None:
    last = made.partitions[-1]
    obj, aside = _aside(made, last["md5"])
    try:
        ws = co.restore(
            target(made, unverified=("run: no mlrig tags",)),
            tmp_path / "ws",
            outputs(made),
            {},
            repo=made.path,
        )
    finally:
        aside.rename(obj)
    assert ws.lacking == (
        f"data: the DVC remote {made.remote} has no copy of "
        f"{SNAPSHOTS}/{last['name']} (md5 {last['md5']})",
    )
    assert (ws.root / "models" / "model.pkl").is_file()  # what did arrive is checked out
    git_as_tester(made.path, "worktree", "remove", "--force", str(ws.root))


def test_a_plain_directory_out_is_checked_file_by_file_too(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "raw"
    (folder / "sub").mkdir(parents=True)
    (folder / "labels.csv").write_text("a\n1\n")
    (folder / "sub" / "features.csv").write_text("b\n2\n")
    files = verify.dir_files(folder)
    entries = [{"md5": files[rel], "relpath": rel} for rel in sorted(files)]
    manifest = json.dumps(entries, sort_keys=True).encode()
    want = verify.listing_md5(files)
    assert want == md5_of(manifest) + ".dir"  # DVC's own hash of the listing
    store = {want: manifest}
    assert verify.dir_differences("data/raw", folder, want, store.get, "r") == ([], 2)
    (folder / "sub" / "features.csv").write_text("b\n3\n")
    lines, verified = verify.dir_differences("data/raw", folder, want, store.get, "r")
    assert verified == 0 and lines == [
        f"data/raw/sub/features.csv: md5 {verify.file_md5(folder / 'sub' / 'features.csv')}, "
        f"the run recorded {files['sub/features.csv']}"
    ]
