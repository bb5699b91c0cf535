"""`mlrig retrain` on the real local stack: a repo made by `mlrig init`, its source a CSV
outside the repo that gains rows (new data, same code), real dvc/git/MLflow, a bare origin.

Each case starts from the repo as the last one left it (module-scoped), so the order is the
story: first model, new rows, nothing new, a bad batch, a failed publish, a kill, an image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import VENV_BIN, append_rows, environ_with, md5, repo_env, retrain_repo, sh

pytestmark = pytest.mark.integration
PROJECT = "retrainee"
SUBJECT = "churn"  # nothing in the test reads it: a repo's source is any path


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


def _state(repo: Path, env: dict[str, str]) -> tuple[str, str, bytes]:
    """HEAD, `git status`, dvc.lock: what "the repo as it was" means."""
    return (
        sh(repo, "git", "rev-parse", "HEAD", env=env).strip(),
        sh(repo, "git", "status", "--porcelain", env=env),
        (repo / "dvc.lock").read_bytes(),
    )


def _registry(client: Any) -> tuple[int, str | None, int]:
    """(model versions, the version @champion names, runs in the experiment)."""
    versions = client.search_model_versions(f"name='{PROJECT}'")
    try:
        champion = client.get_model_version_by_alias(PROJECT, "champion").version
    except Exception:  # noqa: BLE001 - MLflow raises its own RestException for "no alias"
        champion = None
    experiment = client.get_experiment_by_name(PROJECT)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return len(versions), champion, len(runs)


@pytest.fixture(scope="module")
def world(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The repo, its origin, the source outside it, the env to run mlrig in, an admin client."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("retrain")
    env = repo_env(local_stack["home"])
    source = root / "incoming" / f"{SUBJECT}.csv"
    source.parent.mkdir()
    repo, origin = retrain_repo(root, env, PROJECT, source, "Read the patients export")
    client = MlflowClient(tracking_uri=local_stack["env"]["MLFLOW_TRACKING_URI"])
    with environ_with(local_stack["env"]):  # MlflowClient reads the admin login from here
        yield {
            "repo": repo,
            "origin": origin,
            "source": source,
            "env": env,
            "client": client,
            "remote": Path(local_stack["outputs"].dvc_remote_url),
            "outputs": local_stack["outputs"],
            "home": local_stack["home"],
        }


def test_first_retrain_trains_registers_and_crowns(world: dict) -> None:
    repo, env = world["repo"], world["env"]
    result = _ok(_retrain(repo, env, "--no-push-image"))
    assert result["changed"] is True and result["decision"] == "promoted"
    assert result["champion_moved"] is True and result["image"] is None
    assert _registry(world["client"])[1] == result["version"]


def test_new_rows_make_a_version_a_named_commit_and_are_pushed(world: dict) -> None:
    repo, env, client = world["repo"], world["env"], world["client"]
    versions_before, champion_before, _ = _registry(client)
    append_rows(world["source"], 40, shift=3)
    result = _ok(_retrain(repo, env, "--no-push-image"))
    record = json.loads((repo / "data/snapshot/record.json").read_text())
    assert result["changed"] is True and result["snapshot"] == record["md5"]
    assert record["rows"] == 569 + 40 and record["source"] == str(world["source"])
    assert int(result["version"]) == versions_before + 1 == _registry(client)[0]
    assert result["decision"] in ("promoted", "kept")
    assert result["champion_moved"] == (result["decision"] == "promoted")
    expected = result["version"] if result["champion_moved"] else champion_before
    assert _registry(client)[1] == expected
    # one commit, named after the snapshot, holding dvc.lock and the record; the tree is clean
    head = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    assert result["commit"] == head
    subject = sh(repo, "git", "log", "-1", "--format=%s", env=env).strip()
    assert subject == f"retrain: snapshot {record['md5'][:12]}, 609 rows from {world['source']}"
    files = sh(repo, "git", "show", "--name-only", "--format=", "HEAD", env=env).split()
    assert {"dvc.lock", "data/snapshot/record.json", "gate.json"} <= set(files)
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    # git push: origin's main is this commit; dvc push: the remote holds the snapshot
    assert sh(world["origin"], "git", "rev-parse", "main", env=env).strip() == head
    snapshot_md5 = md5(repo / "data/snapshot/data.csv")
    assert (world["remote"] / "files/md5" / snapshot_md5[:2] / snapshot_md5[2:]).is_file()
    run = client.get_run(client.get_model_version(PROJECT, result["version"]).run_id)
    assert run.data.tags["mlrig.data.md5"] == record["md5"]


def test_the_same_data_again_creates_nothing(world: dict) -> None:
    repo, env = world["repo"], world["env"]
    before, registry = _state(repo, env), _registry(world["client"])
    proc = _retrain(repo, env)
    result = _ok(proc)
    record = json.loads((repo / "data/snapshot/record.json").read_text())
    assert f"nothing new: snapshot {record['md5']} ({record['rows']} rows)" in proc.stdout
    assert result == {
        "changed": False,
        "snapshot": record["md5"],
        "version": None,
        "champion_moved": False,
        "decision": None,
        "image": None,
        "digest": None,
        "commit": None,
    }
    assert _state(repo, env) == before
    assert _registry(world["client"]) == registry  # no version, no run, alias unchanged


def test_a_batch_that_fails_validation_changes_nothing(world: dict) -> None:
    repo, env, source = world["repo"], world["env"], world["source"]
    before, registry = _state(repo, env), _registry(world["client"])
    good = source.read_text()
    header, first = good.splitlines()[:2]
    drifted = first.split(",")
    drifted[header.split(",").index("mean_radius")] = "not-a-number"
    source.write_text(good + ",".join(drifted) + "\n")
    try:
        proc = _retrain(repo, env)
    finally:
        source.write_text(good)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "validate" in errors[0] and "mean_radius" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _state(repo, env) == before
    assert _registry(world["client"]) == registry
    assert not (repo / ".dvc/tmp/mlrig-retrain.json").exists()


def test_a_failed_publish_leaves_no_commit_and_no_orphaned_alias(world: dict) -> None:
    """The champion moves during evaluate; git push then fails: the commit is undone and
    the alias goes back to the version it named."""
    repo, env, client = world["repo"], world["env"], world["client"]
    before = _state(repo, env)
    _, champion, _ = _registry(client)
    client.delete_registered_model_alias(PROJECT, "champion")  # the candidate must win
    client.set_registered_model_alias(PROJECT, "champion", "1")
    sh(repo, "git", "remote", "set-url", "origin", str(world["origin"]) + "-gone", env=env)
    append_rows(world["source"], 10, shift=5)
    try:
        margin = ("margin: 0.0 ", "margin: -1.0")  # candidate wins: gate.json says promoted
        params = (repo / "params.yaml").read_text()
        assert margin[0] in params
        (repo / "params.yaml").write_text(params.replace(*margin))
        sh(repo, "git", "commit", "-qam", "Promote any candidate", env=env)
        before = _state(repo, env)
        proc = _retrain(repo, env, "--no-push-image")
    finally:
        sh(repo, "git", "remote", "set-url", "origin", str(world["origin"]), env=env)
    assert proc.returncode != 0
    assert "retrain failed at git push" in proc.stderr
    assert _state(repo, env) == before
    assert _registry(client)[1] == "1"  # evaluate moved it; the undo moved it back
    client.set_registered_model_alias(PROJECT, "champion", champion)


def test_recover_after_a_kill_mid_train(world: dict) -> None:
    from mlrig.core.retrain import retrain

    repo, env, client = world["repo"], world["env"], world["client"]
    append_rows(world["source"], 10, shift=7)
    before, (_, champion, _) = _state(repo, env), _registry(client)
    progress = world["home"].parent / "killed-retrain.err"
    with progress.open("wb") as err:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mlrig"), "retrain", "--repo", str(repo), "--no-push-image"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # the stage's own processes go down with it, as in a crash
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if b"Running stage 'train'" in progress.read_bytes():
            break
        assert proc.poll() is None, f"retrain ended before train: {progress.read_text()}"
        time.sleep(0.2)
    time.sleep(1.0)  # inside train now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert (repo / ".dvc/tmp/mlrig-retrain.json").exists()  # what recover reads
    os.environ["MLRIG_HOME"] = str(world["home"])
    assert retrain.recover(repo) is True
    assert _state(repo, env) == before
    assert _registry(client)[1] == champion
    assert retrain.recover(repo) is False  # nothing left to undo
    # and the next run goes through
    assert _ok(_retrain(repo, env, "--no-push-image"))["changed"] is True


def test_a_moved_champion_is_built_and_pushed_with_a_verified_digest(
    world: dict, base_image: str
) -> None:
    from mlrig.adapters.registry import RegistryClient
    from mlrig.core.oci import push as oci_push

    repo, env, client = world["repo"], world["env"], world["client"]
    append_rows(world["source"], 10, shift=9)  # margin is -1: the candidate is promoted
    result = _ok(_retrain(repo, env))
    assert result["champion_moved"] is True
    assert _registry(client)[1] == result["version"]
    assert result["image"].endswith(f"@{result['digest']}")
    target = oci_push.target_for(world["outputs"])
    registry = RegistryClient(target.api_base, target.username, target.password)
    assert registry.manifest_digest(target.repository, result["digest"]) == result["digest"]
    # the image serves the champion and labels the retrain commit
    labels = registry.config_labels(target.repository, result["digest"]) or {}
    assert labels["io.mlrig.model.version"] == result["version"]
    assert labels["io.mlrig.git.commit"] == result["commit"]
