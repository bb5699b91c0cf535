"""Repo bootstrap benchmark: `mlrig init` vs the same steps by hand with the reference CLIs
(copier copy, cp of the dataset, git init, dvc init, dvc remote add, dvc add, git commit),
then the first `dvc repro` of the template against a real local stack, and a no-op second
repro.

Every figure is a whole command in a fresh process (the by-hand figure: the sum of its
commands). `mlrig init` and the steps by hand alternate sample by sample; `mlrig init` also
makes the repository's machine identity on the stack, which the steps by hand leave out.
The repros run after them, first and second alternating on each new repo (n = --repro-samples:
a first repro trains the template's model, ~15 s).

Run: .venv/bin/python bench/init/init_bench.py [--samples 5] [--repro-samples 5]
Starts a local stack in a temporary MLRIG_HOME and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
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
    run_timed,
    sh,
    tear_down,
    utc_stamp,
)

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@b",
}


def by_hand(
    dest: Path, template: Path, ref: str, dataset: Path, remote: str, env: dict[str, str]
) -> float:
    """What a user types without mlrig, each command timed whole; the seconds summed."""
    from mlrig.core.bootstrap import init as bootstrap

    dvc = str(BIN / "dvc")
    copier = [str(BIN / "copier"), "copy", "--defaults", "--quiet", "--vcs-ref", ref]
    answers = ["-d", f"project_name={dest.name}", "-d", "stack=local"]
    raw = dest / bootstrap.RAW_DATA
    steps: list[tuple[Path, list[str]]] = [
        (dest.parent, [*copier, *answers, str(template), str(dest)]),
        (dest, ["mkdir", "-p", str(raw.parent)]),
        (dest, ["cp", str(dataset), str(raw)]),
        (dest, ["git", "init", "-q", "-b", "main"]),
        (dest, [dvc, "init", "-q"]),
        (dest, [dvc, "config", "core.analytics", "false"]),
        (dest, [dvc, "remote", "add", "-d", "storage", remote]),
        (dest, [dvc, "add", "-q", bootstrap.RAW_DATA]),
        (dest, ["git", "add", "--all"]),
        (dest, ["git", "commit", "-qm", "init"]),
    ]
    return sum(run_timed(argv, env=env, cwd=cwd) for cwd, argv in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repro-samples", type=int, default=5)
    args = parser.parse_args()
    meta: dict[str, Any] = {
        **machine(),
        "samples": args.samples,
        "repro_samples": args.repro_samples,
    }

    home, env = fresh_home("mlrig-init-bench-")
    env.update(GIT_IDENTITY)
    os.environ["MLRIG_HOME"] = env["MLRIG_HOME"]  # the template repo below lives there
    from mlrig.core.bootstrap import init as bootstrap
    from mlrig.core.bootstrap.dataset import dataset_file

    sh(home, MLRIG, "stack", "up", "--local", env=env)
    try:
        outputs = json.loads(
            sh(home, MLRIG, "stack", "outputs", "--stack", "local", "--json", env=env)
        )
        remote = outputs["dvc_remote"]["url"]
        template, ref = bootstrap.template_repo()
        work = home / "work"
        work.mkdir()

        def init(i: int) -> float:
            argv = [MLRIG, "init", f"cli{i}", "--stack", "local", "--no-input"]
            return run_timed(argv, env=env, cwd=work)

        def hand(i: int) -> float:
            return by_hand(work / f"hand{i}", template, ref, dataset_file(), remote, env)

        made = interleave({"init": init, "hand": hand}, args.samples)
        dvc = str(BIN / "dvc")
        repros = interleave(
            {
                "first": lambda i: run_timed([dvc, "repro"], env=env, cwd=work / f"cli{i}"),
                "second": lambda i: run_timed([dvc, "repro"], env=env, cwd=work / f"cli{i}"),
            },
            min(args.repro_samples, args.samples),
        )
    finally:
        tear_down(home, env)

    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    new_repo = "new repo wired to the stack, data tracked, first commit"
    rows = [
        row(new_repo, "`mlrig init`", made["init"], method=WHOLE_INTERLEAVED),
        row(
            new_repo,
            "by hand: `copier copy` + `cp` + `git init` + `dvc init/remote add/add` + `git commit`",
            made["hand"],
            method=WHOLE_INTERLEAVED,
        ),
        row(
            "first `dvc repro` of a new repo (trains, logs to MLflow)",
            "DVC",
            repros["first"],
            method=WHOLE,
        ),
        row("second `dvc repro` (nothing changed)", "DVC", repros["second"], method=WHOLE),
    ]
    table = markdown(rows)
    print(table)
    record(f"init-{utc_stamp()}", {"meta": meta, "rows": rows}, table)


if __name__ == "__main__":
    main()
