"""The reference: the exact DVC-tracked data the served version was trained on, found through
provenance (its run's `dvc.dep.*` md5s) and read from the stack's DVC remote by md5. No
baseline job, no copy: the bytes are checked against the md5 the run recorded.

Which file: of the train run's inputs that DVC stores, the tables (CSV or Parquet); when there
are several, the one holding most of the live columns. In the generated repo that is
`data/processed/train.csv`, preprocess's output and train's input: the rows the model was
fitted on, in the raw feature columns the requests carry (plus the ID and the target).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from mlrig.adapters import dvc
from mlrig.contract import StackOutputs
from mlrig.core.bootstrap.repo import remote_local_options
from mlrig.core.provenance.record import DataRecord, ProvenanceRecord
from mlrig.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    import pandas as pd

TABLES = (".csv", ".parquet")


@dataclass(frozen=True)
class Reference:
    path: str
    md5: str
    frame: pd.DataFrame
    remote: str


def candidates(record: ProvenanceRecord) -> list[DataRecord]:
    """The run's DVC-stored input tables. Without the repository (no commit found to read
    .dvc/config and dvc.lock from) trace cannot tell DVC's files from git's: then every input
    table is a candidate, looked up by md5 on the stack's remote all the same. Only what the
    run itself recorded counts: a run without mlrig's tags lists its commit's dvc.lock data,
    which nothing proves it trained on."""
    tables = [
        d
        for d in record.data
        if d.source == "run" and d.role == "dep" and PurePosixPath(d.path).suffix in TABLES
    ]
    if all(d.remote is None for d in record.data):
        return tables
    return [d for d in tables if d.remote is not None]


def parse_table(path: str, data: bytes) -> pd.DataFrame:
    import pandas as pd

    try:
        if path.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad table
        raise ConfigError(
            f"the reference {path} is not a table pandas reads ({type(exc).__name__})"
        ) from exc


def load(record: ProvenanceRecord, outputs: StackOutputs, live_columns: list[str]) -> Reference:
    """The input table of the run that best covers the live columns, read and md5-checked."""
    run_id = record.the_run().id
    found = candidates(record)
    if not found:
        raise ConfigError(
            f"run {run_id} records no DVC-stored input table (dvc.dep.* tags of a .csv "
            "or .parquet): there is no training snapshot to compare with",
            hint="train through the pipeline (`dvc repro`), which records its inputs",
        )
    url = outputs.dvc_remote.url
    options = remote_local_options(outputs)
    best: Reference | None = None
    for item in found:
        data = dvc.read_object(url, options, item.md5)
        if data is None:
            raise ConfigError(
                f"the reference {item.path} (md5 {item.md5}) of run {run_id} is missing "
                f"from the DVC remote {url}",
                hint="push it from the commit that trained the version: `dvc push`",
            )
        if hashlib.md5(data, usedforsecurity=False).hexdigest() != item.md5:
            raise ServiceError(
                f"the DVC remote {url} holds other bytes than md5 {item.md5} for {item.path}",
                hint="the remote's copy is damaged: push it again from the commit (`dvc push`)",
            )
        frame = parse_table(item.path, data)
        here = Reference(item.path, item.md5, frame, url)
        covered = len(set(frame.columns) & set(live_columns))
        if best is None or covered > len(set(best.frame.columns) & set(live_columns)):
            best = here
    assert best is not None
    return best
