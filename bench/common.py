"""What the benchmarks share: a throw-away MLRIG_HOME and its local stack's environment and
teardown, the UTC stamp that names a run, and where its results go.

Imported as `common`: each benchmark runs as `python bench/NAME/NAME_bench.py` and puts bench/
on sys.path first.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent  # the venv the benchmark runs in: mlrig, dvc, mlflow
MLRIG = str(BIN / "mlrig")


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call (the callers time whole commands in fresh processes)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sh(cwd: Path, *args: str, env: dict[str, str]) -> str:
    """Run a command; its stdout, or exit with the command and the tail of its output."""
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed: {(proc.stderr or proc.stdout)[-600:]}")
    return proc.stdout


def fresh_home(prefix: str) -> tuple[Path, dict[str, str]]:
    """A temporary folder and the environment that gives mlrig its own home in it."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        **os.environ,
        "MLRIG_HOME": str(home / "home"),
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    return home, env


def stack_env(cwd: Path, env: dict[str, str], stack: str = "local") -> dict[str, str]:
    """What `eval "$(mlrig stack env)"` gives a shell: its `export` lines as a dict."""
    out: dict[str, str] = {}
    for line in sh(cwd, MLRIG, "stack", "env", "--stack", stack, env=env).splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def tear_down(home: Path, env: dict[str, str], *, keep: bool = False) -> None:
    """Stop the local stack of a fresh_home (a run that failed before it was up has none to
    stop: its answer is not checked) and delete the home unless keep."""
    subprocess.run([MLRIG, "stack", "down", "--stack", "local"], env=env, capture_output=True)
    if not keep:
        shutil.rmtree(home, ignore_errors=True)


def utc_stamp(zulu: bool = True) -> str:
    """e.g. 20261126T134845Z: sorts by time, safe in a file name."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S" + ("Z" if zulu else ""))


def record(stem: str, doc: object, table: str) -> None:
    """Keep one run: results/STEM.json (every sample) and results/STEM.md (the table).
    MLRIG_BENCH_RESULTS=DIR writes them to DIR instead: a trial run is not the benchmark."""
    out = Path(os.environ.get("MLRIG_BENCH_RESULTS") or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table if table.endswith("\n") else table + "\n")
    print(f"recorded {out / stem}.json", file=sys.stderr)


def run_demo(home: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """`mlrig demo` in home/work as a whole command: its seconds and its summary (the steps,
    and the facts: repository, model, image ...) that later rows of a benchmark work on."""
    work = home / "work"
    print("setting up: mlrig demo (a few minutes) …", file=sys.stderr)
    seconds = timed(lambda: sh(home, MLRIG, "demo", "--workdir", str(work), env=env))
    return seconds, json.loads((work / "demo-summary.json").read_text())


# --- like-for-like rows: one schema every benchmark records and bench/report.py renders ---
# How a row was measured; the table prints it beside the figure.
WHOLE = "whole command"  # a fresh process per sample, spawned from here, spawn -> exit
# ... and alternated with its rivals sample by sample:
WHOLE_INTERLEAVED = "whole command, interleaved"
CLIENT = "client-side, from outside the server"  # a request timed by an HTTP client
IN_PROCESS = "in-process call (extra, not comparable to whole commands)"


def run_timed(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> float:
    """Wall seconds of one whole command in a fresh process (spawn -> exit); exits the benchmark
    with the command and the tail of its output when it fails (a failed sample is no sample)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {(proc.stderr or proc.stdout)[-800:]}")
    return seconds


def run_timed_output(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, str]:
    """run_timed, and the command's stdout (to check what it did, after the clock stopped)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {(proc.stderr or proc.stdout)[-800:]}")
    return seconds, proc.stdout


def interleave(
    contenders: dict[str, Callable[[int], float]],
    samples: int,
    before: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Sample i of every contender in turn (A B C, A B C, ...), so a machine that slows down
    slows all alike; `before(i)` prepares sample i (untimed), e.g. registers a new version."""
    out: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(samples):
        if before is not None:
            before(i)
        for name, sample in contenders.items():
            out[name].append(sample(i))
    return out


def row(
    label: str, tool: str, samples: list[float], *, unit: str = "s", method: str = WHOLE_INTERLEAVED
) -> dict[str, Any]:
    """One table row: median (what is quoted), min, max and every sample."""
    ordered = sorted(samples)
    return {
        "label": label,
        "tool": tool,
        "method": method,
        "unit": unit,
        "n": len(samples),
        "median": statistics.median(ordered) if ordered else None,
        "min": ordered[0] if ordered else None,
        "max": ordered[-1] if ordered else None,
        "samples": samples,
    }


def machine(packages: tuple[str, ...] = ("mlflow", "dvc", "docker")) -> dict[str, Any]:
    """What the figures were taken on: CPUs, memory, load, OS, Python, engine and versions."""
    from importlib import metadata

    import psutil

    engine = None
    with contextlib.suppress(Exception):
        from mlrig.adapters import docker as docker_adapter

        engine = str(docker_adapter.client().version().get("Version"))
    versions: dict[str, str] = {}
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "docker_engine": engine,
        "versions": versions,
    }


def markdown(rows: list[dict[str, Any]], fmt: str = "{:.2f}") -> str:
    """The rows as a Markdown table: median (min-max), n and how each was measured."""
    lines = ["| what | tool | median | min-max | n | measured as |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["median"] is None:
            continue
        unit = f" {r['unit']}" if r["unit"] else ""
        spread = f"{fmt.format(r['min'])}-{fmt.format(r['max'])}"
        lines.append(
            f"| {r['label']} | {r['tool']} | {fmt.format(r['median'])}{unit} | {spread} "
            f"| {r['n']} | {r['method']} |"
        )
    return "\n".join(lines)
