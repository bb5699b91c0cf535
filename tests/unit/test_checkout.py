"""`mlrig checkout`'s workspace and verification on a small real git + DVC repository (a
one-stage pipeline, a local-directory DVC remote, no stack): worktree or clone, the user's
checkout untouched, a missing remote object undone, each difference named; and the rules
that turn a provenance record into what to restore."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.contract import DvcRemote, StackOutputs
from mlrig.core.provenance import _checkout_verify as verify
from mlrig.core.provenance import checkout as co
from mlrig.core.provenance import record as p
from mlrig.errors import Conflict, ServiceError
from mlrig.main import app
from tests.helpers import VENV_BIN, md5, sample

runner = CliRunner()

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
DVC_YAML = """stages:
  train:
    cmd: sed s/data/model/ data/raw.txt > models/model.pkl
    deps: [data/raw.txt]
    params: [train]
    outs: [models/model.pkl]
"""


def run(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


def dvc(cwd: Path, *commands: list[str]) -> None:
    """The dvc program's commands, in one process (each start of `dvc` costs a second)."""
    script = (
        "import sys, json; from dvc.cli import main\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    if main(args): sys.exit(f'dvc {args} failed')"
    )
    run(cwd, str(VENV_BIN / "python"), "-c", script, json.dumps(commands))


class Repo:
    """A tiny pipeline repo: its commit, remote dir, bare origin and what the run recorded."""

    def __init__(self, root: Path) -> None:
        self.path, self.remote, self.origin = root / "repo", root / "remote", root / "origin.git"
        self.path.mkdir()
        run(self.path, "git", "init", "-q", "-b", "main")
        (self.path / "data").mkdir()
        (self.path / "data/raw.txt").write_text("some data\n")
        (self.path / "params.yaml").write_text("train:\n  C: 1.0\n  seed: 42\nother: 1\n")
        (self.path / "dvc.yaml").write_text(DVC_YAML)
        (self.path / "models").mkdir()
        dvc(
            self.path,
            ["init", "-q"],
            ["remote", "add", "-d", "storage", str(self.remote)],
            ["add", "-q", "data/raw.txt"],
            ["repro", "-q"],
            ["push", "-q"],
        )
        run(self.path, "git", "add", "-A")
        run(self.path, "git", "commit", "-qm", "repro")
        run(self.path.parent, "git", "clone", "-q", "--bare", str(self.path), str(self.origin))
        self.sha = run(self.path, "git", "rev-parse", "HEAD").strip()
        self.files = {f: md5(self.path / f) for f in ("data/raw.txt", "models/model.pkl")}
        params = {"params.yaml": {"train": {"C": 1.0, "seed": 42}}}
        text = json.dumps(params, sort_keys=True, separators=(",", ":"))
        self.params_md5 = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    def target(self, **changes: object) -> co.Target:
        fields: dict = dict(run_id="r" * 32, sha=self.sha, files=self.files)
        fields.update(params_md5=self.params_md5, label="m-v1", git_remote=str(self.origin))
        fields.update(changes)
        return co.Target(**fields)

    def outputs(self) -> StackOutputs:
        return sample().model_copy(update={"dvc_remote": DvcRemote(url=str(self.remote))})

    def state(self) -> tuple[str, str]:
        """What the user sees of their checkout: HEAD and `git status`."""
        return run(self.path, "git", "rev-parse", "HEAD"), run(self.path, "git", "status", "-s")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("checkout"))


def test_a_worktree_at_the_commit_is_identical_and_the_users_checkout_untouched(
    repo: Repo, tmp_path: Path
) -> None:
    (repo.path / "scratch.txt").write_text("the user's own work in progress\n")
    before = repo.state()
    ws = co.restore(repo.target(), tmp_path / "ws", repo.outputs(), {}, repo=repo.path)
    assert ws.source == repo.path and ws.sha == repo.sha and ws.pulled == 2
    assert run(ws.root, "git", "rev-parse", "HEAD").strip() == repo.sha
    for path in ("dvc.lock", "params.yaml", "data/raw.txt", "models/model.pkl"):
        assert (ws.root / path).read_bytes() == (repo.path / path).read_bytes(), path
    assert verify.differences(ws.root, repo.files, repo.params_md5) == []
    assert run(ws.root, "git", "status", "--porcelain") == ""  # remote only in config.local
    assert repo.state() == before
    (repo.path / "scratch.txt").unlink()


def test_a_workspace_deleted_by_hand_can_be_checked_out_again(repo: Repo, tmp_path: Path) -> None:
    into = tmp_path / "ws"
    co.restore(repo.target(), into, repo.outputs(), {}, repo=repo.path)
    shutil.rmtree(into)  # git still lists it as a (missing) worktree
    ws = co.restore(repo.target(), into, repo.outputs(), {}, repo=repo.path)
    assert verify.differences(ws.root, repo.files, repo.params_md5) == []


