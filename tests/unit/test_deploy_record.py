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
from mlrig.core.deploy.state import Backend, Endpoint
from mlrig.core.provenance.record import ProvenanceRecord
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


def stack_with(*eps: Endpoint) -> str:
    from mlrig import contract
    from mlrig.core.deploy.state import Store
    from mlrig.core.stack.local.state import Layout

    contract.save(env_secret_outputs("dev"))
    for ep in eps:
        Store(Layout("dev").root).write(ep)
    return "dev"


def endpoint(name: str, public: bool, *backends: Backend, keys: int = 1) -> Endpoint:
    from mlrig.core.deploy import _keys

    return Endpoint(
        name=name,
        public=public,
        backends=list(backends) or [backend()],
        previous=backend("2"),
        keys=[] if public else [_keys.new_key()[0] for _ in range(keys)],
        created_at=NOW,
    )


def test_doctor_warns_of_each_public_endpoint_with_the_way_to_key_it(home: Path) -> None:
    from mlrig.core.doctor import doctor

    stack_with(endpoint("open-one", True), endpoint("churn", False, keys=2))
    check = doctor._endpoints(env_secret_outputs("dev"))
    assert check.status == doctor.WARN and not check.needed  # a warning, not a failure
    assert "open-one" in check.detail and "churn" not in check.detail
    assert "mlrig deploy keys create open-one --stack dev" in check.fix


def test_doctor_lists_keyed_endpoints_as_ok_and_skips_a_stack_without_any(home: Path) -> None:
    from mlrig.core.doctor import doctor

    stack_with()
    assert doctor._endpoints(env_secret_outputs("dev")).status == doctor.SKIP
    stack_with(endpoint("churn", False, keys=2))
    check = doctor._endpoints(env_secret_outputs("dev"))
    assert check.status == doctor.OK and check.detail == "churn (2 keys)"
    names = [c.name for c in doctor.stack_checks("dev")]
    assert "endpoints" in names


def test_status_and_list_json_say_public_keys_since_and_digest(home: Path) -> None:
    stack_with(
        endpoint("churn", False, backend("3", 90), backend("4", 10), keys=2),
        endpoint("open-one", True),
    )
    for argv in (["deploy", "list", "--json"], ["deploy", "status", "churn", "--json"]):
        out = runner.invoke(app, [*argv, "--stack", "dev"])
        assert out.exit_code == 0, out.output
        rows = {row["endpoint"]: row for row in json.loads(out.output)}
        churn = rows["churn"]
        assert churn["public"] is False and churn["key_count"] == 2 and len(churn["keys"]) == 2
        assert churn["created_at"] == "2026-01-01T00:00:00+00:00"
        assert [(b["version"], b["traffic"]) for b in churn["serving"]] == [("3", 90), ("4", 10)]
        assert all(b["digest"] == DIGEST and b["since"] for b in churn["serving"])
        assert churn["previous"] == "2" and churn["previous_digest"] == DIGEST
        assert churn["proxy"] == "stopped"
    assert rows.get("open-one", {"public": True})["public"] is True
    shown = runner.invoke(app, ["deploy", "list", "--stack", "dev"]).output
    assert "open-one" in shown and "PUBLIC" in shown and "2 keys" in shown


# -- mlrig trace endpoint:NAME ---------------------------------------------------------------
def traced(model: str = "churn-model", version: str = "3") -> ProvenanceRecord:
    from mlrig.core.provenance import record as p

    return p.ProvenanceRecord(
        ref=f"127.0.0.1:5000/models@{DIGEST}",
        images=[p.ImageRecord(digest=DIGEST, reference=f"127.0.0.1:5000/models@{DIGEST}")],
        model=p.ModelRecord(name=model, version=version),
        run=p.RunRecord(id="f" * 32),
        code=p.CodeRecord(commit="c" * 40),
    )


