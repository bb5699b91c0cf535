"""`mlrig checkout` for real, on the provenance repo (local stack, real git, DVC and MLflow):
every registered version — the plain repro and each experiment — comes back as a workspace
whose dvc.lock, params.yaml, data and model equal the originals byte for byte, from the
user's repository or from the bare origin alone; the user's checkout stays untouched; a
missing remote object and a taken folder are one line each; --repro reproduces the run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import VENV_BIN, mlflow_client, sh

pytestmark = pytest.mark.integration


def mlrig(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The venv's real `mlrig` program, as a user's shell runs it."""
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def git(repo: Path, *args: str) -> str:
    return sh(repo, "git", *args, env=os.environ.copy())


def user_state(repo: Path) -> tuple[str, str]:
    """What the user sees of their own checkout."""
    return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "--ignored")


def cached(repo: Path, md5: str) -> bytes:
    return (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes()


def show(repo: Path, sha: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "show", f"{sha}:{path}"], cwd=repo, capture_output=True, check=True
    ).stdout


def originals(repo: Path, sha: str) -> dict[str, bytes]:
    """The bytes the run's workspace held: dvc.lock and params.yaml as committed at sha,
    and every file DVC tracks there (each stage's outs, the raw data) from the user's cache,
    or from the commit for the outs git holds (`cache: false`: metrics, the data record)."""
    files = {path: show(repo, sha, path) for path in ("dvc.lock", "params.yaml")}
    lock = yaml.safe_load(files["dvc.lock"])
    for stage in lock["stages"].values():
        for out in stage.get("outs") or []:
            in_cache = repo / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]
            files[out["path"]] = (
                cached(repo, out["md5"]) if in_cache.is_file() else show(repo, sha, out["path"])
            )
    raw = yaml.safe_load(show(repo, sha, "data/raw/breast_cancer.csv.dvc"))
    files["data/raw/breast_cancer.csv"] = cached(repo, raw["outs"][0]["md5"])
    assert {"models/model.pkl", "data/processed/train.csv", "data/snapshot/data.csv"} <= set(files)
    return files


def assert_identical(workspace: Path, expected: dict[str, bytes]) -> None:
    for path, content in expected.items():
        assert (workspace / path).read_bytes() == content, path


def checkout(prov: dict[str, Any], cwd: Path, version: str, into: Path, *extra: str) -> Any:
    ref = f"models:/{prov['project']}/{version}"
    return mlrig(cwd, prov["env"], "checkout", ref, "--into", str(into), *extra)


def test_every_version_comes_back_byte_for_byte_and_the_users_checkout_is_untouched(
    provenance_repo: dict, tmp_path: Path
) -> None:
    prov, repo = provenance_repo, provenance_repo["repo"]
    before = user_state(repo)
    for version, facts in sorted(prov["versions"].items()):
        into = tmp_path / f"v{version}"
        proc = checkout(prov, repo, version, into)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "identical" in proc.stdout and f"worktree of {repo}" in proc.stdout, proc.stdout
        if facts["exp_ref"]:
            assert f"experiment {facts['exp_ref']}" in proc.stdout
        assert git(into, "rev-parse", "HEAD").strip() == facts["commit"]
        assert_identical(into, originals(repo, facts["commit"]))
        assert git(into, "status", "--porcelain") == ""
        assert user_state(repo) == before


def test_an_experiment_comes_back_from_the_remotes_alone(
    provenance_repo: dict, tmp_path: Path
) -> None:
    prov, repo = provenance_repo, provenance_repo["repo"]
    version, facts = next((v, f) for v, f in prov["versions"].items() if f["exp_ref"])
    elsewhere = tmp_path / "elsewhere"  # no git repository here or above
    elsewhere.mkdir()
    proc = checkout(prov, elsewhere, version, elsewhere / "ws")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"clone of {prov['origin']}" in proc.stdout and "identical" in proc.stdout
    ws = elsewhere / "ws"
    assert git(ws, "rev-parse", "HEAD").strip() == facts["commit"]
    assert_identical(ws, originals(repo, facts["commit"]))


def test_a_missing_remote_object_is_one_line_and_leaves_no_folder(
    provenance_repo: dict, local_stack: dict, tmp_path: Path
) -> None:
    prov, repo = provenance_repo, provenance_repo["repo"]
    version, facts = next((v, f) for v, f in prov["versions"].items() if f["exp_ref"])
    lock = yaml.safe_load(show(repo, facts["commit"], "dvc.lock"))
    model = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"].endswith(".pkl"))
    obj = Path(local_stack["outputs"].dvc_remote.url) / "files" / "md5" / model[:2] / model[2:]
    saved = tmp_path / "saved"
    shutil.copy2(obj, saved)  # put back whatever happens: other tests need it
    before, worktrees = user_state(repo), git(repo, "worktree", "list")
    try:
        obj.unlink()
        proc = checkout(prov, repo, version, tmp_path / "ws")
    finally:
        shutil.copy2(saved, obj)
    line = one_line(proc)
    assert f"has no intact copy of models/model.pkl (md5 {model})" in line, line
    assert not (tmp_path / "ws").exists()
    assert git(repo, "worktree", "list") == worktrees and user_state(repo) == before


def test_a_folder_that_is_not_empty_is_one_line(provenance_repo: dict, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine\n")
    version = next(iter(provenance_repo["versions"]))
    proc = checkout(provenance_repo, provenance_repo["repo"], version, taken)
    assert "exists and is not empty" in one_line(proc)
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_repro_reproduces_metrics_and_model_and_registers_no_version(
    provenance_repo: dict, stack_env: dict, tmp_path: Path
) -> None:
    prov = provenance_repo
    version, facts = next((v, f) for v, f in prov["versions"].items() if f["exp_ref"])
    client = mlflow_client(stack_env)
    name = f"name='{prov['project']}'"
    versions_before = len(client.search_model_versions(name))
    proc = checkout(prov, prov["repo"], version, tmp_path / "ws", "--repro")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "identical" in out and "reproduced" in out, out
    for metric in ("test_accuracy", "test_f1", "test_roc_auc", "models/model.pkl md5"):
        assert any(line.strip().startswith(metric) and "equal" in line for line in out.splitlines())
    assert "differs" not in out
    assert len(client.search_model_versions(name)) == versions_before
    rerun = out.split("reproduced: re-run ", 1)[1].split()[0]
    assert client.get_run(rerun).data.tags["mlrig.repro_of"] == facts["run_id"]
