"""`mlrig trainer serve` for real: the service as a process on a free loopback port, each job
the real `mlrig retrain` on a repo from `mlrig init`, against the session's local stack.

One service and one repo for the module; the tests run in file order and each leaves the
repo clean with the service up (the kill test restarts it). The repo's data source is a CSV
outside it (params.yaml `ingest.source`), where the tests append rows, drift the schema or
inject leakage, as new data would arrive.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mlrig.core.stack.local.stack import free_port
from mlrig.core.trainer._store import INTERRUPTED
from mlrig.wait import wait_until
from tests.helpers import VENV_BIN, exited, repo_env, sh, wait_for_http

pytestmark = pytest.mark.integration
PROJECT = "trainrig"
JOB_TIMEOUT = 300
STAGES_AFTER_INGEST = ("validate", "preprocess", "train", "evaluate")


@dataclass
class Service:
    repo: Path
    source: Path
    env: dict[str, str]
    mlflow: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        argv = [str(VENV_BIN / "mlrig"), "trainer", "serve", "--repo", str(self.repo)]
        with (self.logs / "service.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_for_http(
            f"{self.url}/health",
            timeout=120,
            what="the trainer service",
            give_up=lambda: exited(proc, "the trainer service"),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def post(self, body: dict[str, Any] | None = None) -> str:
        answer = requests.post(f"{self.url}/train", headers=self.auth, json=body, timeout=10)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/train/{job_id}", headers=self.auth, timeout=10)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def finished(self, job_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in ("succeeded", "failed") else None

        return wait_until(done, timeout=JOB_TIMEOUT, what=f"job {job_id} finished", interval=0.3)

    # -- the stack's registry, read with the admin's credentials through MLflow's REST API -----
    def rest(self, path: str, missing_ok: bool = False, **params: str) -> dict[str, Any]:
        answer = requests.get(
            f"{self.mlflow['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/{path}",
            params=params,
            auth=(self.mlflow["MLFLOW_TRACKING_USERNAME"], self.mlflow["MLFLOW_TRACKING_PASSWORD"]),
            timeout=10,
        )
        if answer.status_code == 404 or (answer.status_code == 400 and missing_ok):
            return {}  # MLflow answers 400 for an alias of a model that does not exist yet
        answer.raise_for_status()
        return dict(answer.json())

    def versions(self) -> list[str]:
        found = self.rest("model-versions/search", filter=f"name='{PROJECT}'")
        return sorted((v["version"] for v in found.get("model_versions", [])), key=int)

    def champion(self) -> str | None:
        found = self.rest("registered-models/alias", True, name=PROJECT, alias="champion")
        return found.get("model_version", {}).get("version")

    def run_tags(self, version: str) -> dict[str, str]:
        mv = self.rest("model-versions/get", name=PROJECT, version=version)["model_version"]
        run = self.rest("runs/get", run_id=mv["run_id"])["run"]
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def repo_state(self) -> tuple[str, str, bytes]:
        """HEAD, `git status --porcelain` and dvc.lock: what a failed job must not change."""
        head = sh(self.repo, "git", "rev-parse", "HEAD", env=self.env).strip()
        status = sh(self.repo, "git", "status", "--porcelain", env=self.env)
        lock = self.repo / "dvc.lock"
        return head, status, lock.read_bytes() if lock.exists() else b""


def told(job: dict[str, Any]) -> str:
    """A job as an assertion message: its error and the end of its log."""
    return f"{job['state']} at {job['step']}: {job['error']}\n" + "\n".join(job["log_tail"])


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())


def append_new_rows(path: Path, count: int) -> None:
    """Rows that were not there: copies of existing ones with new IDs and features scaled by
    a hair (a new factor each time: the table's size), so they are neither duplicates nor
    leaked copies."""
    header, rows = read_rows(path)
    top = max(int(r["id"]) for r in rows)
    factor = 1 + len(rows) * 1e-6
    for i, base in enumerate(rows[:count], start=1):
        row = {
            k: (repr(float(v) * factor) if k not in ("id", "target") else v)
            for k, v in base.items()
        }
        row["id"] = str(top + i)
        rows.append(row)
    write_rows(path, header, rows)


@pytest.fixture(scope="module")
def service(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("trainer")
    env = repo_env(local_stack["home"])
    sh(root, str(VENV_BIN / "mlrig"), "init", PROJECT, "--stack", "local", "--no-input", env=env)
    repo = root / PROJECT
    # the source lives outside the repo, where new data arrives
    params = yaml.safe_load((repo / "params.yaml").read_text())
    bundled = repo / params["ingest"]["source"]
    source = root / "source.csv"
    source.write_bytes(bundled.read_bytes())
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(
        text.replace(f"source: {params['ingest']['source']}", f"source: {source}", 1)
    )
    assert yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["source"] == str(source)
    sh(repo, "git", "commit", "-qam", "read the data where it arrives", env=env)
    svc = Service(repo, source, env, dict(local_stack["env"]), root)
    svc.token = sh(repo, str(VENV_BIN / "mlrig"), "trainer", "token", env=env).strip()
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        print((root / "service.log").read_text()[-3000:])


def test_health_needs_no_credentials_and_the_rest_does(service: Service) -> None:
    assert requests.get(f"{service.url}/health", timeout=5).status_code == 200
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic eDp5"}):
        answer = requests.post(f"{service.url}/train", headers=headers, timeout=5)
        assert answer.status_code == 401, headers
        assert requests.get(f"{service.url}/train", headers=headers, timeout=5).status_code == 401
    assert requests.get(f"{service.url}/train", headers=service.auth, timeout=5).json() == {
        "jobs": []
    }  # refused posts queued nothing
    admin = (service.mlflow["MLFLOW_TRACKING_USERNAME"], service.mlflow["MLFLOW_TRACKING_PASSWORD"])
    assert requests.get(f"{service.url}/train", auth=admin, timeout=5).status_code == 200
    log = (service.logs / "service.log").read_text()
    assert service.token not in log and "trainer/token" in log  # where it is, never what


def test_new_rows_make_a_new_version_named_after_their_snapshot(service: Service) -> None:
    first = service.finished(service.post({"push_image": False}))  # the first model
    assert first["state"] == "succeeded", told(first)
    assert first["result"]["changed"] is True and first["result"]["champion_moved"] is True
    assert service.champion() == first["result"]["version"]

    append_new_rows(service.source, 20)
    job = service.finished(service.post({"push_image": False}))
    assert job["state"] == "succeeded", told(job)
    result = job["result"]
    assert result["changed"] is True
    assert result["version"] == service.versions()[-1] != first["result"]["version"]
    record = json.loads((service.repo / "data/snapshot/record.json").read_text())
    assert result["snapshot"] == record["md5"] != first["result"]["snapshot"]
    assert record["rows"] == int(service.run_tags(result["version"])["mlrig.data.rows"])
    assert service.run_tags(result["version"])["mlrig.data.md5"] == record["md5"]
    head = sh(service.repo, "git", "rev-parse", "HEAD", env=service.env).strip()
    assert result["commit"] == head
    assert result["decision"] in ("promoted", "kept")
    assert service.champion() == (
        result["version"] if result["champion_moved"] else first["result"]["version"]
    )
    assert service.repo_state()[1] == ""


def test_the_same_source_again_is_nothing_new(service: Service) -> None:
    before, versions = service.repo_state(), service.versions()
    job = service.finished(service.post({"push_image": False}))
    assert job["state"] == "succeeded", told(job)
    assert job["result"]["changed"] is False and job["result"]["version"] is None
    assert service.repo_state() == before and service.versions() == versions


@pytest.mark.parametrize("fault", ["schema drift", "leakage"])
def test_bad_data_fails_before_training_and_changes_nothing(service: Service, fault: str) -> None:
    good = service.source.read_bytes()
    header, rows = read_rows(service.source)
    if fault == "schema drift":  # a column renamed upstream
        renamed = {"mean_radius": "radius_mean"}
        header = [renamed.get(h, h) for h in header]
        rows = [{renamed.get(k, k): v for k, v in r.items()} for r in rows]
        expected_step, words = "validate", "mean_radius"
    else:  # rows copied under new IDs, few enough to pass the duplicate rule, land in both sets
        top = max(int(r["id"]) for r in rows)
        rows += [{**r, "id": str(top + i)} for i, r in enumerate(rows[:5], start=1)]
        expected_step, words = "preprocess", "leakage"  # the split is where leakage shows
    write_rows(service.source, header, rows)
    before, versions, champion = service.repo_state(), service.versions(), service.champion()
    try:
        job = service.finished(service.post({"push_image": False}))
    finally:
        service.source.write_bytes(good)
    assert job["state"] == "failed", job
    assert job["step"] == expected_step, job
    assert words in job["error"], job["error"]
    assert job["result"] is None and job["log_tail"]
    assert service.repo_state() == before
    assert service.versions() == versions and service.champion() == champion


def test_a_killed_service_marks_its_job_failed_and_the_repo_is_as_it_was(service: Service) -> None:
    before, champion = service.repo_state(), service.champion()
    append_new_rows(service.source, 10)
    job_id = service.post({"push_image": False})

    def in_a_stage() -> str | None:
        step = service.job(job_id)["step"]
        return step if step in STAGES_AFTER_INGEST else None

    wait_until(in_a_stage, timeout=JOB_TIMEOUT, what="the job inside the pipeline", interval=0.1)
    assert service.proc is not None
    service.proc.send_signal(signal.SIGKILL)
    service.proc.wait(30)
    service.start()  # start-up recovers before /health answers
    job = service.job(job_id)
    assert job["state"] == "failed" and job["error"] == INTERRUPTED, job
    assert job["log_tail"], "its log is kept"
    assert service.repo_state() == before
    assert service.champion() == champion
    again = service.finished(service.post({"push_image": False}))
    assert again["state"] == "succeeded", told(again)
    assert again["result"]["changed"] is True


def test_concurrent_posts_all_run_one_at_a_time(service: Service) -> None:
    with ThreadPoolExecutor(5) as pool:
        ids = list(pool.map(lambda _i: service.post({"push_image": False}), range(5)))
    assert len(set(ids)) == 5
    jobs = [service.finished(i) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 5, jobs
    listed = requests.get(f"{service.url}/train", headers=service.auth, timeout=5).json()["jobs"]
    assert set(ids) <= {j["id"] for j in listed}
    spans = sorted(
        (datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"]))
        for j in jobs
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, "two jobs overlapped"


def test_sigterm_interrupts_the_running_job_and_recovers(service: Service) -> None:
    before, champion = service.repo_state(), service.champion()
    append_new_rows(service.source, 10)
    job_id = service.post({"push_image": False})
    wait_until(
        lambda: service.job(job_id)["step"] in STAGES_AFTER_INGEST,
        timeout=JOB_TIMEOUT,
        what="the job inside the pipeline",
        interval=0.1,
    )
    assert service.proc is not None
    logged = (service.logs / "service.log").stat().st_size
    service.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down, then re-raises the signal it caught: the exit says SIGTERM
    assert service.proc.wait(60) in (0, -signal.SIGTERM)
    with (service.logs / "service.log").open() as fh:
        fh.seek(logged)
        assert "Application shutdown complete." in fh.read()  # the job was stopped cleanly
    assert service.repo_state() == before and service.champion() == champion
    service.start()
    job = service.job(job_id)
    assert job["state"] == "failed" and job["error"] == INTERRUPTED, job
