"""`mlrig access` and machine identities against a real local stack (its own: these tests
create, change and remove users), through MLflow's own REST API and client."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from mlrig.contract import StackOutputs
from mlrig.core.access import accounts as access
from mlrig.core.access import identities
from mlrig.core.shared import secrets
from mlrig.core.shared.names import machine_user
from mlrig.core.stack import env as stack_env
from mlrig.main import app
from tests.helpers import applied_passwords, isolated_stack, repo_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
runner = CliRunner()
API = "/api/2.0/mlflow"
FILE = """\
users:
  alice: {role: editor}
  bob: {role: reader}
  nora: {}
grants:
  experiments: {shop: {alice: EDIT}}
  registered_models: {shop: {alice: EDIT, bob: READ}}
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, StackOutputs]]:
    """A local stack of its own with two repositories' machine identities (shop, fraud)."""
    with isolated_stack(tmp_path_factory.mktemp("access-home"), "acc") as (layout, outputs):
        for project in ("shop", "fraud"):
            result = access.add_machine(outputs, project)
            assert result.created and result.user == machine_user(project)
        yield layout, outputs


@pytest.fixture(scope="module")
def stack(local: tuple[Any, StackOutputs]) -> StackOutputs:
    return local[1]


def url(outputs: StackOutputs, path: str) -> str:
    return f"{outputs.mlflow_tracking_uri}{API}/{path}"


def get(outputs: StackOutputs, auth: tuple[str, str], path: str, **params: str) -> int:
    return requests.get(url(outputs, path), params=params, auth=auth, timeout=30).status_code


def post(outputs: StackOutputs, auth: tuple[str, str], path: str, **body: Any) -> int:
    return requests.post(url(outputs, path), json=body, auth=auth, timeout=30).status_code


def apply(path: Path, *args: str) -> Any:
    return runner.invoke(app, ["access", "apply", str(path), "--stack", "acc", *args])


