"""The same as-of join with pandas' merge_asof (backward, by entity, no exact matches: the
value must be available strictly before the label time; tolerance = the TTL).

    python asof_pandas.py LABELS.parquet FEATURES.parquet OUT.parquet TTL_HOURS
Prints `rows <joined rows> checksum <sum of f0>` after writing OUT.
"""

from __future__ import annotations

import sys

import pandas as pd


def main() -> None:
    labels_file, features_file, out, ttl_hours = sys.argv[1:5]
    labels = pd.read_parquet(labels_file).sort_values("label_time", kind="stable")
    features = pd.read_parquet(features_file).sort_values("available_at", kind="stable")
    joined = pd.merge_asof(
        labels,
        features,
        left_on="label_time",
        right_on="available_at",
        by="entity",
        direction="backward",
        allow_exact_matches=False,
        tolerance=pd.Timedelta(hours=int(ttl_hours)),
    ).dropna(subset=["available_at"])
    joined.to_parquet(out, index=False)
    print(f"rows {len(joined)} checksum {joined['f0'].sum():.4f}")


if __name__ == "__main__":
    main()
