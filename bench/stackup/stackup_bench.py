"""Local stack start-up: `mlrig stack up --local` cold vs a bare `mlflow server` to /health.

Goal (issue 17): a cold `stack up --local` takes at most 1.3x what a bare `mlflow server` takes
from start to /health in the same run, both measured as whole commands.

Sample i of each row in turn (A B C, B C A, C A B, ...: common.interleave one round at a time,
the order turned each round), each a whole command spawned from here:
- A `mlrig stack up --local --stack bench-<i>` in a fresh MLRIG_HOME (cold: no stack folder,
  no tracking DB, no auth DB, no secrets), spawn -> exit; it exits only after an authenticated
  round trip to MLflow and to the registry and a write+read in the DVC remote. Afterwards
  (untimed) `mlrig stack down` and the home is removed.
- B a bare `mlflow server` (fresh folder, `--backend-store-uri sqlite:///...`, MLflow's default
  artifact settings, a free port on 127.0.0.1) from spawn to /health answering 200, as one
  shell command: it starts the server in the background and polls /health with curl every
  0.05 s, exiting when it answers. Stopped afterwards (untimed).
- C the same with `--app-name basic-auth` (MLflow's stock auth app: auth DB, admin user from
  MLFLOW_AUTH_ADMIN_PASSWORD, Flask secret), for reference.
B and C run the server the way mlrig runs its own: one worker and MLflow's job runner off
(mlrig.tracking.config.plain_env), so the ratio A/B is mlrig's overhead over the server alone.
`--mlflow-defaults` adds a row D: `mlflow server` with MLflow's own defaults (4 workers and the
job runner: ~15 processes on 2 CPUs), which is slower than B and so a looser yardstick.

The ratio A/B is taken per pair (sample i of A over sample i of B), and its median recorded as
a row (unit x). After each sample, untimed, the phases of its start-up are read from the files
it wrote and the processes it started (seconds after spawn): secrets written, MLflow and the
registry spawned (their PID files), the registry's config written, mlflow.db and auth.db last
written (tables made, admin created), MLflow's worker spawned (its `mlflow server` process is
done: tables, auth bootstrap), outputs.json written (every proof passed), exit. The recorded
JSON keeps them per sample under "phases".

`--baseline-src DIR` adds row A0: the same cold `stack up` by `python -m mlrig` from another
source tree (e.g. `git archive <commit> cli infra | tar -x -C DIR`), alternated with the rest,
to measure what a change buys.

Run: .venv/bin/python bench/stackup/stackup_bench.py [--samples 5] [--no-basic-auth]
     [--mlflow-defaults] [--baseline-src DIR]
Trial: MLRIG_BENCH_RESULTS=/tmp/trial .venv/bin/python bench/stackup/stackup_bench.py --samples 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    BIN,
    MLRIG,
    WHOLE_INTERLEAVED,
    fresh_home,
    interleave,
    machine,
    markdown,
    record,
    row,
    run_timed,
    run_timed_output,
    utc_stamp,
)

from mlrig.tracking import config as tracking_server

GOAL_RATIO = 1.3
POLL_S = 0.05
DEADLINE_S = 300  # a server that has not answered by then fails the run (and is stopped)
MLFLOW = str(BIN / "mlflow")

# The shell command that B, C and D each are: start the server in the background (its own
# session, so it can be stopped as a group), poll /health, exit when it answers 200.
SERVE_TO_HEALTH = r"""
cd "$DIR"
setsid "$MLFLOW" server --host 127.0.0.1 --port "$PORT" \
  --backend-store-uri "sqlite:///$DIR/mlflow.db" "$@" > "$DIR/server.log" 2>&1 &
echo $! > "$DIR/server.pid"
deadline=$((SECONDS + DEADLINE))
until curl -s -f -o /dev/null "http://127.0.0.1:$PORT/health"; do
  kill -0 $! 2>/dev/null || { echo "mlflow server exited" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "no /health within $DEADLINE s" >&2; exit 1; }
  sleep POLL