@pytest.fixture(scope="module")
def people(stack: StackOutputs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("access-file") / "access.yaml"
    path.write_text(FILE)
    first = apply(path)
    assert first.exit_code == 0, first.output
    creds = applied_passwords(first.output)
    assert sorted(creds) == ["alice", "bob", "nora"]
    assert "+ role mlrig-editor" in first.output and "+ role mlrig-reader" in first.output
    assert path.read_text() == FILE  # no password is ever written to the file
    return {"file": path, "auth": {u: (u, p) for u, p in creds.items()}}


def test_applying_twice_changes_nothing(stack: StackOutputs, people: dict[str, Any]) -> None:
    again = apply(people["file"])
    assert again.exit_code == 0, again.output
    assert again.output.strip().startswith("no changes")
    assert "password" not in again.output


def test_show_lists_people_roles_machines_and_grants(
    stack: StackOutputs, people: dict[str, Any]
) -> None:
    shown = runner.invoke(app, ["access", "show", "--stack", "acc", "--json"])
    assert shown.exit_code == 0, shown.output
    import json

    users = {u["name"]: u for u in json.loads(shown.output)["users"]}
    assert users["admin"]["kind"] == "admin"
    assert (users["alice"]["role"], users["bob"]["role"], users["nora"]["role"]) == (
        "editor",
        "reader",
        "none",
    )
    machine = users["repo-shop"]
    assert machine["kind"] == "machine" and machine["role"] == "none"
    assert {(g["kind"], g["resource"], g["permission"]) for g in machine["grants"]} == {
        ("experiment", "shop", "EDIT"),
        ("registered_model", "shop", "EDIT"),
    }
    table = runner.invoke(app, ["access", "show", "--stack", "acc"])
    assert table.exit_code == 0 and "repo-fraud" in table.output


def test_a_reader_reads_and_cannot_write(stack: StackOutputs, people: dict[str, Any]) -> None:
    bob = people["auth"]["bob"]
    assert get(stack, bob, "experiments/get-by-name", experiment_name="fraud") == 200
    assert get(stack, bob, "registered-models/get", name="fraud") == 200
    exp = requests.get(
        url(stack, "experiments/get-by-name"),
        params={"experiment_name": "shop"},
        auth=bob,
        timeout=30,
    ).json()["experiment"]["experiment_id"]
    assert post(stack, bob, "runs/create", experiment_id=exp) == 403
    assert post(stack, bob, "registered-models/set-tag", name="shop", key="k", value="v") == 403
    assert post(stack, bob, "users/create", username="eve", password="password-123") == 403


def test_a_user_without_grants_reads_nothing(stack: StackOutputs, people: dict[str, Any]) -> None:
    nora = people["auth"]["nora"]
    assert get(stack, nora, "experiments/get-by-name", experiment_name="shop") == 403
    assert get(stack, nora, "registered-models/get", name="shop") == 403
    found = requests.post(
        url(stack, "experiments/search"), json={"max_results": 100}, auth=nora, timeout=30
    )
    assert found.status_code == 200
    assert [e["name"] for e in found.json().get("experiments", [])] == []
    admin_sees = access.admin_client(stack).experiment_names()
    assert {"shop", "fraud"} <= set(admin_sees.values())  # there is something to hide


def test_removing_a_user_needs_confirmation(
    stack: StackOutputs, people: dict[str, Any], tmp_path: Path
) -> None:
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(FILE.replace("  nora: {}\n", ""))
    refused = apply(smaller)  # not a terminal, no --yes: nothing happens
    assert refused.exit_code != 0
    assert "would remove 1 user(s) not in the file (nora)" in refused.output
    assert get(stack, people["auth"]["nora"], "users/current") == 200
    done = apply(smaller, "--yes")
    assert done.exit_code == 0, done.output
    assert "- user nora" in done.output
    assert get(stack, people["auth"]["nora"], "users/current") == 401
    # admin and machine identities are never removed for not being listed
    names = {u.name for u in access.admin_client(stack).users()}
    assert {"admin", "repo-shop", "repo-fraud"} <= names
    back = apply(people["file"])  # nora comes back (a new password), the rest is unchanged
    assert back.exit_code == 0, back.output
    people["auth"]["nora"] = ("nora", applied_passwords(back.output)["nora"])
    assert [line for line in back.output.splitlines() if line[:2] in ("+ ", "- ", "~ ")] == [
        "+ user nora (role none)"
    ]


def test_the_machine_identity_writes_only_to_its_own_repository(
    stack: StackOutputs, tmp_path: Path
) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    env = identities.repo_env(stack, "shop")
    assert env["MLFLOW_TRACKING_USERNAME"] == "repo-shop"
    with stack_env.temporary_env(env):
        client = mlflow.MlflowClient(stack.mlflow_tracking_uri)
        shop = client.get_experiment_by_name("shop")
        assert shop is not None
        run = client.create_run(shop.experiment_id)
        client.log_param(run.info.run_id, "C", "1.0")
        client.set_terminated(run.info.run_id)
        source, run_id = f"runs:/{run.info.run_id}/model", run.info.run_id
        version = client.create_model_version("shop", source, run_id=run_id)
        client.set_model_version_tag("shop", version.version, "mlrig.image.digest", "sha256:0")
        fraud = access.admin_client(stack).experiment_id("fraud")
        assert fraud is not None
        with pytest.raises(MlflowException) as exp_err:
            client.create_run(fraud)
        assert exp_err.value.get_http_status_code() == 403
        with pytest.raises(MlflowException) as model_err:
            client.create_model_version("fraud", source, run_id=run_id)
        assert model_err.value.get_http_status_code() == 403


def test_rotation_retires_the_old_password(stack: StackOutputs, people: dict[str, Any]) -> None:
    # one server worker: the change drops its cached credential at once (several workers:
    # within tracking_server.AUTH_CACHE_TTL_SECONDS, shown by test_tracking_auth.py)
    old = people["auth"]["bob"]
    assert get(stack, old, "users/current") == 200
    rotated = runner.invoke(app, ["access", "rotate", "bob", "--stack", "acc"])
    assert rotated.exit_code == 0, rotated.output
    new = applied_passwords(rotated.output)["bob"]
    assert "up to 30 s" in rotated.output  # the cache window is stated
    assert get(stack, old, "users/current") == 401
    assert get(stack, ("bob", new), "users/current") == 200
    people["auth"]["bob"] = ("bob", new)

    before = identities.repo_env(stack, "fraud")
    machine = runner.invoke(app, ["access", "rotate", "repo-fraud", "--stack", "acc"])
    assert machine.exit_code == 0, machine.output
    assert "shown once" not in machine.output  # a machine's password is stored, not shown
    after = identities.repo_env(stack, "fraud")
    old_pw, new_pw = before["MLFLOW_TRACKING_PASSWORD"], after["MLFLOW_TRACKING_PASSWORD"]
    assert old_pw != new_pw and old_pw not in machine.output and new_pw not in machine.output
    assert get(stack, ("repo-fraud", old_pw), "users/current") == 401
    assert (
        get(stack, ("repo-fraud", new_pw), "experiments/get-by-name", experiment_name="fraud")
        == 200
    )


def test_add_machine_repairs_a_lost_password(stack: StackOutputs) -> None:
    secret = identities.local_secret_file("acc", "repo-shop")
    secret.unlink()
    with pytest.raises(identities.MissingIdentity):
        identities.repo_env(stack, "shop")
    repaired = runner.invoke(app, ["access", "add-machine", "shop", "--stack", "acc"])
    assert repaired.exit_code == 0, repaired.output
    assert "repaired" in repaired.output
    env = identities.repo_env(stack, "shop")
    creds = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    assert get(stack, creds, "registered-models/get", name="shop") == 200
    again = runner.invoke(app, ["access", "add-machine", "shop", "--stack", "acc"])
    assert "up to date" in again.output


def test_the_access_file_may_not_name_what_does_not_exist(
    stack: StackOutputs, tmp_path: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "users: {alice: {role: editor}}\ngrants: {experiments: {shopp: {alice: READ}}}\n"
    )
    result = apply(path)
    assert result.exit_code == 2
    assert "grants.experiments.shopp: no experiment named 'shopp'" in result.output
    assert "alice" not in {u.name for u in access.admin_client(stack).users()} - {"alice"}


def test_init_makes_the_repos_machine_identity_and_training_uses_it(
    stack: StackOutputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig import api
    from mlrig.core.bootstrap import init as bootstrap

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    result = bootstrap.init(tmp_path / "ledger", "acc")
    assert (result.identity, result.identity_problem) == ("repo-ledger", "")
    env = api.tracking_env(result.path)  # what the repo's train stage logs in with
    creds = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    assert creds[0] == "repo-ledger"
    assert get(stack, creds, "experiments/get-by-name", experiment_name="ledger") == 200
    assert get(stack, creds, "registered-models/get", name="ledger") == 200
    assert get(stack, creds, "registered-models/get", name="shop") == 403
    answers = (result.path / ".copier-answers.yml").read_text()
    assert "mlflow_username: repo-ledger" in answers
    assert creds[1] not in answers and "secret" not in answers


def test_the_log_names_who_wrote_what(stack: StackOutputs) -> None:
    env = identities.repo_env(stack, "shop")
    creds = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    shop = access.admin_client(stack).experiment_id("shop")
    assert post(stack, creds, "runs/create", experiment_id=shop) == 200
    shown = runner.invoke(app, ["access", "log", "--since", "1h", "--stack", "acc", "--json"])
    assert shown.exit_code == 0, shown.output
    import json

    entries = [json.loads(line) for line in shown.output.splitlines() if line.startswith("{")]
    runs = [e for e in entries if e["path"].endswith("/runs/create") and e["user"] == "repo-shop"]
    assert runs and runs[-1]["status"] == 200 and runs[-1]["auth"] == "basic"
    assert creds[1] not in shown.output


def test_a_stack_made_before_gets_no_permissions_at_its_next_up(
    local: tuple[Any, StackOutputs], people: dict[str, Any]
) -> None:
    from mlrig.adapters import processes

    layout, outputs = local
    ini = layout.mlflow_dir / "auth.ini"
    ini.write_text(ini.read_text().replace("NO_PERMISSIONS", "READ"))  # as an older mlrig wrote
    _, before = processes.status(layout.pid_file("mlflow"))
    layout.up()
    _, after = processes.status(layout.pid_file("mlflow"))
    assert before is not None and after is not None and after.pid != before.pid  # restarted
    assert "default_permission = NO_PERMISSIONS" in ini.read_text()
    nora = people["auth"]["nora"]  # users and grants survive the restart
    assert get(outputs, nora, "users/current") == 200
    assert get(outputs, nora, "experiments/get-by-name", experiment_name="shop") == 403
    layout.up()  # nothing changed: no restart
    assert processes.status(layout.pid_file("mlflow"))[1].pid == after.pid


TRAIN = """\
import sys

import mlflow
from mlflow.exceptions import MlflowException

mlflow.set_experiment("shop")
with mlflow.start_run() as run:
    mlflow.log_param("C", 0.5)
    mlflow.log_metric("auc", 0.9)
print("logged", run.info.run_id)
try:  # another repository's experiment, by id (this identity may not even read its name)
    mlflow.MlflowClient().create_run(sys.argv[1])
except MlflowException as exc:
    print("refused", exc.get_http_status_code())
"""


def _mlrig_shell(script: str, cwd: Path, stdin: str = "") -> Any:
    """`script` in bash with the venv on PATH and no MLflow, AWS or mlrig exports but the
    module's MLRIG_HOME, in its own session (no terminal: a password prompt reads stdin)."""
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=repo_env(Path(os.environ["MLRIG_HOME"])),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )


def test_stack_env_as_a_machine_identity_logs_where_it_may_in_any_repository(
    stack: StackOutputs, tmp_path: Path
) -> None:
    # a folder mlrig never made (no .copier-answers.yml), as a team's own repository is
    (tmp_path / "train.py").write_text(TRAIN)
    fraud = access.admin_client(stack).experiment_id("fraud")
    ran = _mlrig_shell(
        f'eval "$(mlrig stack env --stack acc --as repo-shop)" && python train.py {fraud}',
        tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    lines = ran.stdout.splitlines()
    run_id = next(line.split()[1] for line in lines if line.startswith("logged "))
    assert "refused 403" in lines  # EDIT on its own experiment only
    assert stack.mlflow.auth is not None
    admin = (stack.mlflow.auth.username, secrets.resolve(stack.mlflow.auth.password))
    run = requests.get(url(stack, "runs/get"), params={"run_id": run_id}, auth=admin, timeout=30)
    assert run.json()["run"]["info"]["experiment_id"] == access.admin_client(stack).experiment_id(
        "shop"
    )
    entries = runner.invoke(app, ["access", "log", "--since", "1h", "--stack", "acc", "--json"])
    writes = [
        json.loads(line)
        for line in entries.output.splitlines()
        if line.startswith("{") and "/runs/create" in line
    ]
    assert {(e["user"], e["status"]) for e in writes} >= {("repo-shop", 200), ("repo-shop", 403)}
    password = identities.read_password(stack, "repo-shop")
    assert password and password not in ran.stderr  # printed once, to the eval only


def test_stack_env_as_a_person_asks_and_checks_the_password(
    stack: StackOutputs, people: dict[str, Any], tmp_path: Path
) -> None:
    name, password = people["auth"]["alice"]
    printed = _mlrig_shell(
        f"mlrig stack env --stack acc --as {name} --json", tmp_path, stdin=password + "\n"
    )
    assert printed.returncode == 0, printed.stderr
    env = json.loads(printed.stdout)
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (name, password)
    assert get(stack, (name, password), "users/current") == 200
    assert password not in printed.stderr
    wrong = _mlrig_shell(f"mlrig stack env --stack acc --as {name}", tmp_path, stdin="nope-nope\n")
    assert wrong.returncode == 6 and wrong.stdout == ""
    assert "does not accept the password of alice" in wrong.stderr


def _documented_recipe() -> str:
    """The change-password block of docs/concepts/access.md, as a reader copies it."""
    from tests.helpers import REPO_ROOT

    text = (REPO_ROOT / "docs/concepts/access.md").read_text()
    after = text.split("<!-- change-password recipe:", 1)[1]
    return after.split("```bash\n", 1)[1].split("```", 1)[0]


def _on_a_terminal(script: str, env: dict[str, str], answers: list[tuple[str, str]]) -> str:
    """Run `script` in bash on a pseudo-terminal, as a person types: each answer is sent once
    its prompt has appeared (getpass flushes what was typed before it asks). All output."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: bash on the terminal (never back into pytest)
        try:
            os.execvpe("bash", ["bash", "-c", script], env)  # noqa: S606 (a pty child)
        finally:
            os._exit(127)
    seen, todo = b"", list(answers)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            assert ready, f"no output for 120 s; so far: {seen.decode(errors='replace')}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed: bash is done
                break
            if not chunk:
                break
            seen += chunk
            while todo and todo[0][0].encode() in seen.rsplit(b"\n", 1)[-1]:
                os.write(fd, (todo.pop(0)[1] + "\n").encode())
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert todo == [], f"never asked for {todo}: {seen.decode(errors='replace')}"
    return seen.decode(errors="replace")


def test_the_documented_password_change_works_without_flask_wtf(
    stack: StackOutputs, people: dict[str, Any], tmp_path: Path
) -> None:
    name, old = people["auth"]["alice"]
    new = "alice-new-password-0002"
    recipe = _documented_recipe()
    assert "--as alice" in recipe and "current_password" in recipe
    blocker = tmp_path / "no-flask-wtf" / "flask_wtf"  # a client without Flask-WTF
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('Flask-WTF is not installed')\n")
    env = repo_env(Path(os.environ["MLRIG_HOME"]), {"MLRIG_STACK": "acc"})
    env["PYTHONPATH"] = str(blocker.parent)
    shown = _on_a_terminal(
        recipe, env, [(f"MLflow password of {name}: ", old), ("new password: ", new)]
    )
    assert "password changed" in shown
    assert old not in shown and new not in shown  # neither is echoed
    assert get(stack, (name, old), "users/current") == 401
    assert get(stack, (name, new), "users/current") == 200
    people["auth"]["alice"] = (name, new)
