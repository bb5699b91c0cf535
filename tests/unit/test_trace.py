"""Trace without services: REF parsing, and restore-point resolution on real git repositories
made in tmp_path (commits, experiment refs, a bare origin to fetch them from)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlrig.adapters import dvc as dvc_adapter
from mlrig.adapters import git
from mlrig.adapters.mlflow_rest import ModelVersion, Run
from mlrig.core.provenance import _trace_image as trace_image
from mlrig.core.provenance import record as p
from mlrig.core.provenance import resolve, trace
from mlrig.errors import UsageError
from tests.helpers import commit_files as commit
from tests.helpers import git_as_tester as g

RUN = "a" * 32
EXP_REF = "refs/exps/ab/cdef0123456789/exp-one"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def lock(run_file: str, model: str = "m1", deps: dict[str, str] | None = None) -> str:
    deps = deps or {"data/processed/train.csv": "d1", "src/x/train.py": "d2"}
    dep_lines = "".join(f"    - path: {k}\n      md5: {v}\n" for k, v in deps.items())
    return (
        "schema: '2.0'\nstages:\n  train:\n    cmd: python -m x.train\n    deps:\n"
        + dep_lines
        + f"    outs:\n    - path: {p.MODEL_FILE}\n      md5: {model}\n"
        f"    - path: {p.RUN_FILE}\n      md5: {run_file}\n"
    )


def tags(run_file: str = "r1", model: str = "m1", **extra: str) -> dict[str, str]:
    base = {
        p.TAG_GIT_COMMIT: "0" * 40,
        p.TAG_STAGE: "train",
        f"{p.TAG_DEP_PREFIX}data/processed/train.csv": "d1",
        f"{p.TAG_DEP_PREFIX}src/x/train.py": "d2",
        f"{p.TAG_OUT_PREFIX}{p.MODEL_FILE}": model,
        f"{p.TAG_OUT_PREFIX}{p.RUN_FILE}": run_file,
    }
    return {**base, **extra}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    g(path, "init", "-q", "-b", "main")
    commit(path, {"README.md": "x\n", ".dvc/config": "[core]\n    remote = storage\n"}, "init")
    return path


def exp_commit(repo: Path, files: dict[str, str], ref: str = EXP_REF) -> str:
    """A commit only an experiment ref holds (what `dvc exp run` leaves behind)."""
    base = g(repo, "rev-parse", "HEAD")
    for name, text in files.items():
        (repo / name).write_text(text)
    g(repo, "add", "--all")
    tree = g(repo, "write-tree")
    sha = g(repo, "commit-tree", tree, "-p", base, "-m", "exp")
    g(repo, "update-ref", ref, sha)
    g(repo, "reset", "-q", "--hard", base)
    return sha


# -- REF parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "kind", "name", "version", "alias", "run"),
    [
        ("models:/churn/3", "model", "churn", "3", None, None),
        ("models:/churn@champion", "model", "churn", None, "champion", None),
        ("@champion", "model", "proj", None, "champion", None),
        (f"runs:/{RUN}/model", "run", None, None, None, RUN),
        (RUN, "run", None, None, None, RUN),
        ("mlrig/churn:v3", "image", None, None, None, None),
        ("sha256:" + "b" * 64, "image", None, None, None, None),
        ("127.0.0.1:5001/models@sha256:" + "c" * 64, "image", None, None, None, None),
        ("0123456789ab", "image", None, None, None, None),
    ],
)
def test_parse(ref: str, kind: str, name: str, version: str, alias: str, run: str) -> None:
    got = trace.parse(ref, "proj")
    assert (got.kind, got.name, got.version, got.alias, got.run_id) == (
        kind,
        name,
        version,
        alias,
        run,
    )


def test_alias_without_a_project_and_bad_uris_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="needs the model's name"):
        trace.parse("@champion", None)
    for bad in ("models:/x", "runs:/nothex", ""):
        with pytest.raises(UsageError):
            trace.parse(bad, "proj")


def test_split_image_references() -> None:
    digest = "sha256:" + "d" * 64
    assert trace_image.split(digest) == (None, digest)
    assert trace_image.split("d" * 64) == (None, digest)
    assert trace_image.split(f"h:5000/models@{digest}") == ("h:5000/models", digest)
    assert trace_image.split("mlrig/x:v1") == ("mlrig/x:v1", None)
    recs = trace_image.records_from_refs([f"h/r@{digest}", f"h/r@{digest}", "junk"])
    assert [(r.repository, r.digest) for r in recs] == [("h/r", digest)]


# -- matching a dvc.lock to a run --------------------------------------------------------------
def test_match_by_run_file_then_by_model_and_deps() -> None:
    assert resolve.match(lock("r1").encode(), tags("r1")) == "run-file"
    # another run file, same model bytes from the same inputs: a deterministic re-run
    assert resolve.match(lock("r2").encode(), tags("r1")) == "model-and-deps"
    assert resolve.match(lock("r2", model="m2").encode(), tags("r1")) is None
    other_inputs = lock("r2", deps={"data/processed/train.csv": "zz", "src/x/train.py": "d2"})
    assert resolve.match(other_inputs.encode(), tags("r1")) is None
    assert resolve.match(None, tags()) is None
    assert resolve.match(b"{not yaml: [", tags()) is None


def test_has_provenance() -> None:
    assert resolve.has_provenance(tags())
    assert not resolve.has_provenance({p.TAG_GIT_COMMIT: "x", "mlflow.user": "me"})


# -- resolution on real repositories -----------------------------------------------------------
def test_plain_commit_is_the_restore_point(repo: Path) -> None:
    first = commit(repo, {"dvc.lock": lock("r1")}, "repro 1")
    commit(repo, {"dvc.lock": lock("r2", model="m2")}, "repro 2")
    got = resolve.resolve(repo, RUN, tags("r1"))
    assert got.restorable and got.reason is None
    assert got.restore_point and got.restore_point.sha == first
    assert got.restore_point.found_by == "run-file" and got.restore_point.ref is None


def test_the_exact_run_file_beats_an_older_same_model_commit(repo: Path) -> None:
    commit(repo, {"dvc.lock": lock("r0")}, "same model, other run")
    exact = commit(repo, {"dvc.lock": lock("r1"), "x.txt": "1"}, "the run")
    commit(repo, {"dvc.lock": lock("r9", model="m9")}, "later")
    point = resolve.find_restore_point(repo, tags("r1"))
    assert point and point.sha == exact and point.found_by == "run-file"
    # the run file never committed: the newest commit with the same model and inputs
    fallback = resolve.find_restore_point(repo, tags("never"))
    assert fallback and fallback.sha == exact and fallback.found_by == "model-and-deps"


def test_experiment_ref_named_by_the_run(repo: Path) -> None:
    commit(repo, {"dvc.lock": lock("r0")}, "baseline")
    sha = exp_commit(repo, {"dvc.lock": lock("r1"), "params.yaml": "train: {C: 20}\n"})
    point = resolve.find_restore_point(repo, tags("r1", **{p.TAG_EXP_REF: EXP_REF}))
    assert point and (point.sha, point.found_by, point.ref) == (sha, "exp-ref", EXP_REF)
    # DVC's scratch ref of a running experiment is no experiment
    g(repo, "update-ref", "refs/exps/exec/EXEC_HEAD", sha)
    # without the tag, the experiment refs are searched too and the ref is reported
    point = resolve.find_restore_point(repo, tags("r1"))
    assert point and (point.sha, point.found_by, point.ref) == (sha, "run-file", EXP_REF)


def test_an_experiment_the_clone_lacks_is_found_in_mlrigs_mirror_and_the_clone_unchanged(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trace reads: the experiment's commit is looked up in mlrig's own mirror of the run's
    recorded remote; the user's clone gains no ref (it used to fetch the ref into it)."""
    monkeypatch.setenv("MLRIG_HOME", str(tmp_path / "home"))
    commit(repo, {"dvc.lock": lock("r0", model="m0")}, "baseline")
    sha = exp_commit(repo, {"dvc.lock": lock("r1")})
    origin = tmp_path / "origin.git"
    g(tmp_path, "init", "-q", "--bare", str(origin))
    g(repo, "remote", "add", "origin", str(origin))
    g(repo, "push", "-q", "origin", "main", f"{EXP_REF}:{EXP_REF}")
    clone = tmp_path / "clone"
    g(tmp_path, "clone", "-q", str(origin), str(clone))
    assert git.commit_of(clone, EXP_REF) is None  # a plain clone lacks experiment refs
    before = g(clone, "for-each-ref")
    run_tags = tags("r1", **{p.TAG_EXP_REF: EXP_REF, p.TAG_GIT_REMOTE: str(origin)})
    assert resolve.find_restore_point(clone, run_tags) is None
    got, where = resolve.resolve_anywhere(clone, RUN, run_tags)
    assert got.restore_point and (got.restore_point.sha, got.restore_point.found_by) == (
        sha,
        "exp-ref",
    )
    assert where is not None and where.parent == tmp_path / "home" / "cache" / "git"
    assert git.commit_of(clone, EXP_REF) is None and g(clone, "for-each-ref") == before