done
""".replace("POLL", str(POLL_S))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _since(t0: float, path: Path) -> float | None:
    try:
        return round(path.stat().st_mtime - t0, 3)
    except OSError:
        return None


def _worker_spawned(pid_file: Path, t0: float) -> float | None:
    """When the server's first child (the uvicorn worker) was created, seconds after t0: the
    `mlflow server` process has by then made the tables and bootstrapped auth."""
    with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
        text = pid_file.read_text()
        pid = int(text) if text.strip().isdigit() else int(json.loads(text)["pid"])
        kids = psutil.Process(pid).children(recursive=True)
        if kids:
            return round(min(k.create_time() for k in kids) - t0, 3)
    return None


def _stop_tree(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a server and every process under it (collected first: MLflow's job runner
    outlives its parent), then SIGKILL whatever is left after `timeout`."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)  # setsid made the server its own group's leader
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


class Bench:
    def __init__(self, keep: bool, baseline_src: Path | None = None) -> None:
        self.keep = keep
        self.baseline_src = baseline_src
        self.phases: dict[str, list[dict[str, float | None]]] = {}
        self.root = Path(tempfile.mkdtemp(prefix="stackup-bench-"))
        self.env = tracking_server.plain_env()  # the server settings mlrig runs with

    # -- A: mlrig stack up --local, cold ------------------------------------------------------
    def stack_up(self, i: int, key: str = "A") -> float:
        home, env = fresh_home("stackup-a-")
        name = f"bench-{i}"
        mlrig = [MLRIG]
        if key == "A0" and self.baseline_src is not None:  # another checkout's mlrig
            mlrig = [str(BIN / "python"), "-m", "mlrig"]
            src = self.baseline_src
            env["PYTHONPATH"] = f"{src / 'cli'}:{src / 'infra'}"
        stack = Path(env["MLRIG_HOME"]) / "stacks" / name
        try:
            t0 = time.time()
            seconds, out = run_timed_output(
                [*mlrig, "stack", "up", "--local", "--stack", name], env=env, cwd=home
            )
            if f"stack '{name}' is up" not in out:
                raise SystemExit(f"mlrig stack up did not say 'up':\n{out[-800:]}")
            secrets_dir = stack / "secrets"
            self.phases.setdefault(key, []).append(
                {
                    "secrets written": max(
                        (_since(t0, p) or 0.0 for p in secrets_dir.iterdir()), default=None
                    ),
                    "registry config written": _since(t0, stack / "registry" / "config.yml"),
                    "registry spawned": _since(t0, stack / "run" / "registry.pid"),
                    "mlflow spawned": _since(t0, stack / "run" / "mlflow.pid"),
                    "mlflow.db last written": _since(t0, stack / "mlflow" / "mlflow.db"),
                    "auth.db last written": _since(t0, stack / "mlflow" / "auth.db"),
                    "mlflow worker spawned": _worker_spawned(stack / "run" / "mlflow.pid", t0),
                    "proofs passed (outputs.json)": _since(t0, stack / "outputs.json"),
                    "exit": round(seconds, 3),
                }
            )
            return seconds
        finally:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [*mlrig, "stack", "down", "--stack", name],
                    env=env,
                    cwd=home,
                    capture_output=True,
                    timeout=120,
                )
            if not self.keep:
                shutil.rmtree(home, ignore_errors=True)

    # -- B, C, D: mlflow server to /health ------------------------------------------------------
    def server_to_health(
        self, key: str, args: list[str], env_for: Callable[[Path], dict[str, str]]
    ) -> Callable[[int], float]:
        """Sample i: the shell command in a fresh folder; `env_for(folder)` adds its env."""

        def sample(i: int) -> float:
            folder = self.root / f"{key}-{i}"
            folder.mkdir()
            port = free_port()
            env = {
                **os.environ,
                **env_for(folder),
                "DIR": str(folder),
                "PORT": str(port),
                "MLFLOW": MLFLOW,
                "DEADLINE": str(DEADLINE_S),
            }
            pid_file = folder / "server.pid"
            try:
                t0 = time.time()
                seconds = run_timed(
                    ["bash", "-c", SERVE_TO_HEALTH, "serve", *args], env=env, cwd=folder
                )
                self.phases.setdefault(key, []).append(
                    {
                        "mlflow.db last written": _since(t0, folder / "mlflow.db"),
                        "auth.db last written": _since(t0, folder / "auth.db"),
                        "mlflow worker spawned": _worker_spawned(pid_file, t0),
                        "exit": round(seconds, 3),
                    }
                )
                return seconds
            finally:
                with contextlib.suppress(OSError, ValueError):
                    _stop_tree(int(pid_file.read_text()))
                if not self.keep:
                    shutil.rmtree(folder, ignore_errors=True)

        return sample

    def bare(self) -> Callable[[int], float]:
        return self.server_to_health("B", ["--workers", "1"], lambda _d: self.env)

    def basic_auth(self) -> Callable[[int], float]:
        """MLflow's stock basic_auth.ini (default_permission READ, its own auth function) with
        the two secrets it needs: the admin's bootstrap password and the Flask secret."""

        def env_for(folder: Path) -> dict[str, str]:
            ini = folder / "auth.ini"
            ini.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                "admin_username = admin\n"
                f"authorization_function = {tracking_server.MLFLOW_AUTHORIZATION_FUNCTION}\n"
            )
            return {
                **self.env,
                tracking_server.ENV_AUTH_CONFIG: str(ini),
                tracking_server.ENV_ADMIN_PASSWORD: secrets.token_urlsafe(24),
                tracking_server.ENV_FLASK_SECRET: secrets.token_urlsafe(32),
            }

        return self.server_to_health("C", ["--workers", "1", "--app-name", "basic-auth"], env_for)

    def mlflow_defaults(self) -> Callable[[int], float]:
        return self.server_to_health("D", [], lambda _d: {})

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def rotated(contenders: dict[str, Callable[[int], float]], samples: int) -> dict[str, list[float]]:
    """common.interleave, one round at a time with the order turned by one each round (A B C,
    B C A, C A B, ...): no tool always runs right after the same rival's teardown."""
    names = list(contenders)
    out: dict[str, list[float]] = {name: [] for name in names}

    def sample_i(name: str, i: int) -> Callable[[int], float]:
        return lambda _round: contenders[name](i)  # interleave counts rounds; pass sample i

    for i in range(samples):
        order = names[i % len(names) :] + names[: i % len(names)]
        got = interleave({name: sample_i(name, i) for name in order}, 1)
        for name in order:
            out[name] += got[name]
    return out


