"""The demo's drift loop: the champion captures its traffic, the traffic shifts, `mlrig monitor`
flags it, and the trainer's own schedule retrains and sends the new champion out as a canary.

The shifted traffic is the demo's own patients with two features moved by SHIFT_SIGMA of their
standard deviation; the same patients, labelled, arrive in the export the repository reads
(retrain.SOURCE), so the retrain the loop starts has new data to learn from. The loop is the
trainer service's real `Watcher` and `Trainer` (one `tick`, one `mlrig retrain` child, the
repository's `monitor:`/`deploy:` policy in params.yaml), not a copy of their logic.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrig.core.demo._context import PROJECT, StepFailed
from mlrig.core.demo.deploy import ENDPOINT
from mlrig.core.demo.retrain import SOURCE

if TYPE_CHECKING:
    from mlrig.core.demo._context import DemoContext

CAPTURE = 100  # percent of requests captured
TRAFFIC_ROWS = 300  # above the monitor's 200-row minimum
BATCH = 50  # rows per request
SHIFT_SIGMA = 1.5
SHIFTED = 2  # how many features move
WINDOW = "2m"  # the window judged: this run's shifted traffic only (a re-run's too)
CANARY = 50
CANARY_REQUESTS = 20
REPORT = "drift-report.html"
CAPTURE_WAIT = 30.0  # seconds for the capture writer to flush the traffic
JOB_WAIT = 1200.0  # seconds for the loop's retrain, gate and canary
_KEY = "drift key"  # in ctx.private only
_REQUESTS = "shifted requests"
_POLICY = {  # params.yaml lines the demo sets: (block, key) -> value
    ("monitor", "action"): "retrain",
    ("monitor", "window"): WINDOW,
    ("monitor", "consecutive"): "1",
    ("deploy", "endpoint"): ENDPOINT,
    ("deploy", "canary"): str(CANARY),
}
_ENDED = {"retrain_failed", "retrain_unchanged", "gate_kept", "canary_started", "canary_failed"}


def _window() -> timedelta:
    from mlrig.core.trainer import policy as loop_policy

    return loop_policy.duration(WINDOW)


def _post(ctx: DemoContext, body: bytes) -> tuple[int, str | None]:
    from mlrig.adapters import http

    user, _, secret = str(ctx.private[_KEY]).partition(":")
    resp = http.post(
        ctx.facts["endpoint"], body, content_type="application/json", auth=(user, secret)
    )
    return resp.status, resp.headers.get("x-model-version")


def _columns(example: bytes) -> list[str]:
    """The feature columns of the served model's input example (dataframe_split)."""
    doc = json.loads(example)
    split = doc.get("dataframe_split", doc) if isinstance(doc, dict) else None
    columns = split.get("columns") if isinstance(split, dict) else None
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise StepFailed("the served model's input example names no columns")
    return columns


def shifted_rows(
    rows: list[dict[str, str]], columns: list[str], count: int
) -> tuple[list[dict[str, str]], list[str]]:
    """`count` rows from `rows` (cycled from the end) with the first SHIFTED feature columns
    (never the id) moved up by SHIFT_SIGMA standard deviations; the rows and the moved columns."""
    moved = [c for c in columns if c not in ("id", "target")][:SHIFTED]
    sigma = {c: statistics.pstdev(float(r[c]) for r in rows) for c in moved}
    out = []
    for i in range(count):
        row = dict(rows[-1 - (i % len(rows))])
        for c in moved:
            row[c] = repr(round(float(row[c]) + SHIFT_SIGMA * sigma[c], 6))
        out.append(row)
    return out, moved


def model_inputs(repo: Path, rows: list[dict[str, str]], columns: list[str]) -> list[list[float]]:
    """The served model's input rows for source `rows`: the repository's own feature code
    (`<package>.features.add_features`, as training uses it) derives the columns the source
    lacks; with nothing to derive, the source columns as they are."""
    if all(c in rows[0] for c in columns):
        return [[float(r[c]) for c in columns] for r in rows]
    import importlib
    import sys

    import pandas as pd

    src = str(repo / "src")
    sys.path.insert(0, src)
    try:
        features = importlib.import_module(f"{PROJECT}.features")
        frame = features.add_features(pd.DataFrame(rows).apply(pd.to_numeric))
    except (ImportError, AttributeError, ValueError, KeyError) as exc:
        raise StepFailed(
            f"the repository's features code cannot derive the model's inputs "
            f"({type(exc).__name__}: {str(exc)[:120]})",
            hint=f"see {repo / 'src' / PROJECT / 'features.py'}",
        ) from None
    finally:
        sys.path.remove(src)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StepFailed(f"the repository's features lack the model's columns {missing[:3]}")
    return [[float(v) for v in row] for row in frame[columns].to_numpy().tolist()]


