"""Deploy on the local stack: `mlrig deploy` vs what a user would otherwise run, on real pushed
versions behind the stack's real nginx.

Goals (issue 29, "Measured"): pushed image -> first 200 through the endpoint <= 10 s; rollback
<= 3 s; 0 failed requests out of a steady 50 req/s during deploy, canary, promote and rollback;
nginx + key check <= 1 ms p50 over calling the container directly; a canary's share within
+-3 points of PCT over 2,000 requests.

Set-up (untimed, bench/deploy/workspace.py): a throw-away MLRIG_HOME with `mlrig stack up --local`,
three versions of one scikit-learn pipeline registered, each `mlrig image build` + `mlrig image
push`ed; endpoint `live` serving v1 (which also starts the stack's nginx) and `rb` serving v2
with v1 as its previous version.

1. First 200, interleaved sample by sample, each a whole command in a fresh process timed
   spawn -> the first 200 to a POST of one row: `mlrig deploy models:/M/1 --endpoint first-I
   --json` (a new endpoint each sample, deleted afterwards, untimed), then polling its URL with
   the key it printed; `docker run` of the same image (host network, PORT/HOST, 1 GiB like
   mlrig's) + curl polling its /invocations; `mlflow models serve -m models:/M/1 --env-manager
   local` + curl polling. Every poll is every 0.05 s. `mlrig deploy status` is timed too: the
   floor any mlrig command pays (interpreter, imports, stack state).
2. Rollback, interleaved: `mlrig deploy rollback rb` -> the first 200 whose X-Model-Version is
   the previous version (each sample swaps v1 and v2); by hand: `docker stop` + `docker rm` of
   the serving container + `docker run` of the previous image on the same port + curl polling.
3. An open-loop generator (bench/deploy/traffic.py: request i sent at start + i/RATE whatever
   the earlier ones did) POSTs to `live` with its key through the whole sequence: steady on
   v1, `mlrig deploy v2`, steady, `mlrig deploy v3 --canary 20`, steady, `promote`, steady,
   `rollback`, steady. Each request belongs to the phase it was scheduled in.
4. Proxy overhead: the same POST through `live` (nginx + key) and to its container's port,
   alternated call by call, each on its own keep-alive session (client-side).
5. Canary share: `mlrig deploy v3 --canary PCT` on `live`, then 2,000 keyed requests counted
   by X-Model-Version, then `mlrig deploy abort` (untimed), per PCT.

Run: .venv/bin/python bench/deploy/deploy_bench.py [--samples 5] [--rate 50] [--steady 5]
Trial: MLRIG_BENCH_RESULTS=/tmp/trial .venv/bin/python bench/deploy/deploy_bench.py --samples 1
       --steady 2 --calls 200 --share-calls 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/deploy/: its modules
import traffic
import workspace as ws
from common import (
    BIN,
    MLRIG,
    interleave,
    machine,
    markdown,
    record,
    run_timed,
    run_timed_output,
    utc_stamp,
)
from figures import EFFECT, figures

from mlrig.core.deploy.state import Store
from mlrig.core.stack.local.stack import free_port
from mlrig.core.stack.local.state import Layout

POLL_S = 0.05
DEADLINE_S = 120
# curl until the server answers 200 to the POST (the shell peers' polling loop)
POLL_200 = r"""
deadline=$((SECONDS + DEADLINE))
until curl -s -f -o /dev/null -H 'Content-Type: application/json' --data-binary @"$BODY" \
    "http://127.0.0.1:$PORT/invocations"; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "no 200 within $DEADLINE s" >&2; exit 1; }
  sleep POLL
