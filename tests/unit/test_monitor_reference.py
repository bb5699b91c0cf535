"""Monitor's reference (core/monitor/_reference.py) when the run trained on a partitioned
snapshot: the run's `dvc.dep.data/snapshots` `.dir` dep is read partition by partition from a
real local-directory DVC remote, and the run's mlrig/partitions.json must list exactly the
directory's files (name, md5, rows)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlrig.contract import DvcRemote, StackOutputs
from mlrig.core.monitor import _reference
from mlrig.core.provenance import record as p
from mlrig.errors import ConfigError, ServiceError
from tests.helpers import SNAPSHOTS, PartitionedRepo, partitioned_repo, sample

RUN = "f" * 32


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> PartitionedRepo:
    return partitioned_repo(tmp_path_factory.mktemp("reference"))


def outputs(made: PartitionedRepo) -> StackOutputs:
    return sample().model_copy(update={"dvc_remote": DvcRemote(url=str(made.remote))})


def record(made: PartitionedRepo, *deps: tuple[str, str]) -> p.ProvenanceRecord:
    remote = p.DvcRemoteRecord(name="storage", url=str(made.remote))
    return p.ProvenanceRecord(
        ref="models:/m/1",
        run=p.RunRecord(id=RUN),
        code=p.CodeRecord(),
        data=[p.DataRecord(path=path, md5=md5, role="dep", remote=remote) for path, md5 in deps],
    )


def logged(partitions: list[dict]) -> bytes:
    return json.dumps(partitions).encode()


def test_the_partitioned_snapshot_is_a_reference_checked_against_the_logged_list(
    made: PartitionedRepo,
) -> None:
    rec = record(made, (SNAPSHOTS, made.snapshots_md5))
    assert [d.path for d in _reference.candidates(rec)] == [SNAPSHOTS]
    asked: list[int] = []

    def partitions_json() -> bytes:
        asked.append(1)
        return logged(made.partitions)

    ref = _reference.load(rec, outputs(made), ["x", "cat"], partitions_json)
    assert (ref.path, ref.md5, ref.partitions) == (SNAPSHOTS, made.snapshots_md5, 3)
    assert list(ref.frame["id"]) == [1, 2, 3, 4, 5] and asked == [1]
    # a run that logged no list: the directory's own md5s are the check
    assert len(_reference.load(rec, outputs(made), ["x"]).frame) == 5


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda ps: ps[:2], "does not list 2026-12-08T0500.parquet, which the directory holds"),
        (
            lambda ps: [*ps, {"name": "2026-12-09T0500.parquet", "md5": "1" * 32, "rows": 1}],
            "lists 2026-12-09T0500.parquet, which the directory does not hold",
        ),
        (
            lambda ps: [{**ps[0], "md5": "0" * 32}, *ps[1:]],
            f"lists 2026-12-07T0500.parquet with md5 {'0' * 32}",
        ),
        (lambda ps: [{**ps[0], "rows": 7}, *ps[1:]], "with 7 rows, the directory's has 2"),
        (lambda ps: [{**ps[0], "name": "../x.parquet"}], "is not a partition list (0.name"),
        (lambda ps: {"name": "x"}, "is not a partition list"),
    ],
)
def test_a_logged_list_other_than_the_directory_is_one_line(
    made: PartitionedRepo, change, says: str
) -> None:
    rec = record(made, (SNAPSHOTS, made.snapshots_md5))
    bad = logged(change(made.partitions))
    with pytest.raises(ServiceError) as caught:
        _reference.load(rec, outputs(made), ["x"], lambda: bad)
    line = caught.value.one_line()
    assert says in line and f"run {RUN}'s mlrig/partitions.json" in line and "\n" not in line


def test_of_a_table_and_the_snapshot_the_one_covering_more_live_columns_wins(
    made: PartitionedRepo,
) -> None:
    model = ("models/model.pkl", made.files["models/model.pkl"])  # no table: not a candidate
    first = made.partitions[0]
    single = (f"{SNAPSHOTS}/{first['name']}", first["md5"])
    rec = record(made, model, single, (SNAPSHOTS, made.snapshots_md5))
    assert [d.path for d in _reference.candidates(rec)] == [single[0], SNAPSHOTS]
    ref = _reference.load(rec, outputs(made), ["x"], lambda: logged(made.partitions))
    assert ref.path == single[0] and ref.partitions == 0  # a tie: the first stays


def _put(remote: Path, data: bytes, suffix: str = "") -> str:
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest() + suffix
    obj = remote / "files" / "md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    return md5


def test_a_directory_of_other_files_is_no_reference(made: PartitionedRepo) -> None:
    blob = _put(made.remote, b"not a table\n")
    other = _put(
        made.remote, json.dumps([{"md5": blob, "relpath": "notes/a.txt"}]).encode(), ".dir"
    )
    rec = record(made, ("data/raw", other), (SNAPSHOTS, made.snapshots_md5))
    assert len(_reference.candidates(rec)) == 2
    assert _reference.load(rec, outputs(made), ["x"]).path == SNAPSHOTS
    with pytest.raises(ConfigError, match="records no DVC-stored input table: the directory"):
        _reference.load(record(made, ("data/raw", other)), outputs(made), ["x"])


def test_a_missing_partition_names_the_run_and_the_partition(
    made: PartitionedRepo, tmp_path: Path
) -> None:
    last = made.partitions[-1]
    obj = made.object(last["md5"])
    aside = obj.with_name(obj.name + ".aside")
    obj.rename(aside)
    try:
        with pytest.raises(ConfigError) as caught:
            _reference.load(record(made, (SNAPSHOTS, made.snapshots_md5)), outputs(made), ["x"])
    finally:
        aside.rename(obj)
    line = caught.value.one_line()
    assert f"the reference of run {RUN}: partition {SNAPSHOTS}/{last['name']}" in line
    assert f"(md5 {last['md5']}) is missing from the DVC remote" in line


def test_the_logged_list_is_read_from_the_runs_own_artifacts() -> None:
    from mlrig.adapters.mlflow_rest import Run
    from mlrig.core.monitor import monitor

    asked: list[tuple[str, str]] = []

    class Rest:
        def __init__(self, uri: str | None) -> None:
            self.uri = uri

        def run(self, run_id: str) -> Run:
            return Run(run_id, "1", {}, {}, {}, artifact_uri=self.uri)

        def read_artifact(self, artifact_uri: str, name: str) -> bytes | None:
            asked.append((artifact_uri, name))
            return b"[]"

    uri = f"mlflow-artifacts:/1/{RUN}/artifacts"
    assert monitor._run_artifact(Rest(uri), RUN, "mlrig/partitions.json") == b"[]"  # type: ignore[arg-type]
    assert asked == [(uri, "mlrig/partitions.json")]
    assert monitor._run_artifact(Rest(None), RUN, "mlrig/partitions.json") is None  # type: ignore[arg-type]
