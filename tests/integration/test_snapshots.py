"""Partitioned snapshots with real git and DVC (no stack: a local DVC remote directory, only the
ingest stage runs): each ingest adds one partition and DVC hashes the directory as the
watermark records it, the remote grows by the new partition alone, an unchanged source or a
bad one changes nothing, and `git checkout` + `dvc checkout` (or `dvc pull` from the remote)
restores exactly the partitions of an older commit."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlrig.core.bootstrap import _render as bootstrap_render
from mlrig.core.bootstrap import init as bootstrap
from mlrig.core.bootstrap.dataset import dataset_file
from tests.helpers import aws_outputs, md5, repo_env, sh

pytestmark = pytest.mark.integration
PROJECT = "snaprig"
WATERMARK = "data/snapshot_state/watermark.json"


def partitions(repo: Path) -> dict[str, str]:
    """{name: md5} of the partition files in the workspace."""
    return {f.name: md5(f) for f in sorted((repo / "data" / "snapshots").glob("*.parquet"))}


def remote_files(remote: Path) -> dict[str, int]:
    return {str(f.relative_to(remote)): f.stat().st_size for f in remote.rglob("*") if f.is_file()}


def lock_md5(lock: str) -> str:
    (out,) = [
        o for o in yaml.safe_load(lock)["stages"]["ingest"]["outs"] if o["path"] == "data/snapshots"
    ]
    return str(out["md5"])


def ingest(repo: Path, env: dict[str, str]) -> str:
    return sh(repo, "dvc", "repro", "ingest", env=env)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A partitioned repository with two commits: A ingested 400 rows of the bundled table,
    B the next 169; each pushed to a local DVC remote."""
    base = tmp_path_factory.mktemp("snapshots")
    repo, remote, source = base / PROJECT, base / "remote", base / "source.csv"
    env = repo_env(base / "home")
    src, ref = bootstrap.template_repo()
    bootstrap_render.render(
        src, ref, repo, project=PROJECT, outputs=aws_outputs(), snapshots="partitioned"
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)  # outside the repository, as a database is
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    table = pd.read_csv(dataset_file())
    sh(repo, "git", "init", "-q", "-b", "main", env=env)
    sh(repo, "git", "config", "user.email", "t@example.com", env=env)
    sh(repo, "git", "config", "user.name", "t", env=env)
    sh(repo, "dvc", "init", "-q", env=env)
    sh(repo, "dvc", "remote", "add", "-d", "local", str(remote), env=env)
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-q", "-m", "init", env=env)
    out: dict[str, Any] = {"repo": repo, "env": env, "remote": remote, "source": source}
    for name, rows in (("A", 400), ("B", len(table))):
        table.iloc[:rows].to_csv(source, index=False)
        out[f"log{name}"] = ingest(repo, env)
        sh(repo, "git", "add", "dvc.lock", WATERMARK, "data/.gitignore", env=env)
        sh(repo, "git", "commit", "-q", "-m", f"ingest {name}", env=env)
        sh(repo, "dvc", "push", "-q", env=env)
        out[name] = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
        out[f"partitions{name}"] = partitions(repo)
        out[f"remote{name}"] = remote_files(remote)
        out[f"lock{name}"] = (repo / "dvc.lock").read_text()
        out[f"watermark{name}"] = json.loads((repo / WATERMARK).read_text())
    return out


def test_each_ingest_adds_one_partition_that_dvc_hashes_as_the_watermark_says(
    history: dict[str, Any],
) -> None:
    a, b = history["partitionsA"], history["partitionsB"]
    assert len(a) == 1 and len(b) == 2
    assert set(a.items()) < set(b.items())  # the first partition kept its name and bytes
    for name in ("A", "B"):
        watermark = history[f"watermark{name}"]
        assert watermark["md5"] == lock_md5(history[f"lock{name}"])  # DVC's own `.dir` hash
        assert watermark["md5"].endswith(".dir")
    assert history["watermarkA"]["rows"] == 400 and history["watermarkB"]["new_rows"] == 169
    assert "169 new rows" in history["logB"]


def test_the_remote_grows_by_the_new_partition_and_its_manifest(history: dict[str, Any]) -> None:
    before, after = history["remoteA"], history["remoteB"]
    added = {path: size for path, size in after.items() if path not in before}
    assert set(before) < set(after)
    (new_partition,) = set(history["partitionsB"]) - set(history["partitionsA"])
    size = (history["repo"] / "data" / "snapshots" / new_partition).stat().st_size
    manifests = [p for p in added if p.endswith(".dir")]
    assert len(added) == 2 and len(manifests) == 1
    assert sum(added.values()) - added[manifests[0]] == size


def test_an_unchanged_source_changes_nothing(history: dict[str, Any]) -> None:
    repo, env = history["repo"], history["env"]
    log = ingest(repo, env)
    assert "unchanged (569 rows), no partition" in log
    assert (repo / "dvc.lock").read_text() == history["lockB"]
    assert partitions(repo) == history["partitionsB"]
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""