def test_each_difference_is_one_line(repo: Repo, tmp_path: Path) -> None:
    ws = co.restore(repo.target(), tmp_path / "ws", repo.outputs(), {}, repo=repo.path)
    (ws.root / "models/model.pkl").unlink()
    (ws.root / "models/model.pkl").write_text("another model\n")
    (ws.root / "params.yaml").write_text("train:\n  C: 2.0\n  seed: 42\nother: 1\n")
    (ws.root / "data/raw.txt").unlink()
    lines = verify.differences(ws.root, repo.files, repo.params_md5)
    assert lines[0] == f"data/raw.txt: missing (the run recorded md5 {repo.files['data/raw.txt']})"
    assert lines[1].startswith("models/model.pkl: md5 ")
    assert lines[1].endswith(f"the run recorded {repo.files['models/model.pkl']}")
    assert lines[2].startswith("params of stage train: md5 ")
    status = " ".join(lines[3:])
    assert "dvc status: train:" in status and "dvc status: data/raw.txt.dvc:" in status
    assert all("\n" not in line for line in lines)


def test_a_missing_remote_object_is_one_line_and_leaves_nothing(repo: Repo, tmp_path: Path) -> None:
    want = repo.files["models/model.pkl"]
    obj = repo.remote / "files" / "md5" / want[:2] / want[2:]
    saved = tmp_path / "saved"
    shutil.copy2(obj, saved)
    obj.unlink()
    before, worktrees = repo.state(), run(repo.path, "git", "worktree", "list")
    try:
        with pytest.raises(ServiceError) as caught:
            co.restore(repo.target(), tmp_path / "ws", repo.outputs(), {}, repo=repo.path)
    finally:
        shutil.copy2(saved, obj)
    message = caught.value.one_line()
    assert f"has no intact copy of models/model.pkl (md5 {want})" in message and "\n" not in message
    assert not (tmp_path / "ws").exists()
    assert run(repo.path, "git", "worktree", "list") == worktrees
    assert repo.state() == before


def test_a_corrupt_remote_object_counts_as_missing(repo: Repo, tmp_path: Path) -> None:
    want = repo.files["models/model.pkl"]
    obj = repo.remote / "files" / "md5" / want[:2] / want[2:]
    saved = tmp_path / "saved"
    shutil.copy2(obj, saved)
    obj.chmod(0o644)
    obj.write_bytes(b"not the model\n")
    try:
        with pytest.raises(ServiceError, match="has no intact copy of models/model.pkl"):
            co.restore(repo.target(), tmp_path / "ws", repo.outputs(), {}, repo=repo.path)
    finally:
        shutil.copy2(saved, obj)
    assert not (tmp_path / "ws").exists()


