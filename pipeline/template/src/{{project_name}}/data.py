"""Where the data lives and what it must look like (the raw CSV's schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
RAW_CSV = ROOT / "data" / "raw" / "breast_cancer.csv"
PROCESSED = ROOT / "data" / "processed"
TRAIN_CSV = PROCESSED / "train.csv"
TEST_CSV = PROCESSED / "test.csv"
MODELS = ROOT / "models"
MODEL_FILE = MODELS / "model.pkl"
RUN_FILE = MODELS / "mlflow_run.json"
METRICS_FILE = ROOT / "metrics.json"
PLOTS = ROOT / "plots"

ID = "id"
TARGET = "target"  # 1 = benign, 0 = malignant (scikit-learn's encoding)
N_FEATURES = 30


def params() -> dict[str, Any]:
    with open(ROOT / "params.yaml") as fh:
        return yaml.safe_load(fh)


def load_raw(path: Path = RAW_CSV) -> pd.DataFrame:
    return pd.read_csv(path)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (ID, TARGET)]
