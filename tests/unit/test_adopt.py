"""An adopted repository's provenance without services: the tags log_provenance computes on a
real git repository (folders hashed as DVC does), the restore-point match of a team's own
stage, and what trace and checkout make of a run mlrig did not tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrig.core.provenance import _degraded, checkout, log, resolve
from mlrig.core.provenance import record as p
from mlrig.errors import UsageError
from tests.helpers import commit_files, git_as_tester, md5_of

DVC_YAML = """stages:
  featurize:
    cmd: python src/featurize.py
    deps: [data/raw.csv, src/featurize.py]
    outs: [data/features]
  train:
    cmd: python src/train.py
    deps: [data/features, src/train.py]
    params: [train.seed, {other.yaml: [lr]}]
    outs: [model.pkl]
    metrics: [{eval/metrics.json: {cache: false}}]
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    repo = tmp_path / "ws"
    repo.mkdir()
    git_as_tester(repo, "init", "-q", "-b", "main")
    commit_files(
        repo,
        {
            "dvc.yaml": DVC_YAML,
            "params.yaml": "train:\n  seed: 7\n",
            "other.yaml": "lr: 0.1\n",
            "src/train.py": "print('train')\n",
            ".gitignore": "/model.pkl\n/data/features\n",
        },
        "pipeline",
    )
    (repo / "data/features").mkdir(parents=True)
    (repo / "data/features/b.csv").write_text("b\n")
    (repo / "data/features/a/x.csv").parent.mkdir()
    (repo / "data/features/a/x.csv").write_text("x\n")
    (repo / "model.pkl").write_bytes(b"model")
    return repo


def test_log_provenance_tags_what_the_template_tags(workspace: Path) -> None:
    tags, params = log.provenance(workspace, "train", {"DVC_EXP_NAME": "e1"})
    listing = [
        {"md5": md5_of(b"x\n"), "relpath": "a/x.csv"},
        {"md5": md5_of(b"b\n"), "relpath": "b.csv"},
    ]
    # DVC 3's folder hash: its sorted listing as JSON (json.dumps, sorted keys), then `.dir`
    assert tags["dvc.dep.data/features"] == md5_of(json.dumps(listing).encode()) + ".dir"
    assert tags["dvc.dep.src/train.py"] == md5_of(b"print('train')\n")
    assert tags["dvc.out.model.pkl"] == md5_of(b"model")
    assert tags[p.TAG_STAGE] == "train" and tags[p.TAG_GIT_DIRTY] == "false"
    assert tags[p.TAG_EXP_NAME] == "e1" and p.TAG_EXP_REF not in tags  # no baseline: no ref
    lock_params = {"params.yaml": {"train.seed": 7}, "other.yaml": {"lr": 0.1}}
    assert tags[p.TAG_PARAMS_MD5] == md5_of(
        json.dumps(lock_params, sort_keys=True, separators=(",", ":")).encode()
    )
    assert params == {"train.seed": "7", "other.yaml:lr": "0.1"}
    assert p.TAG_GIT_REMOTE not in tags  # no origin

    (workspace / "src/train.py").write_text("print('changed')\n")
    (workspace / "notes.txt").write_text("n\n")
    dirty, _ = log.provenance(workspace, "train", {})
    assert dirty[p.TAG_GIT_DIRTY] == "true"
    assert json.loads(dirty[p.TAG_DIRTY_FILES]) == {
        "notes.txt": md5_of(b"n\n"),
        "src/train.py": md5_of(b"print('changed')\n"),
    }


