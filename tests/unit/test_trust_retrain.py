"""Issue 27, retrain recovery: the marker an interrupted retrain left is input, the undo
acts only on the run's branch and HEAD and deletes only the files the run wrote, a model
version the undone run registered is marked, and an unreachable https source says so."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlrig.core.retrain import _repo as retrain_repo
from mlrig.core.retrain import retrain
from mlrig.core.retrain import state as retrain_state
from mlrig.errors import Conflict, MlrigError
from mlrig.main import app

runner = CliRunner()

DVC_YAML = """\
stages:
  ingest:
    cmd: python -m churn.ingest
    outs:
      - data/snapshot/data.csv:
          persist: true
      - data/snapshot/record.json:
          cache: false
  train:
    cmd: python -m churn.train
    deps:
      - data/snapshot/data.csv
    outs:
      - models/model.pkl
    metrics:
      - metrics.json:
          cache: false
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class FakeRest:
    """The MLflow registry an undo talks to: versions, their runs' tags, what it was told."""

    champion_now: str | None = "1"
    versions: list[dict[str, Any]] = field(default_factory=list)  # name version run_id created
    run_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def champion(self, name: str, alias: str) -> str | None:
        return self.champion_now

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.calls.append(("set_alias", name, alias, version))
        self.champion_now = version

    def delete_alias(self, name: str, alias: str) -> None:
        self.calls.append(("delete_alias", name, alias))
        self.champion_now = None

    def model_versions_created_since(self, name: str, since_ms: int) -> list[Any]:
        from mlrig.adapters.mlflow_rest import ModelVersion

        return [
            ModelVersion(name, v["version"], v["run_id"], dict(v.get("tags", {})))
            for v in self.versions
            if v["name"] == name and v["created"] >= since_ms
        ]

    def run(self, run_id: str) -> Any:
        from mlrig.adapters.mlflow_rest import Run

        return Run(run_id, "1", {}, {}, self.run_tags[run_id])

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.calls.append(("tag", name, version, key, value))

    def set_model_version_description(self, name: str, version: str, text: str) -> None:
        self.calls.append(("describe", name, version))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository shaped like one `mlrig init` made: dvc.yaml, dvc.lock, a
    tracked snapshot record, .dvc/ with its own .gitignore."""
    path = tmp_path / "churn"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "t")
    git(path, "config", "user.email", "t@localhost")
    (path / ".copier-answers.yml").write_text("project_name: churn\nstack: dev\n")
    (path / ".dvc").mkdir()
    (path / ".dvc/.gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (path / "dvc.yaml").write_text(DVC_YAML)
    (path / "dvc.lock").write_text("schema: '2.0'\n# the last published run\n")
    (path / "params.yaml").write_text("ingest:\n  source: data/raw.csv\n")
    (path / "data/snapshot").mkdir(parents=True)
    (path / "data/snapshot/record.json").write_text('{"md5": "old"}\n')
    (path / "data/snapshot/.gitignore").write_text("/data.csv\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


@pytest.fixture
def rest(monkeypatch: pytest.MonkeyPatch) -> FakeRest:
    """recover() without a stack: the registry is a fake, the stack's environment empty,
    `dvc checkout` a no-op (a hand-made .dvc/ is not a DVC repository DVC can open)."""
    fake = FakeRest()
    monkeypatch.setattr(retrain_repo, "outputs", lambda _root, _stack=None: None)
    monkeypatch.setattr(retrain_repo, "credentials", lambda _o, _root: {})
    monkeypatch.setattr(retrain.MlflowRest, "from_env", classmethod(lambda cls, _env: fake))
    monkeypatch.setattr(retrain_state.dvc, "checkout", lambda _root: None)
    return fake


def killed_run(repo: Path, *, commit: bool = False) -> retrain_state.SavedState:
    """What a retrain killed mid-train leaves: its marker (with a dead pid), changed
    tracked outputs, new untracked ones, DVC's .gitignore beside a new output."""
    saved = retrain_state.new(
        repo, head=git(repo, "rev-parse", "HEAD"), branch="main", model="churn", champion="1"
    )
    saved.pid = dead_pid()
    saved.save(repo)
    (repo / "dvc.lock").write_text("schema: '2.0'\n# the killed run\n")
    (repo / "data/snapshot/record.json").write_text('{"md5": "new"}\n')
    (repo / "data/snapshot/data.csv").write_text("id\n1\n")
    (repo / "metrics.json").write_text('{"auc": 0.9}\n')
    (repo / "models").mkdir()
    (repo / "models/.gitignore").write_text("/model.pkl\n")
    (repo / "models/model.pkl").write_bytes(b"model")
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "retrain: snapshot")
        saved.commit = git(repo, "rev-parse", "HEAD")
        saved.save(repo)
    return saved


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def recover_cli(repo: Path) -> Any:
    return runner.invoke(app, ["retrain", "--recover", "--repo", str(repo)])