def median_phases(samples: list[dict[str, float | None]]) -> dict[str, float]:
    out = {}
    for key in samples[0] if samples else {}:
        values = [v for s in samples if (v := s.get(key)) is not None]
        if values:
            out[key] = round(statistics.median(values), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--no-basic-auth", dest="basic_auth", action="store_false")
    ap.add_argument("--mlflow-defaults", action="store_true", help="add row D (slow)")
    ap.add_argument("--keep", action="store_true", help="keep the servers' folders and homes")
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="add row A0: `python -m mlrig` from this source tree (e.g. `git archive` of an "
        "earlier commit's cli/ and infra/), to measure what a change buys",
    )
    args = ap.parse_args()

    meta: dict[str, Any] = {
        **machine(),
        "samples": args.samples,
        "poll_interval_s": POLL_S,
        "server_env": tracking_server.plain_env(),
    }
    bench = Bench(args.keep, args.baseline_src)
    labels = {
        "A": ("cold `stack up --local` -> up (auth round trips proved)", "mlrig stack up --local"),
        "A0": ("the same, with the baseline source tree", f"mlrig from {args.baseline_src}"),
        "B": ("bare `mlflow server` spawn -> /health 200", "mlflow server, 1 worker"),
        "C": ("`mlflow server --app-name basic-auth` -> /health 200", "mlflow basic-auth"),
        "D": ("`mlflow server` with MLflow's defaults -> /health 200", "mlflow server, defaults"),
    }
    contenders: dict[str, Callable[[int], float]] = {"A": bench.stack_up, "B": bench.bare()}
    if args.baseline_src:
        contenders["A0"] = lambda i: bench.stack_up(i, "A0")
    if args.basic_auth:
        contenders["C"] = bench.basic_auth()
    if args.mlflow_defaults:
        contenders["D"] = bench.mlflow_defaults()
    try:
        samples = rotated(contenders, args.samples)
    finally:
        bench.close()
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]

    rows = [row(*labels[k], v, method=WHOLE_INTERLEAVED) for k, v in samples.items()]
    ratios = [a / b for a, b in zip(samples["A"], samples["B"], strict=True)]
    rows.append(
        row("A/B: cold stack up over bare mlflow server, per pair", "ratio", ratios, unit="x")
    )
    if "A0" in samples:
        rows.append(
            row(
                "A0/B: the baseline's cold stack up over bare, per pair",
                "ratio",
                [a / b for a, b in zip(samples["A0"], samples["B"], strict=True)],
                unit="x",
            )
        )
    if "C" in samples:
        rows.append(
            row(
                "C/B: MLflow's own basic-auth over bare, per pair",
                "ratio",
                [c / b for c, b in zip(samples["C"], samples["B"], strict=True)],
                unit="x",
            )
        )
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= GOAL_RATIO else "not met"
    phases = {k: median_phases(v) for k, v in bench.phases.items()}
    summary = [
        f"goal: cold `stack up --local` <= {GOAL_RATIO}x a bare `mlflow server` to /health: "
        f"{verdict} (median of per-pair ratios {ratio:.2f}x)",
        "B and C run the server as mlrig does (1 worker, MLflow's job runner off)",
        *(
            f"median phases of {k} (s after spawn): "
            + ", ".join(f"{p} {v:.2f}" for p, v in ph.items())
            for k, ph in phases.items()
        ),
    ]
    table = markdown(rows) + "\n\n" + "\n".join(f"- {s}" for s in summary)
    print(table)
    record(
        f"stackup-{utc_stamp()}",
        {"meta": meta, "rows": rows, "summary": summary, "phases": bench.phases},
        table,
    )


if __name__ == "__main__":
    main()