def deploy_with_capture(ctx: DemoContext) -> str:
    from mlrig.core.demo import deploy as demo_deploy
    from mlrig.core.deploy import endpoints

    version = demo_deploy.champion_version(ctx)
    ref = demo_deploy.pushed(ctx, version)
    done = endpoints.deploy(
        ref, endpoint=ENDPOINT, stack=ctx.stack, capture=CAPTURE, progress=ctx.log
    )
    ctx.private[_KEY] = endpoints.create_key(ENDPOINT, stack=ctx.stack)
    (found,) = endpoints.status(ENDPOINT, stack=ctx.stack)
    if found.get("capture") != CAPTURE:
        raise StepFailed(f"{ENDPOINT} was deployed with capture {CAPTURE}%, status says otherwise")
    served = done.endpoint.backends[0].version
    ctx.facts["captured version"] = served
    return f"{ref} on {ENDPOINT} with --capture {CAPTURE} (v{served} serves all traffic)"


def shifted_traffic(ctx: DemoContext) -> str:
    from mlrig.core.demo import deploy as demo_deploy

    columns = _columns(demo_deploy.example(ctx))
    source = ctx.workdir / SOURCE
    with source.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    shared = [c for c in columns if c in fields]
    if not shared:
        raise StepFailed(f"{source} has none of the model's columns")
    traffic, moved = shifted_rows(rows, shared, TRAFFIC_ROWS)
    inputs = model_inputs(ctx.repo, traffic, columns)
    served: Counter[str] = Counter()
    for start in range(0, len(traffic), BATCH):
        body = {"dataframe_split": {"columns": columns, "data": inputs[start : start + BATCH]}}
        status, version = _post(ctx, json.dumps(body).encode())
        if status != 200:
            raise StepFailed(f"a keyed request with shifted rows answered {status}")
        served[version or "?"] += 1
    # the same patients, labelled, arrive in the export: the retrain has them to learn from
    next_id = max(int(r["id"]) for r in rows) + 1 if "id" in fields else 0
    for i, row in enumerate(traffic):
        if "id" in fields:
            row["id"] = str(next_id + i)
    with source.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields, lineterminator="\n").writerows(traffic)
    ctx.private[_REQUESTS] = sum(served.values())
    shift = ", ".join(moved)
    return (
        f"{TRAFFIC_ROWS} rows in {-(-TRAFFIC_ROWS // BATCH)} keyed requests → 200 "
        f"(v{', v'.join(served)}), {shift} shifted by +{SHIFT_SIGMA}σ; "
        f"the same {len(traffic)} patients, labelled, appended to {source}"
    )


def monitor(ctx: DemoContext) -> str:
    from mlrig.core.monitor.monitor import run_monitor

    report = ctx.workdir / REPORT
    report.unlink(missing_ok=True)
    _captured(ctx, int(ctx.private.get(_REQUESTS, 0)))
    result = run_monitor(ENDPOINT, _window(), ctx.stack, repo=ctx.repo, report=report)
    if not result.drifted:
        raise StepFailed(f"{result.rows} shifted rows, but the monitor saw no drift")
    ctx.facts["drift report"] = str(report)
    return (
        f"drift in {', '.join(result.drifted_columns)} ({result.rows} rows of v{result.version} "
        f"vs its training snapshot; run {result.monitor_run_id}); report {report}"
    )


def _captured(ctx: DemoContext, requests: int) -> None:
    """Wait until the serving container's capture writer has written every request (it
    writes off the request path, every half second)."""
    from mlrig.core.deploy import endpoints

    deadline, written = time.monotonic() + CAPTURE_WAIT, 0
    while True:
        (found,) = endpoints.status(ENDPOINT, stack=ctx.stack)
        serving = found.get("serving")
        stats = serving[0].get("captured") if isinstance(serving, list) and serving else None
        if isinstance(stats, dict):
            written = int(stats.get("written") or 0)
            if written >= requests and not stats.get("queued"):
                return
        if time.monotonic() > deadline:
            raise StepFailed(
                f"{written} of {requests} requests captured after {CAPTURE_WAIT:g} s",
                hint=f"see `mlrig deploy status {ENDPOINT} --stack {ctx.stack}`",
            )
        time.sleep(0.5)