def one_error_line(result: Any) -> str:
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


# -- undo only what the run did -----------------------------------------------------------
def test_recover_leaves_a_branch_checked_out_since_and_the_users_notes(
    repo: Path, rest: FakeRest
) -> None:
    saved = killed_run(repo)
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "feature.txt").write_text("work on dev\n")
    git(repo, "add", "feature.txt")
    git(repo, "commit", "-qm", "dev work")
    (repo / "notes.txt").write_text("my notes\n")
    dev = git(repo, "rev-parse", "dev")

    line = one_error_line(recover_cli(repo))
    assert "now on branch dev" in line and "nothing was undone" in line
    assert git(repo, "rev-parse", "dev") == dev != saved.head
    assert git(repo, "branch", "--show-current") == "dev"
    assert (repo / "notes.txt").read_text() == "my notes\n"
    assert (repo / "feature.txt").is_file() and (repo / "models/model.pkl").is_file()
    assert retrain_state.load(repo) == saved  # the marker stays for a later undo
    assert rest.calls == []


def test_recover_refuses_a_new_branch_at_the_same_commit(repo: Path, rest: FakeRest) -> None:
    killed_run(repo)
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "notes.txt").write_text("my notes\n")
    with pytest.raises(Conflict, match="now on branch dev"):
        retrain.recover(repo)
    assert (repo / "notes.txt").is_file() and (repo / "metrics.json").is_file()
    assert (repo / "dvc.lock").read_text().endswith("# the killed run\n")


def test_recover_removes_the_runs_files_and_keeps_a_file_the_user_made(
    repo: Path, rest: FakeRest
) -> None:
    killed_run(repo)
    (repo / "notes.txt").write_text("written after the kill\n")
    (repo / "models/notes.txt").write_text("beside an output, still mine\n")

    assert retrain.recover(repo) is True
    assert (repo / "notes.txt").read_text() == "written after the kill\n"
    assert (repo / "models/notes.txt").is_file()
    # (data/snapshot/data.csv is ignored by a committed .gitignore: `dvc checkout` puts it
    # back to what dvc.lock records; it is stubbed here)
    for made in ("metrics.json", "models/model.pkl", "models/.gitignore"):
        assert not (repo / made).exists(), made
    assert (repo / "dvc.lock").read_text().endswith("# the last published run\n")
    assert (repo / "data/snapshot/record.json").read_text() == '{"md5": "old"}\n'
    assert retrain_state.load(repo) is None


def test_recover_refuses_when_a_tracked_file_the_run_never_writes_changed(
    repo: Path, rest: FakeRest
) -> None:
    killed_run(repo)
    (repo / "params.yaml").write_text("ingest:\n  source: data/edited.csv\n")
    line = one_error_line(recover_cli(repo))
    assert "params.yaml changed since, not by the run" in line
    assert (repo / "params.yaml").read_text() == "ingest:\n  source: data/edited.csv\n"
    assert (repo / "metrics.json").is_file() and retrain_state.load(repo) is not None


