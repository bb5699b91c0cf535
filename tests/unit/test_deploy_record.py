"""What the registry and the audit trail keep of endpoint changes, and what doctor, status
and trace say about endpoints: without a server (state files under a temporary home)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.core.access import audit
from mlrig.core.access import view as access_view
from mlrig.core.deploy import _audit
from mlrig.core.deploy.state import Backend
from mlrig.errors import ServiceError
from mlrig.main import app
from tests.helpers import env_secret_outputs

runner = CliRunner()
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "b" * 64


def backend(version: str = "3", weight: int = 100) -> Backend:
    return Backend(
        model="churn-model",
        version=version,
        digest=DIGEST,
        image=f"127.0.0.1:5000/models@{DIGEST}",
        container=f"c{version}",
        port=9001,
        weight=weight,
        since=NOW,
    )


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLRIG_HOME", str(tmp_path))
    return tmp_path


def test_each_endpoint_change_is_one_line_in_the_stacks_audit_trail(home: Path) -> None:
    _audit.log("dev", "deploy", "churn", backend("3"), key_id="k1")
    _audit.log("dev", "canary", "churn", backend("4", 10))
    _audit.log("dev", "key-revoke", "churn", key_id="k1")
    path = audit.path("dev")
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(lines[0])
    assert first["event"] == "mlrig.audit" and first["method"] == "DEPLOY"
    assert first["path"] == "/endpoints/churn" and first["auth"] == "local"
    assert first["object"] == {
        "endpoint": "churn",
        "key_id": "k1",
        "model": "churn-model",
        "version": "3",
        "digest": DIGEST,
        "traffic": "100",
    }
    assert json.loads(lines[1])["object"]["traffic"] == "10"
    assert json.loads(lines[2])["object"] == {"endpoint": "churn", "key_id": "k1"}


def test_access_log_reads_the_servers_lines_and_the_endpoint_changes_in_time_order(
    home: Path,
) -> None:
    from mlrig.core.stack.local.state import Layout
    from mlrig.tracking import audit as tracking_audit

    server_log = Layout("dev").log_file("mlflow")
    server_log.parent.mkdir(parents=True)
    early = tracking_audit.line(
        user="alice",
        auth="basic",
        method="POST",
        path="/api/2.0/mlflow/runs/create",
        obj={},
        status=200,
        source="127.0.0.1",
        now=datetime(2020, 1, 1, tzinfo=UTC),
    )
    late = early.replace("2020-01-01", "2999-01-01").replace("alice", "bob")
    server_log.write_text(f"uvicorn says hi\n{early}\n{late}\n")
    _audit.log("dev", "promote", "churn", backend("4"))
    entries = access_view.log(env_secret_outputs("dev"))
    assert [e.user for e in entries][0] == "alice" and entries[-1].user == "bob"
    assert entries[1].method == "PROMOTE" and entries[1].object["version"] == "4"

    from mlrig import contract

    contract.save(env_secret_outputs("dev"))
    out = runner.invoke(app, ["access", "log", "--stack", "dev"])
    assert out.exit_code == 0, out.output
    line = next(row for row in out.output.splitlines() if "PROMOTE" in row)
    assert "/endpoints/churn" in line and "version=4" in line and "->" not in line


def test_a_trail_that_cannot_be_written_says_the_change_is_done_but_unrecorded(
    home: Path,
) -> None:
    audit.path("dev").mkdir(parents=True)  # a folder where the file goes: even root fails
    with pytest.raises(ServiceError, match="promote of endpoint 'churn' is done, but"):
        _audit.log("dev", "promote", "churn", backend())