done
""".replace("POLL", str(POLL_S)).replace("DEADLINE", str(DEADLINE_S))
DOCKER_RUN = (
    'docker run -d --name "$NAME" --network host --memory 1g --memory-swap 1g '
    '-e PORT="$PORT" -e HOST=127.0.0.1 "$IMAGE" >/dev/null || exit 1\n'
)
BY_HAND_ROLLBACK = 'docker stop "$OLD" >/dev/null && docker rm "$OLD" >/dev/null || exit 1\n'
MLFLOW_SERVE = (
    'setsid "$MLFLOW" models serve -m "$URI" --env-manager local -h 127.0.0.1 -p "$PORT" '
    '> "$LOG" 2>&1 &\necho $! > "$PIDFILE"\n'
)


def poll(url: str, body: bytes, key: str, want: str | None = None) -> None:
    """POST until a 200 (from version `want`, when given) answers; every POLL_S seconds."""
    headers = {"Content-Type": "application/json", **traffic.basic(key)}
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            resp = requests.post(url, data=body, headers=headers, timeout=5)
            if resp.status_code == 200 and want in (None, resp.headers.get("X-Model-Version")):
                return
        except requests.RequestException:
            pass
        time.sleep(POLL_S)
    raise SystemExit(f"{url} gave no 200{f' from v{want}' if want else ''} in {DEADLINE_S} s")


class Watcher:
    """POSTs every POLL_S seconds from a thread, from `start` on, until version `want`
    answers 200: when traffic switched, which the command's exit follows."""

    def __init__(self, url: str, body: bytes, key: str, want: str, start: float) -> None:
        self.start, self.want, self.seen = start, want, 0.0
        self.thread = threading.Thread(target=self._run, args=(url, body, key, want), daemon=True)
        self.thread.start()

    def _run(self, url: str, body: bytes, key: str, want: str) -> None:
        poll(url, body, key, want)
        self.seen = time.perf_counter() - self.start

    def seconds(self) -> float:
        self.thread.join(DEADLINE_S)
        if not self.seen:
            raise SystemExit(f"v{self.want} never answered")
        return self.seen


def shell(script: str, b: ws.Bench, **env: str) -> float:
    """One shell command (the peers' way) as a whole command: its wall seconds."""
    return run_timed(["bash", "-c", script], env={**b.env, **env}, cwd=b.home)


def load_1min(loads: list[float]) -> None:
    loads.append(round(os.getloadavg()[0], 2))


def first_200(
    b: ws.Bench, samples: int, parts: dict[str, list[float]], loads: list[float]
) -> dict[str, list[float]]:
    v1 = b.versions[0]
    body_file = b.home / "body.json"
    body_file.write_bytes(b.body)

    def mlrig(i: int) -> float:
        name = f"first-{i}"
        b.endpoints.add(name)
        argv = [MLRIG, "deploy", b.ref(v1), "--endpoint", name, "--stack", ws.STACK, "--json"]
        start = time.perf_counter()
        cmd, out = run_timed_output(argv, env=b.env, cwd=b.home)
        doc = json.loads(out)
        poll(str(doc["url"]), b.body, str(doc["key"]))
        total = time.perf_counter() - start
        parts.setdefault("mlrig deploy (the command alone)", []).append(cmd)
        b.mlrig("deploy", "delete", name)
        b.endpoints.discard(name)
        return total

    def docker_run(i: int) -> float:
        name = f"mlrig-bench-docker-run-{i}"
        b.containers.add(name)
        port = str(free_port())
        env = {"NAME": name, "PORT": port, "IMAGE": b.tags[0], "BODY": str(body_file)}
        seconds = shell(DOCKER_RUN + POLL_200, b, **env)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        b.containers.discard(name)
        return seconds

    def mlflow_serve(i: int) -> float:
        folder = Path(tempfile.mkdtemp(dir=b.home, prefix="mlflow-serve-"))
        env = {
            "MLFLOW": str(BIN / "mlflow"),
            "URI": b.ref(v1),
            "PORT": str(free_port()),
            "LOG": str(folder / "serve.log"),
            "PIDFILE": str(folder / "pid"),
            "BODY": str(body_file),
        }
        try:
            return shell(MLFLOW_SERVE + POLL_200, b, **env)
        finally:
            with_pid = folder / "pid"
            if with_pid.is_file():
                ws.stop_group(int(with_pid.read_text()))

    def status(i: int) -> float:
        return run_timed([MLRIG, "deploy", "status", "--stack", ws.STACK], env=b.env, cwd=b.home)

    return interleave(
        {"mlrig": mlrig, "docker run": docker_run, "mlflow serve": mlflow_serve, "status": status},
        samples,
        before=lambda i: load_1min(loads),
    )


