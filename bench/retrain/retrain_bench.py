"""Retraining benchmark: new rows in the demo repo's source -> a registered model version, three
ways, interleaved sample by sample in one run, plus a retrain when nothing changed.

Set-up (its own row, outside the others): `mlrig demo` in a temporary MLRIG_HOME (a local
stack; the demo repo, whose `ingest.source` is an export outside it, retrained once), and
`mlrig trainer serve` on that repo with its token.

Sample i of each row in turn (A B C D, A B C D, ...); the first three append 30 new rows to
the source (untimed) and then time:
- `POST /train` -> the job's result names a registered version (polled every 0.1 s on
  `GET /train/{id}`), timed by this client (CLIENT); the service runs `mlrig retrain` as a
  child process;
- `mlrig retrain --no-push-image` as a whole command (snapshot, gate, commit, dvc push,
  git push; every failure undone);
- by hand: `dvc repro --force` + `git add/commit` + `dvc push` + `git push`, each a whole
  command, their times summed (no gate-aware commit message, no undo, and every stage
  re-runs even when the data did not change);
then a no-change `mlrig retrain` on the same data (goal: <= 3 s). The `mlrig demo` set-up is
one more row: one whole command, n = 1 (it takes minutes).

Run: .venv/bin/python bench/retrain/retrain_bench.py [--samples 5] [--keep]
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

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    BIN,
    CLIENT,
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
    run_timed_output,
    sh,
    tear_down,
    utc_stamp,
)

NEW_ROWS = 30
RETRAIN_STEPS = ("new rows arrive", "mlrig retrain", "retrain again")  # the demo's
NO_CHANGE_GOAL_S = 3.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    from mlrig.core.demo.retrain import append_rows

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    meta: dict[str, Any] = {**machine(), "samples": args.samples, "new_rows_per_sample": NEW_ROWS}

    home, env = fresh_home("mlrig-retrain-bench-")
    demo_seconds, summary = run_demo(home, env)
    facts = summary["facts"]
    demo_steps = {step["name"]: round(step["seconds"], 1) for step in summary["steps"]}
    repo, source = Path(facts["repository"]), Path(facts["data source"])
    token = sh(repo, MLRIG, "trainer", "token", "--repo", str(repo), env=env).strip()
    port = free_port()
    server = subprocess.Popen(
        [MLRIG, "trainer", "serve", "--repo", str(repo), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    dvc = str(BIN / "dvc")

    def post_train(_i: int) -> float:
        """Client-side: POST /train until the job's result names a version (polled at 0.1 s)."""
        append_rows(source, NEW_ROWS)
        t = time.perf_counter()
        job = requests.post(f"{base}/train", json={"push_image": False}, headers=auth, timeout=10)
        job.raise_for_status()
        job_id = job.json()["id"]
        while True:
            state = requests.get(f"{base}/train/{job_id}", headers=auth, timeout=10).json()
            if state["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - t
        if state["state"] != "succeeded" or not (state.get("result") or {}).get("version"):
            raise SystemExit(f"job {job_id} ended without a version: {state}")
        return seconds

    def retrain(_i: int) -> float:
        append_rows(source, NEW_ROWS)
        argv = [MLRIG, "retrain", "--repo", str(repo), "--no-push-image", "--json"]
        seconds, out = run_timed_output(argv, env=env, cwd=repo)
        if not json.loads(out.strip().splitlines()[-1])["version"]:
            raise SystemExit(f"retrain registered no version: {out[-400:]}")
        return seconds

    def by_hand(_i: int) -> float:
        append_rows(source, NEW_ROWS)
        commands = [
            [dvc, "repro", "--force"],
            ["git", "add", "--all"],
            ["git", "commit", "--quiet", "-m", "new data (by hand)"],
            [dvc, "push", "--quiet"],
            ["git", "push", "--quiet", "origin", "HEAD:main"],
        ]
        return sum(run_timed(argv, env=env, cwd=repo) for argv in commands)

    def no_change(_i: int) -> float:
        argv = [MLRIG, "retrain", "--repo", str(repo), "--json"]
        seconds, out = run_timed_output(argv, env=env, cwd=repo)
        if json.loads(out.strip().splitlines()[-1])["changed"]:
            raise SystemExit("the same data made a new commit")
        return seconds

    new_version = "new rows -> registered version"
    contenders = [  # (what, tool, how it was measured, one sample)
        (new_version, "`POST /train` (trainer service)", CLIENT, post_train),
        (new_version, "`mlrig retrain --no-push-image`", WHOLE_INTERLEAVED, retrain),
        (
            new_version,
            "by hand: `dvc repro --force` + `git commit` + `dvc push` + `git push`",
            WHOLE_INTERLEAVED,
            by_hand,
        ),
        ("retrain with nothing new", "`mlrig retrain`", WHOLE_INTERLEAVED, no_change),
    ]
    try:
        for _ in range(60):  # the service answers /health once its worker runs
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        samples = interleave({tool: fn for _, tool, _, fn in contenders}, args.samples)
    finally:
        server.terminate()
        server.wait(60)
        tear_down(home, env, keep=args.keep)

    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    meta["demo_steps"] = demo_steps
    rows = [row(what, tool, samples[tool], method=how) for what, tool, how, _ in contenders]
    rows.append(
        row(
            "set-up: `mlrig demo` (fresh home, stack start included)",
            "mlrig",
            [demo_seconds],
            method=WHOLE,
        )
    )
    no_change_median = rows[3]["median"]
    retrain_steps = sum(demo_steps.get(n, 0.0) for n in RETRAIN_STEPS)
    summary_lines = [
        f"goal: a retrain with nothing new <= {NO_CHANGE_GOAL_S:g} s: {no_change_median:.2f} s, "
        + ("met" if no_change_median <= NO_CHANGE_GOAL_S else "not met"),
        f"{NEW_ROWS} new rows before each new-rows sample; of the `mlrig demo` set-up, its "
        f"retrain steps ({', '.join(RETRAIN_STEPS)}) took {retrain_steps:.0f} s",
    ]
    table = markdown(rows) + "\n\n" + "".join(f"- {line}\n" for line in summary_lines)
    print(table)
    record(
        f"retrain-{utc_stamp()}",
        {"meta": meta, "rows": rows, "summary": summary_lines},
        table,
    )


if __name__ == "__main__":
    main()
