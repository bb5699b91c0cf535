"""Remote retrain benchmark: `mlrig retrain --remote` on the local compute backend (a container
on the local engine) vs `mlrig retrain` in-process, on the same repository and new rows, plus
the trainer image's size and build time.

Set-up (untimed): a fresh MLRIG_HOME, `mlrig stack up --local`, `mlrig init benchrig`, its
`ingest.source` a CSV in the stack's storage (remote://storage/..., which a task can read),
the first model trained in-process.

Rows:
- new rows -> registered version: sample i of each in turn (local, remote, remote at the
  in-process run's CPU count, local, …),
  each after 30 new rows (untimed), all whole commands in fresh processes, `--no-push-image`;
- submit -> first log line: in each remote sample, from the command's "submitted task" line
  to the task's first line ("• cloning …"), both read from its stderr as it streams;
- `--images`: the repository's trainer image's size, and the time `retrain --remote`'s first
  run spends building and pushing it (measured in a fresh home: a new registry; the engine's
  layer cache as it is), n = 1.

Run: .venv/bin/python bench/compute/compute_bench.py [--samples 3] [--images] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    IN_PROCESS,
    MLRIG,
    WHOLE,
    WHOLE_INTERLEAVED,
    fresh_home,
    interleave,
    machine,
    markdown,
    record,
    row,
    sh,
    tear_down,
    utc_stamp,
)

NEW_ROWS = 30
PROJECT = "benchrig"
SOURCE = "remote://storage/incoming/patients.csv"
GOAL_FIRST_LINE_S = 10.0
GOAL_RATIO = 1.3
CPUS = min(os.cpu_count() or 1, 16)  # a like-for-like task: the in-process run's CPUs


def set_up(home: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """The stack, the repository reading SOURCE, its first model; (repo, source file)."""
    import yaml

    from mlrig import contract

    sh(home, MLRIG, "stack", "up", "--local", env=env)
    work = home / "work"
    work.mkdir()
    sh(work, MLRIG, "init", PROJECT, "--stack", "local", "--no-input", env=env)
    repo = work / PROJECT
    os.environ["MLRIG_HOME"] = env["MLRIG_HOME"]
    storage = Path(contract.load("local").dvc_remote_url)
    source = storage / "incoming" / "patients.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes((repo / "data/raw/breast_cancer.csv").read_bytes())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(
        text.replace(f"source: {params['ingest']['source']}", f"source: {SOURCE}", 1)
    )
    sh(repo, "git", "commit", "-qam", "Read the patients export from the stack", env=env)
    sh(repo, MLRIG, "retrain", "--no-push-image", env=env)
    return repo, source


def remote_sample(
    repo: Path, env: dict[str, str], size: tuple[str, ...] = ()
) -> tuple[float, float]:
    """(whole command seconds, submitted -> first task line seconds) of one --remote run."""
    argv = [MLRIG, "retrain", "--remote", *size, "--no-push-image", "--json", "--repo", str(repo)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    submitted = first = None
    assert proc.stderr is not None
    for line in proc.stderr:
        now = time.perf_counter()
        if submitted is None and "submitted task" in line:
            submitted = now
        elif submitted is not None and first is None and line.strip():
            first = now
    out = proc.stdout.read() if proc.stdout else ""
    seconds = time.perf_counter() - start
    if proc.wait() != 0 or submitted is None or first is None:
        raise SystemExit(f"retrain --remote failed: {out[-800:]}")
    if not json.loads(out.strip().splitlines()[-1])["version"]:
        raise SystemExit(f"retrain --remote registered no version: {out[-400:]}")
    return seconds, first - submitted


def image_rows(repo: Path) -> list[dict[str, Any]]:
    """The repository's trainer image built and pushed for a new project (its own tag, a fresh
    registry; the engine's layer cache as it is, so a dependency layer another build made is
    reused), n = 1, and its size as the engine reports it."""
    from mlrig import contract
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.compute import image as task_image

    outputs = contract.load("local")
    tag = task_image.image_tag(PROJECT, (repo / "requirements.txt").read_bytes())
    start = time.perf_counter()
    task_image.build(repo, PROJECT, outputs)
    seconds = time.perf_counter() - start
    size = docker_adapter.client().images.get(tag).attrs["Size"] / 1e6
    label = "the repository's trainer image (`retrain --remote`)"
    return [
        row(f"{label}: build and push", "mlrig", [seconds], method=IN_PROCESS),
        row(f"{label}: size", "engine", [size], unit="MB", method="docker image inspect"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument(
        "--images", action="store_true", help="also build the trainer image in a fresh registry"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    meta: dict[str, Any] = {**machine(), "samples": args.samples, "new_rows_per_sample": NEW_ROWS}
    meta["load_avg_before"] = [round(x, 2) for x in os.getloadavg()]
    home, env = fresh_home("mlrig-compute-bench-")
    first_lines: list[float] = []
    try:
        repo, source = set_up(home, env)
        from mlrig.core.demo.retrain import append_rows

        def local(_i: int) -> float:
            append_rows(source, NEW_ROWS)
            start = time.perf_counter()
            sh(repo, MLRIG, "retrain", "--no-push-image", "--json", env=env)
            return time.perf_counter() - start

        def remote(_i: int) -> float:
            append_rows(source, NEW_ROWS)
            seconds, first = remote_sample(repo, env)
            first_lines.append(first)
            return seconds

        def remote_like(_i: int) -> float:  # the CPUs the in-process run has
            append_rows(source, NEW_ROWS)
            return remote_sample(repo, env, ("--cpu", str(CPUS)))[0]

        extra = image_rows(repo) if args.images else []  # before the first --remote builds it
        remote(-1)  # untimed: the first --remote builds and pushes the image (or reuses it)
        first_lines.clear()
        samples = interleave(
            {
                "`mlrig retrain` (in-process)": local,
                "`mlrig retrain --remote` (1 vCPU, the default)": remote,
                f"`mlrig retrain --remote --cpu {CPUS}` (this machine's CPUs)": remote_like,
            },
            args.samples,
        )
    finally:
        tear_down(home, env, keep=args.keep)
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    what = "new rows -> registered version"
    rows = [row(what, tool, s, method=WHOLE_INTERLEAVED) for tool, s in samples.items()]
    rows.append(row("submit -> first log line", "local compute backend", first_lines, method=WHOLE))
    rows += extra
    default_ratio = rows[1]["median"] / rows[0]["median"]
    ratio = rows[2]["median"] / rows[0]["median"]
    first = rows[3]["median"]
    summary = [
        f"goal: submit -> first log line <= {GOAL_FIRST_LINE_S:g} s: {first:.1f} s, "
        + ("met" if first <= GOAL_FIRST_LINE_S else "not met"),
        f"goal: `retrain --remote` <= {GOAL_RATIO:g}x in-process, the task given the CPUs the "
        f"in-process run has ({CPUS}): {ratio:.2f}x, "
        + ("met" if ratio <= GOAL_RATIO else "not met")
        + f"; at the default 1 vCPU: {default_ratio:.2f}x",
        "2 CPUs shared with other work: see the load averages; noisy",
    ]
    table = markdown(rows) + "\n\n" + "".join(f"- {line}\n" for line in summary)
    print(table)
    record(f"compute-{utc_stamp()}", {"meta": meta, "rows": rows, "summary": summary}, table)


if __name__ == "__main__":
    main()