def test_dirty_files_decide_bit_for_bit(repo: Path) -> None:
    sha = commit(repo, {"dvc.lock": lock("r1"), "src/a.py": "A\n"}, "run")
    same = {"src/a.py": md5(b"A\n"), "gone.txt": p.DIRTY_DELETED}
    got = resolve.resolve(repo, RUN, tags("r1", **{p.TAG_DIRTY_FILES: json.dumps(same)}))
    assert got.restorable and got.restore_point and got.restore_point.sha == sha
    differ = {"src/a.py": md5(b"edited\n"), "scratch.txt": md5(b"untracked\n")}
    got = resolve.resolve(repo, RUN, tags("r1", **{p.TAG_DIRTY_FILES: json.dumps(differ)}))
    assert not got.restorable and got.restore_point and got.restore_point.sha == sha
    assert got.reason == (
        f"run {RUN} was made from a dirty workspace (src/a.py, scratch.txt): "
        "it cannot be restored bit for bit"
    )
    capped = {p.TAG_DIRTY_FILES: json.dumps({p.DIRTY_TOO_MANY: "too many"})}
    got = resolve.resolve(repo, RUN, tags("r1", **capped))
    assert not got.restorable and got.reason and "too many changed files" in got.reason


def test_nothing_records_the_run(repo: Path) -> None:
    commit(repo, {"dvc.lock": lock("r2", model="m2")}, "another run")
    got = resolve.resolve(repo, RUN, tags("r1"))
    assert (got.restore_point, got.restorable, got.reason) == (None, False, resolve.NOT_RECORDED)
    got = resolve.resolve(None, RUN, tags("r1"))
    assert not got.restorable and got.reason and "--repo" in got.reason


