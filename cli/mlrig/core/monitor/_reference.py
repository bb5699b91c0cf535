"""The reference: the exact DVC-tracked data the served version was trained on, found through
provenance (its run's `dvc.dep.*` md5s) and read from the stack's DVC remote by md5. No
baseline job, no copy: the bytes are checked against the md5 the run recorded.

Which file: of the train run's inputs that DVC stores, the tables (CSV or Parquet, or a
directory of partitions: a dep whose md5 ends in `.dir`, such as a partitioned repository's
`data/snapshots`); when there are several, the one holding most of the live columns. In the
generated repo that is `data/processed/train.csv`, preprocess's output and train's input: the
rows the model was fitted on, in the raw feature columns the requests carry (plus the ID and
the target). A directory is read partition by partition (core/shared/dvc_tables.py), and when
the run logged `mlrig/partitions.json`, its list must be the directory's files exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from mlrig.adapters import dvc
from mlrig.contract import StackOutputs
from mlrig.core.bootstrap.repo import remote_local_options
from mlrig.core.provenance.record import DataRecord, ProvenanceRecord
from mlrig.core.shared import dvc_tables
from mlrig.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    import pandas as pd

TABLES = dvc_tables.TABLES


@dataclass(frozen=True)
class Reference:
    path: str
    md5: str
    frame: pd.DataFrame
    remote: str
    partitions: int = 0  # the directory's partitions read; 0 for a single file


def candidates(record: ProvenanceRecord) -> list[DataRecord]:
    """The run's DVC-stored input tables. Without the repository (no commit found to read
    .dvc/config and dvc.lock from) trace cannot tell DVC's files from git's: then every input
    table is a candidate, looked up by md5 on the stack's remote all the same. Only what the
    run itself recorded counts: a run without mlrig's tags lists its commit's dvc.lock data,
    which nothing proves it trained on."""
    tables = [
        d
        for d in record.data
        if d.source == "run"
        and d.role == "dep"
        and (PurePosixPath(d.path).suffix in TABLES or dvc_tables.is_dir(d.md5))
    ]
    if all(d.remote is None for d in record.data):
        return tables
    return [d for d in tables if d.remote is not None]


def load(
    record: ProvenanceRecord,
    outputs: StackOutputs,
    live_columns: list[str],
    logged_partitions: Callable[[], bytes | None] = lambda: None,
) -> Reference:
    """The input table of the run that best covers the live columns, read and md5-checked.
    logged_partitions: the run's mlrig/partitions.json (None when it logged none), read only
    when the run's partitioned snapshot is among the inputs."""
    run_id = record.the_run().id
    found = candidates(record)
    if not found:
        raise ConfigError(
            f"run {run_id} records no DVC-stored input table (dvc.dep.* tags of a .csv, "
            ".parquet or a directory of partitions): there is no training snapshot to "
            "compare with",
            hint="train through the pipeline (`dvc repro`), which records its inputs",
        )
    url = outputs.dvc_remote.url
    options = remote_local_options(outputs)

    def fetch(md5: str) -> bytes | None:
        return dvc.read_object(url, options, md5)

    best: Reference | None = None
    skipped: list[str] = []
    for item in found:
        try:
            table = dvc_tables.read_table(fetch, item.path, item.md5, url)
        except dvc_tables.NotPartitioned as exc:  # a directory, but of other files
            skipped.append(exc.message)
            continue
        except ConfigError as exc:
            message = f"the reference of run {run_id}: {exc.message}"
            raise ConfigError(message, hint=exc.hint) from exc
        if table.partitions and item.path == dvc_tables.SNAPSHOTS_DIR:
            logged = logged_partitions()
            problem = dvc_tables.partitions_problem(table, logged, run_id) if logged else None
            if problem:
                raise ServiceError(
                    problem,
                    hint="the run's record and the remote disagree: retrain, or `mlrig trace` it",
                )
        here = Reference(item.path, item.md5, table.frame, url, len(table.partitions))
        covered = len(set(table.frame.columns) & set(live_columns))
        if best is None or covered > len(set(best.frame.columns) & set(live_columns)):
            best = here
    if best is None:
        raise ConfigError(
            f"run {run_id} records no DVC-stored input table: {skipped[0]}",
            hint="train through the pipeline (`dvc repro`), which records its inputs",
        )
    return best
