"""Issue 27, provenance: a run's tags and an image's labels are input, not instructions.

Each attack is a run record (a fake MLflow answering with the attacker's tags) traced and
checked out through the real commands, real git, in real repositories made in tmp_path: no
command an attacker names runs, the user's repository gains no ref, no file outside the
workspace is read, and the output says which tag was refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlrig.adapters import git
from mlrig.adapters.mlflow_rest import ModelVersion, Run
from mlrig.core.provenance import _checkout_verify as verify
from mlrig.core.provenance import _inputs as inputs
from mlrig.core.provenance import _trace_image as trace_image
from mlrig.core.provenance import checkout as co
from mlrig.core.provenance import record as p
from mlrig.core.provenance import trace
from mlrig.errors import ServiceError
from mlrig.main import app
from tests.helpers import commit_files as commit
from tests.helpers import git_as_tester as g
from tests.helpers import md5

runner = CliRunner()
PASSWD = Path("/etc/passwd")
RUN = "a" * 32
EXP_REF = f"refs/exps/ab/{'c' * 38}/exp-one"


def lock(run_file: str, model: str = "m1") -> str:
    """A train stage's dvc.lock recording run file and model hashes."""
    return (
        "schema: '2.0'\nstages:\n  train:\n    cmd: python -m x.train\n    deps:\n"
        "    - path: data/train.csv\n      md5: d1\n"
        f"    outs:\n    - path: {p.MODEL_FILE}\n      md5: {model}\n"
        f"    - path: {p.RUN_FILE}\n      md5: {run_file}\n"
    )


def tags(run_file: str = "r1", model: str = "m1", **extra: str) -> dict[str, str]:
    """The tags the train stage writes, plus extra (an attacker's)."""
    base = {
        p.TAG_GIT_COMMIT: "0" * 40,
        p.TAG_STAGE: "train",
        f"{p.TAG_DEP_PREFIX}data/train.csv": "d1",
        f"{p.TAG_OUT_PREFIX}{p.MODEL_FILE}": model,
        f"{p.TAG_OUT_PREFIX}{p.RUN_FILE}": run_file,
    }
    return {**base, **extra}


def exp_commit(repo: Path, files: dict[str, str]) -> str:
    """A commit only an experiment ref holds (what `dvc exp run` leaves behind)."""
    base = g(repo, "rev-parse", "HEAD")
    for name, text in files.items():
        (repo / name).write_text(text)
    g(repo, "add", "--all")
    sha = g(repo, "commit-tree", g(repo, "write-tree"), "-p", base, "-m", "exp")
    g(repo, "update-ref", EXP_REF, sha)
    g(repo, "reset", "-q", "--hard", base)
    return sha


class FakeRest:
    """The tracking server as far as trace asks it: one run, no model versions."""

    def __init__(self, run: Run, versions: list[ModelVersion] | None = None) -> None:
        self._run, self.versions, self.searches = run, versions or [], []

    def run(self, run_id: str) -> Run:
        assert run_id == self._run.id
        return self._run

    def search_model_versions(self, filter_string: str) -> list[ModelVersion]:
        self.searches.append(filter_string)
        return list(self.versions)

    def model_version(self, name: str, version: str) -> ModelVersion:
        return next(v for v in self.versions if (v.name, v.version) == (name, version))

    def experiment_name(self, experiment_id: str) -> str:
        return "proj"


def serve(monkeypatch: pytest.MonkeyPatch, run_tags: dict[str, str]) -> FakeRest:
    """`mlrig trace`/`checkout` talk to a tracking server that returns a run with run_tags."""
    rest = FakeRest(Run(RUN, "1", {}, {}, run_tags))
    monkeypatch.setattr(trace, "connect", lambda stack, repo: (rest, None))
    return rest


@pytest.fixture
def user_repo(tmp_path: Path, mlrig_home: Path) -> Path:
    """The victim's repository: one commit whose dvc.lock records run r1."""
    path = tmp_path / "user"
    path.mkdir()
    g(path, "init", "-q", "-b", "main")
    commit(path, {"README.md": "x\n", "dvc.lock": lock("r1")}, "repro")
    return path


def all_refs(repo: Path) -> str:
    return g(repo, "for-each-ref", "--format=%(refname) %(objectname)")