def rollbacks(
    b: ws.Bench, samples: int, parts: dict[str, list[float]], loads: list[float]
) -> dict[str, list[float]]:
    v1, v2 = b.versions[0], b.versions[1]
    rb = b.deploy_json(b.ref(v1), "--endpoint", "rb")
    b.endpoints.add("rb")
    b.mlrig("deploy", b.ref(v2), "--endpoint", "rb")
    url, key = f"{rb['url']}", str(rb["key"])
    body_file = b.home / "body.json"
    port = str(free_port())
    images = {v1: b.tags[0], v2: b.tags[1]}
    hand = {"name": "mlrig-bench-by-hand-v2", "serves": v2}
    b.containers.add(hand["name"])
    start_env = {"NAME": hand["name"], "PORT": port, "IMAGE": images[v2], "BODY": str(body_file)}
    shell(DOCKER_RUN + POLL_200, b, **start_env)  # untimed: the by-hand endpoint serves v2
    serving = {"mlrig": v2}

    def mlrig(i: int) -> float:
        want = v1 if serving["mlrig"] == v2 else v2
        start = time.perf_counter()
        watcher = Watcher(url, b.body, key, want, start)  # polls during the command
        cmd = run_timed([MLRIG, "deploy", "rollback", "rb", "--stack", ws.STACK], env=b.env)
        poll(url, b.body, key, want)
        total = time.perf_counter() - start
        serving["mlrig"] = want
        parts.setdefault("mlrig deploy rollback (the command alone)", []).append(cmd)
        parts.setdefault(EFFECT, []).append(watcher.seconds())
        return total

    def by_hand(i: int) -> float:
        want = v1 if hand["serves"] == v2 else v2
        name = f"mlrig-bench-by-hand-{i}-v{want}"
        b.containers.add(name)
        env = {"OLD": hand["name"], "NAME": name, "PORT": port, "IMAGE": images[want]}
        seconds = shell(BY_HAND_ROLLBACK + DOCKER_RUN + POLL_200, b, BODY=str(body_file), **env)
        b.containers.discard(hand["name"])
        hand.update(name=name, serves=want)
        return seconds

    return interleave(
        {"mlrig": mlrig, "by hand": by_hand}, samples, before=lambda i: load_1min(loads)
    )


def under_load(
    b: ws.Bench, url: str, key: str, rate: float, steady: float, pct: int
) -> tuple[list[traffic.Shot], dict[str, float]]:
    """The open-loop generator across deploy, canary, promote and rollback of `live`."""
    v1, v2, v3 = b.versions
    gen = traffic.OpenLoop(url, b.body, key, rate)
    commands: dict[str, float] = {}
    steps = [
        (f"mlrig deploy v{v2}", ["deploy", b.ref(v2)], f"v{v2} serves"),
        (
            f"mlrig deploy v{v3} --canary {pct}",
            ["deploy", b.ref(v3), "--canary", str(pct)],
            "canary",
        ),
        ("mlrig deploy promote", ["deploy", "promote", "live"], f"v{v3} serves"),
        ("mlrig deploy rollback", ["deploy", "rollback", "live"], f"v{v2} serves again"),
    ]
    gen.start(f"v{v1} serves")
    time.sleep(steady)
    for label, args, after in steps:
        gen.phase = label
        argv = [MLRIG, *args, "--stack", ws.STACK]
        if args[0] == "deploy" and args[1].startswith("models:/"):
            argv += ["--endpoint", "live"]
        commands[label] = run_timed(argv, env=b.env, cwd=b.home)
        gen.phase = after
        time.sleep(steady)
    return gen.stop(), commands