def test_into_must_be_new_or_empty_and_an_empty_one_stays_after_a_failure(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(Conflict, match="is not empty"):
        co.restore(repo.target(), full, repo.outputs(), {}, repo=repo.path)
    assert sorted(full.iterdir()) == [full / "x"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(co.NotRestorable):  # a commit nobody has
        co.restore(repo.target(sha="0" * 40, git_remote=None), empty, repo.outputs(), {})
    assert empty.is_dir() and not any(empty.iterdir())


def test_with_no_local_repo_the_recorded_remote_is_cloned_and_the_exp_ref_fetched(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an experiment: a commit only an exp ref of the origin holds
    exp = tmp_path / "exp"
    run(tmp_path, "git", "clone", "-q", str(repo.origin), str(exp))
    (exp / "params.yaml").write_text("train:\n  C: 1.0\n  seed: 42\nother: 2\n")
    run(exp, "git", "commit", "-qam", "experiment")
    sha = run(exp, "git", "rev-parse", "HEAD").strip()
    ref = f"refs/exps/{repo.sha[:2]}/{repo.sha[2:]}/exp-one"
    run(exp, "git", "push", "-q", "origin", f"HEAD:{ref}")
    monkeypatch.chdir(tmp_path)  # not a git repository
    target = repo.target(sha=sha, exp_ref=ref)
    ws = co.restore(target, tmp_path / "ws", repo.outputs(), {})
    assert ws.source is None and ws.remote == str(repo.origin) and ws.sha == sha
    assert (ws.root / "params.yaml").read_bytes() == (exp / "params.yaml").read_bytes()
    assert verify.differences(ws.root, repo.files, repo.params_md5) == []


def test_a_remote_without_the_exp_ref_is_one_line_and_leaves_nothing(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = repo.target(sha="1" * 40, exp_ref="refs/exps/ab/cd/gone")
    with pytest.raises(co.NotRestorable, match="has no refs/exps/ab/cd/gone"):
        co.restore(target, tmp_path / "ws", repo.outputs(), {})
    assert not (tmp_path / "ws").exists()


def test_the_default_folder_sits_next_to_the_repository_when_run_inside_one(
    repo: Repo, tmp_path: Path
) -> None:
    assert co.default_into("m-v1", repo.path / "data") == repo.path.parent / "m-v1"
    assert co.default_into("m-v1", tmp_path) == tmp_path / "m-v1"


def test_params_md5_is_the_hash_the_train_stage_records(repo: Repo) -> None:
    assert verify.params_md5(repo.path, "train") == repo.params_md5


# -- from a provenance record to what to restore -------------------------------------------------
def record(**code: object) -> p.ProvenanceRecord:
    tags = {p.TAG_STAGE: "train", "dvc.out.models/model.pkl": "a" * 32}
    return p.ProvenanceRecord(
        ref="models:/churn/3",
        model=p.ModelRecord(name="churn", version="3"),
        run=p.RunRecord(id="f" * 32, tags=tags, metrics={"test_f1": 0.9}),
        code=p.CodeRecord(**code),
        data=[p.DataRecord(path="models/model.pkl", md5="a" * 32, role="out")],
    )


def test_a_restorable_record_names_commit_experiment_files_and_folder() -> None:
    point = p.RestorePoint(sha="c" * 40, found_by="exp-ref", ref="refs/exps/ab/cd/exp")
    target = co.target_of(
        record(restore_point=point, restorable=True, exp_ref=point.ref, params_md5="e" * 32)
    )
    assert (target.sha, target.exp_ref, target.label) == ("c" * 40, point.ref, "churn-v3")
    assert target.files == {"models/model.pkl": "a" * 32} and target.params_md5 == "e" * 32


def test_dvcs_own_exec_ref_is_no_experiment() -> None:
    point = p.RestorePoint(sha="c" * 40, found_by="run-file", ref="refs/exps/exec/EXEC_HEAD")
    assert co.target_of(record(restore_point=point, restorable=True)).exp_ref is None


def test_a_dirty_run_is_refused_with_the_reason() -> None:
    point = p.RestorePoint(sha="c" * 40, found_by="run-file")
    reason = "run fff was made from a dirty workspace (src/x.py): it cannot be restored bit for bit"
    with pytest.raises(co.NotRestorable, match="dirty workspace"):
        co.target_of(record(restore_point=point, restorable=False, reason=reason))


def test_no_restore_point_is_resolved_in_a_clone_of_the_remote_or_refused_without_one() -> None:
    target = co.target_of(record(remote="/srv/git/churn.git", reason="no git repository"))
    assert target.sha is None and target.git_remote == "/srv/git/churn.git"
    with pytest.raises(co.NotRestorable, match="no commit or experiment"):
        co.target_of(record(reason="no commit or experiment records this run's outputs"))


def test_a_non_empty_into_is_refused_before_anything_is_traced(
    mlrig_home: Path, tmp_path: Path
) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = runner.invoke(app, ["checkout", "models:/churn/3", "--into", str(tmp_path / "taken")])
    assert result.exit_code == 7, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "exists and is not empty" in result.output and "Traceback" not in result.output


# -- --repro: the re-run against the record ------------------------------------------------------
def test_the_rerun_is_compared_metric_by_metric_and_by_model_hash(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: x\n    metrics:\n      - metrics.json:\n"
        "          cache: false\n"
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"f1": 0.9, "auc": 0.95, "note": "x"}))
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.pkl").write_bytes(b"model")
    (tmp_path / "models/mlflow_run.json").write_text(json.dumps({"run_id": "n", "version": None}))
    model = md5(tmp_path / "models/model.pkl")
    same = verify.compare(tmp_path, {"test_f1": 0.9, "test_auc": 0.95}, model)
    assert same.equal and same.run_id == "n" and same.registered is None
    assert [c.name for c in same.comparisons] == ["test_auc", "test_f1", "models/model.pkl md5"]
    other = verify.compare(tmp_path, {"test_f1": 0.8}, "0" * 32)
    assert [c.name for c in other.comparisons if not c.equal] == [
        "test_auc",  # not recorded
        "test_f1",
        "models/model.pkl md5",
    ]
    (tmp_path / "models/mlflow_run.json").write_text(json.dumps({"run_id": "n", "version": "4"}))
    registered = verify.compare(tmp_path, {"test_f1": 0.9, "test_auc": 0.95}, model)
    assert registered.registered == "4" and not registered.equal