# -- item 1: the remote and ref a tag names never become git options ---------------------------
def test_an_upload_pack_remote_runs_nothing_and_trace_says_the_tag_was_refused(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    evil = {p.TAG_GIT_REMOTE: f"--upload-pack=touch {marker};", p.TAG_EXP_REF: "/x"}
    serve(monkeypatch, tags("r1", **evil))
    before = all_refs(user_repo)
    result = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo)])
    assert not marker.exists()
    assert result.exit_code == 1, result.output
    assert "tag mlrig.git.remote refused" in result.output
    assert "starts with '-'" in result.output and "Traceback" not in result.output
    assert "tag mlrig.exp.ref refused" in result.output
    assert "not restorable" in result.output and "restorable bit for bit" not in result.output
    assert all_refs(user_repo) == before
    as_json = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo), "--json"])
    record = json.loads(as_json.output)
    assert as_json.exit_code == 1 and not marker.exists()
    assert record["code"]["remote"] is None and record["code"]["restorable"] is False
    assert any(line.startswith("tag mlrig.git.remote refused") for line in record["refused"])


def test_the_git_adapter_never_reads_a_remote_as_an_option(tmp_path: Path) -> None:
    """Below the boundary too: git gets `--` before the remote and only https/ssh/file."""
    repo = tmp_path / "r"
    repo.mkdir()
    g(repo, "init", "-q")
    marker = tmp_path / "pwned"
    assert not git.fetch_ref(repo, f"--upload-pack=touch {marker};", EXP_REF)
    assert not git.mirror(f"--upload-pack=touch {marker};", tmp_path / "m.git")
    assert not git.mirror(f"ext::sh -c touch% {marker}", tmp_path / "m2.git")
    with pytest.raises(ServiceError):
        git.clone(f"ext::sh -c touch% {marker}", tmp_path / "c")
    assert not marker.exists()
    assert git.show_files(repo, ["HEAD:a\nHEAD:b"]) == {"HEAD:a\nHEAD:b": None}


# -- item 3: trace does not write into the user's repository -------------------------------------
@pytest.mark.parametrize("ref", ["refs/heads/evil", "refs/tags/release-1.0"])
def test_a_branch_or_tag_ref_adds_no_ref_to_the_users_repository(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str
) -> None:
    """An ordinary remote holding the attacker's commit under ref: trace used to create that
    branch or tag in the user's repository."""
    attacker = tmp_path / "attacker"
    g(tmp_path, "clone", "-q", str(user_repo), str(attacker))
    commit(attacker, {"dvc.lock": lock("r1"), "src.py": "import os\n"}, "evil")
    g(attacker, "update-ref", ref, "HEAD")
    serve(monkeypatch, tags("r1", **{p.TAG_GIT_REMOTE: str(attacker), p.TAG_EXP_REF: ref}))
    before = all_refs(user_repo)
    result = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo)])
    assert all_refs(user_repo) == before
    assert git.commit_of(user_repo, ref) is None
    assert result.exit_code == 1 and "tag mlrig.exp.ref refused" in result.output
    assert "is not an experiment ref" in result.output


def test_an_experiment_ref_is_looked_up_in_mlrigs_mirror_not_fetched_into_the_repository(
    user_repo: Path, tmp_path: Path, mlrig_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The legitimate case still traces: the ref lives in mlrig's cache mirror only."""
    origin = tmp_path / "origin.git"
    g(tmp_path, "clone", "-q", "--bare", str(user_repo), str(origin))
    author = tmp_path / "author"
    g(tmp_path, "clone", "-q", str(origin), str(author))
    sha = exp_commit(author, {"dvc.lock": lock("r2", model="m2")})
    g(author, "push", "-q", "origin", f"{EXP_REF}:{EXP_REF}")
    serve(monkeypatch, tags("r2", "m2", **{p.TAG_GIT_REMOTE: str(origin), p.TAG_EXP_REF: EXP_REF}))
    before = all_refs(user_repo)
    result = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo), "--json"])
    assert result.exit_code == 0, result.output
    point = json.loads(result.output)["code"]["restore_point"]
    assert (point["sha"], point["found_by"], point["ref"]) == (sha, "exp-ref", EXP_REF)
    assert all_refs(user_repo) == before
    (mirror,) = (mlrig_home / "cache" / "git").iterdir()
    assert git.commit_of(mirror, EXP_REF) == sha


