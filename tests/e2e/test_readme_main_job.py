"""The README's main job, run as a newcomer runs it: its own command line, a fresh home."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's 'Two commands' section has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()
            if line.split("#", 1)[0].strip()]


def test_readme_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert f"bash {commands[1]}" in ci


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("newcomer")
    command = readme_commands()[0]
    env = {**os.environ, "MLRIG_HOME": str(home), "COLUMNS": "160"}
    proc = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    yield {"proc": proc, "home": home, "env": env}
    subprocess.run([str(REPO_ROOT / ".venv/bin/mlrig"), "stack", "down"], env=env,
                   capture_output=True, timeout=120)


def test_main_job_succeeds_and_says_where_to_look(main_job: dict) -> None:
    proc = main_job["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mlrig demo: done" in proc.stdout
    assert "MLflow UI" in proc.stdout and "http://127.0.0.1:" in proc.stdout
    log = Path(re.search(r"(\S+/logs/demo-\S+\.log)", proc.stdout).group(1))
    assert log.is_file() and log.parent.parent == main_job["home"]


def test_main_job_leaves_a_healthy_stack(main_job: dict) -> None:
    assert main_job["proc"].returncode == 0
    doctor = subprocess.run([str(REPO_ROOT / ".venv/bin/mlrig"), "doctor", "--json"],
                            env=main_job["env"], capture_output=True, text=True, timeout=120)
    import json

    report = json.loads(doctor.stdout)
    assert report["ok"] is True, report
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    for name in ("mlflow health", "mlflow auth", "registry auth", "dvc remote"):
        assert statuses[name] == "ok"


def test_running_it_again_is_safe(main_job: dict) -> None:
    assert main_job["proc"].returncode == 0
    again = subprocess.run(["bash", "-c", readme_commands()[0]], cwd=REPO_ROOT,
                           env=main_job["env"], capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "mlrig demo: done" in again.stdout
