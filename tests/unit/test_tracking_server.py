"""The tracking server's configuration, read back the way the installed MLflow reads it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from mlrig.tracking import config as ts
from mlrig.tracking import container as ts_container
from mlrig.tracking import throttle as ts_throttle


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


def test_a_container_serves_on_threaded_gunicorn_workers_and_the_local_stack_on_uvicorn(
    tmp_path: Path,
) -> None:
    assert "--gunicorn-opts" not in plan(tmp_path).argv  # one process: MLflow's uvicorn
    for profile, (_, _, workers) in ts_container.CONTAINER_SIZES.items():
        command = list(_spec(profile).command)
        assert command[command.index("--workers") + 1] == str(workers)
        opts = command[command.index("--gunicorn-opts") + 1].split()
        flags = dict(zip(opts[::2], opts[1::2], strict=True))
        assert flags["--worker-class"] == "gthread"
        assert (
            flags["--threads"] == str(ts_container.CONTAINER_THREADS)
            and ts_container.CONTAINER_THREADS > 1
        )
        # outlives the front door's 60 s idle timeout; stops inside ECS's 30 s
        assert int(flags["--keep-alive"]) > 60 and int(flags["--graceful-timeout"]) < 30


def _spec(profile: str = "small", **changes: Any) -> ts_container.ContainerSpec:
    """The profile's container with placeholder places, and `changes` passed on."""
    place = {
        "image": "i",
        "db_host": "h",
        "db_name": "d",
        "db_user": "u",
        "artifacts_destination": "s3://b/a",
    }
    return ts_container.container_spec(**place, profile=profile, **changes)


def test_auth_ini_holds_no_secret_and_grants_nothing_by_default() -> None:
    text = ts.auth_ini("sqlite:///x.db")
    assert "admin_password" not in text
    assert "grant_default_workspace_access = false" in text
    assert "default_permission = NO_PERMISSIONS" in text  # a user with no grant reads nothing
    assert "default_permission = READ" in ts.auth_ini("sqlite:///x.db", "READ")
    spec = _spec()
    assert "default_permission = NO_PERMISSIONS" in spec.env[ts_container.ENV_AUTH_INI]


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


# -- the wrong-password throttle --------------------------------------------------------------
def test_a_pair_is_blocked_after_n_failures_inside_the_window() -> None:
    rec = None
    for i in range(ts_throttle.THROTTLE_MAX_FAILURES - 1):
        rec = ts_throttle.after_failure(rec, now=100.0 + i)
        assert ts_throttle.retry_after(rec, 100.0 + i) == 0
    assert rec is not None and rec.failures == ts_throttle.THROTTLE_MAX_FAILURES - 1
    rec = ts_throttle.after_failure(rec, now=110.0)
    assert ts_throttle.retry_after(rec, 110.0) == ts_throttle.THROTTLE_BACKOFF_SECONDS
    assert ts_throttle.retry_after(rec, 110.0 + ts_throttle.THROTTLE_BACKOFF_SECONDS - 1) == 1
    assert ts_throttle.retry_after(rec, 110.0 + ts_throttle.THROTTLE_BACKOFF_SECONDS) == 0
    # after the back-off the count starts over: one more failure is not a new block
    rec = ts_throttle.after_failure(rec, now=110.0 + ts_throttle.THROTTLE_BACKOFF_SECONDS)
    assert (
        rec.failures == 1
        and ts_throttle.retry_after(rec, 110.0 + ts_throttle.THROTTLE_BACKOFF_SECONDS) == 0
    )


def test_failures_outside_the_window_do_not_add_up() -> None:
    rec = None
    now = 0.0
    for _ in range(5 * ts_throttle.THROTTLE_MAX_FAILURES):  # a slow trickle never trips it
        rec = ts_throttle.after_failure(rec, now)
        assert ts_throttle.retry_after(rec, now) == 0
        now += ts_throttle.THROTTLE_WINDOW_SECONDS / (ts_throttle.THROTTLE_MAX_FAILURES - 1) + 0.01
    custom = ts_throttle.after_failure(None, 0.0, max_failures=1, window=1.0, backoff=5.0)
    assert ts_throttle.retry_after(custom, 0.0) == 5.0


def test_the_throttle_counts_per_source_and_user_and_a_success_clears_only_its_pair() -> None:
    throttle = ts_throttle.LoginThrottle()
    alice_here, alice_there = throttle.key("10.0.0.1", "alice"), throttle.key("10.0.0.2", "alice")
    bob_here = throttle.key("10.0.0.1", "bob")
    assert len({alice_here, alice_there, bob_here}) == 3
    for _ in range(ts_throttle.THROTTLE_MAX_FAILURES):
        throttle.failed(alice_here, 0.0)
    throttle.failed(alice_there, 0.0)
    assert throttle.retry_after(alice_here, 1.0) > 0
    assert throttle.retry_after(alice_there, 1.0) == 0
    assert throttle.retry_after(bob_here, 1.0) == 0
    throttle.succeeded(alice_there)  # alice logging in elsewhere does not unblock this source
    assert throttle.retry_after(alice_here, 1.0) > 0


