"""The tracking server's configuration, read back the way the installed MLflow reads it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mlrig import tracking_server as ts


def plan(tmp_path: Path) -> ts.LocalServerPlan:
    return ts.local_plan(
        data_dir=tmp_path,
        port=5123,
        admin_password="admin-secret-value",
        flask_secret="flask-secret-value",
        auth_config_path=tmp_path / "a.ini",
    )


def test_mlflow_reads_the_cache_ttl_and_the_guard_from_auth_ini(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.config import read_auth_config

    ini = tmp_path / "auth.ini"
    ini.write_text(ts.auth_ini("sqlite:////tmp/auth.db"))
    monkeypatch.setenv(ts.ENV_AUTH_CONFIG, str(ini))
    monkeypatch.delenv(ts.ENV_ADMIN_PASSWORD, raising=False)
    config = read_auth_config()
    assert config.auth_cache_ttl_seconds == ts.AUTH_CACHE_TTL_SECONDS > 0
    assert config.auth_cache_max_size == ts.AUTH_CACHE_MAX_SIZE
    assert config.authorization_function == ts.AUTHORIZATION_FUNCTION
    assert config.admin_username == ts.ADMIN_USERNAME
    assert config.admin_password is None  # the file holds no secret
    assert config.database_uri == "sqlite:////tmp/auth.db"


def test_the_authorization_function_resolves_like_mlflow_resolves_it() -> None:
    module, name = ts.AUTHORIZATION_FUNCTION.split(":", 1)
    assert callable(getattr(importlib.import_module(module), name))
    module, name = ts.MLFLOW_AUTHORIZATION_FUNCTION.split(":", 1)
    assert module == "mlflow.server.auth" and name == "authenticate_request_basic_auth"


def test_mlflow_reads_job_execution_as_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    monkeypatch.delenv(MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name, raising=False)
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is True  # MLflow's default, which we turn off
    for key, value in ts.plain_env().items():
        monkeypatch.setenv(key, value)
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is False


def test_local_plan_runs_one_basic_auth_worker_and_keeps_secrets_out_of_argv(
    tmp_path: Path,
) -> None:
    p = plan(tmp_path)
    argv = p.argv
    assert Path(argv[0]).name == "mlflow" and argv[1] == "server"
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--serve-artifacts" in argv
    assert not any("secret-value" in a for a in argv)
    assert p.env[ts.ENV_ADMIN_PASSWORD] == "admin-secret-value"
    assert p.env[ts.ENV_FLASK_SECRET] == "flask-secret-value"
    assert p.env[ts.ENV_AUTH_CONFIG] == str(tmp_path / "a.ini")
    assert set(ts.SECRET_ENV_NAMES) == {ts.ENV_ADMIN_PASSWORD, ts.ENV_FLASK_SECRET}


def test_auth_ini_holds_no_secret_and_grants_nothing_by_default() -> None:
    text = ts.auth_ini("sqlite:///x.db")
    assert "admin_password" not in text
    assert "grant_default_workspace_access = false" in text
    assert "default_permission = READ" in ts.auth_ini("sqlite:///x.db")
    assert "default_permission = NO_PERMISSIONS" in ts.auth_ini("sqlite:///x.db", "NO_PERMISSIONS")


def test_the_module_stands_alone_for_the_server_image() -> None:
    import ast

    tree = ast.parse(Path(ts.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "mlrig" for name in imported), imported
