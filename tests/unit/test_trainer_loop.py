"""The trainer's monitor schedule: the params blocks, drifted windows in a row, one retrain on
the trainer's own queue, the gate's verdict and the canary, the audit lines and run tags, and
the webhook against a real loopback HTTP server."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlrig.core.monitor.monitor import Column, MonitorResult
from mlrig.core.trainer import _loop, policy
from mlrig.core.trainer._jobs import Trainer
from mlrig.core.trainer._store import JobStore
from mlrig.errors import ConfigError, MlrigError, UsageError
from tests.helpers import default_template_file

RUN = "ab" * 16
TOKEN = "T0K3N-secret-part"


def _result(
    *, drifted: bool, rows: int = 500, version: str = "3", psi: float = 0.01
) -> MonitorResult:
    now = datetime.now(UTC)
    column = Column(
        column="mean radius",
        kind="numeric",
        n_reference=400,
        n_live=rows,
        drifted=drifted,
        psi=psi,
        wasserstein=0.5 if drifted else 0.01,
    )
    return MonitorResult(
        target="churn",
        endpoint="churn",
        model="churn",
        version=version,
        run_id="c" * 32,
        digest=None,
        since=now - timedelta(hours=1),
        until=now,
        records=rows,
        rows=rows,
        cut_lines=0,
        bad_records=0,
        reference_path="data/snapshot/data.csv",
        reference_md5="d" * 32,
        reference_rows=400,
        thresholds={},
        columns=[column],
        enough=rows >= 200,
        drifted=drifted and rows >= 200,
        monitor_run_id=RUN,
    )


def _repo(tmp_path: Path, params: dict[str, Any]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    (repo / ".copier-answers.yml").write_text("project_name: churn\nstack: dev\n")
    return repo


class Fake:
    """The loop's three outside calls, recorded."""

    def __init__(self, results: list[MonitorResult | MlrigError]) -> None:
        self.results = results
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.deploys: list[tuple[str, str, int]] = []
        self.canaries: dict[str, str] = {}

    def monitor(self, endpoint: str, _policy: policy.MonitorPolicy) -> MonitorResult:
        item = self.results.pop(0)
        if isinstance(item, MlrigError):
            raise item
        return item

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        self.tags.append((run_id, tags))

    def deploy(self, ref: str, endpoint: str, percent: int) -> str:
        self.deploys.append((ref, endpoint, percent))
        return f"v3 {100 - percent}%, v4 {percent}%"


def _watcher(tmp_path: Path, params: dict[str, Any], fake: Fake) -> _loop.Watcher:
    repo = _repo(tmp_path, params)
    root = tmp_path / "state"
    trainer = Trainer(repo, JobStore(root), recover=lambda: None)
    return _loop.Watcher(
        repo, trainer, root, monitor=fake.monitor, tag=fake.tag, deploy=fake.deploy,
        canary_of=lambda endpoint: fake.canaries.get(endpoint),
    )  # fmt: skip


RETRAIN = {"monitor": {"action": "retrain", "consecutive": 2}, "deploy": {"canary": 10}}


# -- the blocks ---------------------------------------------------------------------------------
def test_the_templates_blocks_are_the_defaults_and_absent_blocks_mean_off() -> None:
    params = yaml.safe_load(default_template_file("params.yaml"))
    assert policy.parse(params) == policy.Policy()
    assert policy.parse({"train": {"C": 1}}) == policy.Policy()
    off = policy.Policy()
    assert (off.monitor.action, off.deploy.canary, off.monitor.consecutive) == ("none", 0, 3)
    assert off.monitor.every == timedelta(hours=1) and off.monitor.since == timedelta(hours=24)


