"""`mlrig stack rehearse` for real: the mlflow-server image built by mlrig, real PostgreSQL,
moto's S3 server, the task contract's memory and CPU. One full rehearsal is shared by the
report tests; each broken dependency gets its own short one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.core.stack import rehearse as core
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
RUNS = 20  # the command's default is 200; bench-sized runs are measured by hand (see report)
CHECKS = [
    "database role",
    "healthy",
    "unauthenticated 401",
    "admin 200",
    "reader cannot write",
    "artifact in bucket",
    "not root",
    "second start",
    "run survives restart",
    "peak memory",
]


@pytest.fixture(scope="module")
def rehearsal(prerequisites_for_rehearsal: None) -> Iterator[dict[str, Any]]:
    """One rehearsal through the command line, kept running, its JSON report parsed."""
    from mlrig.core.stack.local.stack import free_port
    from mlrig.main import app

    result = CliRunner().invoke(
        app,
        ["stack", "rehearse", "--json", "--keep", "--runs", str(RUNS), "--port", str(free_port())],
    )
    assert result.stdout.strip(), result.output
    report: dict[str, Any] = json.loads(result.stdout)
    report["exit_code"] = result.exit_code
    report["stderr"] = result.stderr
    try:
        yield report
    finally:
        if Path(report["directory"]).exists():  # the --stop test failed before stopping it
            core.stop_kept(Path(report["directory"]))


def _left_behind(directory: str, docker_engine: Any) -> list[str]:
    import psutil

    left = [
        f"container {c.short_id}"
        for c in docker_engine.containers.list(
            all=True, filters={"label": f"mlrig.rehearsal={directory}"}
        )
    ]
    left += [
        f"process {p.pid}"
        for p in psutil.process_iter(["cmdline"])
        if directory in " ".join(p.info["cmdline"] or [])
    ]
    if Path(directory).exists():
        left.append(directory)
    return left


def _check(report: dict[str, Any], name: str) -> dict[str, Any]:
    (check,) = [c for c in report["checks"] if c["name"] == name]
    return check


def test_every_check_passes(rehearsal: dict[str, Any]) -> None:
    failed = [f"{c['name']}: {c['detail']}" for c in rehearsal["checks"] if not c["ok"]]
    assert failed == [], rehearsal["stderr"]
    assert [c["name"] for c in rehearsal["checks"]] == CHECKS
    assert rehearsal["ok"] is True and rehearsal["exit_code"] == 0


def test_report_carries_the_measurements(rehearsal: dict[str, Any]) -> None:
    assert rehearsal["image"].startswith("mlrig/mlflow-server:")
    assert rehearsal["image_size_mb"] > 100
    assert _check(rehearsal, "healthy")["value"] > 0
    assert _check(rehearsal, "second start")["value"] > 0
    peak = _check(rehearsal, "peak memory")
    assert 0 < peak["value"] <= core.MEMORY_LIMIT_SHARE * 100
    assert f"after {RUNS} runs" in peak["detail"]
    assert "s3://mlrig-rehearse-" in _check(rehearsal, "artifact in bucket")["detail"]
    assert "/mlflow-artifacts/" in _check(rehearsal, "artifact in bucket")["detail"]


def test_the_container_ran_with_the_contract(rehearsal: dict[str, Any]) -> None:
    cfg = rehearsal["run_config"]
    cpu, memory, workers = ts_container.CONTAINER_SIZES["small"]
    assert (cfg["user"], cfg["memory_mib"], cfg["cpu_units"]) == (
        ts_container.CONTAINER_USER,
        memory,
        cpu,
    )
    assert cfg["secret_names"] == list(ts_container.CONTAINER_SECRET_ENV_NAMES)
    assert cfg["health_path"] == ts.HEALTH_PATH and cfg["network_mode"] == "host"
    assert cfg["command"][cfg["command"].index("--workers") + 1] == str(workers)
    assert "MLFLOW_S3_ENDPOINT_URL" in cfg["local_env_names"]


def test_kept_server_answers_then_stop_removes_everything(
    rehearsal: dict[str, Any],  # type: ignore[no-untyped-def]
    docker_engine,
) -> None:
    import requests

    from mlrig.main import app

    directory = rehearsal["directory"]
    assert rehearsal["kept"] is True
    password = (Path(directory) / "admin-password").read_text().strip()
    assert oct((Path(directory) / "admin-password").stat().st_mode & 0o777) == "0o600"
    resp = requests.post(
        f"{rehearsal['url']}/api/2.0/mlflow/experiments/search",
        json={"max_results": 5},
        auth=(ts.ADMIN_USERNAME, password),
        timeout=60,
    )
    assert resp.status_code == 200
    assert _left_behind(directory, docker_engine)  # container, PostgreSQL, moto still up
    result = CliRunner().invoke(app, ["stack", "rehearse", "--stop", directory])
    assert result.exit_code == 0, result.output
    assert _left_behind(directory, docker_engine) == []


def test_no_secret_in_the_report(rehearsal: dict[str, Any]) -> None:
    text = json.dumps(rehearsal)
    for name in ts_container.CONTAINER_SECRET_ENV_NAMES:
        assert f'"{name}": "' not in text  # names only, never name-value pairs


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("db-password", "password authentication failed"),
        ("db-down", f"still failing after {core.FAULT_WAIT_SECONDS} s"),
        ("bucket", "NoSuchBucket"),
    ],
)
def test_a_broken_dependency_is_named(
    prerequisites_for_rehearsal: None,
    moto_server: str,
    docker_engine: Any,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    cause: str,
) -> None:
    from mlrig.core.stack.local.stack import free_port

    endpoint = None
    if fault == "bucket":  # also covers --s3-endpoint: any S3 API, credentials from the env
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        endpoint = moto_server
    report = core.rehearse(
        core.Request(runs=1, port=free_port(), fault=fault, s3_endpoint=endpoint)
    )
    assert [c.name for c in report.failed] == ["healthy"]
    detail = report.failed[0].detail
    assert "container exited" in detail and "mlflow-server:" in detail and cause in detail
    assert _left_behind(report.directory, docker_engine) == []  # stopped without --keep
