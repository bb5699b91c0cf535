"""`mlrig init --adopt` on a repository shaped like DVC's example-get-started, with real git,
DVC and (for the round trip) the session's local stack: the wiring is one commit of mlrig's
own files; the team's train.py with `mlrig.api.log_provenance()` trains and registers as the
repository's machine identity; trace follows it to commit and data and checkout restores it;
a run without mlrig's tags degrades (trace and checkout say what they can and what is
missing); each refusal is one line and changes nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlrig import contract
from mlrig.main import app
from tests.helpers import (
    VENV_BIN,
    aws_outputs,
    environ_with,
    getting_started_repo,
    lock_deps,
    mlflow_client,
    params_md5,
    repo_env,
    sh,
)

pytestmark = pytest.mark.integration
runner = CliRunner()
PROJECT = "getting_started"


def mlrig(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlrig"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file of the repository (.git's refs and index included), to prove nothing moved."""
    files = {}
    for path in sorted(repo.rglob("*")):
        if path.is_file() and "objects" not in path.relative_to(repo).parts:
            files[path.relative_to(repo).as_posix()] = path.read_bytes()
    return files


def lock_outs(repo: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]
    return {o["path"]: o["md5"] for o in lock["outs"]}


# -- refusals: one line each, nothing changed (no services) -------------------------------------
@pytest.fixture
def team_repo(mlrig_home: Path, tmp_path: Path) -> Path:
    contract.save(aws_outputs())  # a stack's outputs: the refusals come before any call to it
    return getting_started_repo(tmp_path / "getting-started", repo_env(mlrig_home))


def refused(repo: Path, *extra: str) -> str:
    before = snapshot(repo)
    result = runner.invoke(app, ["init", "--adopt", str(repo), "--stack", "prod", *extra])
    assert result.exit_code != 0, result.output
    assert snapshot(repo) == before
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0].split(" — ")[0]  # the message, without the hint after it


def test_uncommitted_changes_are_refused(team_repo: Path) -> None:
    (team_repo / "params.yaml").write_text("train: {}\n")
    assert "has uncommitted changes, refusing to adopt it" in refused(team_repo)


def test_a_dvc_remote_set_elsewhere_is_refused(team_repo: Path, tmp_path: Path) -> None:
    env = repo_env(tmp_path)
    sh(team_repo, "dvc", "remote", "add", "-d", "ours", str(tmp_path / "elsewhere"), env=env)
    sh(team_repo, "git", "commit", "-qam", "our remote", env=env)
    line = refused(team_repo)
    assert "the DVC remote 'ours' in .dvc/config points to" in line
    assert "not to stack 'prod''s s3://" in line


def test_an_adopted_repository_is_refused(team_repo: Path) -> None:
    (team_repo / ".copier-answers.yml").write_text("project_name: x\nstack: prod\n")
    sh(team_repo, "git", "add", ".copier-answers.yml", env=repo_env(team_repo))
    sh(team_repo, "git", "commit", "-qm", "adopted", env=repo_env(team_repo))
    assert "is already wired to a stack (.copier-answers.yml exists)" in refused(team_repo)


def test_a_repository_without_a_commit_is_refused(mlrig_home: Path, tmp_path: Path) -> None:
    contract.save(aws_outputs())
    repo = tmp_path / "fresh"
    repo.mkdir()
    sh(repo, "git", "init", "-q", env=repo_env(mlrig_home))
    (repo / "train.py").write_text("print('hi')\n")
    assert refused(repo).endswith("has no commit yet")


