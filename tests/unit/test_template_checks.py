"""Lint and types reach the code mlrig ships as data: the pipeline template's Python, rendered
once as `mlrig init` renders it (its file names and `.jinja` files only become Python then),
passes ruff, `ruff format --check` and mypy with the project's settings (pyproject.toml); and
the model server's package (docker/serving) passes mypy. Each check is shown able to fail on
a scratch copy with a planted defect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import init as bootstrap
from tests.helpers import aws_outputs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROJECT = "churn"
CONFIG = str(REPO / "pyproject.toml")
# the rendered project is its own first-party package
RUFF = ["--config", CONFIG, "--config", f"lint.isort.known-first-party = ['{PROJECT}']"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, ref = bootstrap.template_repo()
    dest = tmp_path_factory.mktemp("render") / PROJECT
    bootstrap_render.render(src, ref, dest, project=PROJECT, outputs=aws_outputs())
    return dest


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def ruff_check(project: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(BIN / "ruff"), "check", *RUFF, str(project / "src"), str(project / "tests")])


def ruff_format(project: Path) -> subprocess.CompletedProcess[str]:
    paths = [str(project / "src"), str(project / "tests")]
    return _run([str(BIN / "ruff"), "format", "--check", *RUFF, *paths])


def mypy(base: Path, package: str) -> subprocess.CompletedProcess[str]:
    """mypy with the project's settings on base/package, base being its import root."""
    return _run(
        [str(BIN / "mypy"), "--config-file", CONFIG, str(base / package)],
        env={"MYPYPATH": str(base)},
    )


def test_the_rendered_template_passes_ruff_and_its_format(rendered: Path) -> None:
    # the .jinja modules too: they are Python only once rendered
    assert {"__init__.py", "train.py"} <= {p.name for p in (rendered / "src" / PROJECT).iterdir()}
    check = ruff_check(rendered)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = ruff_format(rendered)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_the_rendered_template_passes_mypy(rendered: Path) -> None:
    result = mypy(rendered / "src", PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_the_temporal_rendering_passes_ruff_its_format_and_mypy(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    src, ref = bootstrap.template_repo()
    dest = tmp_path_factory.mktemp("render-temporal") / PROJECT
    bootstrap_render.render(src, ref, dest, project=PROJECT, outputs=aws_outputs(), temporal=True)
    # a temporal repository is partitioned by default: snapshots.py is checked here too
    assert {"temporal.py", "example.py", "snapshots.py"} <= {
        p.name for p in (dest / "src" / PROJECT).iterdir()
    }
    for result in (ruff_check(dest), ruff_format(dest), mypy(dest / "src", PROJECT)):
        assert result.returncode == 0, result.stdout + result.stderr


def test_each_template_check_fails_on_a_planted_defect(rendered: Path, tmp_path: Path) -> None:
    scratch = tmp_path / PROJECT
    shutil.copytree(rendered, scratch)
    gate = scratch / "src" / PROJECT / "gate.py"
    gate.write_text(gate.read_text() + '\n\nPLANTED: int = "one"\n')
    test_gate = scratch / "tests" / "test_gate.py"
    test_gate.write_text(test_gate.read_text() + "\n\ndef planted() -> None:\n    import os\n")
    train = scratch / "src" / PROJECT / "train.py"
    train.write_text(train.read_text() + "\n\nplanted_layout = (1,2)\n")

    typed = mypy(scratch / "src", PROJECT)
    assert typed.returncode == 1 and "gate.py" in typed.stdout and "[assignment]" in typed.stdout
    linted = ruff_check(scratch)
    assert linted.returncode == 1 and "F401" in linted.stdout, linted.stdout
    formatted = ruff_format(scratch)
    assert formatted.returncode == 1 and "train.py" in formatted.stdout, formatted.stdout


def test_mypy_covers_the_model_server_and_fails_on_a_planted_defect(tmp_path: Path) -> None:
    package = REPO / "docker" / "serving" / "mlrig_serve"
    clean = mypy(package.parent, package.name)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    shutil.copytree(package, tmp_path / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    limits = tmp_path / package.name / "limits.py"
    limits.write_text(limits.read_text() + '\n\nPLANTED: int = "one"\n')
    broken = mypy(tmp_path, package.name)
    assert broken.returncode == 1 and "limits.py" in broken.stdout, broken.stdout