def test_a_duplicate_key_stops_ingest_with_one_line_and_changes_nothing(
    history: dict[str, Any],
) -> None:
    repo, env, source = history["repo"], history["env"], history["source"]
    good = source.read_bytes()
    table = pd.read_csv(source)
    try:
        extra = table.tail(1).assign(mean_radius=1.0)  # a new row under an old key
        pd.concat([table, extra, extra.assign(id=99_999)]).to_csv(source, index=False)
        proc = subprocess.run(
            ["dvc", "repro", "ingest"], cwd=repo, env=env, capture_output=True, text=True
        )
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.startswith("ingest:")]
        assert len(lines) == 1 and "2 rows sharing a key (id)" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert (repo / "dvc.lock").read_text() == history["lockB"]
        assert partitions(repo) == history["partitionsB"]
        assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    finally:
        source.write_bytes(good)


def test_git_and_dvc_checkout_restore_exactly_the_old_partitions(history: dict[str, Any]) -> None:
    repo, env = history["repo"], history["env"]
    try:
        sh(repo, "git", "checkout", "-q", history["A"], env=env)
        sh(repo, "dvc", "checkout", "-q", "ingest", env=env)  # the only stage that ran
        assert partitions(repo) == history["partitionsA"]
        # from the remote alone: no cache, no workspace copy
        shutil.rmtree(repo / ".dvc" / "cache")
        shutil.rmtree(repo / "data" / "snapshots")
        sh(repo, "dvc", "pull", "-q", "ingest", env=env)
        assert partitions(repo) == history["partitionsA"]
        assert json.loads((repo / WATERMARK).read_text()) == history["watermarkA"]
    finally:
        sh(repo, "git", "checkout", "-q", "main", env=env)
        sh(repo, "dvc", "pull", "-q", "ingest", env=env)  # the cache lost B's partition
    assert partitions(repo) == history["partitionsB"]


def test_update_migrates_a_table_repo_in_one_commit_its_table_the_first_partition(
    mlrig_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mlrig import contract
    from mlrig.core.bootstrap import _update
    from mlrig.errors import ServiceError
    from mlrig.main import app

    runner = CliRunner()
    contract.save(aws_outputs())
    repo = bootstrap.init(tmp_path / "churn", "prod").path
    env = repo_env(mlrig_home)
    ingest(repo, env)
    table = pd.read_csv(repo / "data/snapshot/data.csv")
    record = json.loads((repo / "data/snapshot/record.json").read_text())
    sh(repo, "git", "add", "dvc.lock", "data/snapshot", env=env)
    sh(repo, "git", "commit", "-q", "-m", "first snapshot", env=env)
    before = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()

    (repo / "notes.txt").write_text("mine\n")
    refused = runner.invoke(app, ["update", str(repo), "--snapshots", "partitioned"])
    assert refused.exit_code == 7 and "uncommitted changes" in refused.output
    (repo / "notes.txt").unlink()
    csv = repo / "data/snapshot/data.csv"
    good = csv.read_bytes()
    csv.write_bytes(good + good.splitlines(keepends=True)[-1])  # not the recorded snapshot
    refused = runner.invoke(app, ["update", str(repo), "--snapshots", "partitioned"])
    assert refused.exit_code != 0 and "is not the snapshot" in refused.output
    csv.write_bytes(good)

    def broken(*_a: object, **_k: object) -> str:
        raise ServiceError("dvc repro ingest failed: planted")

    with monkeypatch.context() as m:  # the ingest fails after the template was merged
        m.setattr(_update.dvc, "run_cli", broken)
        failed = runner.invoke(app, ["update", str(repo), "--snapshots", "partitioned"])
    assert failed.exit_code != 0 and "planted" in failed.output
    assert sh(repo, "git", "rev-parse", "HEAD", env=env).strip() == before
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    assert csv.read_bytes() == good and not (repo / "data/snapshots").exists()

    result = runner.invoke(app, ["update", str(repo), "--snapshots", "partitioned"])
    assert result.exit_code == 0, result.output
    assert "migrated" in result.output and "(569 rows)" in result.output
    assert sh(repo, "git", "rev-parse", "HEAD~1", env=env).strip() == before  # one commit
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""
    assert not (repo / "data/snapshot").exists()
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["snapshots"] == "partitioned"
    (partition,) = (repo / "data/snapshots").glob("*.parquet")
    stamp = record["ingested_at"][:16].replace(":", "")  # 2026-12-07T18:39:00Z -> ..T1839
    assert partition.name == f"{stamp}.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(partition), table)
    watermark = json.loads((repo / WATERMARK).read_text())
    lock = (repo / "dvc.lock").read_text()
    assert watermark["md5"] == lock_md5(lock) and watermark["keys"]
    # the source has not changed: the next ingest adds nothing
    assert "unchanged (569 rows), no partition" in ingest(repo, env)
    assert (repo / "dvc.lock").read_text() == lock

    again = runner.invoke(app, ["update", str(repo), "--snapshots", "partitioned"])
    assert again.exit_code != 0 and "already keeps partitioned snapshots" in again.output
