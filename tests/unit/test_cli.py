"""CLI parsing and the single error-to-exit-code mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.main import app
from mlrig.version import __version__
from tests.helpers import sample

runner = CliRunner()


def test_version_names_mlrig_the_template_and_the_contract() -> None:
    from mlrig.contract import SCHEMA_VERSION
    from mlrig.core.bootstrap.init import packaged_template

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    template = (packaged_template() / "VERSION").read_text().strip()
    assert result.output.strip() == (
        f"mlrig {__version__} (template {template}, stack contract schema {SCHEMA_VERSION})"
    )
    # the installed distribution's version, from git (setuptools-scm), never the fallback
    from importlib.metadata import version

    assert __version__ == version("mlrig") != "0.0.0"


def test_unknown_stack_is_one_line_exit_3(mlrig_home: Path) -> None:
    result = runner.invoke(app, ["stack", "outputs", "--name", "nope"])
    assert result.exit_code == 3
    assert "no stack named 'nope'" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_name_is_a_usage_error(mlrig_home: Path) -> None:
    result = runner.invoke(app, ["stack", "up", "--name", "a b"])
    assert result.exit_code == 2
    assert "invalid stack name" in result.output
    assert not (mlrig_home / "stacks").exists()


def test_outputs_json_is_the_contract(mlrig_home: Path) -> None:
    from mlrig import contract

    contract.save(sample("dev"))
    result = runner.invoke(app, ["stack", "outputs", "--name", "dev", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["name"] == "dev"
    assert doc["registry"]["url"] == "127.0.0.1:5001/models"


def test_stack_list_shows_stacks(mlrig_home: Path) -> None:
    from mlrig import contract

    contract.save(sample("dev"))
    result = runner.invoke(app, ["stack", "list"])
    assert result.exit_code == 0
    assert "dev" in result.output and "127.0.0.1:5001/models" in result.output


def test_env_prints_quoted_exports(mlrig_home: Path, tmp_path: Path) -> None:
    from mlrig import contract
    from mlrig.contract import BasicAuth, SecretRef

    secret = tmp_path / "pw"
    secret.write_text("s3cr et'x\n")
    out = sample("dev")
    out.mlflow.auth = BasicAuth(
        username="admin", password=SecretRef(source="file", ref=str(secret))
    )
    contract.save(out)
    result = runner.invoke(app, ["stack", "env", "--name", "dev"])
    assert result.exit_code == 0, result.output
    env = subprocess.run(
        ["bash", "-c", result.stdout + 'printf %s "$MLFLOW_TRACKING_PASSWORD"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert env == "s3cr et'x"
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in result.stdout


def test_missing_secret_file_is_a_credentials_error(mlrig_home: Path) -> None:
    from mlrig import contract

    contract.save(sample("dev"))  # points at /x/secret, which does not exist
    result = runner.invoke(app, ["stack", "env", "--name", "dev"])
    assert result.exit_code == 6
    assert "secret file /x/secret is missing" in result.output


def test_internal_errors_are_one_line_without_debug(mlrig_home: Path) -> None:
    path = mlrig_home / "stacks" / "dev"
    path.mkdir(parents=True)
    (path / "outputs.json").write_text("{}")
    result = runner.invoke(app, ["stack", "outputs", "--name", "dev"])
    assert result.exit_code == 3
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(mlrig_home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlrig", "--debug", "stack", "outputs", "--name", "nope"],
        capture_output=True,
        text=True,
        env={"MLRIG_HOME": str(mlrig_home), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 3
    assert "Traceback" in proc.stderr
    assert "no stack named 'nope'" in proc.stderr


def test_down_purge_needs_confirmation(mlrig_home: Path) -> None:
    from mlrig import contract

    contract.save(sample("dev"))
    result = runner.invoke(app, ["stack", "down", "--name", "dev", "--purge"], input="n\n")
    assert result.exit_code == 130
    assert contract.outputs_path("dev").exists()


HEAVY = [
    "mlflow",
    "pulumi",
    "pulumi_aws",
    "dvc",
    "docker",
    "boto3",
    "botocore",
    "pandas",
    "sklearn",
    "copier",
    "requests",
]  # pydantic: typer itself imports it


@pytest.mark.parametrize("argv", [["--help"], ["stack", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from mlrig.main import app\n"
        "from typer.main import get_command\n"
        "try:\n"
        f"    get_command(app).main({argv!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_aws_stack_env_sends_large_artifacts_straight_to_s3(mlrig_home: Path) -> None:
    from mlrig.contract import Registry
    from mlrig.core.stack import env as stack_env

    out = sample("cloud").model_copy(
        update={
            "kind": "aws",
            "region": "eu-west-1",
            "mlflow": sample().mlflow.model_copy(update={"auth": None}),
            "registry": Registry(kind="ecr", url="1.dkr.ecr.eu-west-1.amazonaws.com/m"),
        }
    )
    env = stack_env.client_env(out)
    assert env["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] == "true"
    assert env["AWS_REGION"] == "eu-west-1"
    local = out.model_copy(update={"kind": "local", "region": None})
    assert "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD" not in stack_env.client_env(local)


def test_temporary_env_restores_set_and_unset_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from mlrig.core.stack.env import temporary_env

    monkeypatch.setenv("MLRIG_T_SET", "before")
    monkeypatch.delenv("MLRIG_T_UNSET", raising=False)
    with pytest.raises(RuntimeError), temporary_env({"MLRIG_T_SET": "x", "MLRIG_T_UNSET": "y"}):
        assert os.environ["MLRIG_T_SET"] == "x" and os.environ["MLRIG_T_UNSET"] == "y"
        raise RuntimeError
    assert os.environ["MLRIG_T_SET"] == "before"
    assert "MLRIG_T_UNSET" not in os.environ


def _modules_after(argv: list[str]) -> tuple[set[str], str]:
    """The mlrig.commands modules a fresh `mlrig ARGV` process imported, and its stdout."""
    code = (
        "import sys\n"
        f"sys.argv = ['mlrig', *{argv!r}]\n"
        "from mlrig.main import run\n"
        "try:\n"
        "    run()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sorted(m for m in sys.modules "
        "if m.startswith('mlrig.commands.'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out, _, modules = proc.stdout.rpartition("MODULES")
    return set(modules.split()), out


def test_a_command_builds_only_its_own_group() -> None:
    """Typer turns the whole command tree into click commands before it parses: `mlrig
    image push` loads the image group (and the shared options), not stack, access, …"""
    modules, out = _modules_after(["image", "push", "--help"])
    assert modules == {"mlrig.commands.image", "mlrig.commands.options"}
    assert "--registry-endpoint" in out
    modules, out = _modules_after(["--debug", "stack", "--help"])  # a root flag first
    assert "mlrig.commands.rehearse" in modules and "mlrig.commands.image" not in modules
    assert "rehearse" in out


@pytest.mark.parametrize("argv", [["--help"], ["no-such-command"], []])
def test_help_and_a_typo_still_see_every_command(argv: list[str]) -> None:
    from mlrig.main import COMMANDS

    modules, _ = _modules_after(argv)
    assert {f"mlrig.commands.{module}" for module, _, _ in COMMANDS.values()} <= modules


def test_the_imported_app_has_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    from mlrig.main import COMMANDS

    for name in COMMANDS:
        assert name in result.output


def test_a_termination_is_not_swallowed_as_a_failure_and_exits_143() -> None:
    """A signal handler raises Terminated wherever the main thread is, also inside code that
    turns an ordinary failure into a fallback: it passes through, and the one error line and
    exit code 143 come out at the top."""
    import typer

    from mlrig.errors import MlrigError, Terminated
    from mlrig.main import MlrigGroup

    probe = typer.Typer(cls=MlrigGroup)

    @probe.command()
    def up() -> None:
        try:
            try:
                raise Terminated("`stack up` of 'x' was stopped by SIGTERM", hint="run it again")
            except MlrigError:
                typer.echo("treated as a failure")
        except Exception:  # noqa: BLE001 - the fallback a termination must not meet
            typer.echo("treated as an error")
        typer.echo("carried on")

    @probe.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(probe, ["up"])
    assert result.exit_code == 143
    assert "carried on" not in result.output and "treated" not in result.output
    assert result.output.strip().splitlines() == [
        "error: `stack up` of 'x' was stopped by SIGTERM — run it again"
    ]


def test_shell_completion_completes_the_command_groups(tmp_path: Path) -> None:
    """docs/releasing.md: `mlrig --install-completion`; the shell calls mlrig like this."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "_MLRIG_COMPLETE": "complete_bash",
        "COMP_WORDS": "mlrig st",
        "COMP_CWORD": "1",
    }
    mlrig = str(Path(sys.executable).with_name("mlrig"))  # the installed console script
    proc = subprocess.run([mlrig], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["stack"]
