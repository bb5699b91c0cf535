"""Where the data lives: the bundled source, the ingested snapshot every later stage reads,
the split, the model and the reports."""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # pandas is imported where a table is read: ingest's no-change path skips it
    import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
RAW_CSV = ROOT / "data" / "raw" / "breast_cancer.csv"  # the bundled source (ingest.source)
SNAPSHOT = ROOT / "data" / "snapshot"
SNAPSHOT_CSV = SNAPSHOT / "data.csv"  # written by ingest, read by validate and preprocess
RECORD_FILE = SNAPSHOT / "record.json"  # {source, ingested_at, rows, md5}: kept in git
QUALITY_FILE = ROOT / "metrics" / "data_quality.json"
PROCESSED = ROOT / "data" / "processed"
TRAIN_CSV = PROCESSED / "train.csv"
TEST_CSV = PROCESSED / "test.csv"
MODELS = ROOT / "models"
MODEL_FILE = MODELS / "model.pkl"
RUN_FILE = MODELS / "mlflow_run.json"
METRICS_FILE = ROOT / "metrics.json"
GATE_FILE = ROOT / "gate.json"
PLOTS = ROOT / "plots"

ID = "id"
TARGET = "target"  # 1 = benign, 0 = malignant (scikit-learn's encoding)
N_FEATURES = 30


def params() -> dict[str, Any]:
    with open(ROOT / "params.yaml") as fh:
        return yaml.safe_load(fh)


def read_csv(path: Path | IO[bytes]) -> pd.DataFrame:
    """Floats parsed so that writing them back gives the same text."""
    import pandas as pd

    # pandas 3 parses floats round-trip by default (and deprecates asking for it)
    round_trip: dict[str, Any] = (
        {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    )
    return pd.read_csv(path, **round_trip)


def load_raw(path: Path = RAW_CSV) -> pd.DataFrame:
    return read_csv(path)


def load_snapshot(path: Path = SNAPSHOT_CSV) -> pd.DataFrame:
    return read_csv(path)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (ID, TARGET)]