@pytest.fixture()
def provenance(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """The trace of an image, without a server: what it was asked for, and a record."""
    from mlrig.core.provenance import trace as provenance_trace

    asked: list[tuple[str, str | None]] = []

    def fake(ref: str, *, stack: str | None = None, repo: Path | None = None) -> object:
        asked.append((ref, stack))
        return traced()

    monkeypatch.setattr(provenance_trace, "trace", fake)
    return asked


def test_an_endpoint_traces_through_the_image_taking_most_traffic(
    home: Path, provenance: list[tuple[str, str | None]]
) -> None:
    from mlrig.core.deploy import serving

    stack_with(endpoint("churn", False, backend("3", 90), backend("4", 10)))
    record = serving.trace("endpoint:churn")
    assert provenance == [(f"127.0.0.1:5000/models@{DIGEST}", "dev")]
    assert record.ref == "endpoint:churn" and record.endpoint is not None
    assert record.endpoint.traced == "3" and record.endpoint.stack == "dev"
    assert [(s.version, s.traffic) for s in record.endpoint.serving] == [("3", 90), ("4", 10)]
    assert not record.refused
    assert record.summary().startswith("endpoint churn <- 127.0.0.1:5000/models@sha256:")


def test_an_image_whose_labels_name_another_version_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.deploy import serving
    from mlrig.core.provenance import trace as provenance_trace

    monkeypatch.setattr(provenance_trace, "trace", lambda *_a, **_k: traced(version="7"))
    stack_with(endpoint("churn", False, backend("3")))
    record = serving.trace("endpoint:churn")
    assert record.refused == [
        f"endpoint churn: its state says churn-model v3 serves {DIGEST}, but the image "
        "traces to churn-model v7"
    ]
    out = runner.invoke(app, ["trace", "endpoint:churn", "--stack", "dev"])
    assert out.exit_code == 1 and "refused:" in out.output


def test_trace_endpoint_prints_the_endpoint_then_the_chain(
    home: Path, provenance: list[tuple[str, str | None]]
) -> None:
    stack_with(endpoint("churn", True, backend("3")))
    out = runner.invoke(app, ["trace", "endpoint:churn", "--stack", "dev"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("endpoint") and "PUBLIC" in lines[0]
    assert "churn-model v3" in lines[1] and "(traced below)" in lines[1]
    assert any(line.startswith("model") for line in lines[2:])
    doc = json.loads(runner.invoke(app, ["trace", "endpoint:churn", "--json"]).output)
    assert doc["endpoint"]["name"] == "churn" and doc["model"]["version"] == "3"


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("endpoint:nope", "no endpoint 'nope' on this stack (endpoints: churn)"),
        ("endpoint:../etc", "endpoint name '../etc' is not valid"),
        ("endpoint:", "endpoint name '' is not valid"),
    ],
)
def test_an_unknown_or_bad_endpoint_is_one_line(
    home: Path, provenance: list[tuple[str, str | None]], ref: str, says: str
) -> None:
    stack_with(endpoint("churn", False))
    out = runner.invoke(app, ["trace", ref, "--stack", "dev"])
    assert out.exit_code != 0 and says in out.output and "Traceback" not in out.output
    assert provenance == []  # nothing traced


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    from mlrig.core.deploy.state import check_name
    from mlrig.errors import UsageError

    assert check_name("churn") == "churn"
    with pytest.raises(UsageError):
        check_name("churn\n")


@pytest.mark.parametrize("verb", ["promote", "abort", "rollback"])
def test_promote_abort_and_rollback_print_the_new_state_as_json(
    home: Path, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    from mlrig.core.deploy import endpoints

    ep = endpoint("churn", False, backend("4"))
    stack_with(ep)
    called: list[str] = []

    def change(name: str, **_kw: object) -> Endpoint:
        called.append(name)
        return ep

    monkeypatch.setattr(endpoints, verb, change)
    out = runner.invoke(app, ["deploy", verb, "churn", "--stack", "dev", "--json"])
    assert out.exit_code == 0, out.output
    assert called == ["churn"]
    assert json.loads(out.output) == endpoints.status("churn", stack="dev")[0]


def test_a_models_default_endpoint_is_its_name_with_dashes() -> None:
    from mlrig.core.deploy.state import check_name, default_name

    assert check_name(default_name("demo_model")) == "demo-model"
    assert default_name("Churn_V2") == "churn-v2"
    from mlrig.errors import UsageError

    with pytest.raises(UsageError):  # what cannot be an endpoint name stays refused
        check_name(default_name("my model/2"))