def container_port(endpoint: str) -> int:
    ep = Store(Layout(ws.STACK).root).get(endpoint)
    return ep.backends[0].port


def canary_shares(b: ws.Bench, url: str, key: str, pcts: list[int], calls: int) -> dict[int, Any]:
    v3 = b.versions[2]
    out = {}
    for pct in pcts:
        b.mlrig("deploy", b.ref(v3), "--endpoint", "live", "--canary", str(pct))
        seen = traffic.shares(url, b.body, key, calls)
        b.mlrig("deploy", "abort", "live")
        out[pct] = {"seen": dict(seen), "share": 100 * seen[v3] / calls}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--samples", type=int, default=5, help="first-200 and rollback samples")
    ap.add_argument("--rate", type=float, default=50.0, help="requests/s under load")
    ap.add_argument("--steady", type=float, default=5.0, help="seconds between load steps")
    ap.add_argument("--load-canary", type=int, default=20, help="PCT of the canary under load")
    ap.add_argument("--calls", type=int, default=2000, help="proxy-vs-direct calls each")
    ap.add_argument("--share-calls", type=int, default=2000, help="requests per canary share")
    ap.add_argument("--pct", type=int, action="append", help="canary PCT (default 10, 50)")
    args = ap.parse_args()
    pcts = args.pct or [10, 50]
    meta = machine()
    meta["settings"] = {k: v for k, v in vars(args).items() if k != "pct"} | {"pcts": pcts}
    b = ws.setup()
    try:
        return measure(b, args, pcts, meta)
    finally:
        ws.log("cleanup: endpoints, peers, stack down, tags")
        ws.cleanup(b)


def measure(b: ws.Bench, args: argparse.Namespace, pcts: list[int], meta: dict[str, Any]) -> int:
    live = b.deploy_json(b.ref(b.versions[0]), "--endpoint", "live")  # starts nginx too
    b.endpoints.add("live")
    url, key = str(live["url"]), str(live["key"])
    parts: dict[str, list[float]] = {}
    ws.log(f"first 200: {args.samples} samples of 4 contenders, interleaved")
    loads: dict[str, list[float]] = {"first 200": [], "rollback": [], "under load": []}
    meta["load_1min_per_round"] = loads
    first = first_200(b, args.samples, parts, loads["first 200"])
    ws.log(f"rollback: {args.samples} samples of 2 contenders, interleaved")
    back = rollbacks(b, args.samples, parts, loads["rollback"])
    ws.log(f"{args.rate} req/s across deploy, canary, promote, rollback")
    load_1min(loads["under load"])
    shots, commands = under_load(b, url, key, args.rate, args.steady, args.load_canary)
    load_1min(loads["under load"])
    phases = traffic.summarize(shots)
    ws.log(f"proxy vs direct: {args.calls} calls each, alternated")
    direct = f"http://127.0.0.1:{container_port('live')}/invocations"
    via, bare = traffic.proxy_vs_direct(url, direct, b.body, key, args.calls)
    ws.log(f"canary shares {pcts}: {args.share_calls} requests each")
    shares = canary_shares(b, url, key, pcts, args.share_calls)
    meta["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    latencies = traffic.latencies_ms(shots)
    rows, summary = figures(
        first, back, parts, phases, latencies, commands, via, bare, shares, args, loads
    )
    stem = f"deploy-{utc_stamp()}"
    doc = {"meta": meta, "rows": rows, "summary": summary, "phases": phases, "shares": shares}
    table = markdown(rows) + "\n\n" + "\n".join(f"- {s}" for s in summary)
    print(table)
    record(stem, doc, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
