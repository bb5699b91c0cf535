"""Provenance benchmark: `mlrig trace` and `mlrig checkout` against the same steps done by hand
with docker, mlflow, git and dvc, every figure a whole command in a fresh process, the two
sides interleaved sample by sample in one run.

Set-up (not timed): `mlrig demo` in a temporary MLRIG_HOME — a local stack, the demo repo with
a committed repro and two pushed experiments, and the best model's image built and pushed.

- trace: `mlrig trace <pushed image digest>` vs by hand: read the image's labels
  (`docker image inspect`), the run (`mlflow runs describe`), the model version
  (`mlflow` REST through curl would need the password on the command line, so the registry
  lookup is left out of the by-hand side: it is the cheaper of the two), and the commit's
  dvc.lock (`git show`). The by-hand side knows the answers in advance (it is given the run id
  and commit); mlrig finds them.
- checkout: `mlrig checkout <model> --into DIR` (worktree, data pulled from the DVC remote,
  every hash verified) vs by hand: `git worktree add --detach`, copy .dvc/config.local,
  `dvc pull` — no verification.

Run: .venv/bin/python bench/provenance_bench.py [--samples 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from common import BIN, MLRIG, fresh_home, record, run_demo, sh, timed, utc_stamp


def version(*cmd: str) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    home, env = fresh_home("mlrig-prov-bench-")
    _, summary = run_demo(home, env)
    facts = summary["facts"]
    repo = Path(facts["repository"])
    pushed, image = facts["pushed"], facts["image"]
    model = facts["model"].split(" ", 1)[0]
    traced = json.loads(sh(repo, MLRIG, "trace", pushed, "--json", env=env))
    run_id, sha = traced["run"]["id"], traced["code"]["restore_point"]["sha"]
    client = {  # what `eval "$(mlrig stack env)"` gives a shell
        line.split("=", 1)[0].removeprefix("export "): line.split("=", 1)[1].strip("'\"")
        for line in sh(repo, MLRIG, "stack", "env", env=env).splitlines()
        if "=" in line
    }
    hand_env = {**env, **client}

    def trace_by_hand() -> None:
        sh(
            repo,
            "docker",
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            image,
            env=env,
        )
        sh(repo, str(BIN / "mlflow"), "runs", "describe", "--run-id", run_id, env=hand_env)
        sh(repo, "git", "show", f"{sha}:dvc.lock", env=env)

    def checkout_by_hand(dest: Path) -> None:
        sh(repo, "git", "worktree", "add", "--quiet", "--detach", str(dest), sha, env=env)
        shutil.copy(repo / ".dvc" / "config.local", dest / ".dvc" / "config.local")
        sh(dest, str(BIN / "dvc"), "pull", "--quiet", env=hand_env)

    def clean(dest: Path) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(dest)],
            capture_output=True,
        )
        shutil.rmtree(dest, ignore_errors=True)

    rows: dict[str, list[float]] = {
        "mlrig trace DIGEST": [],
        "by hand: docker inspect + mlflow runs describe + git show": [],
        "mlrig checkout MODEL --into DIR (verified)": [],
        "by hand: git worktree add + dvc pull (unverified)": [],
    }
    names = list(rows)
    try:
        for i in range(args.samples):
            rows[names[0]].append(timed(lambda: sh(repo, MLRIG, "trace", pushed, env=env) and None))
            rows[names[1]].append(timed(trace_by_hand))
            a, b = home / f"mlrig-{i}", home / f"hand-{i}"
            rows[names[2]].append(
                timed(
                    lambda a=a: (
                        sh(repo, MLRIG, "checkout", model, "--into", str(a), env=env) and None
                    )
                )
            )
            rows[names[3]].append(timed(lambda b=b: checkout_by_hand(b)))
            clean(a)
            clean(b)
    finally:
        subprocess.run([MLRIG, "stack", "down"], env=env, capture_output=True)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    meta: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "git": version("git", "--version"),
        "dvc": version(str(BIN / "dvc"), "--version"),
        "mlflow": version(str(BIN / "python"), "-c", "import mlflow; print(mlflow.__version__)"),
        "samples": args.samples,
    }
    lines = [
        f"# Provenance: trace and checkout ({utc_stamp()}, {meta['cpus']} CPUs, load "
        f"{meta['load']}, Python {meta['python']}, {meta['dvc'].split()[-1]} DVC, "
        f"MLflow {meta['mlflow']})",
        "",
        "Every figure is a whole command in a fresh process, the rows interleaved per sample.",
        "",
        "| command | median s | min s | max s | n |",
        "|---|---|---|---|---|",
    ]
    for name, xs in rows.items():
        lines.append(
            f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} | {len(xs)} |"
        )
    table = "\n".join(lines)
    print(table)
    record(f"provenance-{utc_stamp()}", {"meta": meta, "samples": rows}, table)


if __name__ == "__main__":
    main()
