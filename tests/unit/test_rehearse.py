"""`mlrig stack rehearse`: the contract it shares with the plan, and its command line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.core.stack import rehearse as core
from mlrig.main import app
from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container

runner = CliRunner()
# Flags whose values are the deployment's: where the database, bucket and front door are.
PLACE_FLAGS = (
    "--host",
    "--port",
    "--backend-store-uri",
    "--artifacts-destination",
    "--allowed-hosts",
)


def _flags(command: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, arg in enumerate(command):
        if arg.startswith("--"):
            nxt = command[i + 1] if i + 1 < len(command) else None
            out[arg] = None if nxt is None or nxt.startswith("--") else nxt
    return out


SIZED = [(profile, None) for profile in sorted(ts_container.CONTAINER_SIZES)] + [
    ("small", ts_container.TEAM_SIZE)
]


@pytest.fixture(scope="module", params=SIZED, ids=lambda p: f"{p[0]}-{p[1] or 'profile'}")
def planned(
    request: pytest.FixtureRequest,
) -> tuple[tuple[str, str | None], dict[str, Any], dict[str, Any]]:
    """The task definition and its container as `mlrig stack plan --json` prints them, for
    a profile at its own size or at a --server-size."""
    profile, size = request.param
    sized = ["--server-size", size] if size else []
    result = runner.invoke(app, ["stack", "plan", "--json", "--profile", profile, *sized])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    tasks = [r for r in doc["resources"] if r["type"] == "aws:ecs/taskDefinition:TaskDefinition"]
    assert len(tasks) == 1
    task = tasks[0]["inputs"]
    (container,) = json.loads(task["containerDefinitions"])
    return request.param, task, container


def test_plan_and_rehearsal_run_the_same_contract(planned) -> None:  # type: ignore[no-untyped-def]
    (profile, size), task, container = planned
    cfg = core.run_config(
        profile=profile,
        size=size,
        image="mlrig/mlflow-server:t",
        db_port=54321,
        bucket="mlrig-rehearse-abc",
        local_env_names=("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"),
    )
    assert {e["name"] for e in container["environment"]} == set(cfg.contract_env)
    assert [s["name"] for s in container["secrets"]] == cfg.secret_names
    assert container["portMappings"] == [{"containerPort": cfg.port, "protocol": "tcp"}]
    assert f"http://127.0.0.1:{cfg.port}{cfg.health_path}'" in " ".join(
        container["healthCheck"]["command"]
    )
    assert container["user"] == cfg.user
    assert (int(task["memory"]), int(task["cpu"])) == (cfg.memory_mib, cfg.cpu_units)
    # Same server flags and values, except those naming where things are.
    plan_flags, rehearsal_flags = _flags(container["command"]), _flags(cfg.command)
    for flag in PLACE_FLAGS:
        plan_flags.pop(flag, None)
        rehearsal_flags.pop(flag, None)
    assert plan_flags == rehearsal_flags
    assert plan_flags["--workers"] == str(ts_container.container_size(profile, size)[2])
    # Non-secret values the image reads are the task's too (the auth ini only differs in
    # where its database is).
    plan_env = {e["name"]: e["value"] for e in container["environment"]}
    for name, value in cfg.contract_env.items():
        if name != ts_container.ENV_AUTH_INI:
            assert plan_env[name] == value, name
    # The local stand-ins for the task role and S3 endpoint are not contract names.
    assert not set(cfg.local_env_names) & set(cfg.contract_env)


def test_rehearsal_binds_loopback_and_points_at_local_services() -> None:
    cfg = core.run_config(profile="small", image="i", db_port=54321, bucket="b", port=45999)
    flags = _flags(cfg.command)
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == "45999" and cfg.port == 45999
    assert flags["--backend-store-uri"] == (
        "postgresql://mlflow@127.0.0.1:54321/mlflow?sslmode=require"
    )
    assert flags["--artifacts-destination"] == "s3://b/mlflow-artifacts"
    assert cfg.network_mode == "host"
    public = cfg.public()
    assert "contract_env" not in public and ts.ENV_AUTH_CONFIG in public["contract_env_names"]


def test_the_cli_passes_its_options_to_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[core.Request] = []

    def fake(req: core.Request, progress: Any) -> core.Report:
        seen.append(req)
        return core.Report(profile=req.profile, checks=[core.Check("healthy", True, "ok", 1.0)])

    monkeypatch.setattr(core, "rehearse", fake)
    result = runner.invoke(
        app,
        [
            "stack",
            "rehearse",
            "--profile",
            "production",
            "--server-size",
            "2048:6144",
            "--keep",
            "--runs",
            "7",
            "--port",
            "45001",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen == [
        core.Request(
            profile="production",
            server_size="2048:6144",
            s3_endpoint="http://127.0.0.1:9000",
            keep=True,
            runs=7,
            port=45001,
            fault=None,
        )
    ]
    assert json.loads(result.stdout)["ok"] is True


def test_a_failed_check_exits_non_zero_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    report = core.Report(
        profile="small",
        checks=[
            core.Check("healthy", True, "/health 200 after 9.0 s", 9.0),
            core.Check("peak memory", False, "1000 MiB of 1024 MiB (98%)", 98.0),
        ],
    )
    monkeypatch.setattr(core, "rehearse", lambda req, progress: report)
    result = runner.invoke(app, ["stack", "rehearse"])
    assert result.exit_code == 5
    assert "rehearsal failed (peak memory): peak memory: 1000 MiB" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--runs", "0"], "--runs"),
        (["--s3-endpoint", "127.0.0.1:9000"], "is not a URL"),
        (["--server-size", "2048:2048"], "a 2048-unit Fargate task takes 4096-16384 MiB"),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["stack", "rehearse", *args])
    assert result.exit_code == 2
    assert needle in result.output


def test_unknown_fault_is_refused() -> None:
    from mlrig.errors import UsageError

    with pytest.raises(UsageError, match="unknown fault"):
        core.rehearse(core.Request(fault="disk"))


def test_missing_postgres_binaries_say_how_to_install(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mlrig.adapters import docker as docker_adapter

    try:
        docker_adapter.client()
    except Exception:  # noqa: BLE001 - without an engine that error comes first; see below
        pytest.skip("needs a Docker engine to reach the PostgreSQL check")
    monkeypatch.setenv("MLRIG_POSTGRES_BIN", str(tmp_path))
    result = runner.invoke(app, ["stack", "rehearse"])
    assert result.exit_code == 4
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "PostgreSQL server binaries" in lines[0] and "apt-get install postgresql" in lines[0]


def test_missing_docker_engine_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlrig.adapters import docker as docker_adapter

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    docker_adapter.client.cache_clear()
    try:
        result = runner.invoke(app, ["stack", "rehearse"])
    finally:
        docker_adapter.client.cache_clear()
    assert result.exit_code == 5
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no Docker engine answers" in lines[0]
    assert "setup" in lines[0]


def test_stop_refuses_a_directory_that_is_not_a_kept_rehearsal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    result = runner.invoke(app, ["stack", "rehearse", "--stop", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a kept rehearsal's directory" in result.stderr
    assert (tmp_path / "data").exists()  # nothing deleted


def test_a_benchmark_may_run_a_variant_of_the_container_with_env_added_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from mlrig.adapters import aws, postgres
    from mlrig.adapters import docker as docker_adapter
    from mlrig.core.stack._rehearse.env import Services

    runs: list[dict[str, Any]] = []

    def run_task(image: str, **kw: Any) -> str:
        runs.append({"image": image, **kw})
        return f"c{len(runs)}"

    monkeypatch.setattr(docker_adapter, "run_task", run_task)
    s = Services(core.Request(port=45002), lambda _m: None)
    try:
        s.image = "mlrig/mlflow-server:t"
        s.cluster = postgres.Cluster(root=s.root / "pg", port=54321, superuser_password="x")
        s.s3 = aws.S3Endpoint("http://127.0.0.1:9", "us-east-1", {"AWS_ACCESS_KEY_ID": "k"})
        assert s.run_container() == "c1"  # the rehearsal's own: exactly config()
        cfg = s.config()
        assert runs[0]["command"] == cfg.command and runs[0]["memory_mib"] == cfg.memory_mib
        assert runs[0]["environment"][ts_container.ENV_PG_PASSWORD] == s.db_password
        variant = dataclasses.replace(cfg, command=["--workers", "1"], memory_mib=2048)
        assert (
            s.run_container(variant, {ts_container.ENV_PG_PASSWORD: "other", "EXTRA": "1"}) == "c2"
        )
        assert runs[1]["command"] == ["--workers", "1"] and runs[1]["memory_mib"] == 2048
        env = runs[1]["environment"]
        assert env[ts_container.ENV_PG_PASSWORD] == "other" and env["EXTRA"] == "1"
        assert env[ts.ENV_ADMIN_PASSWORD] == s.admin_password  # the secrets are still given
        assert s.containers == ["c1", "c2"]  # both removed when the services close
    finally:
        monkeypatch.setattr(docker_adapter, "remove_container", lambda _c: None)
        s.close()