@pytest.mark.parametrize(
    ("blocks", "field"),
    [
        ({"monitor": {"action": "redeploy"}}, "monitor.action"),
        ({"monitor": {"interval": "5s"}}, "monitor.interval"),
        ({"monitor": {"window": "soon"}}, "monitor.window"),
        ({"monitor": {"consecutive": 0}}, "monitor.consecutive"),
        ({"monitor": {"thresholds": {"alpha": 2}}}, "monitor.thresholds.alpha"),
        ({"monitor": {"metric": "ks"}}, "monitor.metric"),
        ({"monitor": {"treshold": 1}}, "monitor.treshold"),
        ({"deploy": {"canary": 100}}, "deploy.canary"),
        ({"deploy": {"endpoint": "../etc"}}, "deploy.endpoint"),
    ],
)
def test_a_bad_block_is_one_line_naming_the_field(blocks: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        policy.parse(blocks, "repo/params.yaml")
    assert err.value.one_line().startswith(f"repo/params.yaml: {field} ")
    assert "\n" not in str(err.value)


def test_a_webhook_is_an_http_url_or_an_env_name_and_never_echoed() -> None:
    assert (
        policy.parse({"monitor": {"webhook": "env:SLACK_HOOK"}}).monitor.webhook == "env:SLACK_HOOK"
    )
    url = f"https://hooks.example.com/services/{TOKEN}"
    assert policy.parse({"monitor": {"webhook": url}}).monitor.webhook == url
    with pytest.raises(ConfigError) as err:
        policy.parse({"monitor": {"webhook": f"ftp://x/{TOKEN}"}})
    assert TOKEN not in err.value.one_line() and "monitor.webhook" in err.value.one_line()


# -- the windows in a row ---------------------------------------------------------------------
def test_drift_must_persist_for_the_windows_in_a_row_and_clean_windows_reset_it(
    tmp_path: Path,
) -> None:
    results = [
        _result(drifted=True),
        _result(drifted=False),  # resets
        _result(drifted=True),
        _result(drifted=True, rows=50),  # too few rows: not judged, streak kept
        _result(drifted=True),  # 2 in a row: acts
    ]
    fake = Fake(results)
    watcher = _watcher(tmp_path, RETRAIN, fake)
    decisions = [watcher.tick() for _ in range(5)]
    assert decisions == [
        "drift_seen",
        "no_drift",
        "drift_seen",
        "not_enough_samples",
        "retrain_enqueued",
    ]
    (job,) = watcher.trainer.store.in_state("queued")
    lines = watcher.decisions()
    assert [d["decision"] for d in lines] == [
        "drift_seen",
        "no_drift",
        "drift_seen",
        "not_enough_samples",
        "drift_seen",
        "retrain_enqueued",
    ]
    assert lines[-1]["job"] == job.id and lines[-1]["monitor_run"] == RUN
    assert "1/2 kept" in lines[3]["detail"] and "(2/2 windows)" in lines[4]["detail"]
    assert fake.tags[-1] == (
        RUN,
        {
            "mlrig.loop.retrain_enqueued": lines[-1]["detail"],
            "mlrig.loop.decision": "retrain_enqueued",
        },
    )
    state = _loop.LoopState.model_validate_json((tmp_path / "state" / "loop.json").read_text())
    assert (state.consecutive, state.job, state.trigger_run) == (0, job.id, RUN)


def test_a_new_served_version_starts_a_new_count(tmp_path: Path) -> None:
    fake = Fake([_result(drifted=True, version="3"), _result(drifted=True, version="4")])
    watcher = _watcher(tmp_path, RETRAIN, fake)
    assert [watcher.tick(), watcher.tick()] == ["drift_seen", "drift_seen"]
    assert not watcher.trainer.store.in_state("queued")


def test_psi_as_the_metric_decides_by_the_psi_threshold(tmp_path: Path) -> None:
    params = {"monitor": {"action": "retrain", "consecutive": 1, "metric": "psi"}}
    # the monitor's own verdict (Wasserstein + KS) says drift, PSI stays under 0.2: no drift
    fake = Fake([_result(drifted=True, psi=0.05), _result(drifted=False, psi=0.4)])
    watcher = _watcher(tmp_path, params, fake)
    assert [watcher.tick(), watcher.tick()] == ["no_drift", "retrain_enqueued"]


def test_no_second_retrain_while_one_is_queued_or_running(tmp_path: Path) -> None:
    params = {"monitor": {"action": "retrain", "consecutive": 1}}
    watcher = _watcher(tmp_path, params, Fake([_result(drifted=True)] * 3))
    assert watcher.tick() == "retrain_enqueued"
    assert watcher.tick() == "retrain_skipped"
    running = watcher.trainer.store.claim_next()
    assert running is not None
    assert watcher.tick() == "retrain_skipped"
    assert len(watcher.trainer.store.recent()) == 1
    assert "is running already" in watcher.decisions()[-1]["detail"]


def test_no_retrain_while_the_last_champion_is_still_a_canary(tmp_path: Path) -> None:
    params = {"monitor": {"action": "retrain", "consecutive": 1}}
    fake = Fake([_result(drifted=True)])
    fake.canaries["churn"] = "4"
    watcher = _watcher(tmp_path, params, fake)
    assert watcher.tick() == "retrain_skipped"
    assert not watcher.trainer.store.recent()
    assert watcher.decisions()[-1]["detail"] == (
        "churn runs a canary of version 4: promote or abort it first"
    )


def test_the_schedule_shares_the_queue_cap_with_post_train(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "s")
    store.add(None)
    with pytest.raises(MlrigError):
        store.add(None, unless_busy=True)
    assert len(store.recent()) == 1
    Trainer(tmp_path, store, max_queued=2).submit()  # POST /train: still its own cap only
    assert len(store.recent()) == 2


def test_alert_only_alerts_and_record_only_checks(tmp_path: Path) -> None:
    alert = _watcher(
        tmp_path / "a",
        {"monitor": {"action": "alert", "consecutive": 1}},
        Fake([_result(drifted=True)]),
    )
    assert alert.tick() == "alert_sent"
    assert not alert.trainer.store.recent()
    assert "no webhook set" in alert.decisions()[-1]["detail"]
    record = _watcher(
        tmp_path / "r",
        {"monitor": {"action": "record", "consecutive": 1}},
        Fake([_result(drifted=True)]),
    )
    assert record.tick() == "drift_seen"
    assert not record.trainer.store.recent()
    assert record.next_wait() == 3600  # its interval


@pytest.mark.parametrize("params", [{}, {"monitor": {"action": "none", "interval": "1m"}}])
def test_action_none_schedules_no_check(tmp_path: Path, params: dict[str, Any]) -> None:
    """No monitor run, no MLflow run, no audit line: the schedule only reads params.yaml
    again after IDLE_RECHECK, and a policy turned on later is checked at its interval."""
    fake = Fake([])  # a check would pop from an empty list: IndexError
    watcher = _watcher(tmp_path, params, fake)
    assert watcher.next_wait() == _loop.IDLE_RECHECK
    assert watcher.tick() == "monitor_off"
    assert watcher.decisions() == [] and fake.tags == []
    assert not (tmp_path / "state" / "loop.json").exists()
    assert watcher.describe().startswith("monitor.action is none: no scheduled checks")
    (watcher.repo / "params.yaml").write_text("monitor:\n  action: record\n  interval: 2m\n")
    assert watcher.next_wait() == 120


def test_no_captures_or_a_bad_policy_is_one_audit_line_and_no_job(tmp_path: Path) -> None:
    fake = Fake([UsageError("no captures of endpoint churn since 2026-12-07 11:00 UTC")])
    watcher = _watcher(tmp_path, RETRAIN, fake)
    assert watcher.tick() == "no_check"
    assert watcher.decisions()[-1]["detail"].startswith("no captures of endpoint churn")
    (watcher.repo / "params.yaml").write_text("monitor:\n  action: maybe\n")
    assert watcher.tick() == "policy_invalid"
    assert not watcher.trainer.store.recent() and not fake.tags


def test_a_state_file_the_loop_did_not_write_starts_over(tmp_path: Path) -> None:
    watcher = _watcher(tmp_path, RETRAIN, Fake([_result(drifted=True)]))
    (tmp_path / "state" / "loop.json").write_text('{"consecutive": -5, "job": "../x"}')
    assert watcher.tick() == "drift_seen"
    assert [d["decision"] for d in watcher.decisions()] == ["state_reset", "drift_seen"]


def test_the_schedules_thread_ends_with_stop_before_its_first_check(tmp_path: Path) -> None:
    fake = Fake([])  # a check would pop from an empty list and fail the test's expectations
    watcher = _watcher(tmp_path, RETRAIN, fake)
    watcher.start()
    thread = watcher._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    watcher.stop()
    assert not thread.is_alive()
    assert watcher.decisions() == [] and fake.tags == []


def test_the_start_up_line_says_what_the_schedule_does(tmp_path: Path) -> None:
    watcher = _watcher(tmp_path, RETRAIN, Fake([]))
    assert watcher.describe() == (
        "every 1h, endpoint churn's last 24h; after 2 drifted window(s): retrain; a promoted "
        f"champion goes out as a 10% canary; decisions in {tmp_path / 'state' / 'audit.jsonl'}"
    )
    (watcher.repo / ".copier-answers.yml").write_text("project_name: churn_model\n")
    assert "'churn_model' is no endpoint name" in watcher.describe()
    assert watcher.tick() == "policy_invalid"


# -- after the job ------------------------------------------------------------------------------
def _finish(
    watcher: _loop.Watcher, result: dict[str, Any] | None, state: str = "succeeded"
) -> None:
    job = watcher.trainer.store.claim_next()
    assert job is not None
    watcher.trainer.store.finish(job.id, state, result=result, error=None if result else "boom")  # type: ignore[arg-type]
    done = watcher.trainer.store.get(job.id)
    assert done is not None
    watcher.trainer._finished(done.id)


def test_a_promoted_champion_goes_out_as_the_policys_canary(tmp_path: Path) -> None:
    params = {
        "monitor": {"action": "retrain", "consecutive": 1},
        "deploy": {"canary": 10, "endpoint": "churn-prod"},
    }
    fake = Fake([_result(drifted=True)])
    watcher = _watcher(tmp_path, params, fake)
    watcher.tick()
    _finish(watcher, {"changed": True, "version": "4", "decision": "promoted"})
    assert fake.deploys == [("models:/churn/4", "churn-prod", 10)]
    names = [d["decision"] for d in watcher.decisions()]
    assert names[-2:] == ["gate_promoted", "canary_started"]
    assert fake.tags[-1][0] == RUN and fake.tags[-1][1]["mlrig.loop.decision"] == "canary_started"
    state = _loop.LoopState.model_validate_json((tmp_path / "state" / "loop.json").read_text())
    assert state.job is None


@pytest.mark.parametrize(
    ("result", "state", "decision"),
    [
        ({"changed": True, "version": "4", "decision": "kept"}, "succeeded", "gate_kept"),
        ({"changed": False}, "succeeded", "retrain_unchanged"),
        (None, "failed", "retrain_failed"),
    ],
)
def test_no_canary_unless_the_gate_promoted(
    tmp_path: Path, result: dict[str, Any] | None, state: str, decision: str
) -> None:
    fake = Fake([_result(drifted=True)])
    watcher = _watcher(
        tmp_path, {**RETRAIN, "monitor": {"action": "retrain", "consecutive": 1}}, fake
    )
    watcher.tick()
    _finish(watcher, result, state)
    assert watcher.decisions()[-1]["decision"] == decision
    assert not fake.deploys


def test_canary_off_by_default_and_a_refused_deploy_is_one_line(tmp_path: Path) -> None:
    fake = Fake([_result(drifted=True)])
    watcher = _watcher(tmp_path / "off", {"monitor": {"action": "retrain", "consecutive": 1}}, fake)
    watcher.tick()
    _finish(watcher, {"changed": True, "version": "4", "decision": "promoted"})
    assert watcher.decisions()[-1]["decision"] == "gate_promoted" and not fake.deploys

    def refuse(ref: str, endpoint: str, percent: int) -> str:
        raise UsageError("endpoint 'churn' has a canary (version 3)")

    on = _watcher(
        tmp_path / "on",
        RETRAIN | {"monitor": {"action": "retrain", "consecutive": 1}},
        Fake([_result(drifted=True)]),
    )
    on._deploy = refuse
    on.tick()
    _finish(on, {"changed": True, "version": "4", "decision": "promoted"})
    last = on.decisions()[-1]
    assert (last["decision"], last["detail"]) == (
        "canary_failed",
        "endpoint 'churn' has a canary (version 3)",
    )


# -- the webhook --------------------------------------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Any:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_webhook_gets_slack_shaped_json_on_drift_retrain_and_canary(
    tmp_path: Path, hook_server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = hook_server.server_address[1]
    monkeypatch.setenv("MLRIG_TEST_HOOK", f"http://127.0.0.1:{port}/services/{TOKEN}")
    params = {
        "monitor": {"action": "retrain", "consecutive": 1, "webhook": "env:MLRIG_TEST_HOOK"},
        "deploy": {"canary": 20},
    }
    watcher = _watcher(tmp_path, params, Fake([_result(drifted=True)]))
    watcher.tick()
    _finish(watcher, {"changed": True, "version": "4", "decision": "promoted"})
    for thread in watcher.webhooks:
        thread.join(10)
    paths = {path for path, _, _ in _Hook.received}
    assert paths == {f"/services/{TOKEN}"}
    assert all(kind == "application/json" for _, kind, _ in _Hook.received)
    texts = sorted(body["text"] for _, _, body in _Hook.received)
    assert [set(body) for _, _, body in _Hook.received] == [{"text"}, {"text"}]
    assert texts[0].startswith("mlrig canary: models:/churn/4 on churn at 20%")
    assert texts[1].startswith("mlrig retrain enqueued: churn: churn v3 drifted (mean radius) 1/1")
    assert TOKEN not in (tmp_path / "state" / "audit.jsonl").read_text()


def test_a_dead_webhook_is_logged_without_its_url_and_blocks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    caplog.set_level(logging.WARNING, logger="mlrig.trainer.loop")
    thread = _loop.notify(f"http://127.0.0.1:{port}/{TOKEN}", "hello", timeout=2)
    assert thread is not None
    thread.join(10)
    assert [r.getMessage() for r in caplog.records] == [
        "the webhook did not answer (ConnectionError)"
    ]
    assert TOKEN not in caplog.text


def test_the_trainers_files_are_the_owners_only_whatever_the_umask(tmp_path: Path) -> None:
    """The demo runs a Trainer and ticks the loop in its own process (umask 022): the job
    table and the loop's audit trail must still pass doctor's file-modes check."""
    import os

    old = os.umask(0o022)
    try:
        watcher = _watcher(tmp_path, RETRAIN, Fake([]))
        JobStore(tmp_path / "state").add(None)  # a write: the WAL files appear
        watcher._audit("drift", detail="one line of the audit trail")
    finally:
        os.umask(old)
    made = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert {"jobs.db", watcher.audit_path.name} <= {p.name for p in made}
    assert {p.name: p.stat().st_mode & 0o077 for p in made} == {p.name: 0 for p in made}