def test_recover_undoes_the_runs_own_unpublished_commit(repo: Path, rest: FakeRest) -> None:
    saved = killed_run(repo, commit=True)
    (repo / "notes.txt").write_text("mine\n")
    assert retrain.recover(repo) is True
    assert git(repo, "rev-parse", "main") == saved.head
    assert (repo / "notes.txt").is_file() and not (repo / "metrics.json").exists()


def test_a_run_killed_after_its_push_is_complete_and_not_undone(repo: Path, rest: FakeRest) -> None:
    """`git push` reached origin (its remote-tracking ref names the run's commit) but the
    kill came before the marker said so: undoing would drop a published commit locally."""
    saved = killed_run(repo, commit=True)
    git(repo, "update-ref", "refs/remotes/origin/main", saved.commit or "")
    assert retrain.recover(repo) is False
    assert git(repo, "rev-parse", "HEAD") == saved.commit
    assert retrain_state.load(repo) is None and rest.calls == []


def test_recover_refuses_a_commit_made_on_top_of_the_runs(repo: Path, rest: FakeRest) -> None:
    killed_run(repo, commit=True)
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "my notes")
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(Conflict, match="a commit the run did not make"):
        retrain.recover(repo)
    assert git(repo, "rev-parse", "main") == head and (repo / "notes.txt").is_file()


def test_a_retrain_with_a_leftover_marker_refuses_before_touching_the_branch(
    repo: Path, rest: FakeRest
) -> None:
    killed_run(repo)
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "notes.txt").write_text("mine\n")
    with pytest.raises(Conflict, match="now on branch dev"):
        retrain.retrain(repo)
    assert (repo / "notes.txt").is_file() and git(repo, "branch", "--show-current") == "dev"


def test_the_runs_commit_holds_only_the_runs_files(repo: Path) -> None:
    """A file someone made or edited while the pipeline ran is not committed (nor pushed)."""
    from mlrig.adapters import git as git_adapter

    saved = killed_run(repo)
    (repo / "notes.txt").write_text("private\n")
    (repo / "params.yaml").write_text("ingest:\n  source: data/edited.csv\n")
    (repo / "data/snapshot/[x].json").write_text("{}\n")  # a glob-like name, not the run's
    paths = retrain._run_changes(repo, saved)
    assert paths == ["data/snapshot/record.json", "dvc.lock", "metrics.json", "models/.gitignore"]
    git_adapter.commit_paths(repo, "retrain: snapshot", paths)
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(committed) == paths
    status = git(repo, "status", "--porcelain")
    assert "?? notes.txt" in status and "M params.yaml" in status


# -- the marker is input ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field_", "value", "says"),
    [
        ("head", "--hard", "head"),
        ("head", "HEAD~3", "head"),
        ("branch", "--foo", "branch '--foo' is not a branch name"),
        ("branch", "a..b", "is not a branch name"),
        ("commit", "-q", "commit"),
        ("model", "../../x", "model"),
        ("champion", "1; rm -rf /", "champion"),
        ("pid", -1, "pid"),
        ("phase", "done", "phase"),
        ("extra", "x", "extra"),
    ],
)
def test_a_tampered_marker_is_refused_and_nothing_changes(
    repo: Path, rest: FakeRest, field_: str, value: Any, says: str
) -> None:
    killed_run(repo)
    raw = json.loads((repo / retrain_state.MARKER).read_text())
    raw[field_] = value
    (repo / retrain_state.MARKER).write_text(json.dumps(raw))
    before = git(repo, "status", "--porcelain")

    line = one_error_line(recover_cli(repo))
    assert "not a retrain marker mlrig can trust" in line and says in line
    assert git(repo, "status", "--porcelain") == before
    assert (repo / "metrics.json").is_file() and rest.calls == []


