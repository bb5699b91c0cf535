"""`mlrig stack env [--as WHO]` and `mlrig.api.tracking_env` outside a generated repo: whose
environment is printed, in which format, and what is never read or shown. The tracking
server's answer to a login is the adapter's (`MlflowAuth.can_login`), replaced here; the
round trip to a real MLflow is tests/integration/test_access.py's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.contract import BasicAuth, SecretRef
from mlrig.core.access import identities
from mlrig.core.stack import env as stack_env
from mlrig.errors import MlrigError, UsageError
from mlrig.main import app
from tests.helpers import env_secret_outputs, sample

runner = CliRunner()
MACHINE_PW = "the-machine-password"


@pytest.fixture
def stack(mlrig_home: Path, monkeypatch: pytest.MonkeyPatch) -> contract.StackOutputs:
    """A stack whose admin password is $NO_SUCH_PW, unset: any read of it fails loudly.
    It keeps the machine identity repo-churn's password; MLflow accepts the passwords in
    `accepted` (the adapter's answer)."""
    outputs = env_secret_outputs("dev")
    contract.save(outputs)
    identities.store_password(outputs, "repo-churn", MACHINE_PW)
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    monkeypatch.delenv("MLRIG_STACK", raising=False)
    accepted = {("repo-churn", MACHINE_PW), ("alice", "alice-password")}
    from mlrig.adapters.mlflow_auth import MlflowAuth

    monkeypatch.setattr(MlflowAuth, "can_login", lambda _s, u, p: (u, p) in accepted)
    return outputs


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_without_as_it_says_on_stderr_that_it_prints_the_admin(
    mlrig_home: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("admin-secret\n")
    out = sample("dev")
    out.mlflow.auth = BasicAuth(
        username="admin", password=SecretRef(source="file", ref=str(secret))
    )
    contract.save(out)
    result = runner.invoke(app, ["stack", "env", "--stack", "dev"])
    assert result.exit_code == 0, result.output
    assert "export MLFLOW_TRACKING_USERNAME=admin" in result.stdout
    assert "admin" in result.stderr and "--as repo-PROJECT" in result.stderr
    assert len(_lines(result.stderr)) == 1 and "admin-secret" not in result.stderr
    explicit = runner.invoke(app, ["stack", "env", "--stack", "dev", "--as", "admin"])
    assert explicit.exit_code == 0 and explicit.stderr == ""  # asked for: nothing to warn of
    assert explicit.stdout == result.stdout


def test_as_a_machine_identity_prints_its_login_and_no_stack_secret(
    stack: contract.StackOutputs,
) -> None:
    result = runner.invoke(app, ["stack", "env", "--stack", "dev", "--as", "repo-churn"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    printed = subprocess.run(
        [
            "bash",
            "-c",
            result.stdout + 'printf "%s %s" "$MLFLOW_TRACKING_USERNAME" '
            '"$MLFLOW_TRACKING_PASSWORD"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == f"repo-churn {MACHINE_PW}"
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in result.stdout
    assert "export MLRIG_DVC_REMOTE_URL=/srv/dvc" in result.stdout
    assert "REGISTRY_PASSWORD" not in result.stdout  # the registry's account is the stack's


def test_the_formats_carry_the_same_values(stack: contract.StackOutputs) -> None:
    base = ["stack", "env", "--stack", "dev", "--as", "repo-churn"]
    as_json = json.loads(runner.invoke(app, [*base, "--json"]).stdout)
    assert json.loads(runner.invoke(app, [*base, "--format", "json"]).stdout) == as_json
    dotenv = runner.invoke(app, [*base, "--format", "dotenv"]).stdout
    assert dict(line.split("=", 1) for line in dotenv.splitlines()) == as_json
    assert as_json["MLFLOW_TRACKING_USERNAME"] == "repo-churn"
    assert as_json["MLFLOW_TRACKING_PASSWORD"] == MACHINE_PW


def test_aws_settings_come_with_an_identity() -> None:
    from tests.helpers import aws_outputs

    env = stack_env.settings_env(aws_outputs("prod"))
    assert env["AWS_REGION"] == "eu-west-1"
    assert not {k for k in env if "PASSWORD" in k or "USERNAME" in k}


def test_dotenv_refuses_a_value_with_a_line_break() -> None:
    with pytest.raises(UsageError, match="A holds a line break"):
        stack_env.render({"A": "x\ny", "B": "z"}, "dotenv")
    with pytest.raises(UsageError, match="unknown format 'yaml'"):
        stack_env.render({}, "yaml")


def test_a_person_types_a_password_the_server_must_accept(stack: contract.StackOutputs) -> None:
    base = ["stack", "env", "--stack", "dev", "--as", "alice", "--json"]
    ok = runner.invoke(app, base, input="alice-password\n")
    assert ok.exit_code == 0, ok.output
    env = json.loads(ok.stdout)
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        "alice",
        "alice-password",
    )
    assert "alice-password" not in ok.stderr  # the prompt hides it
    wrong = runner.invoke(app, base, input="guess\n")
    assert wrong.exit_code == 6 and wrong.stdout.strip() == ""  # the test prompt's echo
    assert "does not accept the password of alice" in wrong.stderr
    assert "guess" not in wrong.output


@pytest.mark.parametrize(
    ("who", "code", "says"),
    [
        ("repo-nope", 6, "machine identity repo-nope has no stored password on stack 'dev'"),
        ("repo-Bad_Name", 2, "'repo-Bad_Name' is not a machine identity's name"),
        ("a b", 2, "'a b' is not an MLflow user name"),
    ],
)
def test_bad_identities_are_one_line_and_print_nothing(
    stack: contract.StackOutputs, who: str, code: int, says: str
) -> None:
    result = runner.invoke(app, ["stack", "env", "--stack", "dev", "--as", who])
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert len(_lines(result.stderr)) == 1 and says in result.stderr


def test_a_stale_stored_password_is_refused_with_its_repair(
    stack: contract.StackOutputs,
) -> None:
    identities.store_password(stack, "repo-churn", "rotated-elsewhere")
    result = runner.invoke(app, ["stack", "env", "--stack", "dev", "--as", "repo-churn"])
    assert result.exit_code == 6 and result.stdout == ""
    assert "mlrig access add-machine PROJECT --stack dev" in result.stderr
    assert "rotated-elsewhere" not in result.output


def test_format_mistakes_are_refused_before_anything_is_read(mlrig_home: Path) -> None:
    contract.save(sample("dev"))  # its admin secret file does not exist
    bad = runner.invoke(app, ["stack", "env", "--stack", "dev", "--format", "yaml"])
    assert bad.exit_code == 2 and "unknown format 'yaml'" in bad.stderr
    both = runner.invoke(app, ["stack", "env", "--stack", "dev", "--json", "--format", "dotenv"])
    assert both.exit_code == 2 and "exclude each other" in both.stderr


def test_tracking_env_serves_any_repository_given_an_identity(
    stack: contract.StackOutputs, tmp_path: Path
) -> None:
    from mlrig import api

    plain = tmp_path / "their-repo"  # no .copier-answers.yml
    plain.mkdir()
    env = api.tracking_env(plain, stack="dev", identity="repo-churn")
    assert env["MLFLOW_TRACKING_USERNAME"] == "repo-churn"
    assert env["MLFLOW_TRACKING_PASSWORD"] == MACHINE_PW
    assert env["MLRIG_STACK"] == "dev"
    with pytest.raises(UsageError, match="which identity") as err:
        api.tracking_env(plain, stack="dev")
    assert "identity='repo-NAME'" in err.value.one_line()
    with pytest.raises(MlrigError, match="repo-other has no stored password"):
        api.tracking_env(plain, stack="dev", identity="repo-other")
    with pytest.raises(UsageError, match="not a machine identity"):
        api.tracking_env(plain, stack="dev", identity="alice")
