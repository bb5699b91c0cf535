"""One answer to "which stack?" (`stacks.resolve_name`) and one Stack surface for both kinds."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.stack import env as stack_env
from mlrig.core.stack import stacks
from mlrig.core.stack.aws.facade import AwsFacade
from mlrig.core.stack.facade import Stack, UpOptions
from mlrig.core.stack.local.facade import LocalFacade
from mlrig.errors import StackNotFound, UsageError
from mlrig.main import app
from tests.helpers import aws_stack_outputs, sample


@pytest.fixture
def no_env_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $MLRIG_STACK, and a working directory inside a plain git repo (no answers file)."""
    monkeypatch.delenv(stacks.STACK_ENV, raising=False)
    work = tmp_path / "work"
    (work / ".git").mkdir(parents=True)
    monkeypatch.chdir(work)
    return work


def _repo_for(stack: str, where: Path) -> Path:
    (where / ".git").mkdir(parents=True)
    (where / stacks.ANSWERS_FILE).write_text(f"_commit: v1\nproject_name: model\nstack: {stack}\n")
    (where / "src").mkdir()
    return where / "src"


# -- resolve_name: each step of the order -------------------------------------------------------
def test_the_flag_wins_over_everything(
    mlrig_home: Path, no_env_stack: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    contract.save(sample("only"))
    monkeypatch.setenv(stacks.STACK_ENV, "from-env")
    inside = _repo_for("from-repo", tmp_path / "repo")
    assert stacks.resolve_name("from-flag", repo=inside) == "from-flag"


def test_the_environment_comes_second(
    mlrig_home: Path, no_env_stack: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    contract.save(sample("only"))
    monkeypatch.setenv(stacks.STACK_ENV, "from-env")
    inside = _repo_for("from-repo", tmp_path / "repo")
    assert stacks.resolve_name(None, repo=inside) == "from-env"


def test_the_repo_answers_file_comes_third(
    mlrig_home: Path, no_env_stack: Path, tmp_path: Path
) -> None:
    contract.save(sample("only"))
    inside = _repo_for("from-repo", tmp_path / "repo")
    assert stacks.resolve_name(None, repo=inside) == "from-repo"
    # without `repo`, the current directory is where the search starts
    assert stacks.resolve_name(None) == "only"


def test_the_only_stack_comes_fourth(mlrig_home: Path, no_env_stack: Path) -> None:
    contract.save(sample("only"))
    assert stacks.resolve_name(None) == "only"
    assert stacks.resolve_name(None, default="local") == "only"  # default only when none


def test_the_default_names_a_first_stack(mlrig_home: Path, no_env_stack: Path) -> None:
    assert stacks.resolve_name(None, default="local") == "local"


def test_nothing_resolves_without_any_stack(mlrig_home: Path, no_env_stack: Path) -> None:
    with pytest.raises(UsageError) as info:
        stacks.resolve_name(None)
    line = info.value.one_line()
    assert "\n" not in line
    assert "which stack? no stack exists yet" in line
    assert "--stack NAME" in line and "MLRIG_STACK" in line


def test_several_stacks_are_listed_in_one_line(mlrig_home: Path, no_env_stack: Path) -> None:
    contract.save(sample("dev"))
    contract.save(sample("prod"))
    with pytest.raises(UsageError) as info:
        stacks.resolve_name(None, default="local")
    line = info.value.one_line()
    assert "\n" not in line
    assert "which stack? there are 2: dev, prod" in line


def test_the_cli_error_is_one_line_exit_2(mlrig_home: Path, no_env_stack: Path) -> None:
    contract.save(sample("dev"))
    contract.save(sample("prod"))
    result = CliRunner().invoke(app, ["stack", "outputs"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "which stack? there are 2: dev, prod" in result.output


# -- the façade ---------------------------------------------------------------------------------
SURFACE = ("up", "down", "status", "outputs", "env", "confirm_up", "confirm_down")


def test_both_kinds_offer_the_same_surface() -> None:
    for method in SURFACE:
        base = inspect.signature(getattr(Stack, method))
        for impl in (LocalFacade, AwsFacade):
            assert inspect.signature(getattr(impl, method)) == base, (impl, method)


def test_open_picks_the_back_end_by_the_recorded_kind(mlrig_home: Path) -> None:
    contract.save(sample("dev"))
    contract.save(aws_stack_outputs("team"))
    local, aws = stacks.open("dev"), stacks.open("team")
    assert isinstance(local, LocalFacade) and local.kind == "local"
    assert isinstance(aws, AwsFacade) and aws.kind == "aws"
    for stack in (local, aws):
        assert stack.outputs() == contract.load(stack.name)


def test_open_of_an_unknown_stack_is_not_found(mlrig_home: Path) -> None:
    with pytest.raises(StackNotFound):
        stacks.open("nope")


def test_create_needs_a_known_kind_and_touches_nothing(mlrig_home: Path) -> None:
    assert isinstance(stacks.create("new", "local"), LocalFacade)
    assert isinstance(stacks.create("new", "aws"), AwsFacade)
    assert not (mlrig_home / "stacks" / "new").exists()
    with pytest.raises(UsageError, match="unknown stack kind 'gcp'"):
        stacks.create("new", "gcp")
    with pytest.raises(UsageError, match="invalid stack name"):
        stacks.create("a b", "local")


def test_env_is_the_client_env_for_both_kinds(mlrig_home: Path) -> None:
    out = sample("dev").model_copy(
        update={"mlflow": sample().mlflow.model_copy(update={"auth": None})}
    )
    contract.save(out)
    contract.save(aws_stack_outputs("team").model_copy(update={"mlflow": out.mlflow}))
    for name in ("dev", "team"):
        assert stacks.open(name).env() == stack_env.client_env(contract.load(name))


def test_confirmations(mlrig_home: Path) -> None:
    local, aws = stacks.create("dev", "local"), stacks.create("team", "aws")
    assert local.confirm_up(UpOptions()) is None
    assert local.confirm_down(purge=False) is None
    asked = local.confirm_down(purge=True)
    assert asked is not None and "Delete all data of stack 'dev'" in asked.question
    ask_up = aws.confirm_up(UpOptions(region="eu-west-1", profile="production"))
    assert ask_up is not None and "'team' (production) in eu-west-1" in ask_up.question
    sized = aws.confirm_up(UpOptions(region="eu-west-1", server_size="2048:4096"))
    assert sized is not None and "(small --server-size 2048:4096)" in sized.question
    assert "`mlrig stack plan --profile small --server-size 2048:4096`" in sized.question
    with pytest.raises(UsageError, match="invalid --server-size"):
        aws.confirm_up(UpOptions(region="eu-west-1", server_size="2048:1"))
    with pytest.raises(UsageError, match="invalid AWS region"):
        aws.confirm_up(UpOptions(region="moon-1"))
    for purge in (False, True):
        ask_down = aws.confirm_down(purge)
        assert ask_down is not None and ask_down.refused == "nothing was destroyed"


def test_aws_status_reports_outputs_and_a_credentials_round_trip(
    mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.adapters import aws
    from mlrig.errors import CredentialsError

    contract.save(aws_stack_outputs("team"))
    monkeypatch.setattr(
        aws, "caller_identity", lambda region=None: {"account": "1", "arn": "arn:aws:iam::1:u"}
    )
    rows = {r.name: r for r in stacks.open("team").status()}
    assert rows["aws credentials"].ok and rows["aws credentials"].address == "arn:aws:iam::1:u"
    assert rows["mlflow"].address == "https://x.execute-api.us-east-1.amazonaws.com"

    def refuse(region: str | None = None) -> dict[str, str]:
        raise CredentialsError("no AWS credentials found", hint="run `aws configure`")

    monkeypatch.setattr(aws, "caller_identity", refuse)
    result = CliRunner().invoke(app, ["stack", "status", "-s", "team"])
    assert result.exit_code == 1
    assert "no AWS credentials found" in result.output


def test_stack_flag_and_its_old_spelling(mlrig_home: Path) -> None:
    contract.save(sample("dev"))
    runner = CliRunner()
    for flag in ("--stack", "-s", "--name"):
        result = runner.invoke(app, ["stack", "outputs", flag, "dev", "--json"])
        assert result.exit_code == 0, (flag, result.output)
    both = runner.invoke(app, ["stack", "outputs", "--stack", "dev", "--name", "other"])
    assert both.exit_code == 2 and "name different stacks" in both.output
    assert "--name" not in runner.invoke(app, ["stack", "outputs", "--help"]).output


def test_doctor_checks_the_resolved_stack_or_says_why_none(
    mlrig_home: Path, no_env_stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig.core.doctor import doctor

    monkeypatch.setattr(doctor, "machine_checks", lambda: [])
    monkeypatch.setattr(
        doctor, "stack_checks", lambda name: [doctor.Check("stack outputs", doctor.OK, name)]
    )
    report = doctor.run(None)
    assert report.stack is None and [c.name for c in report.checks] == ["stack"]
    assert report.checks[0].status == doctor.SKIP and not doctor.failed(report.checks)
    assert "no stack exists yet" in report.checks[0].detail
    contract.save(sample("dev"))
    assert doctor.run(None).stack == "dev"  # the only stack, as everywhere else
    assert doctor.run("other").stack == "other"


def test_outputs_read_the_contract_without_a_back_end(mlrig_home: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import sample

    contract.save(sample("dev"))
    assert stacks.outputs("dev") == contract.load("dev")
    with pytest.raises(StackNotFound):
        stacks.outputs("nope")
    with pytest.raises(UsageError, match="invalid stack name"):
        stacks.outputs("../dev")
    code = (
        "import sys\n"
        "from mlrig.core.stack import stacks\n"
        "stacks.outputs('dev')\n"
        "print(sorted(m for m in sys.modules if m.startswith('mlrig.core.stack.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "stack.local" not in proc.stdout and "stack.aws" not in proc.stdout, proc.stdout
