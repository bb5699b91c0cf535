"""Provenance benchmark: `mlrig trace` and `mlrig checkout` against the same steps done by hand
with docker, mlflow, git and dvc, every figure a whole command in a fresh process, the two
sides interleaved sample by sample in one run.

Set-up (its own row, outside the others): `mlrig demo` in a temporary MLRIG_HOME — a local
stack, the demo repo with a committed repro and two pushed experiments, and the best model's
image built and pushed.

- trace: `mlrig trace <pushed image digest>` vs by hand: read the image's labels
  (`docker image inspect`), the run (`mlflow runs describe`), the model version
  (`mlflow` REST through curl would need the password on the command line, so the registry
  lookup is left out of the by-hand side: it is the cheaper of the two), and the commit's
  dvc.lock (`git show`). The by-hand side knows the answers in advance (it is given the run id
  and commit); mlrig finds them.
- checkout: `mlrig checkout <model> --into DIR` (worktree, data pulled from the DVC remote,
  every hash verified) vs by hand: `git worktree add --detach`, `cp .dvc/config.local`,
  `dvc pull` — no verification.

The by-hand figures are the sum of their commands, each a whole command. Sample i of the four
rows in turn (A B C D, A B C D, ...). The `mlrig demo` set-up is one more row: one whole
command, n = 1 (it takes minutes).

Run: .venv/bin/python bench/provenance/provenance_bench.py [--samples 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    BIN,
    MLRIG,
    WHOLE,
    WHOLE_INTERLEAVED,
    fresh_home,
    interleave,
    machine,
    markdown,
    record,
    row,
    run_demo,
    run_timed,
    sh,
    stack_env,
    tear_down,
    utc_stamp,
)


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
    meta: dict[str, Any] = {
        **machine(),
        "git": version("git", "--version"),
        "samples": args.samples,
    }

    home, env = fresh_home("mlrig-prov-bench-")
    demo_seconds, summary = run_demo(home, env)
    facts = summary["facts"]
    repo = Path(facts["repository"])
    pushed, image = facts["pushed"], facts["image"]
    model = facts["model"].split(" ", 1)[0]
    traced = json.loads(sh(repo, MLRIG, "trace", pushed, "--json", env=env))
    run_id, sha = traced["run"]["id"], traced["code"]["restore_point"]["sha"]
    hand_env = {**env, **stack_env(repo, env)}
    dvc, mlflow = str(BIN / "dvc"), str(BIN / "mlflow")

    def clean(dest: Path) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(dest)],
            capture_output=True,
        )
        shutil.rmtree(dest, ignore_errors=True)

    def trace(_i: int) -> float:
        return run_timed([MLRIG, "trace", pushed], env=env, cwd=repo)

    def trace_by_hand(_i: int) -> float:
        commands = [
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
            [mlflow, "runs", "describe", "--run-id", run_id],
            ["git", "show", f"{sha}:dvc.lock"],
        ]
        return sum(run_timed(argv, env=hand_env, cwd=repo) for argv in commands)

    def checkout(i: int) -> float:
        dest = home / f"mlrig-{i}"
        seconds = run_timed([MLRIG, "checkout", model, "--into", str(dest)], env=env, cwd=repo)
        clean(dest)
        return seconds

    def checkout_by_hand(i: int) -> float:
        dest = home / f"hand-{i}"
        seconds = run_timed(
            ["git", "worktree", "add", "--quiet", "--detach", str(dest), sha], env=env, cwd=repo
        )
        seconds += run_timed(
            ["cp", str(repo / ".dvc" / "config.local"), str(dest / ".dvc" / "config.local")],
            env=env,
            cwd=repo,
        )
        seconds += run_timed([dvc, "pull", "--quiet"], env=hand_env, cwd=dest)
        clean(dest)
        return seconds

    contenders = [  # (what, tool, one sample)
        ("image digest -> run, model version, commit, data", "`mlrig trace DIGEST`", trace),
        (
            "image digest -> run, model version, commit, data",
            "by hand: `docker image inspect` + `mlflow runs describe` + `git show`",
            trace_by_hand,
        ),
        (
            "model -> worktree with its data",
            "`mlrig checkout MODEL --into DIR` (verified)",
            checkout,
        ),
        (
            "model -> worktree with its data",
            "by hand: `git worktree add` + `cp` + `dvc pull` (unverified)",
            checkout_by_hand,
        ),
    ]
    try:
        samples = interleave({tool: fn for _, tool, fn in contenders}, args.samples)
    finally:
        tear_down(home, env, keep=args.keep)

    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = [
        row(what, tool, samples[tool], method=WHOLE_INTERLEAVED) for what, tool, _ in contenders
    ]
    rows.append(
        row(
            "set-up: `mlrig demo` (fresh home, stack start included)",
            "mlrig",
            [demo_seconds],
            method=WHOLE,
        )
    )
    summary_lines = [
        "the by-hand trace is given the run id and commit; mlrig finds them from the digest, "
        "and also reads the registry's model version",
    ]
    table = markdown(rows) + "\n\n" + "".join(f"- {line}\n" for line in summary_lines)
    print(table)
    record(
        f"provenance-{utc_stamp()}",
        {"meta": meta, "rows": rows, "summary": summary_lines},
        table,
    )


if __name__ == "__main__":
    main()