def _set_policy(repo: Path) -> bool:
    """params.yaml's monitor:/deploy: lines set to _POLICY (True when the file changed)."""
    params = repo / "params.yaml"
    text = params.read_text()
    new, block = [], ""
    for line in text.splitlines(keepends=True):
        top = re.match(r"^([a-z_]+):", line)
        if top:
            block = top[1]
        item = re.match(r"^(  )([a-z_]+):( *)([^#\n]*?)( *#.*)?$", line.rstrip("\n"))
        if item and (block, item[2]) in _POLICY:
            value = _POLICY[(block, item[2])]
            line = f"{item[1]}{item[2]}:{item[3]}{value}{item[5] or ''}\n"
        new.append(line)
    updated = "".join(new)
    if updated == text:
        return False
    params.write_text(updated)
    return True


def loop(ctx: DemoContext) -> str:
    from mlrig.adapters import git
    from mlrig.core.trainer import policy as loop_policy
    from mlrig.core.trainer import serve as trainer

    repo = ctx.repo
    if _set_policy(repo):
        git.commit_all(repo, "Retrain on drift; a promoted champion goes out as a canary")
        git.run(repo, "push", "--quiet", "origin", "HEAD:main")
    policy = loop_policy.load(repo)  # read back through the loop's own door
    if (policy.monitor.action, policy.deploy.endpoint, policy.deploy.canary) != (
        "retrain",
        ENDPOINT,
        CANARY,
    ):
        raise StepFailed(f"{repo / 'params.yaml'} did not take the demo's monitor:/deploy: policy")
    watcher = trainer.watcher(repo, ctx.stack)
    ctx.log(f"trainer schedule: {watcher.describe()}")
    watcher.trainer.start()
    try:
        decision = watcher.tick()
        ctx.log(f"tick: {decision}")
        if decision != "retrain_enqueued":
            why = [d for d in watcher.decisions() if d["decision"] == decision]
            raise StepFailed(
                f"the loop's check decided {decision}: {why[-1]['detail'] if why else '?'}"
            )
        ours = [d for d in watcher.decisions() if d["decision"] == "retrain_enqueued"]
        job = str(ours[-1]["job"])
        ended = _wait_for(watcher, job)
    finally:
        watcher.trainer.stop()
    for d in watcher.decisions():
        if d.get("job") == job:
            ctx.log(f"loop: {d['decision']}: {d['detail']}")
    try:
        return _canary_line(ctx, ended, job)
    finally:
        _revoke(ctx)  # the demo's key dies with the demo


def _wait_for(watcher: Any, job: str) -> dict[str, Any]:
    """The loop's last decision about `job` (after its retrain, gate and canary)."""
    deadline = time.monotonic() + JOB_WAIT
    while time.monotonic() < deadline:
        mine = [d for d in watcher.decisions() if d.get("job") == job]
        ended = [d for d in mine if d["decision"] in _ENDED]
        if ended:
            return ended[-1]
        time.sleep(1.0)
    raise StepFailed(f"the loop's retrain job {job} did not end in {JOB_WAIT:g} s")


def _canary_line(ctx: DemoContext, ended: dict[str, Any], job: str) -> str:
    decision, detail = ended["decision"], ended["detail"]
    if decision == "gate_kept":  # honest: the gate judged the retrained version no better
        return f"drift → retrain job {job}: {detail.split(': ', 1)[-1]} by the gate; no canary"
    if decision != "canary_started":
        raise StepFailed(f"the loop's retrain job {job} ended {decision}: {detail}")
    match = re.match(rf"models:/{PROJECT}/(\d+) on ", detail)
    if not match:
        raise StepFailed(f"the loop's canary is not a version of {PROJECT}: {detail}")
    new, old = match[1], ctx.facts["captured version"]
    from mlrig.core.demo import deploy as demo_deploy

    example = demo_deploy.example(ctx)
    seen: Counter[str] = Counter()
    for _ in range(CANARY_REQUESTS):
        status, served = _post(ctx, example)
        if status != 200:
            raise StepFailed(f"a keyed request to the loop's canary answered {status}")
        seen[served or "?"] += 1
    if not seen[new] or not seen[old]:
        raise StepFailed(f"the loop's {CANARY}% canary, but answers came from {dict(seen)}")
    return (
        f"drift → retrain job {job} → gate promoted v{new} → {CANARY}% canary on {ENDPOINT}: "
        f"{CANARY_REQUESTS} keyed requests → 200 (v{old}: {seen[old]}, v{new}: {seen[new]})"
    )


def _revoke(ctx: DemoContext) -> None:
    from mlrig.core.deploy import endpoints

    key_id = str(ctx.private.pop(_KEY)).split(":", 1)[0]
    endpoints.revoke_key(ENDPOINT, key_id, stack=ctx.stack)
