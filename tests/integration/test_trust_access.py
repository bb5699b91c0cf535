"""Issue 27 (access) against a real local stack with mlrig's plugin: reader means read-only
(creating or renaming experiments and registered models is for editors, `create: true`,
machine identities and the admin), and a repository's names belong to the repository that
`mlrig init` / `mlrig access add-machine` makes (someone else's MANAGE is refused, or taken
over with --take-over)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from mlrig.contract import StackOutputs
from mlrig.core.access import accounts as access
from mlrig.core.access import identities
from mlrig.main import app
from tests.helpers import applied_passwords, isolated_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
runner = CliRunner()
STACK = "trust"
FILE = """\
users:
  rita: {role: reader}
  nick: {}
  eddie: {role: editor}
  cora: {role: reader}
"""
CREATE = {
    "experiment": ("experiments/create", "experiments/get-by-name", "experiment_name"),
    "model": ("registered-models/create", "registered-models/get", "name"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local stack of its own with the access file applied; yields outputs, the people's
    credentials, the admin's and the file's path."""
    from mlrig.core.shared import secrets

    with isolated_stack(tmp_path_factory.mktemp("trust-home"), STACK) as (_, outputs):
        path = tmp_path_factory.mktemp("trust-file") / "access.yaml"
        path.write_text(FILE)
        applied = runner.invoke(app, ["access", "apply", str(path), "--stack", STACK])
        assert applied.exit_code == 0, applied.output
        creds = {u: (u, pw) for u, pw in applied_passwords(applied.output).items()}
        assert sorted(creds) == ["cora", "eddie", "nick", "rita"]
        assert outputs.mlflow.auth is not None
        creds["admin"] = ("admin", secrets.resolve(outputs.mlflow.auth.password))
        yield {"outputs": outputs, "creds": creds, "file": path}


def _url(outputs: StackOutputs, path: str, ajax: bool = False) -> str:
    return f"{outputs.mlflow_tracking_uri}/{'ajax-api' if ajax else 'api'}/2.0/mlflow/{path}"


def create(
    stack: dict[str, Any], who: str | tuple[str, str], kind: str, name: str, ajax: bool = False
) -> requests.Response:
    auth = stack["creds"][who] if isinstance(who, str) else who
    route = CREATE[kind][0]
    return requests.post(
        _url(stack["outputs"], route, ajax), json={"name": name}, auth=auth, timeout=30
    )


def exists(stack: dict[str, Any], kind: str, name: str) -> bool:
    _, route, param = CREATE[kind]
    resp = requests.get(
        _url(stack["outputs"], route),
        params={param: name},
        auth=stack["creds"]["admin"],
        timeout=30,
    )
    assert resp.status_code in (200, 404), resp.text[:200]
    return resp.status_code == 200


def assert_refused(resp: requests.Response) -> None:
    assert resp.status_code == 403, resp.text[:300]
    body = resp.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert "creating or renaming experiments and registered models is for" in body["message"]
    assert "\n" not in body["message"]


@pytest.mark.parametrize("ajax", [False, True], ids=["api", "ajax-api"])
def test_a_reader_cannot_create_an_experiment(stack: dict[str, Any], ajax: bool) -> None:
    name = f"rita-exp-{ajax}"
    assert_refused(create(stack, "rita", "experiment", name, ajax))
    assert not exists(stack, "experiment", name)


@pytest.mark.parametrize("ajax", [False, True], ids=["api", "ajax-api"])
def test_a_user_without_grants_cannot_create_a_registered_model(
    stack: dict[str, Any], ajax: bool
) -> None:
    name = f"nick-model-{ajax}"
    assert_refused(create(stack, "nick", "model", name, ajax))
    assert not exists(stack, "model", name)


@pytest.mark.parametrize(("who", "kind"), [("rita", "model"), ("nick", "experiment")])
def test_neither_creates_the_other_kind(stack: dict[str, Any], who: str, kind: str) -> None:
    assert_refused(create(stack, who, kind, f"{who}-{kind}"))
    assert not exists(stack, kind, f"{who}-{kind}")


