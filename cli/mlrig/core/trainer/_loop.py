"""The trainer service's schedule: drift -> retrain -> canary, by the repository's policy.

With `monitor.action: none` (the default) nothing is scheduled: no check could lead anywhere,
and each would pull the reference snapshot and log an MLflow run for nothing; the service
only looks at params.yaml again every IDLE_RECHECK seconds (`record` checks without acting).
Otherwise every `monitor.interval` the Watcher runs `run_monitor` on the deploy endpoint's
captures of the last `monitor.window` (the same API as `mlrig monitor`, one MLflow run per
check) and counts drifted windows in a row for the version served. A clean window resets the
count; a window with too few rows (or no check possible: no captures, mixed versions) leaves
it as it is, since it says nothing either way; a new served version starts a new count. When
the count reaches `monitor.consecutive` the action runs once and the count restarts: `alert`
posts to the webhook, `retrain` adds a job to the SAME queue as `POST /train` (its cap, its
one-at-a-time worker) unless a job is queued or running already. When any job ends with the gate's
verdict `promoted` and `deploy.canary` is set, the new champion goes to `deploy.endpoint` as
a canary of that share, through core/deploy (which verifies the image by digest and waits
for the container's health).

Each decision is one JSON line in `<state dir>/audit.jsonl` ({"event": "mlrig.loop", ...})
and a tag `mlrig.loop.<decision>` on the monitor run it came from. The loop's own state (the
count, the version it is about, the job it enqueued) is `<state dir>/loop.json`, read back
through pydantic under a file lock (the schedule and the worker thread both write it).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrig.core.deploy.state import NAME_PATTERN
from mlrig.core.trainer import policy as loop_policy
from mlrig.core.trainer._store import JOB_ID, Job, QueueFull
from mlrig.errors import ConfigError, MlrigError

if TYPE_CHECKING:
    from mlrig.core.monitor.monitor import MonitorResult
    from mlrig.core.trainer._jobs import Trainer

log = logging.getLogger("mlrig.trainer.loop")
EVENT = "mlrig.loop"
AUDIT = "audit.jsonl"
STATE = "loop.json"
TAG_PREFIX = "mlrig.loop."
WEBHOOK_TIMEOUT = 5.0
IDLE_RECHECK = 300.0  # seconds between looks at params.yaml while the monitor is off or bad

Monitor = Callable[[str, loop_policy.MonitorPolicy], "MonitorResult"]
Tagger = Callable[[str, dict[str, str]], None]
Deployer = Callable[[str, str, int], str]  # (ref, endpoint, percent) -> what now serves
CanaryOf = Callable[[str], str | None]  # endpoint -> the version its canary runs, if any


class LoopState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, max_length=256)
    version: str | None = Field(default=None, pattern=r"^[0-9]{1,12}$")
    consecutive: int = Field(default=0, ge=0, le=10_000)
    job: str | None = Field(default=None, pattern=JOB_ID)  # the retrain job the loop enqueued
    trigger_run: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")  # the check that acted
    last_check: datetime | None = None


def drifted(result: MonitorResult, policy: loop_policy.MonitorPolicy) -> bool:
    """The window's verdict under the repository's metric."""
    if not result.enough:
        return False
    if policy.metric == "wasserstein":
        return result.drifted
    limit = policy.thresholds.psi
    columns = [*result.columns, *([result.prediction] if result.prediction else [])]
    return any(c.psi is not None and c.psi >= limit for c in columns)


def thresholds(policy: loop_policy.MonitorPolicy) -> Any:
    from mlrig.core.monitor.stats import Thresholds

    t = policy.thresholds
    return Thresholds(
        wasserstein=t.wasserstein,
        jensen_shannon=t.jensen_shannon,
        alpha=t.alpha,
        min_samples=policy.min_samples,
        psi=t.psi,
    )


def webhook_url(policy: loop_policy.MonitorPolicy) -> str | None:
    import os

    hook = policy.webhook
    if hook and hook.startswith("env:"):
        return os.environ.get(hook[4:]) or None
    return hook


def notify(
    url: str | None, text: str, *, timeout: float = WEBHOOK_TIMEOUT
) -> threading.Thread | None:
    """POST {"text": text} (Slack's incoming-webhook shape) from a thread of its own, so a slow
    hook never holds the loop; a failure is logged by its kind only (the URL holds a token)."""
    if not url:
        return None

    def send() -> None:
        from mlrig.adapters import http

        try:
            code = http.post_webhook(url, {"text": text}, timeout=timeout)
        except MlrigError as exc:
            log.warning("%s", exc.one_line())
            return
        if not 200 <= code < 300:
            log.warning("the webhook answered %s", code)

    thread = threading.Thread(target=send, name="trainer-webhook", daemon=True)
    thread.start()
    return thread


class Watcher:
    """One repository's schedule over its Trainer. `tick` is one check (the tests call it
    directly); `start`/`stop` run it every `monitor.interval` on a thread of its own."""

    def __init__(
        self,
        repo: Path,
        trainer: Trainer,
        root: Path,
        *,
        stack: str | None = None,
        monitor: Monitor | None = None,
        tag: Tagger | None = None,
        deploy: Deployer | None = None,
        canary_of: CanaryOf | None = None,
    ) -> None:
        self.repo = repo
        self.trainer = trainer
        self.root = root
        self.stack = stack
        self.audit_path = root / AUDIT
        self.state_path = root / STATE
        self._monitor = monitor or self._run_monitor
        self._tag = tag or self._tag_run
        self._deploy = deploy or self._deploy_canary
        self._canary_of = canary_of or self._endpoint_canary
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.webhooks: list[threading.Thread] = []  # still sending (the tests join them)
        trainer.on_finished = self.job_finished

    # -- the defaults: the real monitor, MLflow and deploy ----------------------------------
    def _run_monitor(self, endpoint: str, policy: loop_policy.MonitorPolicy) -> MonitorResult:
        from mlrig.core.monitor.monitor import run_monitor

        return run_monitor(
            endpoint, policy.since, self.stack, repo=self.repo, thresholds=thresholds(policy)
        )

    def _tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        from mlrig.adapters.mlflow_rest import MlflowRest
        from mlrig.core.stack import env as stack_env
        from mlrig.core.stack import stacks

        outputs = stacks.outputs(stacks.resolve_name(self.stack, repo=self.repo))
        MlflowRest.from_env(stack_env.client_env(outputs)).log_batch(run_id, tags=tags)

    def _deploy_canary(self, ref: str, endpoint: str, percent: int) -> str:
        from mlrig.core.deploy import endpoints

        done = endpoints.deploy(ref, endpoint=endpoint, stack=self.stack, canary=percent)
        return ", ".join(f"v{b.version} {b.weight}%" for b in done.endpoint.backends)

    def _endpoint_canary(self, endpoint: str) -> str | None:
        from mlrig.core.deploy import endpoints

        try:
            (found,) = endpoints.status(endpoint, stack=self.stack)
        except (MlrigError, ValueError):  # no such endpoint (yet): no canary either
            return None
        serving = found.get("serving")
        if isinstance(serving, list) and len(serving) > 1:
            return str(serving[1]["version"])
        return None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="trainer-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def next_wait(self) -> float:
        """Seconds until the next check: the policy's interval; IDLE_RECHECK (a look at
        params.yaml again, no check) while monitor.action is none or the policy is refused."""
        try:
            mon = self.policy().monitor
        except MlrigError:
            return IDLE_RECHECK
        return IDLE_RECHECK if mon.action == "none" else mon.every.total_seconds()

    def _loop(self) -> None:
        while True:
            if self._stopping.wait(self.next_wait()):
                return
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the schedule outlives one bad check
                log.exception("the monitor check failed")

    def _notify(self, url: str | None, text: str) -> None:
        thread = notify(url, text)
        # finished sends are dropped so a long-running service keeps no list of old threads
        self.webhooks = [t for t in self.webhooks if t.is_alive()]
        if thread is not None:
            self.webhooks.append(thread)

    def describe(self) -> str:
        """The schedule in one line, for the service's start-up message."""
        try:
            policy = self.policy()
            endpoint = self._endpoint(policy)
        except MlrigError as exc:
            return f"params.yaml is refused, checks skipped until fixed: {exc.one_line()}"
        mon, canary = policy.monitor, policy.deploy.canary
        if mon.action == "none":
            return (
                f"monitor.action is none: no scheduled checks of endpoint {endpoint} (record, "
                "alert or retrain turns them on; params.yaml is read again every "
                f"{IDLE_RECHECK:.0f} s)"
            )
        then = {"record": "record only", "alert": "alert", "retrain": "retrain"}[mon.action]
        return (
            f"every {mon.interval}, endpoint {endpoint}'s last {mon.window}; after "
            f"{mon.consecutive} drifted window(s): {then}"
            + (f"; a promoted champion goes out as a {canary}% canary" if canary else "")
            + f"; decisions in {self.audit_path}"
        )

    # -- state and audit -----------------------------------------------------------------------
    def policy(self) -> loop_policy.Policy:
        return loop_policy.load(self.repo)

    def _locked(self) -> Any:
        import filelock

        return filelock.FileLock(self.root / f"{STATE}.lock", timeout=60, mode=0o600)

    def _read(self) -> LoopState:
        try:
            return LoopState.model_validate_json(self.state_path.read_bytes())
        except FileNotFoundError:
            return LoopState()
        except (OSError, ValidationError, ValueError):
            self._audit("state_reset", detail=f"{self.state_path} was not the loop's: started over")
            return LoopState()

    def _write(self, state: LoopState) -> None:
        import os

        tmp = self.state_path.with_name(f".{STATE}.tmp")
        tmp.write_text(state.model_dump_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_path)

    def _audit(self, decision: str, *, detail: str = "", **fields: Any) -> dict[str, Any]:
        line = {
            "event": EVENT,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "decision": decision,
            "repo": self.repo.name,
            **{k: v for k, v in fields.items() if v is not None},
            "detail": detail,
        }
        import os

        # owner-only whatever the process's umask (the demo ticks the loop in its own
        # process): the stack's folder is private, and doctor's file-modes check says so
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=False) + "\n")
        log.info("%s: %s", decision, detail)
        return line

    def decisions(self) -> list[dict[str, Any]]:
        """The audit lines so far (a damaged line is skipped)."""
        out = []
        try:
            lines = self.audit_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        for text in lines:
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == EVENT:
                out.append(doc)
        return out

    def _decide(self, run_id: str | None, decision: str, detail: str, **fields: Any) -> None:
        """One audit line, and the same decision as a tag on the monitor run it came from."""
        self._audit(decision, detail=detail, monitor_run=run_id, **fields)
        if run_id:
            try:
                self._tag(
                    run_id,
                    {f"{TAG_PREFIX}{decision}": detail[:4000], f"{TAG_PREFIX}decision": decision},
                )
            except MlrigError as exc:
                log.warning("could not tag monitor run %s: %s", run_id, exc.one_line())

    def _endpoint(self, policy: loop_policy.Policy) -> str:
        from mlrig.core.shared.names import load_answers
        from mlrig.paths import ANSWERS_FILE

        if policy.deploy.endpoint:
            return policy.deploy.endpoint
        name = str(load_answers(self.repo / ANSWERS_FILE)["project_name"])
        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(
                f"the project's name {name!r} is no endpoint name",
                hint="set deploy.endpoint in params.yaml to the endpoint to watch",
            )
        return name

    # -- one check -----------------------------------------------------------------------------
    def tick(self) -> str:
        """One check by the current policy; returns the decision taken."""
        try:
            policy = self.policy()
            endpoint = self._endpoint(policy)
        except MlrigError as exc:
            self._audit("policy_invalid", detail=exc.one_line())
            return "policy_invalid"
        mon = policy.monitor
        if mon.action == "none":  # the schedule does not call this; a direct call says so
            return "monitor_off"
        hook = webhook_url(mon)
        try:
            result = self._monitor(endpoint, mon)
        except MlrigError as exc:
            self._audit("no_check", detail=exc.one_line(), endpoint=endpoint)
            return "no_check"
        run_id = result.monitor_run_id
        where = {"endpoint": endpoint, "model": result.model, "version": result.version}
        with self._locked():
            state = self._read()
            if (state.model, state.version) != (result.model, result.version):
                state = state.model_copy(
                    update={"model": result.model, "version": result.version, "consecutive": 0}
                )
            state.last_check = datetime.now(UTC)
            if not result.enough:
                self._write(state)
                self._decide(
                    run_id,
                    "not_enough_samples",
                    f"{result.rows} live rows, {mon.min_samples} needed: not judged "
                    f"({state.consecutive}/{mon.consecutive} kept)",
                    **where,
                )
                return "not_enough_samples"
            if not drifted(result, mon):
                state.consecutive = 0
                self._write(state)
                self._decide(run_id, "no_drift", f"{result.rows} rows, no drift", **where)
                return "no_drift"
            state.consecutive += 1
            columns = ", ".join(result.drifted_columns[:5]) or "the prediction"
            streak = f"{state.consecutive}/{mon.consecutive}"
            self._decide(run_id, "drift_seen", f"drift in {columns} ({streak} windows)", **where)
            if state.consecutive < mon.consecutive or mon.action == "record":
                self._write(state)
                return "drift_seen"
            state.consecutive = 0  # acted: a new streak must build up before acting again
            text = f"{endpoint}: {result.model} v{result.version} drifted ({columns}) {streak}"
            if mon.action == "alert":
                self._write(state)
                self._notify(hook, f"mlrig drift alert: {text}")
                self._decide(
                    run_id, "alert_sent", text if hook else f"{text}; no webhook set", **where
                )
                return "alert_sent"
            canary = self._canary_of(endpoint)
            if canary is not None:  # the last retrain's champion is still on trial
                self._write(state)
                why = f"{endpoint} runs a canary of version {canary}: promote or abort it first"
                self._decide(run_id, "retrain_skipped", why, **where)
                return "retrain_skipped"
            try:
                job = self.trainer.submit(None, unless_busy=True)
            except QueueFull as exc:
                self._write(state)
                self._decide(run_id, "retrain_skipped", exc.one_line(), **where)
                return "retrain_skipped"
            state.job, state.trigger_run = job.id, run_id
            self._write(state)
        self._decide(run_id, "retrain_enqueued", f"job {job.id} after {text}", job=job.id, **where)
        self._notify(hook, f"mlrig retrain enqueued: {text}")
        return "retrain_enqueued"

    # -- after a job (the worker thread calls this) ------------------------------------------
    def job_finished(self, job: Job) -> None:
        """The gate's verdict of a finished job; a promoted champion goes out as a canary
        when the deploy policy says so."""
        with self._locked():
            state = self._read()
            mine = state.job == job.id
            run_id = state.trigger_run if mine else None
            if mine:
                state.job = state.trigger_run = None
                self._write(state)
        result = job.result or {}
        if job.state != "succeeded":
            self._decide(run_id, "retrain_failed", f"job {job.id}: {job.error}", job=job.id)
            return
        if not result.get("changed"):
            self._decide(run_id, "retrain_unchanged", f"job {job.id}: no new data", job=job.id)
            return
        version = str(result.get("version") or "")
        verdict = "promoted" if result.get("decision") == "promoted" else "kept"
        self._decide(
            run_id, f"gate_{verdict}", f"job {job.id}: version {version} {verdict}", job=job.id
        )
        if verdict != "promoted":
            return
        try:
            policy = self.policy()
            endpoint = self._endpoint(policy)
        except MlrigError as exc:
            self._decide(run_id, "canary_failed", exc.one_line(), job=job.id)
            return
        if not policy.deploy.canary or not version.isdigit():
            return
        from mlrig.core.shared.names import load_answers
        from mlrig.paths import ANSWERS_FILE

        model = str(load_answers(self.repo / ANSWERS_FILE)["project_name"])
        ref, pct = f"models:/{model}/{version}", policy.deploy.canary
        try:
            serving = self._deploy(ref, endpoint, pct)
        except MlrigError as exc:
            self._decide(run_id, "canary_failed", exc.one_line(), job=job.id, endpoint=endpoint)
            return
        text = f"{ref} on {endpoint} at {pct}% ({serving})"
        self._decide(run_id, "canary_started", text, job=job.id, endpoint=endpoint)
        self._notify(webhook_url(policy.monitor), f"mlrig canary: {text}")
