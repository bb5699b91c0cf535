"""Drift -> retrain -> canary with no glue, on the real local stack: a repo from `mlrig init`
whose first `mlrig retrain` pushed a champion image, that version behind a real endpoint,
captures of a shifted distribution in the agreed format, new rows at the data source; then the
trainer's own Watcher ticked once (no wall-clock wait) over a started Trainer: the real
monitor flags the window, the job runs the real `mlrig retrain` on the POST /train queue, the
gate promotes, and the worker deploys the new champion as the policy's canary. Measured on
2 shared CPUs under load ~12: 300 s and 201 s (set-up 203 s / 143 s with the session stack's
start and the first retrain's image build and push; the loop itself 85 s / 40 s).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlrig.adapters.mlflow_rest import MlflowRest
from mlrig.core.deploy import endpoints
from mlrig.core.deploy.state import Store
from mlrig.core.stack.local.state import Layout
from mlrig.core.trainer._jobs import Trainer
from mlrig.core.trainer._loop import Watcher
from mlrig.core.trainer._store import JobStore
from mlrig.wait import wait_until
from tests.helpers import (
    VENV_BIN,
    append_rows,
    capture_file,
    capture_line,
    repo_env,
    require,
    retrain_repo,
    sh,
)

pytestmark = pytest.mark.integration
PROJECT = "looprig"
ENDPOINT = "looprig-live"
CANARY = 20
JOB_TIMEOUT = 600


def _shifted(train: pd.DataFrame, seed: int) -> pd.DataFrame:
    """400 rows like the training set, mean_radius moved by one σ, with the two features the
    template's model derives, as a client sends them."""
    rows = train.sample(n=400, replace=True, random_state=seed).drop(columns=["id", "target"])
    rows["mean_radius"] = rows["mean_radius"] + float(train["mean_radius"].std())
    rows["compactness_ratio"] = rows["mean_area"] / np.maximum(rows["mean_perimeter"] ** 2, 1e-9)
    rows["worst_to_mean_radius"] = rows["worst_radius"] / np.maximum(rows["mean_radius"], 1e-9)
    return rows.reset_index(drop=True)


@pytest.fixture(scope="module")
def served(image_env: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The repo (policy: retrain after one drifted window, a 20% canary, the gate's margin -1
    so a candidate on new rows is promoted), its first champion pushed and serving ENDPOINT."""
    import os
    import subprocess

    require(os.path.exists("/usr/sbin/nginx"), "Debian's nginx")
    home = image_env["home"]
    root = tmp_path_factory.mktemp("loop")
    env = repo_env(home)
    source = root / "incoming" / "patients.csv"
    source.parent.mkdir()
    repo, _ = retrain_repo(root, env, PROJECT, source, "Read the patients export")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gate"]["margin"] = -1.0
    params["monitor"].update(action="retrain", consecutive=1, window="1h")
    params["deploy"].update(endpoint=ENDPOINT, canary=CANARY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "commit", "-qam", "Retrain on drift, new champions as a 20% canary", env=env)
    sh(repo, "git", "push", "-q", "origin", "main", env=env)
    first = subprocess.run(
        [str(VENV_BIN / "mlrig"), "retrain", "--repo", str(repo), "--json"],
        env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    v1 = json.loads(first.stdout.strip().splitlines()[-1])["version"]
    stack = image_env["outputs"].name
    endpoints.deploy(f"models:/{PROJECT}/{v1}", endpoint=ENDPOINT, stack=stack)
    state = root / "trainer-state"
    trainer = Trainer(repo, JobStore(state), env=env)
    watcher = Watcher(repo, trainer, state, stack=stack)
    trainer.start()
    try:
        yield {
            "repo": repo, "source": source, "v1": v1, "stack": stack, "watcher": watcher,
            "rest": MlflowRest.from_env(image_env["env"]),
            "captures": Layout(stack).root / "captures" / ENDPOINT,
        }  # fmt: skip
    finally:
        trainer.stop()
        if Store(Layout(stack).root).read(ENDPOINT) is not None:
            endpoints.delete(ENDPOINT, stack=stack)


def test_persistent_drift_retrains_and_the_new_champion_goes_out_as_a_canary(
    served: dict[str, Any],
) -> None:
    s = served
    repo, watcher = s["repo"], s["watcher"]
    run_id = json.loads((repo / "models" / "mlflow_run.json").read_text())["run_id"]
    live = _shifted(pd.read_csv(repo / "data" / "processed" / "train.csv"), seed=7)
    now = datetime.now(UTC) - timedelta(minutes=1)
    lines = [
        capture_line(
            chunk.to_dict(orient="records"), [0] * len(chunk), when=now, model=PROJECT,
            version=s["v1"], endpoint=ENDPOINT, run_id=run_id,
        )
        for chunk in (live.iloc[i : i + 10] for i in range(0, len(live), 10))
    ]  # fmt: skip
    capture_file(s["captures"], now, lines)
    append_rows(s["source"], 12, shift=7)  # new labelled rows arrived at the source

    assert watcher.tick() == "retrain_enqueued"
    (job,) = watcher.trainer.store.recent()

    def settled() -> dict[str, Any] | None:
        names = {"canary_started", "canary_failed", "retrain_failed", "retrain_unchanged",
                 "gate_kept"}  # fmt: skip
        return next((d for d in watcher.decisions() if d["decision"] in names), None)

    last = wait_until(settled, timeout=JOB_TIMEOUT, interval=2, what="the job and its canary")
    done = watcher.trainer.store.get(job.id)
    assert done is not None and done.state == "succeeded", (done, watcher.decisions())
    assert last["decision"] == "canary_started", watcher.decisions()
    v2 = str(done.result["version"]) if done.result else ""
    assert v2 and v2 != s["v1"]

    decisions = [d["decision"] for d in watcher.decisions()]
    assert decisions == ["drift_seen", "retrain_enqueued", "gate_promoted", "canary_started"]
    (status,) = endpoints.status(ENDPOINT, stack=s["stack"])
    serving = [(b["version"], b["traffic"]) for b in status["serving"]]  # type: ignore[union-attr]
    assert serving == [(s["v1"], 100 - CANARY), (v2, CANARY)]

    # every decision is a tag on the monitor run that saw the drift
    monitor_run = watcher.decisions()[0]["monitor_run"]
    tags = s["rest"].run(monitor_run).tags
    assert tags["mlrig.monitor.drifted"] == "true"
    assert "mean_radius" in tags["mlrig.loop.drift_seen"]
    assert tags["mlrig.loop.retrain_enqueued"].startswith(f"job {job.id}")
    assert tags["mlrig.loop.gate_promoted"] == f"job {job.id}: version {v2} promoted"
    assert tags["mlrig.loop.canary_started"].startswith(
        f"models:/{PROJECT}/{v2} on {ENDPOINT} at {CANARY}%"
    )
    assert tags["mlrig.loop.decision"] == "canary_started"

    # the same drifted window again: the new champion is still on trial, so no second job
    assert watcher.tick() == "retrain_skipped"
    assert watcher.decisions()[-1]["detail"] == (
        f"{ENDPOINT} runs a canary of version {v2}: promote or abort it first"
    )
    assert len(watcher.trainer.store.recent()) == 1
