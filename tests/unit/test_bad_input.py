"""Bad input through the real `mlrig` program: a documented exit code, exactly one line on
stderr, no traceback, nothing printed as if it had worked, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlrig import contract
from tests.helpers import VENV_BIN, sample

USAGE = 2


@pytest.fixture
def home(mlrig_home: Path) -> Path:
    """An MLRIG_HOME with one local stack, `dev` (nothing runs behind it)."""
    contract.save(sample("dev"))
    return mlrig_home


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(home: Path, *args: str, cwd: Path | None = None, code: int = USAGE) -> str:
    """Run mlrig; assert it failed with `code` and one error line; return that line."""
    before = files(home)
    env = {**os.environ, "MLRIG_HOME": str(home), "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [str(VENV_BIN / "mlrig"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or home.parent,
        timeout=120,
        check=False,
    )
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert done.stdout == "", done.stdout
    assert files(home) == before  # nothing written to mlrig's own state either
    return lines[0]


# -- image ------------------------------------------------------------------------------------
def test_build_refuses_a_path_as_the_model(home: Path) -> None:
    line = refused(home, "image", "build", "--model", "file:///etc")
    assert "'file:///etc' is not an MLflow registry or run URI" in line
    assert "models:/NAME/VERSION" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--host", "localhost"], "--host 'localhost' is not an IP address"),
        (["--host", "0.0.0.0.0"], "is not an IP address"),
        (["--memory", "lots"], "--memory 'lots' is not a size"),
        (["--memory", "1m"], "below the engine's minimum"),
        (["--port", "80"], "port 80 is out of range"),
    ],
)
def test_run_refuses_bad_options_before_starting_anything(
    home: Path, args: list[str], expected: str
) -> None:
    assert expected in refused(home, "image", "run", "mlrig/none:1", *args)


def test_push_and_run_refuse_a_malformed_image_reference(home: Path, docker_engine: object) -> None:
    for command in (["push", "--stack", "dev"], ["run"]):
        line = refused(home, "image", *command, "NOT A REF")
        assert "'NOT A REF' is not a valid image reference" in line


# -- init -------------------------------------------------------------------------------------
def test_init_in_a_place_nobody_can_write(home: Path, tmp_path: Path) -> None:
    line = refused(home, "init", "/proc/nope", "--stack", "dev", "--no-input")
    assert "cannot create 'nope' in /proc" in line
    assert not Path("/proc/nope").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = refused(home, "init", str(blocker / "sub" / "repo"), "--stack", "dev", "--no-input")
    assert "cannot create 'repo'" in line
    assert not (tmp_path / "sub").exists() and blocker.read_text() == ""


@pytest.mark.parametrize("name", ["mlflow", "sklearn"])
def test_init_refuses_a_directory_that_shadows_a_pipeline_import(
    home: Path, tmp_path: Path, name: str
) -> None:
    line = refused(home, "init", str(tmp_path / name), "--stack", "dev", "--no-input")
    assert f"project name {name!r} would shadow the Python module {name!r}" in line
    assert "`dvc repro` would fail" in line and "pass --name NAME" in line
    assert not (tmp_path / name).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mlrig-home"]


@pytest.mark.parametrize("name", ["pandas", "numpy", "dvc", "yaml", "mlrig"])
def test_init_refuses_such_a_name(home: Path, tmp_path: Path, name: str) -> None:
    target = tmp_path / "repo"
    line = refused(home, "init", str(target), "--stack", "dev", "--name", name, "--no-input")
    assert f"would shadow the Python module {name!r}" in line
    assert f"try --name {name}_model" in line
    assert not target.exists()


# -- stack plan -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--github-repo", "not a repo"], "invalid --github-repo 'not a repo'"),
        (["--github-repo", "acme"], "invalid --github-repo 'acme'"),
        (["--region", "mars-1"], "invalid AWS region 'mars-1'"),
        (["--domain", "a..b"], "invalid --domain 'a..b'"),
        (["--domain", "not a domain!"], "invalid --domain 'not a domain!'"),
    ],
)
def test_plan_refuses_what_aws_would(home: Path, args: list[str], expected: str) -> None:
    assert expected in refused(home, "stack", "plan", *args)