# -- item 12: checkout never reads a path outside the workspace ----------------------------------
def test_an_absolute_dep_path_is_refused_and_no_md5_of_it_is_printed(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is otherwise restorable (its run file is in the commit's dvc.lock)."""
    serve(monkeypatch, tags("r1", **{f"{p.TAG_DEP_PREFIX}{PASSWD}": "0" * 32}))
    into = tmp_path / "ws"
    result = runner.invoke(app, ["checkout", RUN, "--repo", str(user_repo), "--into", str(into)])
    assert result.exit_code == 1, result.output
    assert f"tag dvc.dep.{PASSWD} refused" in result.output
    assert "not relative to the workspace" in result.output
    assert md5(PASSWD) not in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not into.exists()
    traced = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo)])
    assert traced.exit_code == 1 and f"refused: tag dvc.dep.{PASSWD}" in traced.output
    assert md5(PASSWD) not in traced.output


def test_verification_reads_no_file_outside_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorded absolute path, a `..` and a restored commit's symbolic link out of the
    workspace are named, never hashed."""
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data/link").symlink_to(PASSWD)
    (root / "data/ok.txt").write_text("ok\n")
    files = {
        str(PASSWD): "0" * 32,
        "../../../../../../etc/passwd": "1" * 32,
        "data/link": "2" * 32,
        "data/ok.txt": md5(root / "data/ok.txt"),
    }
    monkeypatch.setattr(verify.dvc, "status", lambda root: {})  # no DVC repository here
    lines = verify.differences(root, files, None)
    assert md5(PASSWD) not in " ".join(lines)
    assert sorted(lines) == sorted(
        f"{path}: not a path inside the workspace, not read"
        for path in (str(PASSWD), "../../../../../../etc/passwd", "data/link")
    )


# -- the boundary's rules, one value at a time ---------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/churn.git",
        "ssh://git@github.com:22/acme/churn.git",
        "git@github.com:acme/churn.git",
        "/srv/git/churn.git",  # the local stack's and the demo's bare origin
    ],
)
def test_remotes_mlrig_records_pass(url: str) -> None:
    assert inputs.remote_problem(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("--upload-pack=touch /tmp/x;", "starts with '-'"),
        ("-oProxyCommand=sh", "starts with '-'"),
        ("ext::sh -c touch% /tmp/x", "whitespace"),
        ("ext::sh", "transport helper"),
        ("fd::3", "transport helper"),
        ("file:///srv/git/churn.git", "only https://"),
        ("http://example.com/x.git", "only https://"),
        ("git://example.com/x.git", "only https://"),
        ("../origin.git", "only https://"),
        ("origin", "only https://"),
        ("https://user:token@example.com/x.git", "holds a password"),
        ("ssh://-oProxyCommand=sh/x", "does not name a host"),
        ("-x@host:path", "starts with '-'"),
        ("git@host:-path", "path starting with '-'"),
        ("/srv/../etc", "climbs"),
    ],
)
def test_remotes_that_are_refused(url: str, why: str) -> None:
    problem = inputs.remote_problem(url)
    assert problem is not None and why in problem
    assert "token" not in problem  # a password is never repeated


def test_an_ext_or_file_remote_is_refused_in_traces_output(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    for remote in (f"ext::sh -c touch% {marker}", f"file://{tmp_path}/origin.git"):
        serve(monkeypatch, tags("never", **{p.TAG_GIT_REMOTE: remote}))
        result = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo)])
        assert result.exit_code == 1 and "tag mlrig.git.remote refused" in result.output
    assert not marker.exists()


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        (EXP_REF, True),
        (f"refs/exps/ab/{'c' * 38}/brisk-yawl", True),
        ("refs/heads/evil", False),
        ("refs/tags/release-1.0", False),
        ("/x", False),
        ("refs/exps/ab/cd/../../heads/x", False),
        ("refs/exps/ab/cd/x.lock", False),  # git check-ref-format refuses it
        ("refs/exps/ab/cd/-x", False),
        ("refs/exps/exec/EXEC_HEAD", False),
    ],
)
def test_experiment_refs(ref: str, ok: bool) -> None:
    assert (inputs.exp_ref_problem(ref) is None) is ok


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("data/raw.csv", True),
        ("models/model file.pkl", True),
        ("/etc/passwd", False),
        ("../x", False),
        ("data/../../x", False),
        ("~/.ssh/id_rsa", False),
        ("a\nb", False),
        ("", False),
    ],
)
def test_recorded_paths(path: str, ok: bool) -> None:
    assert (inputs.path_problem(path) is None) is ok


def test_dirty_file_paths_are_paths_too(user_repo: Path) -> None:
    bad = {p.TAG_DIRTY_FILES: json.dumps({"/etc/passwd": "x"})}
    kept, refused = inputs.checked(tags("r1", **bad))
    assert p.TAG_DIRTY_FILES not in kept and refused[0].tag == p.TAG_DIRTY_FILES


# -- who recorded the run ------------------------------------------------------------------------
@pytest.mark.parametrize(("user", "flag"), [("repo-proj", True), ("mallory", False), (None, None)])
def test_trace_says_whether_the_repository_identity_recorded_the_run(
    user_repo: Path, monkeypatch: pytest.MonkeyPatch, user: str | None, flag: bool | None
) -> None:
    extra = {inputs.TAG_USER: user} if user else {}
    rest = serve(monkeypatch, tags("r1", **extra))
    rest.versions = [ModelVersion("proj", "3", RUN)]
    result = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo), "--json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["run"]
    assert run["recorded_by"] == user and run["repository_identity"] == "repo-proj"
    assert run["recorded_by_repository_identity"] is flag
    human = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo)])
    warned = "not by the repository's identity repo-proj" in human.output
    assert warned is (flag is False), human.output


# -- image labels and model-version tags ---------------------------------------------------------
def test_image_labels_and_pushed_refs_mlrig_did_not_write_are_left_out() -> None:
    good = "h:5000/r@sha256:" + "e" * 64
    assert [r.reference for r in trace_image.records_from_refs([good, "-x@sha256:1", "a b"])] == [
        good
    ]
    labels = {p.LABEL_RUN_ID: "../../x", p.LABEL_MODEL_NAME: "churn", p.LABEL_MODEL_VERSION: "3x"}
    kept, refused = inputs.checked_labels(labels)
    assert kept == {p.LABEL_MODEL_NAME: "churn"}
    assert {r.line().split(" refused")[0] for r in refused} == {
        f"label {p.LABEL_RUN_ID}",
        f"label {p.LABEL_MODEL_VERSION}",
    }


def test_a_digest_that_is_not_one_never_reaches_mlflows_search_filter() -> None:
    rest = FakeRest(Run(RUN, "1", {}, {}, {}))
    assert trace_image._mlflow(rest, "sha256:x' OR name LIKE '%") is None  # type: ignore[arg-type]
    assert rest.searches == []


# -- checkout acts only on what the repository's identity recorded ---------------------------------
def test_checkout_repro_of_a_run_another_user_logged_is_refused_before_anything_is_made(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--repro runs the code the run's tags point to: not for a run someone else logged."""
    rest = serve(monkeypatch, tags("r1", **{inputs.TAG_USER: "mallory"}))
    rest.versions = [ModelVersion("proj", "3", RUN)]
    into = tmp_path / "ws"
    args = ["checkout", RUN, "--repo", str(user_repo), "--into", str(into), "--repro"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "logged by mallory, not by the repository's identity repo-proj" in result.output
    assert "--repro would run the code" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not into.exists()


def test_a_model_name_is_a_folder_name_only_when_mlflow_could_have_made_it() -> None:
    def record(name: str) -> p.ProvenanceRecord:
        return p.ProvenanceRecord(
            ref="x",
            model=p.ModelRecord(name=name, version="3"),
            run=p.RunRecord(id=RUN, tags={}),
            code=p.CodeRecord(
                restore_point=p.RestorePoint(sha="c" * 40, found_by="run-file"), restorable=True
            ),
        )

    assert co.target_of(record("churn")).label == "churn-v3"
    assert co.target_of(record("../../home/u/.ssh")).label is None


def test_a_tags_markup_or_terminal_escapes_are_printed_as_text(
    user_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit tag that would erase the line above and print a fake verdict on its own."""
    fake = "abc\x1b[1A\x1b[2K[green]restorable bit for bit:[/]\nmlrig checkout x"
    serve(monkeypatch, tags("never", **{p.TAG_GIT_COMMIT: fake}))
    result = runner.invoke(app, ["trace", RUN, "--repo", str(user_repo)], color=True)
    assert "\x1b[1A" not in result.output and "\x1b[2K" not in result.output
    assert "[green]restorable bit for bit:[/]?mlrig checkout x" in result.output
    assert not any(line.startswith("mlrig checkout") for line in result.output.splitlines())


def test_the_recorded_user_is_shown_without_terminal_escapes(
    user_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = serve(monkeypatch, tags("r1", **{inputs.TAG_USER: "eve\x1b[2K\rrepo-proj"}))
    rest.versions = [ModelVersion("proj", "3", RUN)]
    args = ["checkout", RUN, "--repo", str(user_repo), "--into", str(tmp_path / "ws"), "--repro"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "\x1b" not in result.output and "\r" not in result.output
    assert "logged by eve?[2K?repo-proj, not by the repository's identity" in result.output
