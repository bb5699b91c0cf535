"""Repo bootstrap benchmark: `mlrig init` vs the same steps by hand with the reference CLIs
(copier copy, git init, dvc init, dvc remote add, dvc add, git commit), then the first
`dvc repro` of the template against a real local stack, and a no-op second repro.

Run: .venv/bin/python bench/init_bench.py [--samples 5] [--repro-samples 2]
Starts a local stack in a temporary MLRIG_HOME and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import record, utc_stamp

BIN = Path(sys.executable).parent


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cwd: Path, *args: str, env: dict[str, str]) -> None:
    subprocess.run(list(args), cwd=cwd, env=env, check=True, capture_output=True)


def by_hand(dest: Path, template: Path, ref: str, remote: str, env: dict[str, str]) -> None:
    """What a user types without mlrig (the dataset copy stands in for writing the CSV)."""
    from mlrig.core import bootstrap

    run(
        dest.parent,
        str(BIN / "copier"),
        "copy",
        "--defaults",
        "--quiet",
        "--vcs-ref",
        ref,
        "-d",
        f"project_name={dest.name}",
        "-d",
        "stack=local",
        str(template),
        str(dest),
        env=env,
    )
    bootstrap.write_dataset(dest / bootstrap.RAW_DATA)
    run(dest, "git", "init", "-q", "-b", "main", env=env)
    run(dest, str(BIN / "dvc"), "init", "-q", env=env)
    run(dest, str(BIN / "dvc"), "config", "core.analytics", "false", env=env)
    run(dest, str(BIN / "dvc"), "remote", "add", "-d", "storage", remote, env=env)
    run(dest, str(BIN / "dvc"), "add", "-q", bootstrap.RAW_DATA, env=env)
    run(dest, "git", "add", "--all", env=env)
    run(dest, "git", "commit", "-qm", "init", env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repro-samples", type=int, default=2)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlrig-init-bench-"))
    os.environ["MLRIG_HOME"] = str(home)
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    from mlrig.core import bootstrap
    from mlrig.core.local_stack import LocalStack

    stack = LocalStack("local")
    outputs = stack.up()
    samples: dict[str, list[float]] = {
        "mlrig init (CLI)": [],
        "by hand (copier+git+dvc)": [],
        "first dvc repro": [],
        "second dvc repro (no-op)": [],
    }
    try:
        template, ref = bootstrap.template_repo()
        work = home / "work"
        work.mkdir()
        for i in range(args.samples):
            samples["mlrig init (CLI)"].append(
                timed(
                    lambda i=i: run(
                        work,
                        str(BIN / "mlrig"),
                        "init",
                        f"cli{i}",
                        "--stack",
                        "local",
                        "--no-input",
                        env=env,
                    )
                )
            )
            samples["by hand (copier+git+dvc)"].append(
                timed(
                    lambda i=i: by_hand(
                        work / f"hand{i}", template, ref, outputs.dvc_remote.url, env
                    )
                )
            )
        for i in range(args.repro_samples):
            repo = work / f"cli{i}"
            samples["first dvc repro"].append(
                timed(lambda repo=repo: run(repo, str(BIN / "dvc"), "repro", env=env))
            )
            samples["second dvc repro (no-op)"].append(
                timed(lambda repo=repo: run(repo, str(BIN / "dvc"), "repro", env=env))
            )
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)

    load = os.getloadavg()[0]
    lines = [
        f"# mlrig init benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load {load:.1f})",
        "",
        "| step | median s | min s | max s | n |",
        "|---|---|---|---|---|",
    ]
    for name, values in samples.items():
        lines.append(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {len(values)} |"
        )
    table = "\n".join(lines)
    print(table)
    record(
        f"init_{utc_stamp(zulu=False)}",
        {"samples": samples, "load": load, "python": platform.python_version()},
        table,
    )


if __name__ == "__main__":
    main()