def test_the_throttle_cache_is_bounded_and_keys_are_small() -> None:
    throttle = ts_throttle.LoginThrottle(max_entries=100)
    blocked = throttle.key("10.0.0.9", "admin")
    for _ in range(ts_throttle.THROTTLE_MAX_FAILURES):
        throttle.failed(blocked, 0.0)
    for i in range(1000):  # a flood of distinct, long names
        throttle.failed(throttle.key("10.0.0.1", f"user-{i}-" + "x" * 10_000), 0.0)
        if i % 10 == 0:
            assert throttle.retry_after(blocked, 0.0) > 0  # seen recently: kept
    assert len(throttle) == 100
    assert len(throttle.key("a", "u" * 10_000)) == 16
    assert throttle.retry_after(throttle.key("10.0.0.1", "user-0-" + "x" * 10_000), 0.0) == 0


def test_the_source_is_the_peer_unless_proxies_are_trusted() -> None:
    assert ts_throttle.request_source("10.0.0.5", "1.2.3.4", hops=0) == "10.0.0.5"
    assert ts_throttle.request_source("10.0.0.5", "6.6.6.6, 1.2.3.4", hops=1) == "1.2.3.4"
    assert (
        ts_throttle.request_source("10.0.0.5", "1.2.3.4", hops=2) == "10.0.0.5"
    )  # too short: the peer
    assert ts_throttle.request_source(None, None, hops=0) == "unknown"


def test_the_guard_answers_401_retry_after_without_running_mlflows_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from flask import Flask, Response
    from mlflow.server import auth

    calls: list[str] = []

    def mlflow_check():  # type: ignore[no-untyped-def]
        from flask import request

        calls.append(request.remote_addr or "")
        if request.authorization and request.authorization.password == "right":
            return request.authorization
        return auth.make_basic_auth_response()

    monkeypatch.setattr(auth, "authenticate_request_basic_auth", mlflow_check)
    monkeypatch.setattr(ts_throttle, "_THROTTLE", ts_throttle.LoginThrottle())
    monkeypatch.setattr(ts_throttle, "THROTTLE_TARPIT_SECONDS", 0.0)
    app = Flask("guard-test")

    def attempt(password: str, source: str) -> int | str:
        header = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
        with app.test_request_context(
            "/api/2.0/mlflow/experiments/get-by-name",
            headers={"Authorization": header},
            environ_base={"REMOTE_ADDR": source},
        ):
            resp = ts_throttle.authenticate_request_basic_auth()
            if not isinstance(resp, Response):
                return 200  # MLflow's check returned the credentials: accepted
            if "Retry-After" in resp.headers:
                assert int(resp.headers["Retry-After"]) >= 1
                assert resp.status_code == 401 and b"Too many failed logins" in resp.data
                return "throttled"
            return resp.status_code

    n = ts_throttle.THROTTLE_MAX_FAILURES
    assert [attempt("wrong", "10.0.0.1") for _ in range(n)] == [401] * n
    assert len(calls) == ts_throttle.THROTTLE_MAX_FAILURES
    assert attempt("right", "10.0.0.1") == "throttled"  # in back-off with the right password too
    assert attempt("wrong", "10.0.0.1") == "throttled"
    assert len(calls) == ts_throttle.THROTTLE_MAX_FAILURES  # no hash was run for either
    assert attempt("right", "10.0.0.2") == 200  # another source is not affected


def test_a_throttled_answer_is_held_back_only_on_a_worker_thread_and_only_so_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import threading
    import time

    monkeypatch.setattr(ts_throttle, "THROTTLE_TARPIT_SECONDS", 0.3)

    def seconds() -> float:
        start = time.perf_counter()
        ts_throttle._hold_back_throttled_answer()
        return time.perf_counter() - start

    assert seconds() >= 0.3  # a Flask request's thread waits

    async def on_the_loop() -> float:
        return seconds()

    assert asyncio.run(on_the_loop()) < 0.1  # the event loop never sleeps
    monkeypatch.setattr(ts_throttle, "_TARPIT", threading.BoundedSemaphore(1))
    waited: list[float] = []
    first = threading.Thread(target=lambda: waited.append(seconds()))
    first.start()
    time.sleep(0.05)
    assert seconds() < 0.1  # the one waiting place is taken: answered at once
    first.join()
    assert waited[0] >= 0.3