def test_no_dvc_is_refused_unless_asked_then_dvc_init_is_committed(
    mlrig_home: Path, tmp_path: Path
) -> None:
    contract.save(aws_outputs())
    repo = getting_started_repo(tmp_path / "plain", repo_env(mlrig_home), dvc=False)
    assert refused(repo).endswith("is not a DVC repository")

    result = runner.invoke(app, ["init", "--adopt", str(repo), "--stack", "prod", "--dvc"])
    assert result.exit_code == 0, result.output
    files = sh(repo, "git", "show", "--name-only", "--format=", "HEAD", env=repo_env(mlrig_home))
    assert sorted(files.split()) == [
        ".copier-answers.yml",
        ".dvc/.gitignore",
        ".dvc/config",
        ".dvcignore",
    ]
    assert sh(repo, "git", "status", "--porcelain", env=repo_env(mlrig_home)) == ""
    local = (repo / ".dvc/config.local").read_text()  # the endpoint: never committed
    assert "endpointurl = http://127.0.0.1:9" in local
    # the stack did not answer: adopted all the same, with the command that finishes it
    assert "mlrig access add-machine plain" in " ".join(result.output.split())
    again = runner.invoke(app, ["update", str(repo)])
    assert again.exit_code == 2
    assert "was adopted (`mlrig init --adopt`), not made from the template" in again.output


RETRAIN_OPTIONS = (
    "--retrain-stage",
    "prepare",
    "--gate-metric",
    "eval/metrics.json:roc_auc",
    "--gate-direction",
    "max",
)


def test_retrain_options_declare_it_in_the_adopt_commit(team_repo: Path) -> None:
    from mlrig.core.retrain import _repo as retrain_repo

    result = runner.invoke(
        app, ["init", "--adopt", str(team_repo), "--stack", "prod", *RETRAIN_OPTIONS]
    )
    assert result.exit_code == 0, result.output
    assert "`mlrig retrain` runs it" in " ".join(result.output.split())
    answers = yaml.safe_load((team_repo / ".copier-answers.yml").read_text())
    assert answers["retrain"] == {
        "data_stages": ["prepare"],
        "gate": {"metric": "eval/metrics.json:roc_auc", "direction": "max", "min_improvement": 0.0},
    }
    env = repo_env(team_repo)
    assert sh(team_repo, "git", "status", "--porcelain", env=env) == ""  # in the one commit
    plan = retrain_repo.plan(team_repo)  # what retrain reads back
    assert plan.data_stages == {"prepare"} and plan.declared is not None


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (
            ("--retrain-stage", "ingest", *RETRAIN_OPTIONS[2:]),
            "retrain: data stage 'ingest' is not in dvc.yaml",
        ),
        (
            (*RETRAIN_OPTIONS[:2], "--gate-metric", "eval/roc.json:auc", *RETRAIN_OPTIONS[4:]),
            "retrain: gate.metric file eval/roc.json is written by no stage of dvc.yaml",
        ),
        (
            (*RETRAIN_OPTIONS[:4], "--gate-direction", "up"),
            "retrain: gate.direction 'up': Input should be 'max' or 'min'",
        ),
        (
            (*RETRAIN_OPTIONS[:2], "--gate-metric", "../x.json:auc", *RETRAIN_OPTIONS[4:]),
            "retrain: gate.metric '../x.json' is not a path inside the repository",
        ),
        (RETRAIN_OPTIONS[:4], "takes --retrain-stage, --gate-metric and --gate-direction"),
    ],
)
def test_a_bad_retrain_declaration_is_refused(
    team_repo: Path, options: tuple[str, ...], said: str
) -> None:
    assert said in refused(team_repo, *options)