def test_the_stage_comes_from_dvc_or_the_caller(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVC_STAGE", raising=False)
    with pytest.raises(UsageError, match="which DVC stage is this"):
        log.stage_name(None)
    monkeypatch.setenv("DVC_STAGE", "dvc.yaml:train")
    assert log.stage_name(None) == "train" and log.stage_name("featurize") == "featurize"
    with pytest.raises(UsageError, match="has no stage 'evaluate'"):
        log.provenance(workspace, "evaluate", {})


def test_a_remote_is_recorded_without_credentials_and_only_in_a_form_trace_accepts() -> None:
    strip = log.strip_credentials
    assert strip("https://bob:tok@github.com/acme/x.git") == "https://github.com/acme/x.git"
    assert strip("ssh://git:secret@host/acme/x") == "ssh://git@host/acme/x"
    assert strip("git@github.com:acme/x.git") == "git@github.com:acme/x.git"
    # MLflow's own repoURL is read back only when trace would accept it as a remote
    assert _degraded.remote_of({p.TAG_MLFLOW_REPO_URL: "https://u:tok@host/x"}) is None
    assert _degraded.remote_of({p.TAG_MLFLOW_REPO_URL: "https://host/x"}) == "https://host/x"


def _lock(outs: dict[str, str], deps: dict[str, str]) -> bytes:
    def rows(d: dict[str, str]) -> str:
        return "".join(f"    - path: {k}\n      md5: {v}\n" for k, v in d.items())

    return (
        "schema: '2.0'\nstages:\n  train:\n    cmd: x\n    deps:\n"
        + rows(deps)
        + "    outs:\n"
        + rows(outs)
    ).encode()


def test_a_team_stage_matches_by_all_its_outs_and_deps() -> None:
    tags = {
        p.TAG_STAGE: "train",
        "dvc.dep.data/features": "f.dir",
        "dvc.dep.src/train.py": "s",
        "dvc.out.model.pkl": "m",
    }
    deps = {"data/features": "f.dir", "src/train.py": "s"}
    assert resolve.match(_lock({"model.pkl": "m"}, deps), tags) == "outs-and-deps"
    assert resolve.match(_lock({"model.pkl": "other"}, deps), tags) is None
    assert resolve.match(_lock({"model.pkl": "m"}, {**deps, "src/train.py": "x"}), tags) is None
    no_deps = {k: v for k, v in tags.items() if not k.startswith("dvc.dep.")}
    assert resolve.match(_lock({"model.pkl": "m"}, deps), no_deps) is None  # outs alone: no


def _record(**code: object) -> p.ProvenanceRecord:
    return p.ProvenanceRecord(
        ref="runs:/" + "a" * 32,
        run=p.RunRecord(id="a" * 32),
        code=p.CodeRecord(**code),
        missing=[p.MissingLink(link="data the run read", how="log_provenance()")],
    )


def test_checkout_of_an_untagged_run_restores_its_commit_unverified() -> None:
    sha = "b" * 40
    target = checkout.target_of(
        _record(commit=sha, restore_point=p.RestorePoint(sha=sha, found_by="commit-tag"))
    )
    assert target.sha == sha and target.files == {}
    assert target.unverified == ("data the run read: log_provenance()",)
    with pytest.raises(checkout.NotRestorable, match="records no git remote to clone"):
        checkout.target_of(_record(commit=sha))
    remote = checkout.target_of(_record(commit=sha, remote="https://host/x"))
    assert remote.sha == sha and remote.git_remote == "https://host/x"


def test_the_commit_comes_from_mlflow_or_the_image_and_must_be_a_full_sha() -> None:
    sha = "c" * 40
    assert _degraded.commit_of({p.TAG_GIT_COMMIT: sha}, {}) == sha
    assert _degraded.commit_of({}, {p.LABEL_GIT_COMMIT: sha}) == sha
    assert _degraded.commit_of({p.TAG_GIT_COMMIT: "HEAD"}, {}) is None
    assert _degraded.commit_of({p.TAG_GIT_COMMIT: "--upload-pack=x"}, {}) is None


def test_monitor_takes_no_reference_from_data_the_run_did_not_record() -> None:
    from mlrig.core.monitor import _reference

    remote = p.DvcRemoteRecord(name="storage", url="/r")
    record = _record(commit="d" * 40)
    record.data = [
        p.DataRecord(path="data/data.csv", md5="1", role="dep", remote=remote, source="dvc.lock")
    ]
    assert _reference.candidates(record) == []
    record.data[0].source = "run"
    assert [d.path for d in _reference.candidates(record)] == ["data/data.csv"]