class SlowCheck:
    """Stands in for MLflow's password check: slow, counting how many run at once."""

    def __init__(self, seconds: float = 0.05) -> None:
        import threading

        self.seconds, self.calls, self.active, self.most = seconds, 0, 0, 0
        self.kwargs: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str, **kwargs: object) -> bool:
        import time

        with self._lock:
            self.calls += 1
            self.active += 1
            self.most = max(self.most, self.active)
            self.kwargs.append(kwargs)
        time.sleep(self.seconds)
        with self._lock:
            self.active -= 1
        return password == "right"


def _at_once(n: int, fn: object) -> list[bool]:
    import threading

    results: list[bool] = []
    start = threading.Barrier(n)

    def one() -> None:
        start.wait()
        results.append(fn())  # type: ignore[operator]

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_password_checks_run_one_at_a_time_and_a_waiting_twin_shares_a_success() -> None:
    import threading
    import time

    check = SlowCheck()
    gate = ts_throttle.PasswordGate(check)
    assert _at_once(8, lambda: gate("alice", "right")) == [True] * 8
    assert check.most == 1  # never two hashes (32 MiB each) at once in a process
    assert check.calls < 8  # those that waited on a check of the same credentials share it
    # Deterministically: bob's twin arrives while bob's check runs, and is let in on it.
    release = threading.Event()
    check = SlowCheck(seconds=0.0)
    gate = ts_throttle.PasswordGate(lambda u, p: release.wait(5) and check(u, p))
    first = threading.Thread(target=lambda: gate("bob", "right"))
    first.start()
    time.sleep(0.05)
    twin: list[bool] = []
    second = threading.Thread(target=lambda: twin.append(gate("bob", "right")))
    second.start()
    time.sleep(0.2)  # the twin is waiting for the gate
    release.set()
    first.join()
    second.join()
    assert twin == [True] and check.calls == 1
    # A wrong password is never let in on another's check: every one is checked, in turn.
    check.calls = 0
    assert _at_once(6, lambda: gate("alice", "wrong")) == [False] * 6
    assert check.calls == 6 and check.most == 1


def test_a_success_is_shared_only_with_requests_that_arrived_before_it_ended() -> None:
    check = SlowCheck(seconds=0.0)
    gate = ts_throttle.PasswordGate(check)
    assert gate("alice", "right") and gate("alice", "right")
    assert check.calls == 2  # one after the other: each is checked (MLflow's cache is in front)
    assert not gate("bob", "wrong") and not gate("alice", "rightish")


def test_other_uses_of_the_check_pass_their_arguments_and_share_nothing() -> None:
    check = SlowCheck(seconds=0.0)
    gate = ts_throttle.PasswordGate(check)
    assert gate("admin", "right", use_primary=True)
    assert check.kwargs == [{"use_primary": True}]
    results = _at_once(4, lambda: gate("admin", "right", use_primary=True))
    assert results == [True] * 4 and check.calls == 5


def test_on_the_event_loop_the_check_runs_without_waiting_for_the_gate() -> None:
    import asyncio
    import threading
    import time

    check = SlowCheck(seconds=0.3)
    gate = ts_throttle.PasswordGate(check)
    busy = threading.Thread(target=lambda: gate("alice", "wrong"))
    busy.start()
    time.sleep(0.05)

    async def on_the_loop() -> float:
        start = time.perf_counter()
        assert gate("bob", "right")
        return time.perf_counter() - start

    assert asyncio.run(on_the_loop()) < 0.5  # its own check only, not queued behind alice's
    busy.join()


def test_the_gate_is_put_in_front_of_mlflows_check_once() -> None:
    class Store:
        def authenticate_user(self, username: str, password: str) -> bool:
            return password == "right"

    store = Store()
    ts_throttle.gate_password_checks(store)
    gate = store.authenticate_user
    ts_throttle.gate_password_checks(store)
    assert isinstance(gate, ts_throttle.PasswordGate) and store.authenticate_user is gate
    assert store.authenticate_user("alice", "right") and not store.authenticate_user("a", "b")


def test_a_server_size_is_a_fargate_size_and_brings_its_workers() -> None:
    assert ts_container.container_size("small") == ts_container.CONTAINER_SIZES["small"]
    assert ts_container.container_size("small", ts_container.TEAM_SIZE) == (2048, 4096, 4)
    assert ts_container.container_size("production", "1024:3072") == (
        1024,
        3072,
        4,
    )  # the profile's 4
    assert ts_container.container_size("small", "256:512") == (256, 512, 2)
    for bad in ("2048", "2048:x", "768:2048", "1024:1024", "4096:32768", ":"):
        with pytest.raises(ValueError, match="server size"):
            ts_container.parse_size(bad)
    spec = _spec(size=ts_container.TEAM_SIZE)
    assert (spec.cpu, spec.memory) == (2048, 4096)
    assert spec.command[spec.command.index("--workers") + 1] == "4"
