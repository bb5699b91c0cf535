"""What the benchmarks share: the UTC stamp that names a run, and where its results go.

Imported as `common` (each script runs as `python bench/NAME.py`, so bench/ is on sys.path).
"""

from __future__ import annotations

import json
import os
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


def utc_stamp(zulu: bool = True) -> str:
    """e.g. 20261126T134845Z: sorts by time, safe in a file name."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S" + ("Z" if zulu else ""))


def record(stem: str, doc: object, table: str) -> None:
    """Keep one run: results/STEM.json (every sample) and results/STEM.md (the table)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table if table.endswith("\n") else table + "\n")


def run_demo(home: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """`mlrig demo` in home/work as a whole command: its seconds and its summary (the steps,
    and the facts: repository, model, image ...) that later rows of a benchmark work on."""
    work = home / "work"
    print("setting up: mlrig demo (a few minutes) …", file=sys.stderr)
    seconds = timed(lambda: sh(home, MLRIG, "demo", "--workdir", str(work), env=env))
    return seconds, json.loads((work / "demo-summary.json").read_text())
