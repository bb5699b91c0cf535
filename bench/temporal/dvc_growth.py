"""DVC remote growth benchmark: ten daily retrains' ingest on a source growing 1 % a day, the
template's partitioned snapshots (only rows newer than the watermark, one parquet partition
a day) beside its single-table mode (one canonical CSV rewritten each day), each day's
`dvc repro ingest` and `dvc push` to a local remote directory as whole commands in fresh
processes, the two repositories interleaved day by day.

Set-up (untimed): ROWS events (id, event_time ISO 8601 UTC, 8 numbers, a category) with a
fixed seed; both repositories are rendered from the packaged template (mlrig's copier
adapter, no stack: only ingest runs) with the source an absolute path outside them, ingest
day 0 and push. Then each day the source gains 1 % new rows, later than every row before.

Measured per day and mode: bytes added to the remote (every file under it) and the wall time
of `dvc repro ingest` + `dvc push`; beside them the bytes of the new rows alone, as a parquet
file written the way a partition is (pandas, pyarrow defaults). Goal: partitioned mode adds
at most 1.5x the new rows' bytes over the ten days.

Run: .venv/bin/python bench/temporal/dvc_growth.py [--rows 1000000] [--days 10] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import BIN, machine, markdown, record, row, run_timed, sh, utc_stamp

MODES = ("partitioned", "table")
SIZED = "bytes under the remote directory after `dvc push`, day by day"
NEW_ROWS = "the day's new rows written alone as parquet (pandas, pyarrow defaults)"
TOOLS = {"partitioned": "partitioned snapshots", "table": "single table (the default)"}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def events(first: int, count: int, seed: int) -> pd.DataFrame:
    """count events with ids from first, one a minute after 2026-01-01 in id order."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + count)
    times = np.datetime64("2026-01-01T00:00:00", "s") + ids.astype("timedelta64[m]")
    frame = pd.DataFrame(
        {"id": ids, "event_time": np.datetime_as_string(times, unit="s").astype(object)}
    )
    frame["event_time"] = frame["event_time"] + "Z"
    for i in range(8):
        frame[f"x{i}"] = rng.standard_normal(count).round(4)
    frame["segment"] = rng.choice(np.array(["a", "b", "c", "d"]), count)
    return frame


def mb(values: list[float]) -> list[float]:
    return [v / 1e6 for v in values]


def remote_bytes(remote: Path) -> int:
    return sum(f.stat().st_size for f in remote.rglob("*") if f.is_file())


def make_repo(base: Path, mode: str, source: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """A rendered repository in `mode` with its own local DVC remote; (repo, remote)."""
    from mlrig.adapters import copier
    from mlrig.core.bootstrap import init as bootstrap

    template, ref = bootstrap.template_repo()
    repo, remote = base / f"repo-{mode}", base / f"remote-{mode}"
    answers = {"project_name": "growth", "stack": "bench", "snapshots": mode}
    copier.render(template, ref, repo, answers)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)
    if mode == "partitioned":
        params["ingest"].update(watermark="event_time", keys=None)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "init", "-q", "-b", "main", env=env)
    sh(repo, str(BIN / "dvc"), "init", "-q", env=env)
    sh(repo, str(BIN / "dvc"), "remote", "add", "-d", "local", str(remote), env=env)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-q", "-m", "init", env=env)
    return repo, remote


def one_day(repo: Path, env: dict[str, str]) -> float:
    """`dvc repro ingest` then `dvc push`, each a whole command; then commit (untimed)."""
    seconds = run_timed([str(BIN / "dvc"), "repro", "ingest"], env=env, cwd=repo)
    seconds += run_timed([str(BIN / "dvc"), "push", "-q"], env=env, cwd=repo)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-q", "-m", "ingest", "--allow-empty", env=env)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--growth", type=float, default=0.01)
    parser.add_argument("--keep", action="store_true", help="keep the repositories")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mlrig-dvc-growth-"))
    os.environ["MLRIG_HOME"] = str(base / "home")  # the template history lives there
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    meta: dict[str, Any] = {
        **machine(("dvc", "pandas", "pyarrow")),
        "rows": args.rows,
        "days": args.days,
        "growth": args.growth,
    }
    try:
        print("setting up: the source and both repositories …", file=sys.stderr)
        source = base / "source.csv"
        table = events(1, args.rows, seed=0)
        table.to_csv(source, index=False)
        repos = {mode: make_repo(base, mode, source, env) for mode in MODES}
        for repo, _remote in repos.values():
            one_day(repo, env)  # day 0: the first snapshot, pushed
        start = {mode: remote_bytes(remote) for mode, (_repo, remote) in repos.items()}
        meta["day0_remote_bytes"] = start
        added: dict[str, list[float]] = {mode: [] for mode in MODES}
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        new_bytes: list[float] = []
        for day in range(1, args.days + 1):
            count = round(len(table) * args.growth)
            new = events(len(table) + 1, count, seed=day)
            table = pd.concat([table, new], ignore_index=True)
            table.to_csv(source, index=False)
            probe = base / "new-rows.parquet"
            new.to_parquet(probe, index=False)
            new_bytes.append(probe.stat().st_size)
            order = MODES if day % 2 else MODES[::-1]  # interleaved: who goes first alternates
            for mode in order:
                repo, remote = repos[mode]
                before = remote_bytes(remote)
                seconds[mode].append(one_day(repo, env))
                added[mode].append(remote_bytes(remote) - before)
            print(
                f"day {day}: {count} new rows ({new_bytes[-1] / 1e6:.2f} MB as parquet); remote "
                + ", ".join(f"{m} +{added[m][-1] / 1e6:.2f} MB" for m in MODES),
                file=sys.stderr,
            )
        meta["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        grew = f"{args.rows / 1e6:g}M rows growing {args.growth:.0%} a day"
        rows = [
            row(
                f"MB added to the DVC remote per day, {grew}",
                TOOLS[m],
                mb(added[m]),
                unit="MB",
                method=SIZED,
            )
            for m in MODES
        ]
        rows.append(
            row(
                f"MB of the day's new rows (parquet), {grew}",
                "-",
                mb(new_bytes),
                unit="MB",
                method=NEW_ROWS,
            )
        )
        rows += [
            row(f"`dvc repro ingest` + `dvc push`, one day, {grew}", TOOLS[m], seconds[m])
            for m in MODES
        ]
        ratio = {m: sum(added[m]) / sum(new_bytes) for m in MODES}
        met = "met" if ratio["partitioned"] <= 1.5 else "not met"
        summary = [
            f"over {args.days} days the remote grew by {sum(added['partitioned']) / 1e6:.1f} MB "
            f"partitioned ({ratio['partitioned']:.2f}x the new rows' {sum(new_bytes) / 1e6:.1f} "
            f"MB of parquet; goal <= 1.5x: {met}) and {sum(added['table']) / 1e6:.1f} MB as a "
            f"single table ({ratio['table']:.1f}x); load average {meta['load_avg'][0]} at the "
            f"start, {meta['load_avg_end'][0]} at the end (the 2 CPUs were shared: times are noisy)"
        ]
        meta["ratio"] = ratio
        table_md = markdown(rows) + "\n\n" + "\n".join(summary)
        print(table_md)
        record(
            f"dvc-growth-{utc_stamp()}", {"meta": meta, "rows": rows, "summary": summary}, table_md
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
