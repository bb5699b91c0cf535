"""The endpoint proxy's nginx.conf rendering, the key hashes and the endpoint state."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlrig.core.deploy import _keys, _render
from mlrig.core.deploy.state import Backend, Endpoint, Store, check_name
from mlrig.errors import ConfigError, Conflict, UsageError
from tests.helpers import deploy_backend

NOW = datetime(2026, 1, 1, tzinfo=UTC)


backend = deploy_backend


def endpoint(name: str = "churn", public: bool = False, *backends: Backend) -> Endpoint:
    key, _shown = _keys.new_key()
    return Endpoint(
        name=name,
        public=public,
        backends=list(backends) or [backend("1", 9001, 100)],
        keys=[] if public else [key],
        created_at=NOW,
    )


def conf(tmp_path: Path, *eps: Endpoint) -> str:
    return _render.render(8123, list(eps), tmp_path, tmp_path / "run", tmp_path / "err.log")


def test_a_canary_is_two_weighted_servers_and_the_key_is_checked_in_nginx(
    tmp_path: Path,
) -> None:
    text = conf(tmp_path, endpoint("churn", False, backend("1", 9001, 80), backend("2", 9002, 20)))
    assert "listen 127.0.0.1:8123;" in text
    assert "server 127.0.0.1:9001 weight=80" in text and "server 127.0.0.1:9002 weight=20" in text
    invocations = text.split("location = /endpoints/churn/invocations")[1].split("}")[0]
    assert "auth_basic_user_file" in invocations and str(tmp_path / "churn" / "htpasswd") in text
    assert 'proxy_set_header Authorization ""' in invocations  # the key never reaches the model
    ping = text.split("location = /endpoints/churn/ping")[1].split("}")[0]
    assert "auth_basic" not in ping


def test_a_public_endpoint_has_no_key_check_and_a_zero_weight_is_left_out(
    tmp_path: Path,
) -> None:
    text = conf(tmp_path, endpoint("open", True, backend("1", 9001, 100), backend("2", 9002, 0)))
    assert "auth_basic" not in text
    assert "9002" not in text


def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    (tmp_path / "run").mkdir()
    path = tmp_path / "nginx.conf"
    path.write_text(conf(tmp_path, endpoint("a"), endpoint("b", True)))
    argv = [nginx, "-p", f"{tmp_path}/", "-c", str(path), "-e", str(tmp_path / "e.log"), "-t"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_key_is_stored_only_as_a_salted_hash() -> None:
    record, shown = _keys.new_key()
    key_id, secret = shown.split(":", 1)
    assert key_id == record.id and len(secret) >= 43  # 256 bits
    assert secret not in record.hash and record.hash.startswith("{SSHA}")
    assert _keys.verify(secret, record.hash) and not _keys.verify(secret + "x", record.hash)
    assert _keys.ssha(secret) != _keys.ssha(secret)  # salted
    assert _keys.htpasswd([record]) == f"{record.id}:{record.hash}\n"


def test_state_round_trips_and_is_validated_when_read(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ep = endpoint("churn", False, backend("1", 9001, 90), backend("2", 9002, 10))
    store.write(ep)
    assert store.read("churn") == ep and store.names() == ["churn"]
    assert store.get("churn").canary == ep.backends[1]
    assert store.path("churn").stat().st_mode & 0o777 == 0o600
    store.path("churn").write_text('{"name": "churn"}')
    with pytest.raises(ConfigError, match="unreadable"):
        store.read("churn")
    with pytest.raises(UsageError, match="no endpoint 'other'"):
        store.get("other")


def test_names_are_checked_and_a_second_change_of_one_endpoint_refuses(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        check_name("../etc")
    store = Store(tmp_path)
    with (
        store.lock("churn"),
        pytest.raises(Conflict, match="another mlrig command"),
        store.lock("churn"),
    ):
        pass
    with store.lock("churn"):  # released
        pass


def test_workers_run_as_the_given_user_only_when_one_is_named(tmp_path: Path) -> None:
    ep = endpoint()
    assert "\nuser " not in conf(tmp_path, ep)
    text = _render.render(8123, [ep], tmp_path, tmp_path / "run", tmp_path / "e.log", "root")
    assert "\nuser root;\n" in text
