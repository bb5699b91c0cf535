"""`mlrig retrain` on an adopted repository, on the real local stack: the example-get-started
fixture with a `fetch` stage that copies a CSV from outside the repository, adopted with
`mlrig init --adopt`, its retrain declared by hand in the answers file (data stage `fetch`,
gate `eval/metrics.json:roc_auc`, max), a bare origin.

Module-scoped, in story order: the first retrain crowns its version and ships its image; a
noisier batch trains a worse candidate that is kept; an unchanged source changes nothing; a
declared metric the pipeline does not write fails after training and puts back the
repository and the alias."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    VENV_BIN,
    environ_with,
    getting_started_data,
    getting_started_repo,
    mlflow_client,
    repo_env,
    sh,
)

pytestmark = pytest.mark.integration
# the session's stack is shared: test_adopt's repository registers "getting_started"
MODEL = "fetched_forest"
DECLARATION = """retrain:
  data_stages: [fetch]
  gate:
    metric: eval/metrics.json:roc_auc
    direction: max
"""


def _retrain(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), "retrain", "--repo", str(repo), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _champion(client: Any) -> str | None:
    try:
        return str(client.get_model_version_by_alias(MODEL, "champion").version)
    except Exception:  # noqa: BLE001 - MLflow raises its own RestException for "no alias"
        return None


def _noisy(flip: float, seed: int) -> str:
    """The fixture's table with a share of its labels flipped: a worse model learns from it."""
    rng = random.Random(seed)
    header, *rows = getting_started_data().splitlines()
    out = [header]
    for row in rows:
        *x, label = row.split(",")
        out.append(",".join([*x, str(1 - int(label)) if rng.random() < flip else label]))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def team(
    local_stack: dict, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("adopted-retrain")
    env = repo_env(local_stack["home"], {"MLFLOW_DISABLE_TELEMETRY": "true"})
    source = root / "exports" / "data.csv"
    source.parent.mkdir()
    repo = getting_started_repo(root / "getting-started", env, source=source)
    train = repo / "src" / "train.py"
    train.write_text(train.read_text().replace('MODEL = "getting_started"', f'MODEL = "{MODEL}"'))
    sh(repo, "git", "commit", "-qam", "our model's name", env=env)
    origin = root / "origin.git"
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    sh(repo, "git", "remote", "add", "origin", str(origin), env=env)
    adopt = subprocess.run(
        [str(VENV_BIN / "mlrig"), "init", "--adopt", str(repo), "--stack", "local"]
        + ["--name", MODEL],
        env=env,
        capture_output=True,
        text=True,
    )
    assert adopt.returncode == 0, adopt.stderr
    with (repo / ".copier-answers.yml").open("a") as fh:  # declared by hand, as documented
        fh.write(DECLARATION)
    sh(repo, "git", "commit", "-qam", "declare how mlrig retrains us", env=env)
    with environ_with(local_stack["env"]):  # the test's own MLflow client is admin
        yield {
            "repo": repo,
            "env": env,
            "source": source,
            "origin": origin,
            "client": mlflow_client(local_stack),
            "stages": (repo / "dvc.yaml").read_bytes(),
        }


def test_the_first_retrain_crowns_its_version_and_ships_its_image(team: dict) -> None:
    repo, env, client = team["repo"], team["env"], team["client"]
    proc = _retrain(repo, env)
    result = _ok(proc)
    assert result["changed"] is True and result["decision"] == "promoted"
    assert result["version"] == "1" == _champion(client) and result["champion_moved"] is True
    assert "eval/metrics.json:roc_auc" in proc.stdout and "(no champion yet)" in proc.stdout
    # the gate's score is on the candidate's run, for the next gate to read back
    run = client.get_run(client.get_model_version(MODEL, "1").run_id)
    score = json.loads((repo / "eval/metrics.json").read_text())["roc_auc"]
    assert run.data.metrics["mlrig.gate.roc_auc"] == pytest.approx(score)
    assert run.data.tags["mlrig.gate.verdict"] == "promoted"
    assert run.data.tags["mlflow.user"] == "repo-fetched-forest"  # the team's script, as itself
    # one commit of what the pipeline wrote, pushed; the team's stages as they were
    files = sh(repo, "git", "show", "--name-only", "--format=", "HEAD", env=env).split()
    assert {"dvc.lock", "eval/metrics.json", "data/.gitignore"} <= set(files)
    assert "dvc.yaml" not in files and (repo / "dvc.yaml").read_bytes() == team["stages"]
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    assert sh(team["origin"], "git", "rev-parse", "main", env=env).strip() == result["commit"]
    # the champion's image, pushed and verified by digest
    assert result["image"] and result["image"].endswith(f"@{result['digest']}")
    team["score"] = score


def test_a_worse_candidate_is_registered_and_kept(team: dict) -> None:
    repo, env, client = team["repo"], team["env"], team["client"]
    team["source"].write_text(_noisy(0.35, seed=3))
    proc = _retrain(repo, env)
    result = _ok(proc)
    assert result["changed"] is True and result["version"] == "2"
    assert result["decision"] == "kept" and result["champion_moved"] is False
    assert _champion(client) == "1" and result["image"] is None
    worse = json.loads((repo / "eval/metrics.json").read_text())["roc_auc"]
    assert worse < team["score"]
    assert "(the candidate does not win)" in proc.stdout
    # committed and pushed all the same: the repository records what was tried
    assert sh(team["origin"], "git", "rev-parse", "main", env=env).strip() == result["commit"]
    tags = client.get_run(client.get_model_version(MODEL, "2").run_id).data.tags
    assert tags["mlrig.gate.verdict"] == "kept" and tags["mlrig.gate.champion_version"] == "1"


def test_an_unchanged_source_changes_nothing(team: dict) -> None:
    repo, env, client = team["repo"], team["env"], team["client"]
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    proc = _retrain(repo, env, "--no-push-image")
    result = _ok(proc)
    assert result["changed"] is False and result["commit"] is None
    assert "nothing new: the pipeline's inputs are already the latest" in proc.stdout
    assert sh(repo, "git", "rev-parse", "HEAD", env=env).strip() == head
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 2


def test_a_gate_that_cannot_read_its_metric_undoes_the_run(team: dict) -> None:
    repo, env, client = team["repo"], team["env"], team["client"]
    answers = repo / ".copier-answers.yml"
    good = answers.read_text()
    answers.write_text(good.replace("metrics.json:roc_auc", "metrics.json:avg_prec"))
    sh(repo, "git", "commit", "-qam", "gate on average precision", env=env)
    head, lock = sh(repo, "git", "rev-parse", "HEAD", env=env).strip(), repo / "dvc.lock"
    lock_before = lock.read_bytes()
    team["source"].write_text(getting_started_data(rows=260, seed=11))
    proc = _retrain(repo, env, "--no-push-image")
    assert proc.returncode == 9, proc.stdout + proc.stderr
    said = " ".join(proc.stderr.split())
    assert "retrain failed at gate: eval/metrics.json has no number at 'avg_prec'" in said
    assert f"the repository is back at {head[:12]}" in said
    assert sh(repo, "git", "rev-parse", "HEAD", env=env).strip() == head
    assert sh(repo, "git", "status", "--porcelain", env=env) == "" and lock.read_bytes() == (
        lock_before
    )
    assert _champion(client) == "1"
    undone = client.get_model_version(MODEL, "3")  # trained and registered, then undone
    assert undone.tags.get("mlrig.undone") == "true"
