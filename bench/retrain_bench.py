"""Retraining benchmark: new rows in the demo repo's source -> a registered model version, three
ways, interleaved sample by sample in one run, plus a retrain when nothing changed.

Set-up (not timed): `mlrig demo` in a temporary MLRIG_HOME (a local stack; the demo repo,
whose `ingest.source` is an export outside it, retrained once), and `mlrig trainer serve` on
that repo with its token.

Each sample appends 30 new rows to the source, then times one of:
- `POST /train` -> the job's result names a registered version (polled every 0.1 s on
  `GET /train/{id}`); the service runs `mlrig retrain` as a child process;
- `mlrig retrain --no-push-image` as a whole command (snapshot, gate, commit, dvc push,
  git push; every failure undone);
- by hand: `dvc repro --force` + `git add/commit` + `dvc push` + `git push` (no gate-aware
  commit message, no undo, and every stage re-runs even when the data did not change);
then a no-change `mlrig retrain` on the same data (goal: <= 3 s).

Run: .venv/bin/python bench/retrain_bench.py [--samples 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from common import BIN, MLRIG, fresh_home, record, run_demo, sh, timed, utc_stamp

NEW_ROWS = 30
RETRAIN_STEPS = ("new rows arrive", "mlrig retrain", "retrain again")  # the demo's


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    from mlrig.core.demo_retrain import append_rows

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

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

    def post_train() -> dict[str, Any]:
        job = requests.post(f"{base}/train", json={"push_image": False}, headers=auth, timeout=10)
        job.raise_for_status()
        job_id = job.json()["id"]
        while True:
            state = requests.get(f"{base}/train/{job_id}", headers=auth, timeout=10).json()
            if state["state"] in ("succeeded", "failed"):
                if state["state"] != "succeeded" or not (state.get("result") or {}).get("version"):
                    raise SystemExit(f"job {job_id} ended without a version: {state}")
                return dict(state)
            time.sleep(0.1)

    def retrain() -> None:
        out = sh(repo, MLRIG, "retrain", "--repo", str(repo), "--no-push-image", "--json", env=env)
        if not json.loads(out.strip().splitlines()[-1])["version"]:
            raise SystemExit(f"retrain registered no version: {out[-400:]}")

    def by_hand() -> None:
        sh(repo, str(BIN / "dvc"), "repro", "--force", env=env)
        sh(repo, "git", "add", "--all", env=env)
        sh(repo, "git", "commit", "--quiet", "-m", "new data (by hand)", env=env)
        sh(repo, str(BIN / "dvc"), "push", "--quiet", env=env)
        sh(repo, "git", "push", "--quiet", "origin", "HEAD:main", env=env)

    def no_change() -> None:
        out = sh(repo, MLRIG, "retrain", "--repo", str(repo), "--json", env=env)
        if json.loads(out.strip().splitlines()[-1])["changed"]:
            raise SystemExit("the same data made a new commit")

    rows: dict[str, list[float]] = {
        "POST /train -> registered version (trainer service)": [],
        "mlrig retrain --no-push-image (new rows)": [],
        "by hand: dvc repro --force + git commit + dvc push + git push": [],
        "mlrig retrain, nothing new (goal <= 3 s)": [],
    }
    names = list(rows)
    try:
        for _ in range(60):  # the service answers /health once its worker runs
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        for _ in range(args.samples):
            for name, step in zip(names[:3], (post_train, retrain, by_hand), strict=True):
                append_rows(source, NEW_ROWS)
                rows[name].append(timed(step))
            rows[names[3]].append(timed(no_change))
    finally:
        server.terminate()
        server.wait(60)
        subprocess.run([MLRIG, "stack", "down"], env=env, capture_output=True)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    meta: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "samples": args.samples,
        "new_rows_per_sample": NEW_ROWS,
        "demo_seconds": round(demo_seconds, 1),  # the set-up: `mlrig demo`, whole command
        "demo_steps": demo_steps,
    }
    retrain_steps = sum(demo_steps.get(n, 0.0) for n in RETRAIN_STEPS)
    lines = [
        f"# Retraining: new rows -> registered version ({utc_stamp()}, {meta['cpus']} CPUs, "
        f"load {meta['load']}, Python {meta['python']})",
        "",
        "Every figure is a whole command (or HTTP job) in a fresh process, the rows interleaved "
        f"per sample, {NEW_ROWS} new rows before each of the first three.",
        "",
        "| command | median s | min s | max s | n |",
        "|---|---|---|---|---|",
    ]
    for name, xs in rows.items():
        lines.append(
            f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} | {len(xs)} |"
        )
    lines += [
        "",
        f"Set-up `mlrig demo` (fresh home, stack start included): {demo_seconds:.0f} s whole "
        f"command, of which its retrain steps ({', '.join(RETRAIN_STEPS)}) {retrain_steps:.0f} s.",
    ]
    table = "\n".join(lines)
    print(table)
    record(f"retrain-{utc_stamp()}", {"meta": meta, "samples": rows}, table)


if __name__ == "__main__":
    main()
