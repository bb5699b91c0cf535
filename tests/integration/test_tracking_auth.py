"""MLflow basic-auth on a real `mlflow server` with mlrig's tuning: the credential cache never
accepts what it should not, user changes bite at the next request, bad input gets 401, and
the idle process tree is the lean one."""

from __future__ import annotations

import base64
import configparser
from collections.abc import Iterator

import psutil
import pytest
import requests

from mlrig.adapters import processes
from tests.helpers import grant_default_experiment, isolated_stack, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROBE = "/api/2.0/mlflow/experiments/get-by-name"  # a Flask route, guarded by before_request
JOBS = "/ajax-api/3.0/jobs/search"  # a FastAPI route, guarded by MLflow's ASGI middleware
USERS = "/api/2.0/mlflow/users"


class Server:
    """The dedicated stack's MLflow: URL, admin credentials and user management."""

    def __init__(self, stack, url: str, admin_password: str) -> None:  # type: ignore[no-untyped-def]
        self.stack = stack
        self.url = url
        self.admin = ("admin", admin_password)

    def probe(self, auth=None, headers=None) -> int:  # type: ignore[no-untyped-def]
        # a fresh connection per call: keep-alive must not be what makes a request pass
        resp = requests.get(
            f"{self.url}{PROBE}",
            params={"experiment_name": "Default"},
            auth=auth,
            headers=headers,
            timeout=30,
        )
        return resp.status_code

    def admin_call(self, method: str, action: str, **body: object) -> None:
        resp = requests.request(
            method, f"{self.url}{USERS}/{action}", json=body, auth=self.admin, timeout=30
        )
        assert resp.status_code == 200, f"{action}: {resp.status_code} {resp.text[:200]}"

    def new_user(self, name: str, password: str) -> tuple[str, str]:
        self.admin_call("POST", "create", username=name, password=password)
        grant_default_experiment(self.url, self.admin, name)  # what PROBE reads
        return name, password


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A local stack of its own: these tests change users, which the shared one must not see."""
    from mlrig.core.shared import secrets

    with isolated_stack(tmp_path_factory.mktemp("auth-home"), "authtest") as (stack, outputs):
        assert outputs.mlflow.auth is not None
        yield Server(
            stack, outputs.mlflow.tracking_uri, secrets.resolve(outputs.mlflow.auth.password)
        )


def test_the_cache_is_on_and_job_execution_off(server: Server) -> None:
    ini = configparser.ConfigParser()
    ini.read(server.stack.mlflow_dir / "auth.ini")
    assert int(ini["mlflow"]["auth_cache_ttl_seconds"]) > 0
    _, rec = processes.status(server.stack.pid_file("mlflow"))
    assert rec is not None
    for proc in [psutil.Process(rec.pid), *psutil.Process(rec.pid).children(recursive=True)]:
        env = proc.environ()
        assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
        assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(
            (server.stack.mlflow_dir / "auth.ini").resolve()
        )


def test_wrong_password_is_never_accepted_even_with_the_right_one_cached(server: Server) -> None:
    name, good = server.new_user("alice", "alice-password-0001")
    assert server.probe((name, good)) == 200  # now cached
    for wrong in ("alice-password-0002", good[:-1], good + " ", good.upper()):
        assert server.probe((name, wrong)) == 401
    assert server.probe(("admin", good)) == 401  # a cached password is bound to its user
    assert server.probe((name, good)) == 200


def test_a_rejection_is_not_cached(server: Server) -> None:
    name, first = server.new_user("bob", "bob-password-0001")
    second = "bob-password-0002"
    assert server.probe((name, second)) == 401
    server.admin_call("PATCH", "update-password", username=name, password=second)
    assert server.probe((name, second)) == 200


def test_a_changed_password_stops_working_at_the_next_request(server: Server) -> None:
    name, old = server.new_user("carol", "carol-password-0001")
    new = "carol-password-0002"
    assert server.probe((name, old)) == 200
    assert server.probe((name, old)) == 200  # served from the cache
    server.admin_call("PATCH", "update-password", username=name, password=new)
    assert server.probe((name, old)) == 401
    assert server.probe((name, new)) == 200


def test_a_self_service_password_change_also_bites_at_once(server: Server) -> None:
    name, old = server.new_user("dave", "dave-password-0001")
    new = "dave-password-0002"
    assert server.probe((name, old)) == 200
    resp = requests.patch(
        f"{server.url}{USERS}/update-password",
        auth=(name, old),
        timeout=30,
        json={"username": name, "password": new, "current_password": old},
    )
    assert resp.status_code == 200, resp.text[:200]
    assert server.probe((name, old)) == 401
    assert server.probe((name, new)) == 200


def test_a_deleted_user_stops_working_at_the_next_request(server: Server) -> None:
    name, password = server.new_user("erin", "erin-password-0001")
    assert server.probe((name, password)) == 200
    server.admin_call("DELETE", "delete", username=name)
    assert server.probe((name, password)) == 401


def test_a_revoked_admin_flag_stops_working_at_the_next_request(server: Server) -> None:
    name, password = server.new_user("frank", "frank-password-0001")
    server.admin_call("PATCH", "update-admin", username=name, is_admin=True)

    def create_user_as_frank(new_name: str) -> int:
        return requests.post(
            f"{server.url}{USERS}/create",
            auth=(name, password),
            timeout=30,
            json={"username": new_name, "password": "x-password-00001"},
        ).status_code

    assert create_user_as_frank("made-by-frank-1") == 200  # admin, and now cached
    server.admin_call("PATCH", "update-admin", username=name, is_admin=False)
    assert create_user_as_frank("made-by-frank-2") == 403


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


BAD_HEADERS = {
    "no header": None,
    "empty header": "",
    "scheme only": "Basic",
    "bearer token": "Bearer abc.def.ghi",  # what MLFLOW_TRACKING_TOKEN makes the client send
    "digest scheme": 'Digest username="admin", realm="mlflow"',
    "not base64": "Basic !!!not-base64!!!",
    "no colon": _basic(b"admin"),
    "three parts": "Basic YQ== YQ==",
    "binary garbage": _basic(b"\xff\xfe\x00:\x80"),
    "unknown user": _basic(b"nobody-here:some-password-1"),
    "empty password": _basic(b"admin:"),
    "empty user": _basic(b":some-password-1"),
    "10 kB password": _basic(b"admin:" + b"p" * 10240),
    "10 kB user": _basic(b"u" * 10240 + b":some-password-1"),
}


@pytest.mark.parametrize("path", [PROBE, JOBS])
def test_bad_credentials_get_401_never_500(server: Server, path: str) -> None:
    log = server.stack.log_file("mlflow")
    before = log.read_text(errors="replace").count("Traceback")
    method = "GET" if path == PROBE else "POST"
    for label, header in BAD_HEADERS.items():
        headers = {} if header is None else {"Authorization": header}
        resp = requests.request(
            method,
            f"{server.url}{path}",
            headers=headers,
            params={"experiment_name": "Default"},
            json={},
            timeout=30,
        )
        assert resp.status_code == 401, f"{label}: {resp.status_code}"
    # the right credential still works: no bad attempt poisoned or replaced a cache entry
    assert (
        requests.request(
            method,
            f"{server.url}{path}",
            auth=server.admin,
            json={},
            params={"experiment_name": "Default"},
            timeout=30,
        ).status_code
        == 200
    )
    assert log.read_text(errors="replace").count("Traceback") == before


def test_idle_process_tree_is_lean_and_stops_whole(server: Server) -> None:
    _, rec = processes.status(server.stack.pid_file("mlflow"))
    assert rec is not None
    root = psutil.Process(rec.pid)
    tree = [root, *root.children(recursive=True)]
    commands = [" ".join(p.cmdline()) for p in tree]
    # the `mlflow server` supervisor and one uvicorn worker; no huey job runner or consumers
    assert len(tree) == 2, commands
    assert "mlflow server" in commands[0] and "uvicorn" in commands[1]
    assert not any("huey" in c or "job" in c for c in commands), commands
    # a ceiling, not a timing: stock 3.17 sits at ~1.27 GB; mlrig's config measures ~0.43 GB
    pss = sum(p.memory_full_info().pss for p in tree)
    assert pss < 0.75 * 2**30, f"idle PSS {pss / 2**20:.0f} MiB"

    assert server.stack.down() == []
    gone, alive = psutil.wait_procs(tree, timeout=0)
    assert alive == [] and len(gone) == 2
    assert processes.status(server.stack.pid_file("mlflow"))[0] == processes.Status.STOPPED

    server.stack.up()  # users and passwords survive a restart
    assert server.probe(server.admin) == 200


@pytest.mark.timeout(240)
def test_with_several_workers_a_stale_password_dies_within_the_ttl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The AWS profiles run several workers (and tasks): a password change reaches the other
    workers' caches only when their entries expire, so the bound is the TTL, never more."""
    import secrets
    import time

    from mlrig.core.stack.local.stack import free_port
    from mlrig.tracking import config as ts

    (tmp_path / "artifacts").mkdir()
    # the server takes its TTL from auth.ini, so a short one bounds staleness the same way
    # as mlrig's (whose value the first test reads back) without waiting half a minute
    ttl = 4
    ini = ts.auth_ini(f"sqlite:///{tmp_path / 'auth.db'}")
    line = f"auth_cache_ttl_seconds = {ts.AUTH_CACHE_TTL_SECONDS}\n"
    assert ini.count(line) == 1
    (tmp_path / "auth.ini").write_text(ini.replace(line, f"auth_cache_ttl_seconds = {ttl}\n"))
    port, admin_pw = free_port(), secrets.token_urlsafe(24)
    plan = ts.local_plan(
        data_dir=tmp_path,
        port=port,
        admin_password=admin_pw,
        flask_secret=secrets.token_urlsafe(32),
        auth_config_path=tmp_path / "auth.ini",
    )
    argv = list(plan.argv)
    argv[argv.index("--workers") + 1] = "2"
    pid_file = tmp_path / "server.pid"
    rec = processes.start(
        argv, pid_file=pid_file, log_file=tmp_path / "log", env=plan.env, cwd=tmp_path
    )
    server = Server(None, f"http://127.0.0.1:{port}", admin_pw)
    try:
        wait_for_http(
            server.url + "/health",
            timeout=120,
            what="the two-worker server",
            give_up=lambda: (
                processes.tail(tmp_path / "log") if processes.exited_early(rec) else None
            ),
        )
        name, old = server.new_user("grace", "grace-password-0001")
        for _ in range(20):  # fresh connections: both workers check, and cache, the password
            assert server.probe((name, old)) == 200
        server.admin_call("PATCH", "update-password", username=name, password="grace-pw-0002")
        time.sleep(ttl + 1)
        assert [server.probe((name, old)) for _ in range(20)] == [401] * 20
        assert server.probe((name, "grace-pw-0002")) == 200

        # the user record MLflow reads for its admin check is cached the same way
        heidi = server.new_user("heidi", "heidi-password-0001")
        server.admin_call("PATCH", "update-admin", username="heidi", is_admin=True)
        # the grant above read heidi's record on whichever worker served it, and only the
        # worker serving the promotion drops it: the other one catches up within the TTL
        time.sleep(ttl + 1)

        def create_as_heidi(n: int) -> int:
            return requests.post(
                f"{server.url}{USERS}/create",
                auth=heidi,
                timeout=30,
                json={"username": f"by-heidi-{n}", "password": "x-password-00001"},
            ).status_code

        assert [create_as_heidi(n) for n in range(12)] == [200] * 12  # both workers cache
        server.admin_call("PATCH", "update-admin", username="heidi", is_admin=False)
        time.sleep(ttl + 1)
        assert [create_as_heidi(n) for n in range(12, 24)] == [403] * 12
    finally:
        assert processes.stop(pid_file) == []
