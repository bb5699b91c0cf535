"""The remote retrain's parts that need no engine: the trainer image's inputs and tag, the
task's environment and result at their one boundary, the local backend's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrig.errors import UsageError


def test_the_task_installs_only_what_its_entrypoint_imports() -> None:
    from packaging.requirements import Requirement

    from mlrig.core.compute import image

    names = {Requirement(r).name.lower() for r in image.task_requirements()}
    assert names == {"platformdirs", "psutil", "pydantic", "pyyaml", "requests"}
    assert not names & {"pulumi", "pulumi-aws", "copier", "boto3", "docker", "mlflow", "typer"}


def test_the_tag_moves_with_the_requirements_and_only_with_an_input() -> None:
    from mlrig.core.compute import image

    first = image.image_tag("churn_model", b"scikit-learn>=1.5\n")
    assert first == image.image_tag("churn_model", b"scikit-learn>=1.5\n")
    assert first != image.image_tag("churn_model", b"scikit-learn>=1.6\n")
    assert first.startswith(f"{image.REPOSITORY}:trainer-churn-model-")
    assert len(first.rsplit("-", 1)[1]) == 16


def test_a_repository_without_requirements_is_one_line(tmp_path: Path) -> None:
    from mlrig.core.compute import image

    with pytest.raises(UsageError, match="has no requirements.txt"):
        image.requirements_of(tmp_path)


def test_the_dockerfile_installs_no_pip_cache_no_tests_and_mlrig_last() -> None:
    from mlrig.core.compute import image

    text = (image.context_dir() / "Dockerfile").read_text()
    assert text.index("COPY requirements.txt task-requirements.txt") < text.index("COPY wheel/")
    assert "apt-get clean" in text and "--no-compile" in text and "pip uninstall" in text
    assert 'ENTRYPOINT ["python", "-m", "mlrig.core.compute.task"]' in text


def test_the_template_requires_the_mlflow_client_not_the_server() -> None:
    from mlrig import assets

    text = (assets.pipeline_template() / "template" / "requirements.txt.jinja").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "mlflow-skinny>=3.1,<4" in lines
    assert not [line for line in lines if line.startswith("mlflow>") or line == "mlflow"]