def test_without_a_repository_the_recorded_remote_is_searched(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A teammate with no clone: the run's remote (experiment refs included) is mirrored into
    mlrig's cache and searched there; a later push is seen on the next trace."""
    monkeypatch.setenv("MLRIG_HOME", str(tmp_path / "home"))
    commit(repo, {"dvc.lock": lock("r0", model="m0")}, "baseline")
    sha = exp_commit(repo, {"dvc.lock": lock("r1")})
    origin = tmp_path / "origin.git"
    g(tmp_path, "init", "-q", "--bare", str(origin))
    g(repo, "push", "-q", str(origin), "main", f"{EXP_REF}:{EXP_REF}")
    run_tags = tags("r1", **{p.TAG_GIT_REMOTE: str(origin)})
    got, where = resolve.resolve_anywhere(None, RUN, run_tags)
    assert got.restorable and got.restore_point and got.restore_point.sha == sha
    assert where is not None and where.parent == tmp_path / "home" / "cache" / "git"
    later = commit(repo, {"dvc.lock": lock("r2", model="m2")}, "a later run")
    g(repo, "push", "-q", str(origin), "main")
    got, _ = resolve.resolve_anywhere(None, RUN, tags("r2", **{p.TAG_GIT_REMOTE: str(origin)}))
    assert got.restore_point and got.restore_point.sha == later
    gone = tags("r1", **{p.TAG_GIT_REMOTE: str(tmp_path / "nowhere.git")})
    got, where = resolve.resolve_anywhere(None, RUN, gone)
    assert not got.restorable and where is None and got.reason and "--repo" in got.reason


# -- assembling the record ---------------------------------------------------------------------
class StubRest:
    def experiment_name(self, experiment_id: str) -> str:
        return "proj"


def test_record_from_a_run_and_its_restore_point(repo: Path) -> None:
    (repo / ".dvc/config").write_text(
        "[core]\n    remote = storage\n['remote \"storage\"']\n    url = /srv/dvc\n"
    )
    sha = commit(repo, {"dvc.lock": lock("r1")}, "run")
    run = Run(RUN, "1", {"train.C": "1.0"}, {"test_accuracy": 0.9}, tags("r1"))
    mv = ModelVersion("proj", "2", RUN, {p.MV_IMAGE_REFS: "h/r@sha256:" + "e" * 64}, ("best",))
    record = trace.assemble("models:/proj/2", StubRest(), run, mv, [], repo)
    assert record.code.restorable and record.code.restore_point
    assert record.code.restore_point.sha == sha
    assert record.restore_command == "mlrig checkout models:/proj/2"
    assert record.run.experiment == "proj" and record.model and record.model.aliases == ["best"]
    assert record.expected_hashes() == {
        "data/processed/train.csv": "d1",
        "src/x/train.py": "d2",
        p.MODEL_FILE: "m1",
        p.RUN_FILE: "r1",
    }
    assert {d.remote.url for d in record.data if d.remote} == {"/srv/dvc"}
    # DVC stores the stage outputs; the rest (code, here the input too) is git's
    assert {d.path for d in record.data if d.remote} == {p.MODEL_FILE, p.RUN_FILE}
    again = type(record).model_validate_json(record.model_dump_json())
    assert again == record
    assert "restorable" in record.summary() and "proj v2" in record.summary()


def test_a_temporal_runs_windows_are_in_the_record_and_a_forged_one_is_refused(
    repo: Path,
) -> None:
    commit(repo, {"dvc.lock": lock("r1")}, "run")
    windows = {
        "train_from": "2026-01-15T04:00:00Z",
        "train_to": "2026-04-01T10:00:00Z",
        "test_from": "2026-04-08T11:00:00Z",
        "test_to": "2026-05-04T23:00:00Z",
        "gap": "7 days 01:00:00",
        "horizon": "7 days, 0:00:00",
        "ttl": "14 days, 0:00:00",
    }
    temporal = {f"{p.TAG_TEMPORAL_PREFIX}{k}": v for k, v in windows.items()}
    run = Run(RUN, "1", {}, {}, tags("r1", **temporal))
    record = trace.assemble(f"runs:/{RUN}", StubRest(), run, None, [], repo)
    assert record.windows and record.windows.model_dump() == windows
    assert record.code.restorable and not record.refused

    forged = {**temporal, f"{p.TAG_TEMPORAL_PREFIX}gap": "$(rm -rf ~)"}
    run = Run(RUN, "1", {}, {}, tags("r1", **forged))
    record = trace.assemble(f"runs:/{RUN}", StubRest(), run, None, [], repo)
    assert record.windows and record.windows.gap is None  # refused, used for nothing
    assert any("mlrig.temporal.gap" in line for line in record.refused)


def test_dvc_config_remotes() -> None:
    text = "[core]\n    remote = s\n['remote \"s\"']\n    url = s3://b/p\n['remote \"o\"']\n"
    assert dvc_adapter.config_remotes(text) == ("s", {"s": "s3://b/p"})
    assert dvc_adapter.config_remotes("[[[") == (None, {})


# -- what push and build write -----------------------------------------------------------------
def test_pushed_references_are_appended_once() -> None:
    from mlrig.core.image._push_tags import merged_refs

    assert merged_refs("", "h/r@sha256:1") == "h/r@sha256:1"
    assert merged_refs("h/r@sha256:1", "h/r@sha256:2") == "h/r@sha256:1 h/r@sha256:2"
    assert merged_refs("h/r@sha256:1 h/r@sha256:2", "h/r@sha256:1") == "h/r@sha256:1 h/r@sha256:2"


def test_labels_name_the_experiment_and_dirtiness() -> None:
    from mlrig.core.shared.serving_model import Provenance

    prov = Provenance(
        "models:/m/3",
        "m",
        "3",
        RUN,
        "f" * 40,
        None,
        {"models/model.pkl": "m1"},
        git_dirty="false",
        exp_name="exp-one",
        exp_ref=EXP_REF,
    )
    labels = prov.labels("0.1.0", "sha")
    assert labels[p.LABEL_EXP_NAME] == "exp-one" and labels[p.LABEL_EXP_REF] == EXP_REF
    assert labels[p.LABEL_GIT_DIRTY] == "false" and labels[p.LABEL_GIT_COMMIT] == "f" * 40
    bare = Provenance("runs:/x/model", None, None, RUN).labels("0.1.0", "sha")
    assert p.LABEL_EXP_NAME not in bare and p.LABEL_GIT_DIRTY not in bare


# -- MLflow 3 logged models (models:/m-<id>) ---------------------------------------------------
LOGGED = "m-" + "0123456789abcdef" * 2


def test_a_logged_model_uri_parses_to_its_id_and_malformed_ones_are_refused() -> None:
    got = trace.parse(f"models:/{LOGGED}", "proj")
    assert (got.kind, got.logged_id, got.name, got.run_id) == ("logged", LOGGED, None, None)
    assert p.logged_model_id(f"models:/{LOGGED}/") == LOGGED
    # a registered model that happens to be named m-… keeps its meaning
    assert trace.parse("models:/m-abc/3", None).kind == "model"
    for bad in (
        "models:/m-" + "0" * 31,
        "models:/m-" + "0" * 33,
        "models:/m-" + "G" * 32,
        f"models:/{LOGGED}/../../etc",
        f"models:/{LOGGED}?x=1",
    ):
        assert p.logged_model_id(bad) is None
        with pytest.raises(UsageError):
            trace.parse(bad, "proj")


class LoggedRest(StubRest):
    """A tracking server holding one logged model, logged by a plain MLflow script's run."""

    def __init__(self, source_run: str | None) -> None:
        self.source_run = source_run
        self.asked: list[str] = []

    def logged_model_run(self, model_id: str) -> str | None:
        self.asked.append(model_id)
        return self.source_run

    def run(self, run_id: str) -> Run:
        assert run_id == self.source_run
        return Run(run_id, "1", {"C": "1"}, {"acc": 0.9}, {p.TAG_GIT_COMMIT: "1" * 40})

    def search_model_versions(self, filter_string: str) -> list[ModelVersion]:
        return []


def test_trace_follows_a_logged_model_to_its_source_run(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = LoggedRest(RUN)
    monkeypatch.setattr(trace, "connect", lambda stack, where: (rest, None))
    record = trace.trace(f"models:/{LOGGED}", repo=repo)
    assert rest.asked == [LOGGED]
    assert record.run.id == RUN and record.model is None
    assert record.code.commit == "1" * 40 and not record.code.restorable
    assert record.missing  # a plain MLflow run: the links log_provenance would supply


def test_a_logged_model_from_no_run_is_one_line(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace, "connect", lambda stack, where: (LoggedRest(None), None))
    with pytest.raises(UsageError, match="outside any MLflow run"):
        trace.trace(f"models:/{LOGGED}", repo=repo)


# -- an image with no mlrig labels ---------------------------------------------------------------
DIGEST = "sha256:" + "5" * 64
PUSHED = f"127.0.0.1:5001/team@{DIGEST}"


class DigestRest(StubRest):
    """A tracking server whose model versions' push tags name `pushed` (or none)."""

    def __init__(self, versions: list[ModelVersion]) -> None:
        self.versions = versions
        self.filters: list[str] = []

    def search_model_versions(self, filter_string: str) -> list[ModelVersion]:
        self.filters.append(filter_string)
        return [v for v in self.versions if DIGEST in filter_string]

    def model_version(self, name: str, version: str) -> ModelVersion:
        return next(v for v in self.versions if (v.name, v.version) == (name, version))

    def run(self, run_id: str) -> Run:
        return Run(run_id, "1", {}, {}, {p.TAG_GIT_COMMIT: "2" * 40})


def _unlabelled_image(monkeypatch: pytest.MonkeyPatch, rest: DigestRest) -> None:
    from mlrig.adapters import docker as docker_adapter

    info = docker_adapter.ImageInfo(
        id="sha256:" + "9" * 64, size=1, labels={"maintainer": "team"}, repo_digests=(PUSHED,)
    )
    monkeypatch.setattr(docker_adapter, "image_info", lambda ref: info)
    monkeypatch.setattr(trace, "connect", lambda stack, where: (rest, None))


def test_an_image_without_labels_prints_what_is_known_and_marks_the_rest(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = DigestRest([])
    _unlabelled_image(monkeypatch, rest)
    record = trace.trace("team:latest", repo=repo)
    assert [(i.digest, i.repository) for i in record.images] == [(DIGEST, "127.0.0.1:5001/team")]
    assert any(DIGEST in f for f in rest.filters)  # MLflow was asked by digest
    assert record.run is None and record.model is None and not record.code.restorable
    links = [m.link for m in record.missing]
    assert links == ["mlrig labels", "model version", "run", "commit and data"]
    assert "no run" in record.summary()
    again = type(record).model_validate_json(record.model_dump_json())
    assert again == record
    with pytest.raises(UsageError, match="names no MLflow run"):
        record.the_run()  # checkout and monitor: one line, nothing to follow


def test_an_image_without_labels_is_followed_through_the_version_its_push_tagged(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mv = ModelVersion("team", "4", RUN, {p.MV_IMAGE_REFS: PUSHED})
    _unlabelled_image(monkeypatch, DigestRest([mv]))
    record = trace.trace("team:latest", repo=repo)
    assert record.model and (record.model.name, record.model.version) == ("team", "4")
    assert record.run and record.run.id == RUN and record.code.commit == "2" * 40


def test_the_cli_renders_an_image_with_no_run(
    repo: Path, monkeypatch: pytest.MonkeyPatch, mlrig_home: Path
) -> None:
    from typer.testing import CliRunner

    from mlrig.main import app

    _unlabelled_image(monkeypatch, DigestRest([]))
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["trace", "team:latest"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert PUSHED in said and "run unknown" in said
    assert "missing: mlrig labels" in said and "not restorable: image team:latest" in said
