"""Temporal benchmark: the point-in-time (as-of) join of the temporal template, DuckDB's ASOF
JOIN (what preprocess runs) vs pandas' merge_asof on the same data, each a whole process
(read two parquet files, join, write the table), interleaved.

Set-up (untimed): LABELS labels (entity, label_time) over ENTITIES entities and FEATURES
feature rows (entity, available_at, f0..f9) over 120 days, random with a fixed seed, written
as parquet. Both contenders must agree on the joined rows and the sum of f0 (checked after
each sample; a disagreement stops the benchmark).

The DVC remote's growth under dated partitions is dvc_growth.py's (in this folder).

Run: .venv/bin/python bench/temporal/temporal_bench.py [--samples 5] [--labels 1000000]
     [--features 5000000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import interleave, machine, markdown, record, row, run_timed_output, utc_stamp

HERE = Path(__file__).resolve().parent
PY = sys.executable
N_VALUES = 10
DAYS = 120
TTL_HOURS = 14 * 24


def make_data(folder: Path, n_labels: int, n_features: int, entities: int) -> None:
    rng = np.random.default_rng(42)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    span = DAYS * 24 * 3600 * 1_000_000

    def times(n: int) -> pd.Series:
        offsets = rng.integers(0, span, n, dtype=np.int64).astype("timedelta64[us]")
        return pd.Series(start + offsets).dt.tz_localize("UTC")

    features = pd.DataFrame(
        {"entity": rng.integers(0, entities, n_features), "available_at": times(n_features)}
    )
    for i in range(N_VALUES):
        features[f"f{i}"] = rng.standard_normal(n_features)
    labels = pd.DataFrame(
        {"entity": rng.integers(0, entities, n_labels), "label_time": times(n_labels)}
    )
    # one row per (entity, time) key in each table, as preprocess requires
    features = features.drop_duplicates(subset=["entity", "available_at"])
    labels = labels.drop_duplicates(subset=["entity", "label_time"])
    features.to_parquet(folder / "features.parquet", index=False)
    labels.to_parquet(folder / "labels.parquet", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=5_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mlrig-temporal-bench-"))
    meta = {
        **machine(("duckdb", "pandas", "numpy", "pyarrow")),
        "labels": args.labels,
        "features": args.features,
        "entities": args.entities,
        "values": N_VALUES,
        "ttl_hours": TTL_HOURS,
    }
    try:
        print("setting up: writing the parquet files …", file=sys.stderr)
        make_data(folder, args.labels, args.features, args.entities)
        inputs = [str(folder / "labels.parquet"), str(folder / "features.parquet")]
        answers: dict[str, set[str]] = {"DuckDB ASOF JOIN": set(), "pandas merge_asof": set()}
        cpu: dict[str, list[float]] = {name: [] for name in answers}

        def contender(name: str, script: str):  # noqa: ANN202 - a sampler for interleave
            def sample(i: int) -> float:
                out = folder / f"{script}-{i}.parquet"
                argv = [PY, str(HERE / f"{script}.py"), *inputs, str(out), str(TTL_HOURS)]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                seconds, stdout = run_timed_output(argv)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(
                    after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                )
                answers[name].add(stdout.strip())
                out.unlink()
                return seconds

            return sample

        samples = interleave(
            {
                "DuckDB ASOF JOIN": contender("DuckDB ASOF JOIN", "asof_duckdb"),
                "pandas merge_asof": contender("pandas merge_asof", "asof_pandas"),
            },
            args.samples,
        )
        duck, pandas_ = answers["DuckDB ASOF JOIN"], answers["pandas merge_asof"]
        if len(duck) != 1 or duck != pandas_:
            raise SystemExit(f"the joins disagree: DuckDB {duck}, pandas {pandas_}")
        meta["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        meta["answer"] = next(iter(duck))
        what = (
            f"as-of join, {args.labels / 1e6:g}M labels x {args.features / 1e6:g}M feature rows "
            f"x {N_VALUES} features (parquet in, parquet out)"
        )
        rows = [row(what, tool, s) for tool, s in samples.items()]
        rows += [
            row(f"CPU time (user + system), {what}", tool, s, unit="CPU s")
            for tool, s in cpu.items()
        ]
        ratio = rows[1]["median"] / rows[0]["median"]
        summary = [
            f"both joins give {meta['answer']}; pandas / DuckDB = {ratio:.2f}x (medians); "
            f"goal: DuckDB <= 10 s on 2 CPUs: {'met' if rows[0]['median'] <= 10 else 'not met'} "
            f"(load average {meta['load_avg'][0]} at the start, {meta['load_avg_end'][0]} at the "
            "end: the CPUs were shared)"
        ]
        table = markdown(rows) + "\n\n" + "\n".join(summary)
        print(table)
        record(
            f"temporal-{utc_stamp()}",
            {"meta": meta, "rows": rows, "summary": summary},
            table,
        )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