@pytest.mark.parametrize("who", ["eddie", "admin", "machine"])
@pytest.mark.parametrize("kind", ["experiment", "model"])
def test_editors_machines_and_the_admin_still_create(
    stack: dict[str, Any], who: str, kind: str
) -> None:
    auth: str | tuple[str, str] = who
    if who == "machine":
        made = access.add_machine(stack["outputs"], "trusted")
        env = identities.repo_env(stack["outputs"], "trusted")
        assert env["MLFLOW_TRACKING_USERNAME"] == made.user == "repo-trusted"
        auth = (made.user, env["MLFLOW_TRACKING_PASSWORD"])
    name = f"{who}-made-{kind}"
    resp = create(stack, auth, kind, name)
    assert resp.status_code == 200, resp.text[:300]
    assert exists(stack, kind, name)


def test_create_true_in_the_access_file_lets_a_reader_create(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    granted = tmp_path / "granted.yaml"
    granted.write_text(FILE.replace("cora: {role: reader}", "cora: {role: reader, create: true}"))
    applied = runner.invoke(app, ["access", "apply", str(granted), "--stack", STACK])
    assert applied.exit_code == 0, applied.output
    assert "~ user cora: may create experiments and models" in applied.output
    try:
        assert create(stack, "cora", "experiment", "cora-exp").status_code == 200
        assert create(stack, "cora", "model", "cora-model").status_code == 200
        assert create(stack, "rita", "model", "rita-still-not").status_code == 403
    finally:
        back = runner.invoke(app, ["access", "apply", str(stack["file"]), "--stack", STACK])
        assert back.exit_code == 0, back.output
    assert "~ user cora: may no longer create" in back.output
    assert_refused(create(stack, "cora", "experiment", "cora-exp-2"))


def test_apply_moves_a_user_between_roles(stack: dict[str, Any], tmp_path: Path) -> None:
    """Moving off a role unassigns it (MLflow's route takes DELETE only; a POST was a 405 and
    `apply` stopped half-way)."""
    promoted = tmp_path / "promoted.yaml"
    promoted.write_text(FILE.replace("rita: {role: reader}", "rita: {role: editor}"))
    try:
        moved = runner.invoke(app, ["access", "apply", str(promoted), "--stack", STACK])
        assert moved.exit_code == 0, moved.output
        assert "~ user rita: role reader -> editor" in moved.output
        assert create(stack, "rita", "experiment", "rita-as-editor").status_code == 200
    finally:
        back = runner.invoke(app, ["access", "apply", str(stack["file"]), "--stack", STACK])
        assert back.exit_code == 0, back.output
    assert "~ user rita: role editor -> reader" in back.output
    assert_refused(create(stack, "rita", "experiment", "rita-as-reader-again"))


def test_an_edit_grant_does_not_let_a_user_rename_into_a_new_name(stack: dict[str, Any]) -> None:
    """A rename claims a name as creating does (the grants move with it): nick, with EDIT on
    one experiment and model, cannot rename them; an editor can."""
    admin = stack["creds"]["admin"]
    client = access.admin_client(stack["outputs"])
    assert create(stack, admin, "model", "renamable").status_code == 200
    assert create(stack, admin, "experiment", "renamable").status_code == 200
    exp = client.experiment_id("renamable")
    assert exp is not None
    client.grant("nick", "registered_model", "renamable", "EDIT")
    client.grant("nick", "experiment", exp, "EDIT")
    for ajax in (False, True):
        assert_refused(
            requests.post(
                _url(stack["outputs"], "registered-models/rename", ajax),
                json={"name": "renamable", "new_name": "future-project"},
                auth=stack["creds"]["nick"],
                timeout=30,
            )
        )
        assert_refused(
            requests.post(
                _url(stack["outputs"], "experiments/update", ajax),
                json={"experiment_id": exp, "new_name": "future-project"},
                auth=stack["creds"]["nick"],
                timeout=30,
            )
        )
    assert exists(stack, "model", "renamable") and exists(stack, "experiment", "renamable")
    assert not exists(stack, "model", "future-project")
    renamed = requests.post(
        _url(stack["outputs"], "registered-models/rename"),
        json={"name": "renamable", "new_name": "renamed-by-editor"},
        auth=stack["creds"]["eddie"],
        timeout=30,
    )
    assert renamed.status_code == 200, renamed.text[:300]


def _squat(stack: dict[str, Any], name: str) -> None:
    """eddie (an editor, so allowed to create) makes the experiment and model a repository
    will be named after, and so holds MANAGE on both."""
    for kind in ("experiment", "model"):
        assert create(stack, "eddie", kind, name).status_code == 200


def _eddie_manages_model(stack: dict[str, Any], name: str) -> int:
    """eddie's answer to a request MLflow allows with MANAGE only (the editor role gives EDIT):
    deleting an alias the model does not have, which changes nothing either way."""
    resp = requests.delete(
        _url(stack["outputs"], "registered-models/alias"),
        json={"name": name, "alias": "no-such-alias"},
        auth=stack["creds"]["eddie"],
        timeout=30,
    )
    return resp.status_code


def test_add_machine_refuses_a_name_someone_else_manages_then_takes_it_over(
    stack: dict[str, Any],
) -> None:
    _squat(stack, "claimed")
    assert _eddie_manages_model(stack, "claimed") != 403  # MANAGE: MLflow lets him
    refused = runner.invoke(app, ["access", "add-machine", "claimed", "--stack", STACK])
    assert refused.exit_code == 7, refused.output
    line = refused.output.strip()
    assert "\n" not in line and "managed by eddie" in line and "--take-over" in line
    client = access.admin_client(stack["outputs"])
    assert "repo-claimed" not in {u.name for u in client.users()}  # nothing half-made
    assert identities.read_password(stack["outputs"], "repo-claimed") is None

    taken = runner.invoke(
        app, ["access", "add-machine", "claimed", "--take-over", "--stack", STACK]
    )
    assert taken.exit_code == 0, taken.output
    assert "revoked eddie: MANAGE on experiment claimed" in taken.output
    assert "revoked eddie: MANAGE on registered model claimed" in taken.output
    assert _eddie_manages_model(stack, "claimed") == 403
    eddie = next(u for u in client.users() if u.name == "eddie")
    claimed = {("experiment", client.experiment_id("claimed")), ("registered_model", "claimed")}
    assert not [g for g in eddie.direct_grants if (g.resource_type, g.pattern) in claimed]
    again = runner.invoke(app, ["access", "add-machine", "claimed", "--stack", STACK])
    assert again.exit_code == 0 and "up to date" in again.output, again.output


def test_init_refuses_a_squatted_name_and_takes_it_over_with_the_flag(
    stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.bootstrap import init as bootstrap

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    _squat(stack, "squatted")
    with pytest.raises(identities.NameTaken) as err:
        bootstrap.init(tmp_path / "squatted", STACK)
    assert "managed by eddie" in err.value.one_line()
    assert not (tmp_path / "squatted").exists()  # nothing half-written
    client = access.admin_client(stack["outputs"])
    assert "repo-squatted" not in {u.name for u in client.users()}

    result = bootstrap.init(tmp_path / "squatted", STACK, take_over=True)
    assert result.identity == "repo-squatted" and result.identity_problem == ""
    assert "eddie: MANAGE on experiment squatted" in result.taken_over
    assert _eddie_manages_model(stack, "squatted") == 403


def test_a_name_claimed_as_a_prompt_is_refused_too(stack: dict[str, Any]) -> None:
    """A registered model created with the prompt tag gives its creator MANAGE as a `prompt`
    grant, not a `registered_model` one: it claims the name all the same."""
    made = requests.post(
        _url(stack["outputs"], "registered-models/create"),
        json={"name": "prompted", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]},
        auth=stack["creds"]["eddie"],
        timeout=30,
    )
    assert made.status_code == 200, made.text[:300]
    refused = runner.invoke(app, ["access", "add-machine", "prompted", "--stack", STACK])
    assert refused.exit_code == 7, refused.output
    assert "managed by eddie" in refused.output and "--take-over" in refused.output
    client = access.admin_client(stack["outputs"])
    assert "repo-prompted" not in {u.name for u in client.users()}
