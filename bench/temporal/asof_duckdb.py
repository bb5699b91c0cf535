"""One whole as-of join on DuckDB, as the temporal template's preprocess runs it: each label
gets the entity's latest feature row available strictly before its time, within the TTL.

    python asof_duckdb.py LABELS.parquet FEATURES.parquet OUT.parquet TTL_HOURS
Prints `rows <joined rows> checksum <sum of f0>` after writing OUT.
"""

from __future__ import annotations

import sys

import duckdb


def main() -> None:
    labels, features, out, ttl_hours = sys.argv[1:5]
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE joined AS SELECT l.*, f.* EXCLUDE (entity) "
        "FROM read_parquet(?) l ASOF JOIN read_parquet(?) f "
        "ON l.entity = f.entity AND l.label_time > f.available_at "
        "WHERE f.available_at >= l.label_time - to_hours(?)",
        [labels, features, int(ttl_hours)],
    )
    con.execute("COPY joined TO ? (FORMAT parquet)", [out])
    rows, checksum = con.execute("SELECT count(*), sum(f0) FROM joined").fetchone()
    print(f"rows {rows} checksum {checksum:.4f}")


if __name__ == "__main__":
    main()