# -- the round trip on the local stack -----------------------------------------------------------
@pytest.fixture(scope="module")
def adopted(local_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The team's repository adopted onto the local stack, then `dvc repro` (train.py logs
    and registers with log_provenance), dvc.lock committed and the data pushed."""
    env = repo_env(local_stack["home"], {"MLFLOW_DISABLE_TELEMETRY": "true"})
    repo = getting_started_repo(tmp_path_factory.mktemp("team") / "getting-started", env)
    before = {f: (repo / f).read_bytes() for f in ("dvc.yaml", "params.yaml", "src/train.py")}
    base = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    adopt = mlrig(repo.parent, env, "init", "--adopt", "getting-started", "--stack", "local")
    assert adopt.returncode == 0, adopt.stderr
    adopt_commit = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
    sh(repo, "dvc", "repro", "-q", env=env)
    sh(repo, "git", "add", "dvc.lock", "eval", ".gitignore", "data/.gitignore", env=env)
    sh(repo, "git", "commit", "-qm", "first model", env=env)
    sh(repo, "dvc", "push", "-q", env=env)
    with environ_with(local_stack["env"]):  # the test's own MLflow client is admin
        yield {
            "repo": repo,
            "env": env,
            "base": base,
            "adopt_commit": adopt_commit,
            "lock_commit": sh(repo, "git", "rev-parse", "HEAD", env=env).strip(),
            "before": before,
            "output": adopt.stdout,
            "client": mlflow_client(local_stack),
        }


def test_adopt_commits_only_its_wiring(adopted: dict, local_stack: dict) -> None:
    repo, env = adopted["repo"], adopted["env"]
    assert sh(repo, "git", "rev-parse", "HEAD~2", env=env).strip() == adopted["base"]
    files = sh(repo, "git", "show", "--name-only", "--format=", adopted["adopt_commit"], env=env)
    assert sorted(files.split()) == [".copier-answers.yml", ".dvc/config"]
    for name, data in adopted["before"].items():  # the team's stages and code as they were
        assert (repo / name).read_bytes() == data
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["project_name"] == PROJECT and answers["stack"] == "local"
    assert answers["mlflow_username"] == "repo-getting-started"
    remote = local_stack["outputs"].dvc_remote.url
    assert f"url = {remote}" in (repo / ".dvc/config").read_text()
    assert "repo-getting-started" in adopted["output"]


def test_the_team_script_records_what_the_template_records(adopted: dict) -> None:
    repo, client = adopted["repo"], adopted["client"]
    version = client.get_model_version(PROJECT, "1")
    tags = client.get_run(version.run_id).data.tags
    assert tags["mlflow.user"] == "repo-getting-started"  # not admin
    assert tags["mlflow.source.git.commit"] == adopted["adopt_commit"]
    assert tags["mlrig.git.dirty"] == "false" and tags["dvc.stage"] == "train"
    deps = lock_deps(repo, "train")
    assert deps["dvc.dep.data/features"].endswith(".dir")  # DVC's folder hash, the same way
    assert {k: v for k, v in tags.items() if k.startswith("dvc.dep.")} == deps
    assert {k[8:]: v for k, v in tags.items() if k.startswith("dvc.out.")} == lock_outs(
        repo, "train"
    )
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    assert tags["mlrig.params.md5"] == params_md5(lock["params"])
    params = client.get_run(version.run_id).data.params
    assert params["train.n_est"] == "20" and params["train.seed"] == "20170428"


def test_trace_prints_commit_and_data_and_checkout_restores(adopted: dict, tmp_path: Path) -> None:
    repo, env = adopted["repo"], adopted["env"]
    proc = mlrig(repo, env, "trace", f"models:/{PROJECT}/1", "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["code"]["commit"] == adopted["adopt_commit"]
    assert record["code"]["restore_point"] == {
        "sha": adopted["lock_commit"],
        "found_by": "outs-and-deps",
        "ref": None,
    }
    assert record["code"]["restorable"] and record["missing"] == []
    assert {d["path"] for d in record["data"]} == {"data/features", "src/train.py", "model.pkl"}
    text = mlrig(repo, env, "trace", f"models:/{PROJECT}/1").stdout
    assert adopted["adopt_commit"] in text and "data/features" in text
    assert f"restorable bit for bit: mlrig checkout models:/{PROJECT}/1" in text

    into = tmp_path / "restored"
    out = mlrig(repo, env, "checkout", f"models:/{PROJECT}/1", "--into", str(into))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical: 3 files, params and `dvc status` match" in " ".join(out.stdout.split())
    assert (into / "model.pkl").read_bytes() == (repo / "model.pkl").read_bytes()
    assert sh(repo, "git", "status", "--porcelain", env=env) == ""  # the user's checkout as it was


def _foreign_run(client: Any, tags: dict[str, str]) -> str:
    experiment = client.get_experiment_by_name("foreign") or client.create_experiment("foreign")
    exp_id = experiment if isinstance(experiment, str) else experiment.experiment_id
    run = client.create_run(exp_id, tags=tags)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_a_run_without_mlrig_tags_degrades(adopted: dict, tmp_path: Path) -> None:
    """A plain MLflow script's run (MLflow's own git tag only): trace says what it can and
    what is missing; checkout restores the commit and its dvc.lock's data, unverified."""
    repo, env = adopted["repo"], adopted["env"]
    run_id = _foreign_run(
        adopted["client"],
        {"mlflow.source.git.commit": adopted["lock_commit"], "mlflow.source.name": "train.py"},
    )
    proc = mlrig(repo, env, "trace", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["code"]["commit"] == adopted["lock_commit"]
    assert record["code"]["source_name"] == "train.py" and not record["code"]["restorable"]
    links = [m["link"] for m in record["missing"]]
    assert links[:3] == ["data the run read", "stage and params", "clean workspace"]
    assert "git remote" in links and "model version" in links
    assert all("mlrig.api.log_provenance()" in m["how"] for m in record["missing"][:3])
    data = {d["path"]: d for d in record["data"]}
    assert data["model.pkl"]["md5"] == lock_outs(repo, "train")["model.pkl"]
    assert data["data/data.csv"]["role"] == "dep"
    assert {d["source"] for d in record["data"]} == {"dvc.lock"}
    text = " ".join(mlrig(repo, env, "trace", run_id).stdout.split())
    assert "missing: data the run read" in text and "partly restorable: mlrig checkout" in text

    into = tmp_path / "partial"
    out = mlrig(repo, env, "checkout", run_id, "--into", str(into))
    said = " ".join(out.stdout.split())
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"verified: commit {adopted['lock_commit'][:12]}" in said
    assert "not verified data the run read" in said
    assert (into / "model.pkl").read_bytes() == (repo / "model.pkl").read_bytes()


def test_a_run_with_no_git_tag_at_all_is_one_line(adopted: dict) -> None:
    run_id = _foreign_run(adopted["client"], {"mlflow.source.name": "notebook"})
    proc = mlrig(adopted["repo"], adopted["env"], "trace", run_id)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[0].split(" — ")[0] == (
        f"error: run {run_id} has no git tag at all (no mlflow.source.git.commit, no image "
        "label): nothing links it to code"
    )


def test_image_build_and_push_work_on_it(adopted: dict, base_image: str) -> None:
    """Inside the adopted repository, `image build` takes the project's latest version (the
    answers file names it) and labels it with the run's commit; trace follows the pushed
    image back to that run."""
    repo, env = adopted["repo"], adopted["env"]
    built = mlrig(repo, env, "image", "build")
    assert built.returncode == 0, built.stderr
    assert f"from models:/{PROJECT}/1" in " ".join(built.stdout.split())
    pushed = mlrig(repo, env, "image", "push")  # the image just built
    assert pushed.returncode == 0, pushed.stderr
    reference = pushed.stdout.strip().splitlines()[-1]
    proc = mlrig(repo, env, "trace", reference, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["model"]["name"] == PROJECT and record["model"]["version"] == "1"
    assert record["code"]["restore_point"]["sha"] == adopted["lock_commit"]
    assert record["code"]["restorable"]


def test_a_plain_mlflow3_logged_model_is_traced_without_registering(adopted: dict) -> None:
    """`mlflow.pyfunc.log_model` in MLflow 3 answers models:/m-<id>: trace follows that URI
    through MLflow's logged-model API to the run and its commit, registered or not."""
    import mlflow

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input * 2

    mlflow.set_experiment("foreign")
    with mlflow.start_run(tags={"mlflow.source.git.commit": adopted["lock_commit"]}) as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Doubler(), pip_requirements=["mlflow"]
        )
    assert info.model_uri.startswith("models:/m-")
    proc = mlrig(adopted["repo"], adopted["env"], "trace", info.model_uri, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["run"]["id"] == run.info.run_id
    assert record["code"]["commit"] == adopted["lock_commit"]
    assert record["ref"] == info.model_uri
