"""A generated repository's .copier-answers.yml is a file anyone with the repository may have
edited: every command that reads it back (stack resolution, trace, retrain, image build's
default model, the repository's identity) goes through one reader that checks each answer
before it reaches MLflow, git, DVC or a path. Before, five readers each took project_name and
stack as they found them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlrig.core.access import identities
from mlrig.core.image import model as image_model
from mlrig.core.provenance import trace
from mlrig.core.retrain import _repo as retrain_repo
from mlrig.core.stack import stacks
from mlrig.errors import ConfigError

READERS: dict[str, Callable[[Path], object]] = {
    "stack resolution": stacks.repo_stack,
    "trace": trace.project_name,
    "retrain": retrain_repo.project_name,
    "image build's default model": image_model.default_model_uri,
    "the repository's identity": identities.project_of,
}

BAD = {
    "a model name that climbs": "project_name: ../../evil\nstack: dev\n",
    "a name with a filter quote": "project_name: \"churn' OR name LIKE '%\"\nstack: dev\n",
    "a stack with a line break": 'project_name: churn\nstack: "dev\\n"\n',
    "a stack that is a path": "project_name: churn\nstack: ../../etc\n",
    "an answer that is no string": "project_name: [churn]\nstack: dev\n",
    "not YAML": "project_name: [\n",
}


def _repo(root: Path, answers: str) -> Path:
    (root / ".git").mkdir(parents=True)
    (root / ".copier-answers.yml").write_text(answers)
    return root


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
@pytest.mark.parametrize("answers", BAD, ids=list(BAD))
def test_every_reader_refuses_a_bad_answers_file_in_one_line(
    tmp_path: Path, reader: str, answers: str
) -> None:
    repo = _repo(tmp_path / "repo", BAD[answers])
    with pytest.raises(ConfigError) as err:
        READERS[reader](repo)
    assert ".copier-answers.yml" in err.value.message
    assert "\n" not in err.value.message
    assert "git log -p -- .copier-answers.yml" in (err.value.hint or "")


def test_the_answers_init_writes_still_read(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", "_commit: 1.2.0\nproject_name: churn\nstack: dev\n")
    (repo / "src").mkdir()
    assert stacks.repo_stack(repo / "src") == "dev"  # found from a folder inside the repo
    assert trace.project_name(repo) == "churn"
    assert retrain_repo.project_name(repo) == "churn"
    assert identities.project_of(repo / "src") == "churn"


def test_outside_a_generated_repository_nothing_is_read(tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    (repo / ".git").mkdir(parents=True)
    assert stacks.repo_stack(repo) is None
    assert trace.project_name(repo) is None
