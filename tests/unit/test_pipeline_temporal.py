"""The template's `temporal` answer: a temporal rendering wires the as-of join into dvc.yaml and
params.yaml and starts from a generated example (the same bytes on every run); the rendered
repository's own tests (tests/test_temporal.py: the example's training table, the hypothesis
property over random timelines, the planted leak and each bad input) pass with this venv; the
default rendering has none of it; and the answer is checked like every other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import init as bootstrap
from mlrig.core.bootstrap.dataset import write_temporal_example
from mlrig.core.shared.names import check_template_answers
from mlrig.errors import UsageError
from tests.helpers import aws_outputs

PROJECT = "churn"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    src, ref = bootstrap.template_repo()
    out = {}
    for temporal in (False, True):
        dest = tmp_path_factory.mktemp(f"render-{temporal}") / PROJECT
        bootstrap_render.render(
            src, ref, dest, project=PROJECT, outputs=aws_outputs(), temporal=temporal
        )
        out[temporal] = dest
    return out


def stage(repo: Path, name: str) -> dict:
    return yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][name]


def test_a_temporal_repo_joins_on_availability_and_splits_by_time(
    rendered: dict[bool, Path],
) -> None:
    repo = rendered[True]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert "preprocess" not in params
    assert params["ingest"]["source"] == "data/raw/labels.csv"
    assert params["temporal"] == {
        "features": "data/raw/features.csv",
        "entity": "entity_id",
        "label_time": "label_time",
        "available_at": "available_at",
        "ttl": "14d",
        "horizon": "7d",
        "test_fraction": 0.2,
        "encode": ["segment"],
    }
    pre = stage(repo, "preprocess")
    assert pre["params"] == ["temporal"]
    assert {"data/raw/features.csv", f"src/{PROJECT}/temporal.py"} <= set(pre["deps"])
    assert {"data/processed/windows.json": {"cache": False}} in pre["outs"]
    assert "data/processed/windows.json" in stage(repo, "train")["deps"]
    assert "duckdb" in (repo / "requirements.txt").read_text()
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["temporal"] == "true"


def test_the_default_repo_has_no_temporal_part(rendered: dict[bool, Path]) -> None:
    repo = rendered[False]
    assert "temporal" not in yaml.safe_load((repo / "params.yaml").read_text())
    assert not (repo / "src" / PROJECT / "temporal.py").exists()
    assert not (repo / "tests" / "test_temporal.py").exists()
    assert stage(repo, "preprocess")["params"] == ["preprocess"]
    assert "duckdb" not in (repo / "requirements.txt").read_text()


def test_the_example_is_the_same_bytes_every_time(
    rendered: dict[bool, Path], tmp_path: Path
) -> None:
    digests = []
    for run in ("a", "b"):
        copy = tmp_path / run
        (copy / "src" / PROJECT).mkdir(parents=True)
        generator = rendered[True] / "src" / PROJECT / "example.py"
        (copy / "src" / PROJECT / "example.py").write_bytes(generator.read_bytes())
        assert write_temporal_example(copy, PROJECT) == 1200
        digests.append(
            [(copy / "data/raw" / f).read_bytes() for f in ("labels.csv", "features.csv")]
        )
    assert digests[0] == digests[1]


def test_the_rendered_repos_temporal_tests_pass(rendered: dict[bool, Path]) -> None:
    repo = rendered[True]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "tests/test_temporal.py",
        ],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_the_answer_is_true_or_false() -> None:
    base = {"project_name": PROJECT, "stack": "prod"}
    assert check_template_answers({**base, "temporal": "true"})["temporal"] == "true"
    with pytest.raises(UsageError, match="the answer temporal 'yes' is not true or false"):
        check_template_answers({**base, "temporal": "yes"})
