"""Stage 3: split the validated snapshot into train and test sets, stratified, keeping row
IDs, and refuse a split where a test row is also in train (the leakage check)."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from . import data, validate


def split(df: pd.DataFrame, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    clean = df.dropna().drop_duplicates(subset=[data.ID])
    train, test = train_test_split(
        clean, test_size=test_size, random_state=seed, stratify=clean[data.TARGET]
    )
    return train.sort_values(data.ID), test.sort_values(data.ID)


def main() -> None:
    p = data.params()["preprocess"]
    train, test = split(data.load_snapshot(), float(p["test_size"]), int(p["seed"]))
    validate.check_leakage(train, test)  # before anything is written: train never sees it
    data.PROCESSED.mkdir(parents=True, exist_ok=True)
    train.to_csv(data.TRAIN_CSV, index=False)
    test.to_csv(data.TEST_CSV, index=False)
    print(f"preprocess: {len(train)} train rows, {len(test)} test rows")


if __name__ == "__main__":
    main()
