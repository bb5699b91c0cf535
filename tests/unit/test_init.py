"""`mlrig init` / `update`: name rules, stack wiring, dataset, and bad input on the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig import contract
from mlrig.contract import Mlflow, StackOutputs
from mlrig.core.bootstrap import init as bootstrap
from mlrig.errors import UsageError
from mlrig.main import app
from tests.helpers import aws_outputs

runner = CliRunner()


@pytest.mark.parametrize("name", ["churn", "churn_model", "m2", "a1_b2_c3"])
def test_valid_project_names(name: str) -> None:
    assert bootstrap.validate_project_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("x", "characters"),
        ("a" * 65, "characters"),
        ("Churn", "ECR repository name"),
        ("churn__model", "ECR repository name"),
        ("_churn", "ECR repository name"),
        ("churn-model", "Python package name"),
        ("churn.model", "Python package name"),
        ("2churn", "Python package name"),
        ("class", "Python package name"),
        ("json", "standard library"),
    ],
)
def test_invalid_project_names_say_which_rule_failed(name: str, rule: str) -> None:
    with pytest.raises(UsageError) as err:
        bootstrap.validate_project_name(name)
    assert rule in err.value.message


def test_dash_name_suggests_the_underscore_form() -> None:
    with pytest.raises(UsageError) as err:
        bootstrap.validate_project_name("churn-model")
    assert err.value.hint == "try --name churn_model"


@pytest.mark.parametrize(
    ("directory", "slug"),
    [
        ("My-Model.v2", "my_model_v2"),
        ("churn", "churn"),
        ("fraud detection", "fraud_detection"),
    ],
)
def test_project_name_is_derived_from_the_directory(directory: str, slug: str) -> None:
    assert bootstrap.derive_project_name(directory) == slug


def test_underivable_directory_asks_for_name() -> None:
    with pytest.raises(UsageError) as err:
        bootstrap.derive_project_name("123")
    assert err.value.hint == "pass --name NAME"


@pytest.mark.parametrize("name", ["mlflow", "sklearn", "pandas", "numpy", "dvc", "yaml", "mlrig"])
def test_names_that_shadow_a_pipeline_import_are_refused(name: str) -> None:
    """The stages run with PYTHONPATH=src: a package called mlflow would break `dvc repro`."""
    with pytest.raises(UsageError) as err:
        bootstrap.validate_project_name(name)
    assert "would shadow the Python module" in err.value.message
    assert "the generated pipeline import" in err.value.message
    assert err.value.hint == f"try --name {name}_model"
    with pytest.raises(UsageError, match="pass --name NAME"):
        bootstrap.derive_project_name(name)


def test_a_name_some_installed_package_uses_is_refused() -> None:
    # pluggy comes with pytest; a src/pluggy package would be imported in its place
    with pytest.raises(UsageError, match="would shadow the Python module 'pluggy'"):
        bootstrap.validate_project_name("pluggy")


def test_staging_failure_removes_the_parents_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import tempfile

    from mlrig.core.bootstrap import _staging as bootstrap_staging

    def full(*_a: object, **_k: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    target = tmp_path / "a" / "b" / "repo"
    with (
        pytest.raises(UsageError, match="cannot create 'repo' in .*No space left on device"),
        bootstrap_staging.staging_dir(target),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_github_repo_format() -> None:
    assert bootstrap.validate_github_repo("acme/churn-model") == "acme/churn-model"
    assert bootstrap.validate_github_repo("") == ""
    for bad in ("acme", "acme/churn/x", "https://github.com/acme/churn", "-acme/x", "acme/.."):
        with pytest.raises(UsageError):
            bootstrap.validate_github_repo(bad)


def test_stack_answers_carry_where_secrets_live_not_secrets() -> None:
    answers = bootstrap.stack_answers(aws_outputs())
    assert answers["stack"] == "prod" and answers["stack_kind"] == "aws"
    assert answers["ci_role_arn"] == "arn:aws:iam::123456789012:role/ci"
    assert answers["mlflow_oidc_audience"] == "mlrig:prod"
    assert "secretsmanager" not in str(answers)  # not even where the admin's secret lives
    assert all(isinstance(v, str) for v in answers.values())


def test_endpoints_go_to_config_local_only() -> None:
    assert bootstrap.remote_local_options(aws_outputs()) == {
        "endpointurl": "http://127.0.0.1:9",
        "region": "eu-west-1",
    }
    assert bootstrap.remote_local_options(aws_outputs(endpoint=None)) == {"region": "eu-west-1"}


def test_dataset_matches_scikit_learns_loader(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    n = bootstrap.write_dataset(tmp_path / "raw.csv")
    written = pd.read_csv(tmp_path / "raw.csv")
    expected = load_breast_cancer(as_frame=True).frame
    assert n == len(written) == len(expected) == 569
    assert list(written.columns) == ["id", *[c.replace(" ", "_") for c in expected.columns]]
    assert written["id"].tolist() == list(range(1, 570))
    pd.testing.assert_frame_equal(
        written.drop(columns="id").set_axis(expected.columns, axis=1), expected, check_dtype=False
    )


# -- the CLI: bad input is one line, a non-zero exit, and nothing written ------------------------
def _one_line_error(output: str) -> str:
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_unknown_stack(mlrig_home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path / "repo"), "--stack", "nope", "--no-input"])
    assert result.exit_code == 3
    assert "no stack named 'nope'" in _one_line_error(result.output)
    assert not (tmp_path / "repo").exists()


def test_missing_stack_with_no_input(mlrig_home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path / "repo"), "--no-input"])
    assert result.exit_code == 2
    assert "--stack is required" in _one_line_error(result.output)


def test_invalid_name_on_the_cli(mlrig_home: Path, tmp_path: Path) -> None:
    contract.save(aws_outputs())
    result = runner.invoke(
        app,
        ["init", str(tmp_path / "repo"), "--stack", "prod", "--name", "Churn-Model", "--no-input"],
    )
    assert result.exit_code == 2
    assert "not a valid ECR repository name" in _one_line_error(result.output)
    assert not (tmp_path / "repo").exists()


def test_non_empty_target_is_refused(mlrig_home: Path, tmp_path: Path) -> None:
    contract.save(aws_outputs())
    target = tmp_path / "repo"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    result = runner.invoke(app, ["init", str(target), "--stack", "prod", "--no-input"])
    assert result.exit_code == 7
    assert "exists and is not empty" in _one_line_error(result.output)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlrig-home", "repo"]


def test_a_snapshots_answer_not_table_or_partitioned_is_one_line(
    mlrig_home: Path, tmp_path: Path
) -> None:
    contract.save(aws_outputs())
    argv = ["init", str(tmp_path / "repo"), "--stack", "prod", "--no-input"]
    result = runner.invoke(app, [*argv, "--snapshots", "daily"])
    assert result.exit_code == 2
    assert "--snapshots 'daily' is not table or partitioned" in _one_line_error(result.output)
    adopted = runner.invoke(app, [*argv, "--snapshots", "table", "--adopt"])
    assert adopted.exit_code == 2
    assert "--snapshots and --adopt exclude each other" in _one_line_error(adopted.output)
    assert not (tmp_path / "repo").exists()


def test_no_git_on_path(mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contract.save(aws_outputs())
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = runner.invoke(app, ["init", str(tmp_path / "repo"), "--stack", "prod", "--no-input"])
    assert result.exit_code == 4
    assert "git is not on PATH" in _one_line_error(result.output)
    assert not (tmp_path / "repo").exists()


def test_update_outside_a_generated_repo(mlrig_home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["update", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a repository generated by `mlrig init`" in _one_line_error(result.output)


def test_init_help_names_every_option() -> None:
    result = runner.invoke(app, ["init", "--help"])
    assert result.exit_code == 0
    for option in ("--stack", "--name", "--no-input", "--github-repo", "--force"):
        assert option in result.output


# -- the dataset, the copier adapter and the public API generated repos use -------------------
# DVC's hash of data/raw/breast_cancer.csv in every new repo: provenance links runs to it.
DATASET_MD5 = "9b80fbe14a7f763a2e7074bdbd750b14"


def test_dataset_bytes_never_vary(tmp_path: Path) -> None:
    import hashlib

    for name in ("a.csv", "b.csv"):
        bootstrap.write_dataset(tmp_path / name)
        digest = hashlib.md5((tmp_path / name).read_bytes(), usedforsecurity=False)
        assert digest.hexdigest() == DATASET_MD5


def test_copier_errors_become_usage_errors_with_a_fix() -> None:
    from copier.errors import UserMessageError

    from mlrig.adapters import copier

    with pytest.raises(UsageError) as err, copier._translated("render the template", "do X"):
        raise UserMessageError("answer rejected")
    assert err.value.message == "copier could not render the template: answer rejected"
    assert err.value.hint == "do X"
    with pytest.raises(KeyError), copier._translated("render the template", "do X"):
        raise KeyError("not copier's")  # not copier's verdict: passes through


def _plain_local(name: str) -> StackOutputs:
    return aws_outputs(name).model_copy(
        update={
            "kind": "local",
            "region": None,
            "ci_role_arn": None,
            "mlflow": Mlflow(tracking_uri=f"http://127.0.0.1:5000/{name}"),
        }
    )


def test_tracking_env_follows_the_repos_stack(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig import api

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    contract.save(_plain_local("dev"))
    contract.save(_plain_local("other"))
    (tmp_path / ".copier-answers.yml").write_text("project_name: churn\nstack: dev\n")
    env = api.tracking_env(tmp_path)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000/dev"
    assert env["MLRIG_STACK"] == "dev"
    monkeypatch.setenv("MLRIG_STACK", "other")  # as every mlrig command: the variable wins
    assert api.tracking_env(tmp_path)["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000/other"


def test_tracking_env_names_the_stack_it_cannot_reach(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlrig import api

    monkeypatch.delenv("MLRIG_STACK", raising=False)
    (tmp_path / ".copier-answers.yml").write_text("project_name: churn\nstack: gone\n")
    with pytest.raises(api.MlrigError) as err:
        api.tracking_env(tmp_path)
    assert err.value.one_line().startswith("cannot reach stack 'gone': no stack named 'gone'")


def test_the_template_reaches_mlrig_only_through_its_public_api() -> None:
    import re

    imports: set[str] = set()
    for file in (bootstrap.packaged_template() / "template").rglob("*"):
        if file.is_file() and file.suffix in (".py", ".jinja"):
            imports |= set(
                re.findall(r"^\s*(?:from|import)\s+(mlrig[\w.]*)", file.read_text(), re.M)
            )
    assert imports == {"mlrig.api"}
