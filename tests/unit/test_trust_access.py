"""Issue 27 (access): who may create and own what on the tracking server, without a server.

The access file refuses machine-identity names, duplicate keys and reports YAML errors on a
line of the file; `create: true` becomes an MLflow role the server's guard reads; the guard's
rule for creating; a repository's names that someone else manages are refused or taken over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlrig.adapters.mlflow_auth import Grant, Role, User
from mlrig.core.access import accounts as access
from mlrig.core.access import file as access_file
from mlrig.core.access import identities
from mlrig.core.access import plan as access_plan
from mlrig.core.access.plan import Current, CurrentUser, Step
from mlrig.errors import ConfigError, UsageError
from mlrig.tracking import guard as tracking_guard
from tests.helpers import env_secret_outputs


def spec(doc: object) -> access_file.AccessFile:
    return access_file.parse(doc, source="access.yaml", admin="admin")


def load_text(tmp_path: Path, text: str) -> access_file.AccessFile:
    path = tmp_path / "access.yaml"
    path.write_text(text)
    return access_file.load(path, admin="admin")


# --- the access file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"users": {"repo-x": {}}},  # would create a person treated as a machine forever
        {"users": {"repo-demo-model": {"role": "admin"}}},  # would make a machine admin
        {"users": {"repo-shop": {"role": "editor"}}, "grants": {"experiments": {}}},
    ],
)
def test_a_machine_identity_name_in_users_is_refused_in_one_line(doc: object) -> None:
    with pytest.raises(UsageError) as err:
        spec(doc)
    line = err.value.one_line()
    assert "users.repo-" in line and "machine identities" in line and "\n" not in line


def test_a_machine_identity_is_never_made_admin_even_past_the_file() -> None:
    calls: list[tuple[Any, ...]] = []

    class Client:
        def set_admin(self, user: str, flag: bool) -> None:
            calls.append(("set_admin", user, flag))

    with pytest.raises(UsageError, match="machine identity: it can never be an admin"):
        access._set_role(Client(), "repo-shop", "none", "admin", {})  # type: ignore[arg-type]
    assert calls == []
    access._set_role(Client(), "alice", "none", "admin", {})  # type: ignore[arg-type]
    assert calls == [("set_admin", "alice", True)]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("users:\n  alice: {role: editor}\n  alice: {role: admin}\n", 3),
        ("users:\n  alice: {role: reader, role: admin}\n", 2),
        ("users: {bob: {}}\ngrants:\n  experiments: {e: {bob: READ}}\n  experiments: {}\n", 4),
    ],
)
def test_a_repeated_key_is_an_error_naming_its_line(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(UsageError) as err:
        load_text(tmp_path, text)
    message = err.value.one_line()
    assert f"is not valid YAML at line {line}: duplicate key" in message, message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("users:\n  alice: {role: editor\n", 2),  # unclosed: found at the stream's end
        ("users: [alice\n", 1),
        ("users:\n  bob: 'reader\n", 2),
        ("users:\n  alice: {}\n bob: {}\n", 3),
    ],
)
def test_a_yaml_error_names_a_line_of_the_file(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(UsageError) as err:
        load_text(tmp_path, text)
    message = err.value.one_line()
    assert f"is not valid YAML at line {line}" in message, message
    assert line <= len(text.splitlines())


def test_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "users:\n  alice: &r {role: reader}\n  bob:\n    <<: *r\n    create: true\n",
    )
    assert loaded.users["bob"].role == "reader" and loaded.users["bob"].create


# --- `create: true` as an MLflow role ----------------------------------------------------


def test_create_true_makes_the_creator_role_and_assigns_it() -> None:
    doc = {"users": {"bob": {"role": "reader", "create": True}, "carol": {"role": "reader"}}}
    fresh = Current({"admin": CurrentUser("admin")})
    steps = access_plan.compute(spec(doc), fresh, admin="admin")
    assert [s.describe() for s in steps] == [
        "+ role mlrig-reader (READ on every experiment and model)",
        "+ role mlrig-creator (may create experiments and models)",
        "+ user bob (role reader)",
        "+ user carol (role reader)",
        "~ user bob: may create experiments and models",
    ]


def test_create_is_kept_and_taken_back_as_the_file_says() -> None:
    roles = frozenset({"mlrig-reader", access_plan.CREATOR_ROLE})
    now = Current({"bob": CurrentUser("reader", create=True)}, roles)
    kept = {"users": {"bob": {"role": "reader", "create": True}}}
    assert access_plan.compute(spec(kept), now, admin="admin") == []
    dropped = {"users": {"bob": {"role": "reader"}}}
    assert access_plan.compute(spec(dropped), now, admin="admin") == [
        Step("deny-create", user="bob")
    ]


def test_apply_assigns_and_unassigns_the_creator_role() -> None:
    calls: list[tuple[Any, ...]] = []

    class Client:
        def create_role(self, name: str, desc: str, grants: list[Grant]) -> Role:
            calls.append(("create_role", name, tuple(grants)))
            return Role(7, name)

        def assign_role(self, user: str, role_id: int) -> None:
            calls.append(("assign", user, role_id))

        def unassign_role(self, user: str, role_id: int) -> None:
            calls.append(("unassign", user, role_id))

    roles: dict[str, int] = {}
    client: Any = Client()
    access._run(client, Step("create-role", role=access_plan.CREATOR_ROLE), roles, print)
    access._run(client, Step("allow-create", user="bob"), roles, print)
    access._run(client, Step("deny-create", user="bob"), roles, print)
    assert calls == [
        ("create_role", "mlrig-creator", ()),  # no permission on anything
        ("assign", "bob", 7),
        ("unassign", "bob", 7),
    ]


def test_the_guard_and_the_plan_name_the_same_roles() -> None:
    assert {
        access_plan.ROLE_NAMES["editor"],
        access_plan.CREATOR_ROLE,
    } == tracking_guard.CREATOR_ROLES
    assert tracking_guard.MACHINE_PREFIX == access_file.MACHINE_PREFIX


# --- the server's rule for creating (tracking_guard) -------------------------------------


@pytest.mark.parametrize(
    ("user", "is_admin", "roles", "allowed"),
    [
        ("bob", False, ["mlrig-reader"], False),
        ("nora", False, [], False),
        ("alice", False, ["mlrig-editor"], True),
        ("carol", False, ["mlrig-reader", "mlrig-creator"], True),
        ("admin", True, [], True),
        ("repo-shop", False, [], True),
        ("__user_3__", False, ["__user_3__"], False),
    ],
)
def test_who_may_create(user: str, is_admin: bool, roles: list[str], allowed: bool) -> None:
    assert tracking_guard.may_create(user, is_admin, roles) is allowed


@pytest.mark.parametrize(
    ("path", "creates"),
    [
        ("/api/2.0/mlflow/experiments/create", True),
        ("/ajax-api/2.0/mlflow/experiments/create", True),
        ("/api/2.0/mlflow/registered-models/create", True),
        ("/ajax-api/2.0/mlflow/registered-models/create", True),
        ("/api/2.0/mlflow/experiments/update", True),  # a rename: its grants move with it
        ("/ajax-api/2.0/mlflow/registered-models/rename", True),
        ("/api/2.0/mlflow/runs/create", False),  # MLflow checks EDIT on the experiment
        ("/api/2.0/mlflow/model-versions/create", False),  # EDIT on the model
        ("/api/2.0/mlflow/experiments/get", False),
    ],
)
def test_the_create_routes(path: str, creates: bool) -> None:
    assert tracking_guard.creates(path) is creates


# --- a repository's names (identities.ensure_machine) -------------------------------------


def _user(name: str, *grants: Grant, is_admin: bool = False) -> User:
    return User(name, is_admin, (Role(1, "__user_1__", grants),))


class FakeAuth:
    """MlflowAuth as ensure_machine uses it: experiment 'shop' is id 5 and exists, as does
    the registered model 'shop'; every write is recorded."""

    def __init__(self, users: list[User]) -> None:
        self._users = users
        self.writes: list[tuple[Any, ...]] = []

    def experiment_id(self, name: str) -> str | None:
        return "5" if name == "shop" else None

    def registered_model_exists(self, name: str) -> bool:
        return name == "shop"

    def users(self) -> list[User]:
        return self._users

    def create_experiment(self, name: str) -> str:
        self.writes.append(("create_experiment", name))
        return "9"

    def create_registered_model(self, name: str) -> None:
        self.writes.append(("create_registered_model", name))

    def create_user(self, name: str, password: str) -> None:
        self.writes.append(("create_user", name))

    def can_login(self, user: str, password: str) -> bool:
        return True

    def set_password(self, name: str, password: str) -> None:
        self.writes.append(("set_password", name))

    def grant(self, user: str, kind: str, rid: str, permission: str) -> None:
        self.writes.append(("grant", user, kind, rid, permission))

    def revoke(self, user: str, kind: str, rid: str) -> None:
        self.writes.append(("revoke", user, kind, rid))


SQUATTED = [
    _user("admin", Grant("experiment", "5", "MANAGE"), is_admin=True),
    _user("mallory", Grant("experiment", "5", "MANAGE"), Grant("registered_model", "shop", "EDIT")),
    _user("bob", Grant("registered_model", "shop", "READ")),
    _user("carol", Grant("registered_model", "other", "MANAGE")),
]


def test_a_name_someone_else_manages_is_refused_and_nothing_changes(mlrig_home: Path) -> None:
    client = FakeAuth(list(SQUATTED))
    with pytest.raises(identities.NameTaken) as err:
        identities.ensure_machine(env_secret_outputs(), "shop", client)  # type: ignore[arg-type]
    line = err.value.one_line()
    assert "'shop'" in line and "managed by mallory" in line and "--take-over" in line
    assert "admin" not in line.split("—")[0] and "carol" not in line and "\n" not in line
    assert client.writes == []
    assert not identities.local_secret_file("dev", "repo-shop").exists()


def test_take_over_revokes_foreign_manage_and_edit_and_says_so(mlrig_home: Path) -> None:
    client = FakeAuth(list(SQUATTED))
    result = identities.ensure_machine(
        env_secret_outputs(),
        "shop",
        client,  # type: ignore[arg-type]
        take_over=True,
    )
    revokes = [w for w in client.writes if w[0] == "revoke"]
    assert revokes == [
        ("revoke", "mallory", "experiment", "5"),
        ("revoke", "mallory", "registered_model", "shop"),
    ]  # not the admin's MANAGE, not bob's READ, not carol's grant elsewhere
    assert result.revoked == (
        "mallory: MANAGE on experiment shop",
        "mallory: EDIT on registered model shop",
    )
    assert ("grant", "repo-shop", "experiment", "5", "EDIT") in client.writes
    assert client.writes.index(revokes[-1]) < client.writes.index(("create_user", "repo-shop"))


def test_the_repositorys_own_identity_and_admins_are_not_foreign(mlrig_home: Path) -> None:
    users = [
        _user("admin", Grant("experiment", "5", "MANAGE"), is_admin=True),
        _user(
            "repo-shop", Grant("experiment", "5", "EDIT"), Grant("registered_model", "shop", "EDIT")
        ),
        _user("alice", Grant("experiment", "5", "EDIT")),  # an editor the access file granted
    ]
    client = FakeAuth(users)
    identities.store_password(env_secret_outputs(), "repo-shop", "stored-password-0001")
    result = identities.ensure_machine(env_secret_outputs(), "shop", client)  # type: ignore[arg-type]
    assert result.revoked == () and client.writes == []  # up to date: nothing to do


def test_the_cli_names_the_take_over_flag() -> None:
    from typer.testing import CliRunner

    from mlrig.main import app

    runner = CliRunner()
    for args in (["access", "add-machine", "--help"], ["init", "--help"]):
        shown = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and "--take-over" in shown.output, shown.output


# --- names that become file or secret names ------------------------------------------------


@pytest.mark.parametrize("user", ["repo-../../x", "repo-a/b", "alice", "repo-", "repo-A"])
def test_only_machine_identity_names_become_secret_paths(mlrig_home: Path, user: str) -> None:
    with pytest.raises(UsageError, match="not a machine identity's name"):
        identities.local_secret_file("dev", user)
    with pytest.raises(UsageError, match="not a machine identity's name"):
        identities.aws_secret_name("dev", user)
    assert identities.read_password(env_secret_outputs(), user) is None


def test_a_project_name_from_an_answers_file_cannot_climb(mlrig_home: Path, tmp_path: Path) -> None:
    """`project_name: /../../x` made `identities/repo-/../../x.password`: a file outside the
    identities folder, whose text went to the tracking server as a password."""
    outputs = env_secret_outputs()
    folder = identities.local_secret_file("dev", "repo-x").parent
    (folder / "repo-").mkdir(parents=True)
    (folder.parent / "x.password").write_text("not-for-the-server\n")
    (tmp_path / ".copier-answers.yml").write_text("project_name: /../../x\nstack: dev\n")
    # the answers file's one reader refuses the name before any path is built from it
    with pytest.raises(ConfigError, match="project_name"):
        identities.repo_env(outputs, tmp_path)
    # and past that reader, a name that is no machine identity still never becomes a path
    with pytest.raises(identities.MissingIdentity):
        identities.repo_env(outputs, "/../../x")


def test_access_show_prints_names_from_the_server_as_text(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any creator names experiments and models; `access show` printed them as rich markup,
    so a name could restyle the admin's table or plant a terminal hyperlink."""
    from typer.testing import CliRunner

    from mlrig import contract
    from mlrig.core.access import view as access_view
    from mlrig.main import app

    contract.save(env_secret_outputs())
    rows = [
        access_view.UserRow(
            "[red]eve",
            "person",
            "editor",
            (
                access_view.GrantRow(
                    "experiment", "[link=http://127.0.0.1:9/x]shop[/link]", "MANAGE"
                ),
            ),
        )
    ]
    monkeypatch.setattr(access_view, "show", lambda _outputs: rows)
    shown = CliRunner().invoke(app, ["access", "show", "-s", "dev"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "[red]eve" in shown.output
    assert "[link=http://127.0.0.1:9/x]shop[/link]: MANAGE" in shown.output
