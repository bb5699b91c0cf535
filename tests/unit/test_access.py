"""`mlrig access` logic without a server: the access file, the plan, machine identities'
credentials, and the one-line answers to bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.access import file as access_file
from mlrig.core.access import identities
from mlrig.core.access import plan as access_plan
from mlrig.core.access import view as access_view
from mlrig.core.access.plan import Current, CurrentUser, Step
from mlrig.core.shared.names import machine_user
from mlrig.errors import MlrigError, UsageError
from mlrig.main import app
from tests.helpers import env_secret_outputs

runner = CliRunner()
DOC = {
    "users": {"alice": {"role": "editor"}, "bob": {"role": "reader"}},
    "grants": {
        "experiments": {"demo_model": {"alice": "EDIT", "bob": "READ"}},
        "registered_models": {"demo_model": {"alice": "edit", "bob": "READ"}},
    },
}


def spec(doc: object = DOC) -> access_file.AccessFile:
    return access_file.parse(doc, source="access.yaml", admin="admin")


def matching() -> Current:
    """What the server holds once DOC is applied (plus the admin and a machine identity)."""
    return Current(
        {
            "admin": CurrentUser("admin"),
            "repo-demo-model": CurrentUser(
                "none",
                {("experiment", "demo_model"): "EDIT", ("registered_model", "demo_model"): "EDIT"},
            ),
            "alice": CurrentUser(
                "editor",
                {("experiment", "demo_model"): "EDIT", ("registered_model", "demo_model"): "EDIT"},
            ),
            "bob": CurrentUser(
                "reader",
                {("experiment", "demo_model"): "READ", ("registered_model", "demo_model"): "READ"},
            ),
        },
        frozenset({"mlrig-reader", "mlrig-editor"}),
    )


def test_a_fresh_stack_gets_roles_users_and_grants_in_order() -> None:
    fresh = Current({"admin": CurrentUser("admin"), "repo-x": CurrentUser("none")})
    steps = access_plan.compute(spec(), fresh, admin="admin")
    assert [s.describe() for s in steps] == [
        "+ role mlrig-editor (EDIT on every experiment and model)",
        "+ role mlrig-reader (READ on every experiment and model)",
        "+ user alice (role editor)",
        "+ user bob (role reader)",
        "+ grant EDIT on experiment demo_model to alice",
        "+ grant READ on experiment demo_model to bob",
        "+ grant EDIT on registered model demo_model to alice",
        "+ grant READ on registered model demo_model to bob",
    ]


def test_a_stack_that_matches_needs_no_step() -> None:
    assert access_plan.compute(spec(), matching(), admin="admin") == []


def test_changes_are_updates_revokes_and_role_moves() -> None:
    doc = {
        "users": {"alice": {"role": "reader"}, "bob": {"role": "admin"}},
        "grants": {"experiments": {"demo_model": {"alice": "MANAGE"}}},
    }
    steps = access_plan.compute(spec(doc), matching(), admin="admin")
    assert steps == [
        Step("set-role", user="alice", role="reader", old="editor"),
        Step("set-role", user="bob", role="admin", old="reader"),
        Step(
            "update",
            user="alice",
            kind="experiment",
            resource="demo_model",
            permission="MANAGE",
            old="EDIT",
        ),
        Step("revoke", user="bob", kind="experiment", resource="demo_model", old="READ"),
    ]
    # the registered model is no longer listed: its grants are left as they are
    assert not [s for s in steps if s.kind == "registered_model"]


def test_people_not_in_the_file_are_removed_but_never_admin_or_machines() -> None:
    doc = {"users": {"alice": {"role": "editor"}}}
    steps = access_plan.compute(spec(doc), matching(), admin="admin")
    assert [(s.action, s.user) for s in steps if s.destructive] == [("delete-user", "bob")]
    listed = {"users": {"alice": {"role": "editor"}, "bob": {"role": "reader"}}}
    without_machine = access_plan.compute(spec(listed), matching(), admin="admin")
    assert not [s for s in without_machine if s.user in ("admin", "repo-demo-model")]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"users": {"a": {"role": "boss"}}}, "access.yaml: users.a.role: Input should be"),
        ({"users": {"a": {"rol": "reader"}}}, "access.yaml: users.a.rol: Extra inputs"),
        ({"user": {}}, "access.yaml: user: Extra inputs are not permitted"),
        (
            {"users": {"a": {}}, "grants": {"experiments": {"e": {"a": "WRITE"}}}},
            "access.yaml: grants.experiments.e.a: Input should be 'READ', 'EDIT' or 'MANAGE'",
        ),
        (
            {"users": {}, "grants": {"registered_models": {"m": {"zed": "READ"}}}},
            "access.yaml: grants.registered_models.m.zed: no such user in `users`",
        ),
        ({"users": {"admin": {"role": "admin"}}}, "users.admin: the stack's admin account"),
        ({"users": {"a b": {}}}, "users.a b: not a valid user name"),
        (["alice"], "access.yaml: (top level): Input should be a valid dictionary"),
    ],
)
def test_bad_files_are_one_line_naming_the_field(doc: object, expected: str) -> None:
    with pytest.raises(UsageError) as err:
        spec(doc)
    line = err.value.one_line()
    assert expected in line and "\n" not in line


def test_an_empty_file_means_no_users(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("")
    loaded = access_file.load(tmp_path / "a.yaml", admin="admin")
    assert loaded.users == {} and loaded.grants.experiments == {}


def test_machine_identity_names_follow_the_contract() -> None:
    assert machine_user("demo_model") == "repo-demo-model"
    assert access_file.is_machine("repo-demo-model") and not access_file.is_machine("alice")


def test_repo_env_is_the_machine_identity_and_never_reads_the_admin_secret(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    outputs = env_secret_outputs()
    contract.save(outputs)
    identities.store_password(outputs, "repo-churn", "the-machine-password")
    stored = identities.local_secret_file("dev", "repo-churn")
    assert stored.stat().st_mode & 0o777 == 0o600
    assert stored.parent.stat().st_mode & 0o777 == 0o700
    (tmp_path / ".copier-answers.yml").write_text("project_name: churn\nstack: dev\n")
    (tmp_path / "src").mkdir()
    env = identities.repo_env(outputs, tmp_path / "src")  # from anywhere inside the repo
    assert env["MLFLOW_TRACKING_USERNAME"] == "repo-churn"
    assert env["MLFLOW_TRACKING_PASSWORD"] == "the-machine-password"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert identities.repo_env(outputs, "churn") == env

    from mlrig import api

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    assert api.tracking_env(tmp_path) == env


def test_a_repo_made_before_identities_gets_one_line_naming_the_fix(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig import api

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    contract.save(env_secret_outputs())
    (tmp_path / ".copier-answers.yml").write_text("project_name: old_repo\nstack: dev\n")
    with pytest.raises(MlrigError) as err:
        api.tracking_env(tmp_path)
    assert err.value.one_line() == (
        "repository 'old_repo' has no machine identity (repo-old-repo) on stack 'dev' — "
        "create it: `mlrig access add-machine old_repo --stack dev`"
    )


def test_since_reads_durations_and_iso_times() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert access_view.parse_since("1h", now) == datetime(2026, 1, 2, 11, 0, tzinfo=UTC)
    assert access_view.parse_since("30m", now) == datetime(2026, 1, 2, 11, 30, tzinfo=UTC)
    assert access_view.parse_since("2026-01-02T10:00:00") == datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    assert access_view.parse_since(None) is None
    with pytest.raises(UsageError, match="neither a duration nor an ISO time"):
        access_view.parse_since("yesterday")


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_cli_bad_input_is_one_line_and_changes_nothing(mlrig_home: Path, tmp_path: Path) -> None:
    contract.save(env_secret_outputs())
    missing = runner.invoke(app, ["access", "apply", str(tmp_path / "nope.yaml"), "-s", "dev"])
    assert missing.exit_code == 2
    assert "does not exist" in _one_line_error(missing.output)
    (tmp_path / "bad.yaml").write_text("users: [alice\n")
    bad = runner.invoke(app, ["access", "apply", str(tmp_path / "bad.yaml"), "-s", "dev"])
    assert bad.exit_code == 2
    assert "is not valid YAML at line" in _one_line_error(bad.output)
    (tmp_path / "role.yaml").write_text("users: {alice: {role: owner}}\n")
    role = runner.invoke(app, ["access", "apply", str(tmp_path / "role.yaml"), "-s", "dev"])
    assert role.exit_code == 2
    assert "users.alice.role: Input should be" in _one_line_error(role.output)
    since = runner.invoke(app, ["access", "log", "--since", "soon", "-s", "dev"])
    assert since.exit_code == 2
    assert "--since 'soon' is neither" in _one_line_error(since.output)


def test_cli_refuses_machine_names_and_unknown_roles_before_any_call(
    mlrig_home: Path,
) -> None:
    contract.save(env_secret_outputs())
    machine = runner.invoke(app, ["access", "add-user", "repo-churn", "-s", "dev"])
    assert machine.exit_code == 2
    assert "machine identities" in _one_line_error(machine.output)
    role = runner.invoke(app, ["access", "add-user", "carol", "--role", "owner", "-s", "dev"])
    assert role.exit_code == 2
    assert "unknown role 'owner'" in _one_line_error(role.output)


def test_commands_act_on_a_model_as_the_identity_of_the_repo_that_owns_it(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = env_secret_outputs()
    contract.save(outputs)
    identities.store_password(outputs, "repo-churn", "the-machine-password")
    monkeypatch.delenv("NO_SUCH_PW", raising=False)  # the admin's: must not be needed
    assert identities.acting_env(outputs, "churn")["MLFLOW_TRACKING_USERNAME"] == "repo-churn"
    monkeypatch.setenv("NO_SUCH_PW", "admin-password")
    other = identities.acting_env(outputs, "made_by_hand")  # no repository identity owns it
    assert (other["MLFLOW_TRACKING_USERNAME"], other["MLFLOW_TRACKING_PASSWORD"]) == (
        "admin",
        "admin-password",
    )
