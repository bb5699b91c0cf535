"""Features: the model's inputs, derived the same way at training and evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import data


def add_features(df: pd.DataFrame) -> pd.DataFrame:
    """Raw measurements plus two shape ratios that are scale-free."""
    out = df[data.feature_columns(df)].astype("float64").copy()
    out["compactness_ratio"] = out["mean_area"] / np.maximum(out["mean_perimeter"] ** 2, 1e-9)
    out["worst_to_mean_radius"] = out["worst_radius"] / np.maximum(out["mean_radius"], 1e-9)
    return out


def split_xy(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return add_features(df), df[data.TARGET].astype("int64")