def test_saving_the_marker_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / ".dvc/tmp").mkdir(parents=True)
    (tmp_path / retrain_state.MARKER).with_suffix(".tmp").symlink_to(victim)
    saved = retrain_state.new(tmp_path, head="a" * 40, branch="main", model="m", champion=None)
    saved.save(tmp_path)
    assert victim.read_text() == "keep me\n"
    assert retrain_state.load(tmp_path) == saved


def test_a_marker_for_another_model_is_refused(repo: Path, rest: FakeRest) -> None:
    saved = killed_run(repo)
    saved.model = "someone_else"
    saved.save(repo)
    with pytest.raises(Conflict, match="names model someone_else"):
        retrain.recover(repo)
    assert (repo / "metrics.json").is_file() and rest.calls == []


# -- model versions of an undone run ------------------------------------------------------
def test_the_undone_runs_model_version_is_tagged_and_no_one_elses(
    repo: Path, rest: FakeRest
) -> None:
    saved = killed_run(repo)
    started = int(saved.started * 1000)
    rest.versions = [
        {"name": "churn", "version": "1", "run_id": "r1", "created": started - 86_400_000},
        {"name": "churn", "version": "2", "run_id": "r2", "created": started + 10},  # other's
        {"name": "churn", "version": "3", "run_id": "r3", "created": started + 20},  # ours
        {"name": "churn", "version": "4", "run_id": "r4", "created": started + 30},  # untagged
    ]
    rest.run_tags = {
        "r1": {retrain_state.RUN_TAG: saved.retrain_id or ""},
        "r2": {retrain_state.RUN_TAG: "f" * 32},
        "r3": {retrain_state.RUN_TAG: saved.retrain_id or "", "mlflow.source.git.commit": "x"},
        "r4": {},
    }
    rest.champion_now = "3"  # evaluate had promoted it

    result = runner.invoke(app, ["retrain", "--recover", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    assert "model version 3 tagged mlrig.undone=true" in result.output
    assert ("set_alias", "churn", "champion", "1") in rest.calls
    touched = {c[2] for c in rest.calls if c[0] in ("tag", "describe")}
    assert touched == {"3"}
    assert ("tag", "churn", "3", retrain_state.UNDONE_TAG, "true") in rest.calls


def test_a_failed_run_marks_its_version_through_the_same_undo(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process undo (a failed publish) calls restore with the live registry."""
    saved = killed_run(repo)
    rest = FakeRest(
        versions=[{"name": "churn", "version": "7", "run_id": "r7", "created": 10**15}],
        run_tags={"r7": {retrain_state.RUN_TAG: saved.retrain_id or ""}},
    )
    monkeypatch.setattr(retrain_state.dvc, "checkout", lambda _root: None)
    retrain_state.restore(repo, saved, rest, None)  # type: ignore[arg-type]
    assert ("tag", "churn", "7", retrain_state.UNDONE_TAG, "true") in rest.calls


def test_an_alias_the_login_may_not_delete_leaves_the_version_marked_and_says_who_can(
    repo: Path, rest: FakeRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run promoted its version (no champion before); a repository's identity may
    edit the model but not delete its alias: the version is marked all the same, and the
    error says who can finish the undo."""
    from mlrig.errors import CredentialsError

    saved = killed_run(repo)
    saved.champion = None
    saved.save(repo)
    rest.champion_now = "1"
    rest.versions = [{"name": "churn", "version": "1", "run_id": "r1", "created": 10**15}]
    rest.run_tags = {"r1": {retrain_state.RUN_TAG: saved.retrain_id or ""}}

    def refuse(name: str, alias: str) -> None:
        raise CredentialsError("MLflow rejected the credentials")

    monkeypatch.setattr(rest, "delete_alias", refuse)
    result = recover_cli(repo)
    assert result.exit_code == 6 and "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert "model version 1 tagged mlrig.undone=true" in result.output  # progress, first
    assert "names version 1, which the undone run made" in line and "MLflow admin" in line
    assert ("tag", "churn", "1", retrain_state.UNDONE_TAG, "true") in rest.calls
    assert retrain_state.load(repo) is not None  # a later --recover finishes the undo


def test_a_run_killed_in_ingest_is_undone_without_asking_mlflow(
    repo: Path, rest: FakeRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = killed_run(repo)
    saved.champion_known = False  # only ingest had started: no version can exist
    saved.save(repo)

    def offline(*_a: Any) -> Any:
        raise AssertionError("the undo of an ingest-only run asked MLflow")

    monkeypatch.setattr(rest, "model_versions_created_since", offline)
    monkeypatch.setattr(rest, "champion", offline)
    assert retrain.recover(repo) is True and not (repo / "metrics.json").exists()


def test_every_mlflow_run_of_a_retrain_carries_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = retrain_state.new(Path("."), head="a" * 40, branch="main", model="m", champion=None)
    monkeypatch.setenv(retrain.RUN_CONTEXT_ENV, json.dumps({"team": "data"}))
    tags = json.loads(retrain._run_context(saved))
    assert tags == {"team": "data", retrain_state.RUN_TAG: saved.retrain_id}
    assert saved.retrain_id and len(saved.retrain_id) == 32
    # MLflow's own reading of the variable: the tag lands on every run a stage starts
    from mlflow.tracking.context.registry import resolve_tags

    monkeypatch.setenv(retrain.RUN_CONTEXT_ENV, retrain._run_context(saved))
    assert resolve_tags()[retrain_state.RUN_TAG] == saved.retrain_id


# -- an unreachable https source ----------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlrig.core.bootstrap import _render as bootstrap_render
    from mlrig.core.bootstrap import init as bootstrap
    from tests.helpers import aws_outputs

    src, ref = bootstrap.template_repo()
    dest = tmp_path_factory.mktemp("render") / "churn"
    bootstrap_render.render(src, ref, dest, project="churn", outputs=aws_outputs())
    git(dest, "init", "-q")
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=dest, check=True)
    return dest


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ingest(repo: Path, source: str) -> subprocess.CompletedProcess[str]:
    params = repo / "params.yaml"
    text = params.read_text()
    start = text.index("  source: ")
    end = text.index("\n", start)
    params.write_text(f"{text[:start]}  source: {source}{text[end:]}")
    return subprocess.run(
        [sys.executable, "-m", "churn.ingest"],
        cwd=repo,
        env={"PYTHONPATH": "src", "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unreachable_https_source_says_it_could_not_be_reached(pipeline: Path) -> None:
    url = f"https://127.0.0.1:{closed_port()}/exports/patients.csv"
    proc = ingest(pipeline, url)
    assert proc.returncode != 0
    assert proc.stderr.startswith(f"ingest: could not reach {url}: ")
    assert "no file matches" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (pipeline / "data/snapshot/data.csv").exists()


def test_a_missing_file_on_a_reachable_server_is_still_missing(pipeline: Path) -> None:
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/missing.csv"
        proc = ingest(pipeline, url)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode != 0 and f"no file matches ingest.source '{url}'" in proc.stderr


def test_the_commit_subject_is_one_printable_line() -> None:
    snap = retrain_repo.Snapshot("a" * 32, 3, "data/x.csv\n\nSigned-off-by: someone")
    message = retrain._commit_message(snap)
    assert "\n" not in message and message.startswith("retrain: snapshot aaaaaaaaaaaa, 3 rows")


def test_a_marker_error_is_an_mlrig_error(tmp_path: Path) -> None:
    (tmp_path / retrain_state.MARKER).parent.mkdir(parents=True)
    (tmp_path / retrain_state.MARKER).write_text("[]")
    with pytest.raises(MlrigError, match="not a retrain marker mlrig can trust"):
        retrain_state.load(tmp_path)
